"""Statistics the base package needs itself: the (cluster) bootstrap interval of a mean and
the count of independent observations. `circuits.stats` re-exports them beside its
control-rank p-values and verdicts.
"""

from __future__ import annotations

import numpy as np


def bootstrap_ci(values, n_boot: int = 2000, level: float = 0.95, seed: int = 0,
                 groups=None) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of `values` (1-D, NaNs dropped).

    Examples are resampled with replacement `n_boot` times. With fewer than two values the
    interval is (mean, mean).

    groups : optional labels of the same length (e.g. each row's equation, `Example.src`).
        Then whole groups are resampled (a cluster bootstrap): rows that repeat one
        equation move together, and each resample's mean is over all the rows it holds.
        With one row per group this is the row bootstrap."""
    x = np.asarray(values, dtype=float)
    keep = ~np.isnan(x)
    x = x[keep]
    if len(x) == 0:
        return float("nan"), float("nan")
    if len(x) < 2:
        return float(x[0]), float(x[0])
    rng = np.random.default_rng(seed)
    if groups is None:
        means = x[rng.integers(0, len(x), size=(n_boot, len(x)))].mean(1)
    else:
        g = np.asarray(groups, dtype=object)
        if len(g) != len(keep):
            raise ValueError(f"groups has {len(g)} labels for {len(keep)} values")
        import pandas as pd

        code, _ = pd.factorize(pd.Series(g[keep]).astype(str))   # first-appearance order
        m = int(code.max()) + 1
        sums = np.bincount(code, weights=x, minlength=m)
        counts = np.bincount(code, minlength=m).astype(float)
        if m < 2:
            return float(x.mean()), float(x.mean())
        pick = rng.integers(0, m, size=(n_boot, m))
        means = sums[pick].sum(1) / counts[pick].sum(1)
    lo, hi = np.quantile(means, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo), float(hi)


def distinct(groups) -> int:
    """How many distinct labels (equations) `groups` holds: the independent observations."""
    return len(set(map(str, groups)))
