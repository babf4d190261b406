"""circuits.stats against oracles that share none of its code: the bootstrap's exact
distribution by enumeration, the rank p-value counted by hand, Spearman by the closed form
and by pandas' own rank-correlation routine (DataFrame.corr, which never calls Series.rank)."""

import itertools
import math

import numpy as np
import pandas as pd
import pytest

from circuits.stats import bootstrap_ci, rank_p_value, spearman


def exact_bootstrap(values, level=0.95):
    """The percentile interval of the ideal bootstrap: every one of the n^n resamples of n
    values, equally likely."""
    means = [sum(c) / len(values) for c in itertools.product(values, repeat=len(values))]
    return tuple(np.quantile(means, [(1 - level) / 2, 1 - (1 - level) / 2]))


@pytest.mark.parametrize("values", [[0, 1, 3, 7, 20], [2.0, 3.0, 5.0, 11.0, 13.0, 17.0]])
def test_bootstrap_interval_is_the_exact_bootstrap_distributions(values):
    lo, hi = bootstrap_ci(values, n_boot=20000, seed=1)
    want_lo, want_hi = exact_bootstrap(values)
    assert lo == pytest.approx(want_lo, abs=0.2) and hi == pytest.approx(want_hi, abs=0.2)
    # a narrower level gives the exact distribution's narrower quantiles
    lo80, hi80 = bootstrap_ci(values, n_boot=20000, level=0.8, seed=1)
    want80 = exact_bootstrap(values, level=0.8)
    # (the means lie on a grid of step 1/n: Monte Carlo lands within two steps)
    assert lo80 == pytest.approx(want80[0], abs=0.41)
    assert hi80 == pytest.approx(want80[1], abs=0.41)


def test_bootstrap_drops_nans_and_handles_tiny_samples():
    assert bootstrap_ci([1.0, 2.0, float("nan"), 4.0], seed=3) == bootstrap_ci([1.0, 2.0, 4.0],
                                                                               seed=3)
    assert bootstrap_ci([5.0, float("nan")]) == (5.0, 5.0)
    assert all(math.isnan(v) for v in bootstrap_ci([float("nan")]))


def p_by_hand(target, controls):
    kept = [c for c in controls if c == c]
    return (1 + sum(1 for c in kept if c >= target)) / (1 + len(kept))


@pytest.mark.parametrize("target,controls", [
    (3.0, [1, 2, 3, 3, 5]),             # ties with the target count as at least as large
    (6.0, [1, 2, 3, 3, 5]),             # larger than every control: the smallest p, 1/6
    (0.0, [1, 2, 3, 3, 5]),             # smaller than every control: p = 1
    (3.0, [1, float("nan"), 5, float("nan")]),   # NaN controls are left out
])
def test_rank_p_value_counts_by_hand(target, controls):
    assert rank_p_value(target, controls) == pytest.approx(p_by_hand(target, controls))


def test_rank_p_value_is_exact_under_the_null():
    """Target and controls exchangeable: P(p <= k / (1 + m)) = k / (1 + m)."""
    rng = np.random.default_rng(0)
    m, reps = 19, 4000
    p = np.array([rank_p_value(t, c) for t, c in zip(rng.normal(size=reps),
                                                      rng.normal(size=(reps, m)))])
    for k in (1, 2, 5):
        assert abs(np.mean(p <= k / (1 + m) + 1e-12) - k / (1 + m)) < 0.02


def test_spearman_is_a_correlation_of_ranks_not_values():
    x = np.arange(1.0, 11.0)
    assert spearman(x, np.exp(x)) == pytest.approx(1.0)       # monotone, far from linear
    assert spearman(x, -x ** 3) == pytest.approx(-1.0)
    # closed form without ties: 1 - 6 sum d^2 / (n (n^2 - 1))
    a = [3.0, 1.0, 4.0, 1.5, 5.0, 9.0, 2.0, 6.0]
    b = [2.0, 7.0, 1.0, 8.0, 2.8, 18.0, 28.0, 4.0]
    ra = {v: i + 1 for i, v in enumerate(sorted(a))}
    rb = {v: i + 1 for i, v in enumerate(sorted(b))}
    n = len(a)
    d2 = sum((ra[u] - rb[v]) ** 2 for u, v in zip(a, b))
    assert spearman(a, b) == pytest.approx(1 - 6 * d2 / (n * (n * n - 1)))


def test_spearman_averages_tied_ranks_and_drops_nan_pairs():
    a = [1.0, 2.0, 2.0, 2.0, 3.0, 4.0, 5.0, 5.0]
    b = [2.0, 1.0, 4.0, 3.0, 3.0, 6.0, 5.0, 7.0]
    want = pd.DataFrame({"a": a, "b": b}).corr(method="spearman").loc["a", "b"]
    assert spearman(a, b) == pytest.approx(want)
    # by hand: ranks of a = 1, 3, 3, 3, 5, 6, 7.5, 7.5
    ra = np.array([1, 3, 3, 3, 5, 6, 7.5, 7.5])
    rb = np.array([2, 1, 5, 3.5, 3.5, 7, 6, 8])
    assert spearman(a, b) == pytest.approx(np.corrcoef(ra, rb)[0, 1])
    nan = float("nan")
    assert spearman(a + [nan, 9.0], b + [0.0, nan]) == pytest.approx(want)
    assert math.isnan(spearman([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]))
