"""Concept erasure that removes what it claims, checked before anything is concluded from it.

    er = leace(X_train, labels_train, "regression")      # or inlp(X, y, kind, parts)
    er.apply(X)                                          # x - (x - mean) Q^T, every row
    fresh_probe(er.apply(X), y, kind, parts)             # score on test rows vs baseline
    res = erasure_check(bridge, task, acts, probe_result, "resid_pre", 2, ["in:=#0"])
    res.frame(); res.power; res.verdict                   # power check first

Erasers (all affine, `r(x) = x - (x - mean) Q^T`, Q a `[d, d]` projection, fitted on the
training rows and applied to every row):

- **LEACE** (Belrose et al. 2023, "LEACE: perfect linear concept erasure in closed form"):
  with the training covariance `S = Cov(x)` and cross-covariance `C = Cov(x, z)` (z the value
  itself for a regression target, the one-hot labels for a class target), the whitening
  `W = S^{-1/2}` (pseudo-inverse on S's range) and `U` an orthonormal basis of the column
  space of `W C`, `Q = W^+ U U^T W`. After it, `Cov(r(x), z) = 0` on the training rows, so no
  linear predictor of z beats a constant there, and among all affine erasures with that
  property it moves x least in the mean squared (Mahalanobis) sense. Rank: rank(C) (1 for a
  regression target, K - 1 for K classes).
- **Iterated INLP** (Ravfogel et al. 2020): fit a linear probe (ridge / logistic, penalty on
  the validation rows), add its direction(s) to a basis V, project the training activations
  onto V's complement (`Q = V^T V`), fit again; stop when a fresh probe on the validation
  rows is at baseline (`at_baseline`), or at `MAX_INLP_RANK` dimensions or half of d_model,
  whichever is fewer (then it failed).
- **Random** (the control): `Q = V^T V` with V a uniformly random orthonormal basis of the
  same rank, the same mean, at the same positions.

Power check (`fresh_probe`, `at_baseline`): a probe fitted anew on the erased training rows,
its penalty chosen on the validation rows, scored on the test rows (split by equation, the
probe grid's split). The erasure reached baseline where `score - baseline <= MARGIN` (0.02:
accuracy points or R^2). `erasure_check` runs it at the erased positions and, with the
erasure applied during the forward pass, at the same positions one layer on (the model may
rebuild what was erased); only when both are at baseline does the loss effect against random
erasures get a "used" / "not used" verdict (`circuits.stats.verdict`). Otherwise the erasure
failed, says so, and the check falls back on an **interchange intervention**: the erased
subspace's component of each test example is replaced by that of a donor of the same layout
(the same aligned keys at the same token indices) whose target differs,
`x <- x - (x - x_donor) Q^T`, against random subspaces of equal rank swapped the same way;
if the answer depends on what the subspace holds, swapping it costs more than swapping
random subspaces.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from interp.errors import InterpError
from probes.estimators import NO_LOGIT, logistic, ridge, standardize

#: a fresh probe at most this much above its baseline (accuracy points, or R^2) is "at
#: baseline": the erasure removed what a linear probe can read
MARGIN = 0.02
#: a position holds the target when its task probe beats the baseline by this much
HOLDS = 0.05
#: iterated INLP stops here (dimensions removed) and reports that it failed
MAX_INLP_RANK = 32
METHODS = ("leace", "inlp")
RIDGE_ALPHAS = (1e-2, 1e-1, 1.0, 10.0, 100.0, 1e3, 1e4)
LOGISTIC_ALPHAS = (1e-2, 1e-1, 1.0, 10.0, 100.0)
SHOWN = ("answer_loss", "exact_match", "field:D_value", "loss:D_value")


@dataclass
class Eraser:
    """An affine erasure `r(x) = x - (x - mean) Q^T` (float64 `mean: [d]`, `Q: [d, d]`)."""

    method: str
    mean: torch.Tensor
    Q: torch.Tensor
    rank: int
    whiten: tuple | None = field(default=None, repr=False)    # LEACE: (W, W^+, range basis)

    def apply(self, X: torch.Tensor) -> torch.Tensor:
        Xd = torch.as_tensor(X).double()
        return (Xd - (Xd - self.mean) @ self.Q.T).to(torch.as_tensor(X).dtype)

    def swap(self, X: torch.Tensor, donor: torch.Tensor) -> torch.Tensor:
        """X with its Q-component replaced by the donor's: `x - (x - x_donor) Q^T`."""
        Xd = torch.as_tensor(X).double()
        return (Xd - (Xd - torch.as_tensor(donor).double()) @ self.Q.T).to(
            torch.as_tensor(X).dtype)

    def moved(self, X: torch.Tensor) -> float:
        """Mean norm of what the erasure changes in the rows X."""
        return float((self.apply(X).double() - torch.as_tensor(X).double()).norm(dim=1).mean())


