"""What `probes.fit` reports beside a score: the cluster bootstrap of R^2 by equation, the
within-class metrics of a regression target, and whether two targets are one split.

    r2_interval(y, pred, groups)          # 95% interval, whole equations resampled
    within_class(cls, y, pred, part, has) # within_r2, within_r2_by_class, class_r2
    coincide(a, b)                        # True when a and b are a bijection of each other
    coinciding(task, examples, targets)   # {target: the earlier target it coincides with}
    reliable_rows(frame)                  # the cells with >= MIN_TEST distinct test equations

Only reliable cells (`reliable_rows`) are ever chosen: as the most selective or best cell,
and as the cells whose positions the causal check erases.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

N_BOOT = 1000             # bootstrap resamples of each cell's test equations


def r2_interval(y, pred, groups, n_boot: int = N_BOOT, level: float = 0.95, seed: int = 0
                ) -> tuple[float, float]:
    """Percentile interval of R^2 (sklearn's r2_score of pred against y) under a cluster
    bootstrap: whole groups (equations) are drawn with replacement, each resample's R^2 is
    over all the rows it holds (computed from per-group sums). Resamples with constant y
    are dropped."""
    y, pred = np.asarray(y, float), np.asarray(pred, float)
    code, _ = pd.factorize(pd.Series(np.asarray(groups, dtype=object)).astype(str))
    m = int(code.max()) + 1
    if m < 2:
        return math.nan, math.nan
    sums = [np.bincount(code, weights=w, minlength=m)
            for w in (np.ones_like(y), y, y * y, (y - pred) ** 2)]
    pick = np.random.default_rng(seed).integers(0, m, size=(n_boot, m))
    cnt, sy, syy, res = (v[pick].sum(1) for v in sums)
    tot = syy - sy * sy / cnt
    ok = tot > 1e-12 * np.maximum(syy, 1)
    if not ok.any():
        return math.nan, math.nan
    r2 = 1 - res[ok] / tot[ok]
    lo, hi = np.quantile(r2, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo), float(hi)


def within_class(cls, y, pred, part, has) -> dict:
    """Within-class R^2 of the probe (pooled and per class, on the test rows) and the R^2 of
    the class-mean oracle (each test row predicted by its class's training mean)."""
    ok = has & ~np.isnan(y)
    train, test = ok & (part.numpy() == 0), ok & (part.numpy() == 2)
    out = {"within_r2": math.nan, "class_r2": math.nan, "within_r2_by_class": ""}
    if test.sum() < 2:
        return out
    yt, pt, ct = y[test], pred[test], cls[test]
    ss_res = ss_within = 0.0
    per = []
    for k in sorted(set(ct), key=str):
        m = ct == k
        res_k = float(((yt[m] - pt[m]) ** 2).sum())
        tot_k = float(((yt[m] - yt[m].mean()) ** 2).sum())
        ss_res, ss_within = ss_res + res_k, ss_within + tot_k
        per.append(f"{k}:{1 - res_k / tot_k:.4f}" if m.sum() >= 2 and tot_k > 0 else f"{k}:nan")
    out["within_r2"] = 1 - ss_res / ss_within if ss_within > 0 else math.nan
    out["within_r2_by_class"] = " ".join(per)
    mean_all = y[train].mean() if train.any() else math.nan
    means = {k: y[train & (cls == k)].mean() if (train & (cls == k)).any() else mean_all
             for k in set(ct)}
    oracle = np.array([means[k] for k in ct])
    tot = float(((yt - yt.mean()) ** 2).sum())
    out["class_r2"] = 1 - float(((yt - oracle) ** 2).sum()) / tot if tot > 0 else math.nan
    return out


def coincide(a, b) -> bool:
    """Whether two label arrays are one split under two names: on the examples where both
    are defined, each value of `a` goes with exactly one value of `b` and back (a bijection),
    and they are missing on the same examples. Values are compared as given (classes or
    numbers; NaN or None is missing)."""
    a, b = np.asarray(a, dtype=object), np.asarray(b, dtype=object)
    if a.shape != b.shape:
        return False

    def missing(v):
        return np.array([x is None or (isinstance(x, float) and math.isnan(x)) for x in v])

    ma, mb = missing(a), missing(b)
    if not np.array_equal(ma, mb) or ma.all():
        return False
    pairs = set(zip(a[~ma].tolist(), b[~mb].tolist()))
    return len(pairs) == len({x for x, _ in pairs}) == len({y for _, y in pairs})


def coinciding(task, examples, targets: Sequence[str]) -> dict[str, str]:
    """target -> the earlier target it coincides with (`coincide`) on these examples: the
    same finding under two names, to be fitted and reported once."""
    values = {t: [task.probe_targets(ex)[t] for ex in examples] for t in targets}
    out: dict[str, str] = {}
    for j, t in enumerate(targets):
        for u in targets[:j]:
            if u != t and u not in out and coincide(values[u], values[t]):
                out[t] = u
                break
    return out


def reliable_rows(frame: pd.DataFrame, min_test: int | None = None) -> pd.DataFrame:
    """The rows of a probe grid (`ProbeResult.frame()`) whose test split holds at least
    `min_test` distinct equations (default `MIN_TEST`, the report's rule): cells under it
    score wildly and are never chosen."""
    from interp.viz.reports.probe_maps import MIN_TEST, reliable

    return frame[reliable(frame, MIN_TEST if min_test is None else min_test)]


__all__ = ["N_BOOT", "coincide", "coinciding", "r2_interval", "reliable_rows", "within_class"]
