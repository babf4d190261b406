"""The quadratic task: generator, exact checker, roles and the typed-equation parser."""

import math
import random

import pytest
from hypothesis import given, settings, strategies as st

from interp.errors import TaskError
from interp.tasks import QuadraticTask, get_task, is_heldout, split_examples
from interp.tasks.quadratic import PRESETS, parse_equation, read_input
from interp.tasks.tokenizer import CHARS

README_IN = "7x^2+3556x+451612=0"
README_OUT = ("D=(3556^2-4*7*451612)=0;x=(-3556-0)/(2*7)=-254;x=(-3556+0)/(2*7)=-254;"
              "x=-254;x=-254;")


def oracle(a, b, c):
    """Independent solution: roots by exact rational arithmetic, no shared code."""
    d = b * b - 4 * a * c
    if d < 0:
        return d, None
    s = math.isqrt(d)
    assert s * s == d
    from fractions import Fraction
    r = sorted([Fraction(-b - s, 2 * a), Fraction(-b + s, 2 * a)])
    assert all(x.denominator == 1 for x in r)
    return d, (s, int(r[0]), int(r[1]))


def test_readme_example_is_reproduced_exactly():
    assert QuadraticTask("seed").solve(README_IN) == README_OUT


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_generated_example_passes_the_checker_and_the_oracle(preset):
    task = get_task("quadratic", preset)
    for ex in task.generate(600, seed=3):
        assert task.check(ex.src, ex.tgt).ok, ex
        a, b, c = read_input(ex.src)
        d, r = oracle(a, b, c)
        assert f")={d};" in ex.tgt
        if r is None:
            assert ex.tgt.endswith(";x=nan;") and ex.cls == "none"
        else:
            s, x1, x2 = r
            assert ex.tgt.endswith(f"x={x1};x={x2};")
            assert ex.cls == ("one" if d == 0 else "two")


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_generator_respects_the_preset_ranges(preset):
    task = get_task("quadratic", preset)
    rg = PRESETS[preset]
    for ex in task.generate(500, seed=5):
        a, b, c = read_input(ex.src)
        if ex.cls == "none":
            assert 0 < abs(a) <= rg.coef_max and 0 < abs(b) <= rg.coef_max
            assert 0 < abs(c) <= rg.coef_max
        else:
            assert 1 <= a <= rg.k_max
            _, (s, x1, x2) = oracle(a, b, c)
            assert 0 < abs(x1) <= rg.root_max and 0 < abs(x2) <= rg.root_max
            if ex.cls == "two":
                assert x1 != x2 and x1 != -x2


def test_the_original_generator_bugs_are_not_reproduced():
    task = QuadraticTask("seed")
    # b < 0: no doubled parenthesis or doubled sign
    assert task.solve("2x^2-26x+60=0") == ("D=(-26^2-4*2*60)=196;x=(26-14)/(2*2)=3;"
                                           "x=(26+14)/(2*2)=10;x=3;x=10;")
    # c == 1: a is kept (1x^2-2x+1 -> a = 1 written everywhere)
    assert task.solve("1x^2-2x+1=0") == ("D=(-2^2-4*1*1)=0;x=(2-0)/(2*1)=1;x=(2+0)/(2*1)=1;"
                                         "x=1;x=1;")
    # a == b: answers are right (x^2+x... with a == b == 3: 3x^2+3x-6 = 3(x-1)(x+2))
    assert task.solve("3x^2+3x-6=0").endswith("x=-2;x=1;")


def test_class_mix_is_exact_and_configurable():
    task = get_task("quadratic", "small")
    exs = task.generate(1000, seed=0)
    counts = {c: sum(e.cls == c for e in exs) for c in ("two", "one", "none")}
    assert counts == {"two": 500, "one": 300, "none": 200}
    custom = QuadraticTask("small", mix={"two": 1, "none": 1})
    exs = custom.generate(10, seed=0)
    assert sorted(e.cls for e in exs) == ["none"] * 5 + ["two"] * 5
    for e in exs:
        assert custom.classify(e.src) == e.cls


