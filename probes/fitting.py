"""Fit a probe at every (site, stack, layer, position) cell at once, with its control task
(just over 400 lines: the grid, its result and its figure belong together).

    acts = probes.collect(bridge, task, examples, sites=("resid_pre",))
    res = probes.fit(acts, "D_sign")          # a target name of the task, or labels [n]
    res.frame()                               # one row per cell: score, baseline, control ...
    res.figure("selectivity")                 # layer x position heatmaps
    res.direction("resid_pre", 2, "in:=#0")   # [rank, d_model] orthonormal rows

Examples are split by equation (`acts.groups`) into train / validation / test; each cell
standardises its features with its training rows, picks the L2 penalty with the best
validation score (accuracy, ties to the lower cross-entropy; R^2 for regression), and is
scored on the test rows it has, with a 95% bootstrap interval that resamples equations
(`circuits.stats.bootstrap_ci(..., groups=)` for accuracy; the same cluster bootstrap of
R^2 for regression) and the number of distinct test equations (`n_eq_test`).

Beside each score:
- control: the control probe (`probes.controls`: a random label per token + role) fitted the
  same way, floored at its own majority / mean baseline (a control probe that overfits
  below the baseline would inflate the selectivity past 1); NaN where the control labels
  are constant at the key (every example has one type there: `x`, `^`, `=`).
  Selectivity = score - control: at most 1 - the control's baseline, at least -1 for
  accuracy; the same definition at every position.
- positional: the same probe on the layer-0 token-and-position features
  (`Activations.embed`: what the model has there before any attention), one per position.
- regression targets, given each example's class (`Example.cls`, or `classes=`):
  `within_r2`, the probe's R^2 measured against the class means of the test rows (pooled
  over classes: 1 - SS_res / sum over classes of SS around the class mean; <= 0 when it
  reads nothing beyond the class), `within_r2_by_class`, and `class_r2`, the R^2 of
  predicting each test row by its class's training mean (the class-mean oracle).
These measures, and the test for targets that coincide, are in `probes.scores`.

Launched over several processes, the chunks of cells are shared out (`fit`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

import interp.distributed as dist
from circuits.stats import bootstrap_ci
from interp.errors import InterpError
from probes.controls import control_labels, split_groups
from probes.estimators import NO_LOGIT, logistic, ridge, standardize
from probes.scores import N_BOOT, r2_interval, within_class

RIDGE_ALPHAS = (1e-2, 1e-1, 1.0, 10.0, 100.0, 1e3, 1e4)
LOGISTIC_ALPHAS = (1e-2, 1e-1, 1.0, 10.0, 100.0)   # alpha = 1 / sklearn's C
COLUMNS = ["site", "stack", "layer", "position", "target", "kind", "n_train", "n_test",
           "n_eq_test", "metric", "score", "score_lo", "score_hi", "baseline", "control",
           "selectivity", "positional", "within_r2", "class_r2", "within_r2_by_class", "alpha"]
CELL_BUDGET = 1 << 24     # floats of features per chunk of cells (64 MiB)


def resolve_labels(acts, labels, kind: str = "auto") -> tuple[np.ndarray, str, str, list]:
    """(values [n] float with NaN for missing, kind, target name, classes).

    labels: a target name of `acts.task` (`task.probe_targets`) or an array [n]. Class
    labels are mapped to indices into `classes` (their sorted distinct values). "auto":
    the task's kind for a target name; for an array, regression when a value is not an
    integer or there are more than 32 distinct values, else classification."""
    name = "labels"
    if isinstance(labels, str):
        name = labels
        task = acts.task
        info = task.probe_target_info() if task is not None else {}
        if name not in info:
            raise InterpError(f"unknown target {name!r}; the targets are "
                              f"{', '.join(info) or '(none: this task has no probe targets)'}")
        if kind == "auto":
            kind = info[name].split(":", 1)[0]
        labels = [task.probe_targets(ex)[name] for ex in acts.examples]
    raw = np.asarray(labels)
    if raw.shape != (acts.n,):
        raise InterpError(f"labels have shape {raw.shape}; give one label per example "
                          f"({acts.n})")
    if kind not in ("auto", "class", "regression"):
        raise InterpError(f"unknown kind {kind!r}; choose auto, class or regression")
    numeric = raw.dtype.kind in "biuf"
    missing = np.isnan(raw.astype(float)) if numeric else np.array([v is None for v in raw])
    present = raw[~missing]
    distinct = np.unique(present)
    if len(distinct) < 2:
        shown = distinct[0] if len(distinct) else "missing"
        raise InterpError(f"the label {name!r} is constant ({shown} for every example that has "
                          "it); a probe needs at least two values")
    if kind == "auto":
        integral = not numeric or np.all(np.mod(present.astype(float), 1) == 0)
        kind = "class" if integral and len(distinct) <= 32 else "regression"
    if kind == "regression":
        if not numeric:
            raise InterpError(f"the label {name!r} is not numeric; use kind='class'")
        return raw.astype(float), kind, name, []
    classes = list(distinct)
    index = {v: i for i, v in enumerate(classes)}
    values = np.array([np.nan if m else index[v] for v, m in zip(raw, missing)], dtype=float)
    return values, kind, name, classes


@dataclass
class ProbeResult:
    """Scores of every cell and the weights of its (task) probe.

    rows: one dict per cell (`COLUMNS`); weights: cell -> (W [R, d] raw-space rows, b [R]),
    R = 1 for regression, K for classification (K classes; logits = x.W^T + b)."""

    target: str
    kind: str
    classes: list
    rows: list[dict]
    weights: dict = field(repr=False, default_factory=dict)
    parts: torch.Tensor | None = field(repr=False, default=None)
    raw_control: dict = field(repr=False, default_factory=dict)   # cell -> control probe's
    # own test score, before the floor at its baseline and the constant-label rule

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows, columns=COLUMNS)

    def _cell(self, site, layer, position, stack):
        stacks = sorted({k[1] for k in self.weights if k[0] == site})
        if stack is None and len(stacks) == 1:
            stack = stacks[0]
        key = (site, stack, int(layer), position)
        if key not in self.weights:
            raise InterpError(f"no probe at site {site!r}, stack {stack!r}, layer {layer}, "
                              f"position {position!r}; fitted cells: e.g. "
                              f"{', '.join(map(str, list(self.weights)[:5]))}")
        return key

    def predict(self, site: str, layer: int, position: str, X: torch.Tensor,
                stack: str | None = None) -> torch.Tensor:
        """The probe's prediction for raw activations X [n, d]: class indices into
        `classes` [n] (long), or values [n] (float)."""
        W, b = self.weights[self._cell(site, layer, position, stack)]
        out = X.double() @ W.T + b
        return out.argmax(-1) if self.kind == "class" else out[:, 0]

    def direction(self, site: str, layer: int, position: str, stack: str | None = None
                  ) -> torch.Tensor:
        """[rank, d_model] float32 orthonormal rows spanning the probe's weights in raw
        activation space: rank 1 for regression and binary classes, K - 1 for K classes
        (the weights centred over classes: softmax ignores a shared row; K counts the
        classes the cell's training rows hold)."""
        W, b = self.weights[self._cell(site, layer, position, stack)]
        if self.kind == "class":
            W = W[b > NO_LOGIT / 10]          # the classes the probe was trained on
            if len(W) < 2:
                raise InterpError(f"the probe at {site} layer {layer} {position} was trained "
                                  "on one class; it has no direction")
            W = W - W.mean(0, keepdim=True)
        rank = 1 if self.kind == "regression" or W.shape[0] <= 2 else W.shape[0] - 1
        _, _, Vh = torch.linalg.svd(W, full_matrices=False)
        return Vh[:rank].float()

    def figure(self, metric: str = "score"):
        """plotly heatmaps, layer x position, one panel per (site, stack)."""
        import plotly.graph_objects as go
        from plotly.subplots import make_subplots

        from interp.viz.figures import esc, esc_all

        if metric not in ("score", "control", "selectivity", "baseline", "positional"):
            raise InterpError(f"unknown metric {metric!r}; choose score, control, "
                              "selectivity, baseline or positional")
        df = self.frame()
        panels = list(dict.fromkeys(zip(df["site"], df["stack"])))
        fig = make_subplots(rows=len(panels), cols=1, subplot_titles=[
            esc(f"{site} ({stack})") for site, stack in panels], vertical_spacing=0.12)
        for r, (site, stack) in enumerate(panels, 1):
            part = df[(df["site"] == site) & (df["stack"] == stack)]
            grid = part.pivot(index="layer", columns="position", values=metric)
            grid = grid[list(dict.fromkeys(part["position"]))]
            fig.add_trace(go.Heatmap(z=grid.values, x=esc_all(grid.columns),
                                     y=[f"layer {l}" for l in grid.index], colorscale="RdBu",
                                     zmid=0, coloraxis=None, showscale=r == 1), r, 1)
        name = df["metric"].iloc[0] if len(df) else ""
        fig.update_layout(title=esc(f"{self.target}: {metric} ({name})"),
                          height=260 * len(panels) + 80)
        return fig


def fit(acts, labels, kind: str = "auto", control: bool = True, seed: int = 0,
        split: Sequence[float] = (0.6, 0.2, 0.2), alphas: Sequence[float] | None = None,
        cells: Sequence[tuple] | None = None, classes=None, positional: bool = True,
        n_boot: int = N_BOOT) -> ProbeResult:
    """Probe every (site, stack, layer, position) cell of `acts` (or only `cells`, tuples
    (site, stack, layer, position)) for `labels` (a target name of the task or an array
    [n_examples]). See the module docstring; `alphas` are sklearn's L2 units (Ridge alpha,
    LogisticRegression C = 1/alpha). classes: [n] labels of each example's class for the
    within-class metrics of a regression target (default: the examples' `cls`; none for
    raw text). positional: also fit the positional baseline (needs `acts.embed`)."""
    y, kind, name, classes_ = resolve_labels(acts, labels, kind)
    part = split_groups(acts.groups, split, seed)
    grid = torch.tensor(alphas if alphas is not None else
                        RIDGE_ALPHAS if kind == "regression" else LOGISTIC_ALPHAS,
                        dtype=torch.float64)
    ctrl = control_labels(acts.types, acts.keys, y, seed) if control else None
    cls = _example_classes(acts, classes) if kind == "regression" else None
    todo = _cells(acts, cells)
    res = ProbeResult(name, kind, classes_, [], {}, part)
    groups = acts.groups.numpy()
    budget = max(1, CELL_BUDGET // max(1, acts.n * acts.d_model))
    chunks = [todo[start:start + budget] for start in range(0, len(todo), budget)]
    # launched over several processes: the chunks (one batched fit each) are shared out and
    # gathered in order, so every process ends with what one process computes; a grid of
    # fewer chunks than processes is fitted whole by each process (the same result)
    shared = dist.launched() and len(chunks) >= dist.size()
    for chunk in dist.shard(chunks, "chunks of probe cells") if shared else chunks:
        X = torch.stack([acts.store[(s, st, l)][:, j] for s, st, l, _, j in chunk])
        cols = [acts.position_index(k) for *_, k, _ in chunk]
        has = acts.present[:, cols].T                                   # [C, n]
        Ys = [torch.from_numpy(y).expand(len(chunk), -1)]
        if control:
            Ys.append(torch.from_numpy(ctrl[:, cols].T))
        task, *rest = _fit_chunk(X, Ys, has, part, kind, len(classes_), grid)
        ctl = rest[0] if rest else None
        for c, (s, st, l, k, _) in enumerate(chunk):
            score = task["score"][c]
            test = task["test"][c]
            row = {"site": s, "stack": st, "layer": l, "position": k, "target": name,
                   "kind": kind, "n_train": task["n_train"][c], "n_test": task["n_test"][c],
                   "n_eq_test": len(np.unique(groups[test])),
                   "metric": "accuracy" if kind == "class" else "r2", "score": score,
                   "baseline": task["baseline"][c], "alpha": task["alpha"][c]}
            row["score_lo"], row["score_hi"] = _interval(kind, task, c, y, groups, n_boot, seed)
            if ctl is not None:
                res.raw_control[(s, st, l, k)] = ctl["score"][c]
            cscore = math.nan
            if ctl is not None and _varies(ctrl[:, cols[c]], has[c].numpy()):
                cscore = max(ctl["score"][c], ctl["baseline"][c])
            row["control"], row["selectivity"] = cscore, score - cscore
            row["positional"] = math.nan
            row.update(within_class(cls, y, task["pred"][c], part, has[c].numpy())
                       if cls is not None else
                       {"within_r2": math.nan, "class_r2": math.nan, "within_r2_by_class": ""})
            res.rows.append(row)
            res.weights[(s, st, l, k)] = (task["W"][c], task["b"][c])
    if shared:
        _gather(res)
    if positional and acts.embed:
        _positional(acts, res, y, part, kind, len(classes_), grid)
    return res


def _gather(res: ProbeResult) -> None:
    """Every process's rows, weights and control scores, in the order of the chunks."""
    parts = dist.gather([(res.rows, res.weights, res.raw_control)])
    res.rows = [r for rows, _, _ in parts for r in rows]
    res.weights = {k: v for _, w, _ in parts for k, v in w.items()}
    res.raw_control = {k: v for _, _, c in parts for k, v in c.items()}


def _example_classes(acts, classes):
    """[n] object array of each example's class, or None when none is known."""
    if classes is not None:
        out = np.asarray(classes, dtype=object)
        if out.shape != (acts.n,):
            raise InterpError(f"classes have shape {out.shape}; give one class per example "
                              f"({acts.n})")
        return out
    if acts.examples and all(getattr(ex, "cls", None) is not None for ex in acts.examples):
        return np.array([ex.cls for ex in acts.examples], dtype=object)
    return None


def _varies(ctrl: np.ndarray, has: np.ndarray) -> bool:
    """Whether the control labels at a key take two values or more (else the control task
    is trivial there and says nothing)."""
    v = ctrl[has & ~np.isnan(ctrl)]
    return len(v) > 0 and bool((v != v[0]).any())


def _interval(kind, task, c, y, groups, n_boot, seed) -> tuple[float, float]:
    """95% bootstrap interval of a cell's test score, resampling equations (groups)."""
    test = task["test"][c]
    if n_boot < 1 or test.sum() < 2 or math.isnan(task["score"][c]):
        return math.nan, math.nan
    g = groups[test]
    if kind == "class":
        return bootstrap_ci(task["pred"][c][test], n_boot=n_boot, seed=seed, groups=g)
    return r2_interval(y[test], task["pred"][c][test], g, n_boot=n_boot, seed=seed)


def _positional(acts, res, y, part, kind, K, grid) -> None:
    """The positional baseline: the same probe on each position's layer-0 token+position
    features (`acts.embed`), written into every row of that (stack, position)."""
    wanted = {(r["stack"], r["position"]) for r in res.rows}
    score = {}
    for st, E in acts.embed.items():
        cols = acts.columns(st)
        todo = [(j, acts.keys[p]) for j, p in enumerate(cols) if (st, acts.keys[p]) in wanted]
        for start in range(0, len(todo), 64):
            chunk = todo[start:start + 64]
            X = torch.stack([E[:, j] for j, _ in chunk])
            has = acts.present[:, [acts.position_index(k) for _, k in chunk]].T
            out = _fit_chunk(X, [torch.from_numpy(y).expand(len(chunk), -1)], has, part,
                             kind, K, grid)[0]
            for c, (_, k) in enumerate(chunk):
                score[(st, k)] = out["score"][c]
    for r in res.rows:
        r["positional"] = score.get((r["stack"], r["position"]), math.nan)


def _cells(acts, cells):
    """[(site, stack, layer, key, column within the stack's store)] to fit."""
    out = []
    for s in acts.sites:
        for st in acts.stacks:
            cols = acts.columns(st)
            for l in acts.layers[st]:
                for j, p in enumerate(cols):
                    out.append((s, st, l, acts.keys[p], j))
    if cells is None:
        return out
    want = {(s, st, int(l), k) for s, st, l, k in cells}
    chosen = [c for c in out if c[:4] in want]
    missing = want - {c[:4] for c in chosen}
    if missing:
        raise InterpError(f"cells {sorted(missing)[:3]} are not in these activations; "
                          f"cells are (site, stack, layer, position), e.g. {out[0][:4]}")
    return chosen


def _fit_chunk(X, Ys, has, part, kind, K, grid):
    """Fit, select and score the cells of one chunk for each label set in `Ys` (the task's,
    and the control's). X [C, n, d]; Ys: list of [C, n] float (NaN = missing); has [C, n]
    bool. Both label sets are fitted in one batched call (the features are read once).
    Returns one dict per label set: per-cell lists and raw-space weights."""
    A = len(grid)
    oks = [has & ~torch.isnan(Y) for Y in Ys]
    train_rows = torch.nonzero(part == 0).flatten()
    X = X.double()
    outs = []
    if kind == "regression":
        # the control's labels are missing exactly where the task's are: one set of rows
        train0 = (oks[0] & (part == 0)[None]).double()
        Xs, mean, std = standardize(X, train0)
        Yc = torch.stack([torch.nan_to_num(Y, nan=0.0).double() for Y in Ys], 1)  # [C, J, n]
        W, b = ridge(Xs, Yc, train0, grid)                          # [C, J, A, d], [C, J, A]
        pick = torch.arange(len(X))
        for j, ok in enumerate(oks):
            train, val, test = [(ok & (part == q)[None]).double() for q in range(3)]
            yj = Yc[:, j]
            pred = torch.einsum("cnd,cad->can", Xs, W[:, j]) + b[:, j, :, None]
            best = torch.nan_to_num(_r2(pred, yj[:, None], val[:, None]), nan=-math.inf).argmax(1)
            Wb, bb = W[pick, j, best], b[pick, j, best]
            score = _r2(pred[pick, best], yj, test)
            mu = (train * yj).sum(1) / train.sum(1).clamp(min=1)
            baseline = _r2(mu[:, None].expand_as(yj), yj, test)
            outs.append(_summary(score, baseline, train, test, grid[best],
                                 (Wb / std)[:, None, :], (bb - (Wb * mean / std).sum(1))[:, None],
                                 pred[pick, best]))
        return outs
    # classification: the task's train rows decide the standardisation of every label set
    # (the control's rows are the same: its labels are missing exactly where the task's are)
    train0 = (oks[0] & (part == 0)[None]).double()
    Xs, mean, std = standardize(X, train0)
    yis = [torch.nan_to_num(Y, nan=0.0).long() for Y in Ys]
    y_all = torch.cat([yi[:, None].expand(-1, A, -1) for yi in yis], 1)[..., train_rows]
    W, b = logistic(Xs[:, train_rows].float(), y_all, train0[:, train_rows].float(),
                    grid.float().repeat(len(Ys)), K)
    W, b = W.double(), b.double()
    for j, (yi, ok) in enumerate(zip(yis, oks)):
        train, val, test = [(ok & (part == q)[None]).double() for q in range(3)]
        Wj, bj = W[:, j * A:(j + 1) * A], b[:, j * A:(j + 1) * A]     # [C, A, d, K], [C, A, K]
        logits = torch.einsum("cnd,cadk->cank", Xs, Wj) + bj[:, :, None, :]
        correct = (logits.argmax(-1) == yi[:, None]).double()
        # cross-entropy per row, capped at -log(1e-15) as sklearn's log_loss clips: a
        # validation class that the training rows lack has no logit (b = NO_LOGIT)
        ce = (torch.logsumexp(logits, -1) - logits.gather(
            -1, yi[:, None, :, None].expand(-1, A, -1, 1))[..., 0]).clamp(max=-math.log(1e-15))
        nv = val.sum(1).clamp(min=1)[:, None]
        crit = (correct * val[:, None]).sum(-1) / nv - 1e-9 * (ce * val[:, None]).sum(-1) / nv
        best = crit.argmax(1)
        pick = torch.arange(len(X))
        Wb, bb = Wj[pick, best], bj[pick, best]                         # [C, d, K], [C, K]
        nt = test.sum(1)
        score = (correct[pick, best] * test).sum(1) / nt
        counts = torch.stack([((yi == k) & (train > 0)).sum(1) for k in range(K)], 1)
        major = counts.argmax(1)
        baseline = ((yi == major[:, None]) & (test > 0)).sum(1) / nt
        outs.append(_summary(score, baseline, train, test, grid[best],
                             (Wb / std[..., None]).transpose(1, 2),
                             bb - torch.einsum("cdk,cd->ck", Wb, mean / std), correct[pick, best]))
    return outs


def _summary(score, baseline, train, test, alpha, W, b, pred):
    """Per-cell lists; `pred` [C, n]: the chosen probe's prediction (regression) or whether
    it is right (classification) on every row, `test` [C, n] bool its test rows."""
    n_train, n_test = train.sum(1), test.sum(1)
    bad = (n_train < 2) | (n_test < 1)
    score = torch.where(bad, torch.full_like(score, math.nan), score)
    return {"score": score.tolist(), "baseline": baseline.double().tolist(),
            "n_train": n_train.long().tolist(), "n_test": n_test.long().tolist(),
            "alpha": alpha.tolist(), "W": list(W), "b": list(b),
            "pred": pred.double().numpy(), "test": (test > 0).numpy()}


def _r2(pred, y, w):
    """R^2 of pred against y on the rows weighted by w (sklearn's r2_score), broadcast over
    leading dimensions; NaN with fewer than two rows or constant y."""
    n = w.sum(-1)
    mean = (w * y).sum(-1) / n.clamp(min=1)
    ss_tot = (w * (y - mean[..., None]) ** 2).sum(-1)
    ss_res = (w * (y - pred) ** 2).sum(-1)
    r2 = 1 - ss_res / ss_tot
    return torch.where((n >= 2) & (ss_tot > 0), r2, torch.full_like(r2, math.nan))