def _concept(y: np.ndarray, kind: str, K: int | None = None) -> torch.Tensor:
    """z `[n, k]`: the value for regression, the one-hot labels for classes."""
    y = np.asarray(y, dtype=float)
    if kind == "regression":
        return torch.from_numpy(y)[:, None].double()
    K = int(K if K is not None else np.nanmax(y) + 1)
    return torch.nn.functional.one_hot(torch.from_numpy(y).long(), K).double()


def leace(X: torch.Tensor, y, kind: str, K: int | None = None, tol: float = 1e-9) -> Eraser:
    """The LEACE eraser of the concept `y` (`[n]` values or class indices) from the rows
    `X: [n, d]` (the training rows): see the module docstring."""
    Xd = torch.as_tensor(X).double()
    if len(Xd) < 2:
        raise InterpError(f"LEACE needs at least two training rows, got {len(Xd)}")
    Z = _concept(y, kind, K)
    mu = Xd.mean(0)
    Xc, Zc = Xd - mu, Z - Z.mean(0)
    n = len(Xd)
    S = Xc.T @ Xc / n
    C = Xc.T @ Zc / n                                                   # [d, k]
    e, V = torch.linalg.eigh(S)
    keep = e > tol * max(float(e.max()), 1e-300)
    r = torch.zeros_like(e)
    r[keep] = e[keep].rsqrt()
    W = (V * r) @ V.T                                                   # S^{-1/2} on range(S)
    s = torch.zeros_like(e)
    s[keep] = e[keep].sqrt()
    W_pinv = (V * s) @ V.T                                              # S^{1/2}
    u, sv, _ = torch.linalg.svd(W @ C, full_matrices=False)
    U = u[:, sv > tol ** 0.5 * max(float(sv.max()) if len(sv) else 0.0, 1e-300)]
    Q = W_pinv @ U @ U.T @ W
    return Eraser("leace", mu, Q, int(U.shape[1]), (W, W_pinv, V[:, keep]))


def orthogonal(V: torch.Tensor, mean: torch.Tensor, method: str = "random") -> Eraser:
    """The erasure of the orthonormal rows `V: [rank, d]` around `mean` (INLP, controls)."""
    V = torch.as_tensor(V).double()
    d = len(mean)
    Q = V.T @ V if len(V) else torch.zeros(d, d, dtype=torch.float64)
    return Eraser(method, torch.as_tensor(mean).double(), Q, int(len(V)))


def random_like(er: Eraser, rng: np.random.Generator) -> Eraser:
    """The control of `er`: an erasure of the same rank around the same mean along random
    directions. For LEACE the directions are uniformly random in the whitened space (within
    the data's range) and erased by LEACE's own form `W^+ U_r U_r^T W`: every whitened
    direction carries unit variance, so the control removes exactly as much (Mahalanobis)
    variance as the target; otherwise a uniformly random orthogonal projection."""
    d = len(er.mean)
    if er.rank == 0:
        return orthogonal(torch.zeros(0, d), er.mean)
    if er.whiten is not None:
        W, W_pinv, R = er.whiten
        g = torch.from_numpy(rng.standard_normal((R.shape[1], er.rank)))
        U, _ = torch.linalg.qr(R @ g)
        return Eraser("random", er.mean, W_pinv @ U @ U.T @ W, er.rank, er.whiten)
    q, r = np.linalg.qr(rng.standard_normal((d, er.rank)))
    return orthogonal(torch.from_numpy((q * np.sign(np.diag(r))).T.copy()), er.mean)


