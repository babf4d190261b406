"""Independent observations: unique examples, distinct counts, the equation (cluster)
bootstrap and the p-value floor, each against an oracle of its own (a direct enumeration of
the generator's inputs, the exact bootstrap by enumerating every resample, closed forms)."""

import itertools

import numpy as np
import pytest

from circuits import stats
from interp.errors import TaskError
from interp.tasks import distinct_count, get_task, is_heldout
from test_shipped import quadratic_population, quadratic_src


def _population(preset="small"):
    r = get_task("quadratic", preset).ranges
    return {cls: {quadratic_src(*t) for t in coefs}
            for cls, coefs in quadratic_population(r.root_max, r.k_max, r.coef_max).items()}


def test_unique_examples_are_distinct_and_within_the_population():
    task = get_task("quadratic", "small")
    pop = _population()
    ex = task.generate(600, seed=3, unique=True)
    assert distinct_count(ex) == len(ex) == 600
    for e in ex:
        assert e.src in pop[e.cls]


def test_drawing_with_replacement_repeats_and_distinct_count_matches_a_set():
    task = get_task("quadratic", "small")
    ex = task.generate(2000, seed=0)
    by_hand = len(set(e.src for e in ex))
    assert distinct_count(ex) == by_hand < len(ex)   # the default draws with replacement


def test_a_spent_class_is_refused_with_the_enumerated_count():
    """The held-out one-root inputs of the small preset, enumerated from the generator's
    definition: asking for more than exist is one TaskError naming exactly that many."""
    task = get_task("quadratic", "small")
    pop = _population()
    one = [s for s in pop["one"] if is_heldout(s)]
    want = len(one) + 5
    with pytest.raises(TaskError) as err:
        task.generate(want, seed=1, mix={"one": 1.0}, heldout=True, unique=True)
    assert f"only {len(one)} distinct held-out inputs of class 'one'" in str(err.value)
    every = task.generate(len(one), seed=1, mix={"one": 1.0}, heldout=True, unique=True)
    assert sorted(e.src for e in every) == sorted(one)


def test_same_seed_same_unique_examples():
    task = get_task("quadratic", "small")
    a = task.generate(300, seed=7, unique=True)
    assert a == task.generate(300, seed=7, unique=True)
    assert a != task.generate(300, seed=8, unique=True)


def _exact_cluster_interval(values, groups, level=0.95):
    """Every resample of the clusters enumerated (m^m of them), the mean of each: the exact
    distribution the cluster bootstrap samples from; its quantiles."""
    labels = sorted(set(groups))
    sums = {g: sum(v for v, h in zip(values, groups) if h == g) for g in labels}
    cnt = {g: sum(1 for h in groups if h == g) for g in labels}
    means = [sum(sums[g] for g in pick) / sum(cnt[g] for g in pick)
             for pick in itertools.product(labels, repeat=len(labels))]
    return np.quantile(means, [(1 - level) / 2, 1 - (1 - level) / 2])


def test_cluster_bootstrap_matches_the_enumerated_resamples():
    values = [0.0, 0.1, 0.1, 0.1, 1.0, 2.0, 2.0]
    groups = ["a", "b", "b", "b", "c", "d", "d"]
    lo, hi = stats.bootstrap_ci(values, n_boot=40_000, groups=groups, seed=1)
    elo, ehi = _exact_cluster_interval(values, groups)
    assert abs(lo - elo) < 0.03 and abs(hi - ehi) < 0.03, ((lo, hi), (elo, ehi))


def test_one_row_per_group_is_the_row_bootstrap():
    x = np.random.default_rng(0).normal(size=40)
    assert stats.bootstrap_ci(x, seed=5) == stats.bootstrap_ci(x, seed=5, groups=range(40))


def test_repeated_rows_make_the_equation_interval_wider_than_the_row_interval():
    """20 equations, each seen 10 times: the row bootstrap takes 200 rows for independent
    and gives an interval about sqrt(10) too narrow; resampling equations does not."""
    rng = np.random.default_rng(0)
    per_eq = rng.normal(size=20)
    values = np.repeat(per_eq, 10)
    groups = np.repeat(np.arange(20), 10)
    rlo, rhi = stats.bootstrap_ci(values, seed=2)
    glo, ghi = stats.bootstrap_ci(values, seed=2, groups=groups)
    assert (ghi - glo) > 2.5 * (rhi - rlo)
    assert stats.distinct(groups) == 20


@pytest.mark.parametrize("n, floor", [(0, 1.0), (10, 1 / 11), (18, 1 / 19), (19, 1 / 20),
                                      (99, 0.01)])
def test_p_floor_is_one_over_n_plus_one(n, floor):
    assert stats.p_floor(n) == pytest.approx(floor)
    assert stats.testable(n) == (floor <= 0.05 + 1e-12)


def test_the_p_floor_at_ten_controls_is_reported_not_mislabelled():
    """A large effect with 10 controls cannot reach p <= 0.05: "untestable", never
    "not confirmed"; with 19 controls the same effect is confirmed."""
    assert stats.min_controls() == 19
    assert stats.verdict(0.30, stats.p_floor(10), 10) == "untestable"
    assert "1/11 = 0.091" in stats.untestable_note(10) and "19" in stats.untestable_note(10)
    assert stats.verdict(0.30, stats.p_floor(19), 19) == "confirmed"
    assert stats.verdict(-0.01, stats.p_floor(19), 19) == "not confirmed"
    assert stats.verdict(0.30, 0.2, 19) == "not confirmed"
