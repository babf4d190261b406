"""Probe targets against the tasks' own solver output, read back by regular expressions, and
closed forms (carries), on 1,000 generated examples each."""

import math
import re

import pytest

from interp.tasks import get_task
from interp.tasks.base import DIGIT_NONE

N = 1000


def from_digits(t: dict, name: str) -> int | None:
    """The number |value| spelled by the digit targets `{name}_digit_k` (units first)."""
    places = sorted((int(k.rsplit("_", 1)[1]), v) for k, v in t.items()
                    if k.startswith(f"{name}_digit_"))
    if any(math.isnan(v) for _, v in places):
        return None
    digits = [int(v) for _, v in places]
    used = [d for d in digits if d != DIGIT_NONE]
    assert digits[:len(used)] == used, f"{name}: a digit above an absent place {digits}"
    return int("".join(map(str, reversed(used))))


@pytest.mark.parametrize("preset", ["small", "medium"])
def test_quadratic_targets_agree_with_the_solvers_written_solution(preset):
    task = get_task("quadratic", preset)
    info = task.probe_target_info()
    num = r"(0|-?[1-9][0-9]*)"
    for ex in task.generate(N, seed=11):
        t = task.probe_targets(ex)
        assert set(t) == set(info)
        m = re.match(rf"D=\({num}\^2-4\*{num}\*{num}\)={num};", task.solve(ex.src))
        b, a, c, D = map(int, m.groups())
        assert t["class"] == ("two", "one", "none").index(task.classify(ex.src)) == \
            ("two", "one", "none").index(ex.cls)
        assert t["D_sign"] == (D > 0) - (D < 0)
        assert t["D_value"] == pytest.approx(math.copysign(math.log10(1 + abs(D)), D))
        assert (t["abs_b"], t["ac"]) == (abs(b), a * c)
        for name, v in (("a", a), ("b", b), ("c", c), ("D", D)):
            assert from_digits(t, name) == abs(v)
        xs = re.findall(rf"x=\({num}[-+]{num}\)/\(2\*{num}\)={num};", ex.tgt)
        if ex.cls == "none":
            assert "x=nan;" in ex.tgt
            assert all(math.isnan(t[k]) for k in ("s", "x1", "x2", "x1_digit_0", "s_digit_0"))
            continue
        (_, s1, _, x1), (_, s2, _, x2) = [tuple(map(int, g)) for g in xs]
        assert s1 == s2 == t["s"] and (t["x1"], t["x2"]) == (x1, x2)
        assert task.check(ex.src, ex.tgt).ok
        for name, v in (("s", s1), ("x1", x1), ("x2", x2)):
            assert from_digits(t, name) == abs(v)


def test_quadratic_target_info_names_each_kind_and_a_scale_for_regression():
    info = get_task("quadratic", "small").probe_target_info()
    for name, text in info.items():
        kind, _, desc = text.partition(": ")
        assert kind in ("class", "regression") and desc, name
        if kind == "regression":
            assert "scale" in desc
    assert info["D_sign"].startswith("class") and info["D_value"].startswith("regression")


def test_arithmetic_targets_agree_with_the_solver_and_column_arithmetic():
    task = get_task("arithmetic")
    for ex in task.generate(N, seed=12):
        t = task.probe_targets(ex)
        assert set(t) == set(task.probe_target_info())
        a, op, b = re.match(r"^(\d+)([+-])(\d+)=$", ex.src).groups()
        a, b = int(a), int(b)
        assert t["result"] == int(task.solve(ex.src)) == int(ex.tgt)
        assert t["op"] == (op == "-")
        assert from_digits(t, "result") == int(ex.tgt)
        for k in range(3):
            m = 10 ** (k + 1)
            # closed forms: column k carries when the low k+1 digits overflow, borrows when
            # those of a are smaller than those of b
            want = (a % m + b % m >= m) if op == "+" else (a % m < b % m)
            assert t[f"carry_{k}"] == int(want), (ex.src, k)