def test_same_seed_same_examples_and_other_seed_differs():
    task = get_task("quadratic", "medium")
    assert task.generate(50, seed=9) == task.generate(50, seed=9)
    assert task.generate(50, seed=9) != task.generate(50, seed=10)


def test_split_has_no_input_in_both_parts():
    task = get_task("quadratic", "small")
    rows = task.generate(3000, seed=1)  # the small preset repeats inputs often
    assert len({r.src for r in rows}) < len(rows)
    train, test = split_examples(rows, 0.2)
    assert not {e.src for e in train} & {e.src for e in test}
    assert abs(len(test) / (len(train) + len(test)) - 0.2) < 0.01


def test_heldout_partition_is_respected_by_the_generator():
    task = get_task("quadratic", "small")
    assert all(is_heldout(e.src) for e in task.generate(200, seed=2, heldout=True))
    assert not any(is_heldout(e.src) for e in task.generate(200, seed=2, heldout=False))


def _corruptions(text):
    alphabet = sorted(set(CHARS))
    for i in range(len(text)):
        yield text[:i] + text[i + 1:]  # deletion
        for ch in alphabet:
            if ch != text[i]:
                yield text[:i] + ch + text[i + 1:]  # substitution
    for i in range(len(text) + 1):
        for ch in alphabet:
            yield text[:i] + ch + text[i:]  # insertion


@pytest.mark.parametrize("cls", ["two", "one", "none"])
def test_checker_rejects_every_single_character_corruption(cls):
    task = QuadraticTask("small", mix={cls: 1})
    for ex in task.generate(3, seed=11):
        for bad in _corruptions(ex.tgt):
            if bad == ex.tgt:
                continue
            verdict = task.check(ex.src, bad)
            assert not verdict.ok, (ex.tgt, bad)
            assert verdict.error


def test_checker_names_the_wrong_step():
    task = QuadraticTask("seed")
    wrong_d = README_OUT.replace(")=0;", ")=4;", 1)
    v = task.check(README_IN, wrong_d)
    assert v.steps["D_value"] is False and v.steps["D_expr"] is True
    assert v.steps["x1_value"] is True and v.error.startswith("D_value")
    wrong_x2 = README_OUT.replace("(2*7)=-254;x=-254", "(2*7)=-253;x=-254")
    v = task.check(README_IN, wrong_x2)
    assert v.steps["x2_value"] is False and v.steps["x1_value"] is True
    v = task.check(README_IN, README_OUT.replace("-0)", "-2)"))
    assert v.steps["sqrt"] is False and v.steps["x1_expr"] is True
    none = task.solve("1x^2+1x+1=0")
    assert none == "D=(1^2-4*1*1)=-3;x=nan;"
    v = task.check("1x^2+1x+1=0", "D=(1^2-4*1*1)=-3;x=1;")
    assert v.steps["nan"] is False and v.steps["x1_value"] is None


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 2**32), st.sampled_from(sorted(PRESETS)))
def test_checker_accepts_exactly_the_solution(seed, preset):
    task = get_task("quadratic", preset)
    ex = task.sample(random.Random(seed))
    assert task.check(ex.src, ex.tgt).ok
    other = task.sample(random.Random(seed + 1))
    if other.tgt != ex.tgt:
        assert not task.check(ex.src, other.tgt).ok


def _typed_variants(a, b, c):
    """Ways a person types the same equation."""
    def term(v, var, first):
        sign = "-" if v < 0 else ("" if first else "+")
        mag = abs(v)
        coef = "" if (var and mag == 1) else str(mag)
        return f"{sign}{coef}{var}"
    yield f"{a}x^2{b:+d}x{c:+d}=0"
    yield term(a, "x^2", True) + term(b, "x", False) + term(c, "", False) + "=0"
    yield " " + " ".join([term(a, "x^2", True), term(b, "x", False), term(c, "", False)]) + " = 0 "
    yield term(c, "", True) + term(b, "x", False) + term(a, "x^2", False) + "=0"


