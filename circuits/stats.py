"""Statistics shared by the causal tools: bootstrap intervals and control-rank p-values.

Pure functions on tensors/arrays; every random draw takes a seed.
"""

from __future__ import annotations

import numpy as np

from interp.stats import bootstrap_ci, distinct  # noqa: F401  (re-exported: one home)


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


#: the significance level every verdict is judged at
ALPHA = 0.05


def p_floor(n_controls: int) -> float:
    """The smallest control-rank p-value `n_controls` controls can give: 1 / (n + 1)."""
    return 1.0 / (1 + n_controls)


def min_controls(alpha: float = ALPHA) -> int:
    """The fewest controls whose p-value floor reaches `alpha` (19 for 0.05)."""
    n = int(np.ceil(1.0 / alpha - 1 - 1e-9))
    return max(n, 0)


def testable(n_controls: int, alpha: float = ALPHA) -> bool:
    """Whether `n_controls` controls can reach p <= alpha at all."""
    return p_floor(n_controls) <= alpha + 1e-12


def verdict(ci_low: float, p: float, n_controls: int, alpha: float = ALPHA) -> str:
    """One word for a target-versus-control test: "untestable" when `n_controls` cannot
    reach `alpha` (the floor 1/(n+1) is above it; never a silent "not confirmed"),
    "confirmed" when the interval is above 0 and p <= alpha, else "not confirmed"."""
    if not testable(n_controls, alpha):
        return "untestable"
    if np.isnan(ci_low) or np.isnan(p):
        return "not confirmed"
    return "confirmed" if (ci_low > 0 and p <= alpha) else "not confirmed"


def untestable_note(n_controls: int, alpha: float = ALPHA) -> str:
    """The line printed beside a verdict that `n_controls` cannot reach."""
    return (f"untestable at {n_controls} controls: the smallest p-value they can give is "
            f"1/{n_controls + 1} = {p_floor(n_controls):.3f} > {alpha}; use --controls "
            f"{min_controls(alpha)} or more")





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


__all__ = ["bootstrap_ci", "rank_p_value", "spearman", "distinct", "ALPHA", "p_floor",
           "min_controls", "testable", "verdict", "untestable_note"]