def fresh_probe(X: torch.Tensor, y, kind: str, parts, K: int | None = None,
                train: int = 0, select: int = 1, score_on: int = 2) -> dict:
    """A new linear probe: fitted on the rows with `parts == train`, its L2 penalty chosen on
    `select`, scored on `score_on` (R^2 or accuracy) beside the baseline (training mean, or
    the training majority class). Rows with a NaN label are left out.
    Returns {score, baseline, excess, n_train, n_test, direction `[k, d]` raw-space rows}."""
    X = torch.as_tensor(X).double()
    y = np.asarray(y, dtype=float)
    parts = torch.as_tensor(np.asarray(parts))
    ok = torch.from_numpy(~np.isnan(y))
    rows = [ok & (parts == q) for q in (train, select, score_on)]
    n_train, n_test = int(rows[0].sum()), int(rows[2].sum())
    if n_train < 2 or n_test < 1:
        return {"score": math.nan, "baseline": math.nan, "excess": math.nan,
                "n_train": n_train, "n_test": n_test, "direction": torch.zeros(0, X.shape[1])}
    w = rows[0].double()[None]
    Xs, mean, std = standardize(X[None], w)
    yt = torch.from_numpy(np.nan_to_num(y, nan=0.0))
    if kind == "regression":
        grid = torch.tensor(RIDGE_ALPHAS, dtype=torch.float64)
        W, b = ridge(Xs, yt[None], w, grid)                              # [1, A, d], [1, A]
        pred = torch.einsum("nd,ad->an", Xs[0], W[0]) + b[0][:, None]    # [A, n]
        val = [_r2(p, yt, rows[1]) for p in pred]
        best = int(np.argmax([v if v == v else -math.inf for v in val]))
        score = _r2(pred[best], yt, rows[2])
        mu = float(yt[rows[0]].mean())
        baseline = _r2(torch.full_like(yt, mu), yt, rows[2])
        direction = (W[0, best] / std[0])[None]
    else:
        K = int(K if K is not None else np.nanmax(y) + 1)
        grid = torch.tensor(LOGISTIC_ALPHAS, dtype=torch.float32)
        tr = torch.nonzero(rows[0]).flatten()
        yi = yt.long()
        Wl, bl = logistic(Xs[:, tr].float(), yi[tr][None, None].expand(1, len(grid), -1),
                          torch.ones(1, len(tr)), grid, K)
        Wl, bl = Wl[0].double(), bl[0].double()                           # [A, d, K], [A, K]
        pred = (torch.einsum("nd,adk->ank", Xs[0], Wl) + bl[:, None]).argmax(-1)  # [A, n]
        acc = [(pred[:, r] == yi[r]).double().mean(1) for r in rows]
        best = int(acc[1].argmax())
        score = float(acc[2][best])
        major = int(np.bincount(yi[rows[0]].numpy(), minlength=K).argmax())
        baseline = float((yi[rows[2]] == major).double().mean())
        Wk = (Wl[best] / std[0][:, None]).T                              # [K, d]
        Wk = Wk[bl[best] > NO_LOGIT / 10]                                  # classes it was fit on
        direction = Wk - Wk.mean(0, keepdim=True)
    return {"score": float(score), "baseline": float(baseline),
            "excess": float(score) - float(baseline), "n_train": n_train, "n_test": n_test,
            "direction": direction.float()}


def _r2(pred, y, rows) -> float:
    yr, pr = y[rows], pred[rows]
    ss = float(((yr - yr.mean()) ** 2).sum())
    return 1 - float(((yr - pr) ** 2).sum()) / ss if len(yr) >= 2 and ss > 0 else math.nan


def at_baseline(probe: dict, margin: float = MARGIN) -> bool:
    """Whether a fresh probe's score is within `margin` of its baseline (NaN: False)."""
    return bool(probe["excess"] == probe["excess"] and probe["excess"] <= margin)


def inlp(X: torch.Tensor, y, kind: str, parts, K: int | None = None,
         max_rank: int = MAX_INLP_RANK, margin: float = MARGIN) -> tuple[Eraser, list[dict]]:
    """Iterated INLP: remove probe directions (fitted on the training rows, `parts == 0`)
    until a fresh probe scored on the validation rows (`parts == 1`) is at baseline, or
    `max_rank` dimensions (at most half of d) are gone. Returns the eraser and one dict per step
    (rank, validation score, baseline); the eraser's method is "inlp" if it reached
    baseline, "inlp (failed)" if it stopped at `max_rank`."""
    Xd = torch.as_tensor(X).double()
    parts = torch.as_tensor(np.asarray(parts))
    mean = Xd[parts == 0].mean(0)
    max_rank = min(max_rank, Xd.shape[1] // 2)   # more than half the space is not a concept
    basis = torch.zeros(0, Xd.shape[1], dtype=torch.float64)
    steps = []
    while True:
        er = orthogonal(basis, mean, "inlp")
        p = fresh_probe(er.apply(Xd), y, kind, parts, K, score_on=1)
        steps.append({"rank": len(basis), "score": p["score"], "baseline": p["baseline"]})
        if at_baseline(p, margin):
            return er, steps
        if len(basis) >= max_rank or len(p["direction"]) == 0:
            er.method = "inlp (failed)"
            return er, steps
        for row in p["direction"].double():
            for _ in range(2):
                row = row - (basis @ row) @ basis if len(basis) else row
            n = float(row.norm())
            if n > 1e-8 and len(basis) < max_rank:
                basis = torch.cat([basis, (row / n)[None]])


def holding_positions(frame: pd.DataFrame, layer: int, stack=None, holds: float = HOLDS
                      ) -> list[str]:
    """The positions of `layer` whose task probe beats its baseline by `holds` (the probe
    grid's `frame()`): the places that hold the target."""
    g = frame[frame["layer"] == layer]
    if stack is not None and "stack" in g.columns:
        g = g[g["stack"] == stack]
    return [str(r.position) for r in g.itertuples() if r.score - r.baseline >= holds]
