"""Statistics shared by the causal tools: bootstrap intervals and control-rank p-values.

Pure functions on tensors/arrays; every random draw takes a seed.
"""

from __future__ import annotations

import numpy as np


def bootstrap_ci(values, n_boot: int = 2000, level: float = 0.95, seed: int = 0
                 ) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of `values` (1-D, NaNs dropped).

    Examples are resampled with replacement `n_boot` times. With fewer than two values the
    interval is (mean, mean)."""
    x = np.asarray(values, dtype=float)
    x = x[~np.isnan(x)]
    if len(x) == 0:
        return float("nan"), float("nan")
    if len(x) < 2:
        return float(x[0]), float(x[0])
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, len(x), size=(n_boot, len(x)))].mean(1)
    lo, hi = np.quantile(means, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo), float(hi)


def rank_p_value(target: float, controls) -> float:
    """One-sided Monte-Carlo permutation p-value that the target's damage is larger than that
    of randomly chosen control sets: (1 + #{controls >= target}) / (1 + #controls).

    Under the null hypothesis that the target positions are exchangeable with random ones,
    the target is one more draw from the control distribution, so this p-value is exact; its
    smallest possible value is 1 / (1 + #controls)."""
    c = np.asarray(controls, dtype=float)
    c = c[~np.isnan(c)]
    if np.isnan(target) or len(c) == 0:
        return float("nan")
    return float((1 + np.sum(c >= target)) / (1 + len(c)))



def spearman(a, b) -> float:
    """Spearman rank correlation (average ranks for ties; NaN pairs dropped)."""
    import pandas as pd

    x = np.asarray(a, dtype=float).ravel()
    y = np.asarray(b, dtype=float).ravel()
    keep = ~(np.isnan(x) | np.isnan(y))
    rx = pd.Series(x[keep]).rank().to_numpy()
    ry = pd.Series(y[keep]).rank().to_numpy()
    if len(rx) < 2 or rx.std() == 0 or ry.std() == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])


__all__ = ["bootstrap_ci", "rank_p_value", "spearman"]