@settings(max_examples=150, deadline=None)
@given(st.integers(0, 2**32))
def test_typed_parser_round_trips_generated_inputs(seed):
    task = get_task("quadratic", "medium")
    ex = task.sample(random.Random(seed))
    abc = read_input(ex.src)
    for typed in _typed_variants(*abc):
        assert parse_equation(typed) == abc
        assert task.parse(typed) == ex.src


def test_typed_parser_reads_the_issue_examples():
    assert parse_equation("7x^2+3556x+451612=0") == (7, 3556, 451612)
    assert parse_equation("x^2-2x+1=0") == (1, -2, 1)
    assert parse_equation("x^2 - 4 = 0") == (1, 0, -4)
    # real roots with a < 0 are multiplied by -1 into the canonical form
    assert QuadraticTask("small").parse("-x^2+4=0") == "1x^2+0x-4=0"


@pytest.mark.parametrize("bad, pos", [
    ("7x^2+3556x+451612", 17), ("7x^3+1=0", 3), ("7y^2+1=0", 1), ("x^2+x+x=0", 5),
    ("x^2++1=0", 4), ("x^2+1=5", 6), ("x^2+1=0 junk", 8), ("", 0),
])
def test_typed_parser_rejects_malformed_input_naming_the_position(bad, pos):
    with pytest.raises(TaskError, match=f"position {pos}"):
        parse_equation(bad)


def test_parser_rejects_non_quadratics_and_non_integer_roots():
    with pytest.raises(TaskError, match="a != 0"):
        parse_equation("2x+1=0")
    with pytest.raises(TaskError, match="not a perfect square"):
        QuadraticTask("small").parse("x^2-2=0")
    with pytest.raises(TaskError, match="not integers"):
        QuadraticTask("small").parse("2x^2-3x+1=0")


def test_roles_cover_every_character_and_name_the_fields():
    task = QuadraticTask("seed")
    src_roles, out_roles = task.roles(README_IN)
    assert len(src_roles) == len(README_IN) and len(out_roles) == len(README_OUT)
    assert src_roles[:5] == ["a_digit", "x", "^", "2", "b_sign"]
    assert [r for r, ch in zip(src_roles, README_IN) if ch == "="] == ["="]
    assert src_roles[-1] == "0" and src_roles.count("c_digit") == 6
    # the D value '0' and the roots' digits
    d_pos = README_OUT.index(")=0;") + 2
    assert out_roles[d_pos] == "D_value_digit"
    x1_pos = README_OUT.index("=-254;") + 1
    assert out_roles[x1_pos] == "x1_sign" and out_roles[x1_pos + 1] == "x1_digit"
    assert out_roles[-1] == ";" and out_roles[-4] == "x2_final_digit"
    none_roles = task.roles("1x^2+1x+1=0")[1]
    assert none_roles[-4:-1] == ["nan"] * 3


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 2**32))
def test_roles_digits_rebuild_the_numbers(seed):
    task = get_task("quadratic", "seed")
    ex = task.sample(random.Random(seed))
    a, b, c = read_input(ex.src)
    src_roles, out_roles = task.roles(ex.src)
    def field(text, roles, name):
        return "".join(ch for ch, r in zip(text, roles) if r in (f"{name}_sign", f"{name}_digit"))
    assert int(field(ex.src, src_roles, "c")) == c
    assert int(field(ex.tgt, out_roles, "Dexpr_b")) == b
    assert int(field(ex.tgt, out_roles, "D_value")) == b * b - 4 * a * c


def test_unknown_preset_and_class_are_task_errors():
    with pytest.raises(TaskError, match="seed, small, medium"):
        QuadraticTask("huge")
    with pytest.raises(TaskError, match="classes are"):
        QuadraticTask("small", mix={"three": 1})
    with pytest.raises(TaskError, match="canonical input"):
        QuadraticTask("small").solve("x^2-2x+1=0")
