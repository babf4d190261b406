"""The task checkers and evaluation metrics against planted answers: every wrong output here
is written by hand (or built in the test with integer arithmetic), never by the package's own
formatter, and the verdict expected for each step is stated."""

import pytest

from interp.metrics import char_accuracy, score_outputs
from interp.tasks import ArithmeticTask, QuadraticTask
from interp.tasks.base import Example

# 2x^2 - 2x - 12 = 0 = 2 (x - 3)(x + 2): D = 4 + 96 = 100, s = 10, roots -2 and 3
SRC = "2x^2-2x-12=0"
D_ = "D=(-2^2-4*2*-12)=100"
X1 = "x=(2-10)/(2*2)=-2"
X2 = "x=(2+10)/(2*2)=3"
RIGHT = f"{D_};{X1};{X2};x=-2;x=3;"


def steps(out, src=SRC):
    v = QuadraticTask("seed").check(src, out)
    return v, {k: s for k, s in v.steps.items()}


def test_the_planted_solution_is_right_at_every_step():
    v, s = steps(RIGHT)
    assert v.ok and v.error is None and s["nan"] is None
    assert all(s[k] is True for k in s if k != "nan")


@pytest.mark.parametrize("out,wrong", [
    (f"{D_};{X1};{X2};x=3;x=-2;", "final"),                          # answers swapped
    ("D=(-2^2-4*1*-12)=100;" + f"{X1};{X2};x=-2;x=3;", "D_expr"),     # a copied wrong
    ("D=(-2^2-4*2*-12)=-100;" + f"{X1};{X2};x=-2;x=3;", "D_value"),   # D's sign
    (f"{D_};x=(2+10)/(2*2)=-2;{X2};x=-2;x=3;", "x1_expr"),           # x1 written with +s
    (f"{D_};{X1};x=(2-10)/(2*2)=3;x=-2;x=3;", "x2_expr"),            # x2 written with -s
    (f"{D_};x=(2-10)/(2*2)=3;{X2};x=-2;x=3;", "x1_value"),           # x1's value is x2
    (f"{D_};{X1};x=(2+10)/(2*2)=-2;x=-2;x=3;", "x2_value"),          # x2's value is x1
    (f"{D_};{X1};x=(2+11)/(2*2)=3;x=-2;x=3;", "sqrt"),              # one s wrong
    (f"{D_};x=(2-11)/(2*2)=-2;{X2};x=-2;x=3;", "sqrt"),             # the other s wrong
    (f"{RIGHT}x=3;", "format"),                                    # a sixth statement
    (f"{RIGHT}x", "format"),                                       # text after the last ';'
    (f"{D_};{X1};{X2};x=-2;x=3junk;", "final"),
])
def test_each_planted_error_fails_exactly_its_step(out, wrong):
    v, s = steps(out)
    assert not v.ok
    assert s[wrong] is False, (wrong, s)
    assert all(s[k] is not False for k in s if k != wrong), s
    assert v.error.startswith(wrong + ":")


def test_a_missing_root_statement_fails_sqrt_too():
    _, s = steps(f"{D_};{X1};")
    assert s["x2_expr"] is False and s["sqrt"] is False and s["final"] is False


def test_the_error_names_the_first_wrong_step():
    v, s = steps("D=(-2^2-4*2*-12)=99;" + f"{X1};{X2};x=3;x=-2;")
    assert s["D_value"] is False and s["final"] is False
    assert v.error.startswith("D_value:")


def test_no_root_checker_reads_the_second_statement():
    src = "1x^2+1x+1=0"
    good = "D=(1^2-4*1*1)=-3;x=nan;"
    task = QuadraticTask("small")
    assert task.check(src, good).ok
    extra = task.check(src, good + "x=1;")
    assert extra.steps["nan"] is True and extra.steps["format"] is False
    assert task.check(src, "D=(1^2-4*1*1)=-3;x=1;x=nan;").steps["nan"] is False


def test_arithmetic_checker_on_planted_outputs():
    task = ArithmeticTask()
    assert task.check("23+45=", "68").ok and task.check("45-23=", "22").ok
    assert task.check("50-50=", "0").ok
    for out, fmt, res in [("86", True, False), ("068", False, False), ("68x", False, False),
                          ("-22", True, False), ("69", True, False), ("", False, False)]:
        v = task.check("23+45=", out)
        assert (v.steps["format"], v.steps["result"], v.ok) == (fmt, res, False), out
        assert v.error
    v = task.check("45-23=", "-22")
    assert v.error == "result: wrote -22; expected 22"


def char_acc_by_hand(pred, label):
    ok = 0
    for i in range(len(label)):
        if i < len(pred) and pred[i] == label[i]:
            ok += 1
    return ok, len(label)


@pytest.mark.parametrize("pred,label", [("abcd", "abXd"), ("xabc", "abcd"), ("aab", "aaa"),
                                        ("", "x"), ("abcdef", "ab"), ("ba", "ab")])
def test_char_accuracy_by_hand(pred, label):
    assert char_accuracy(pred, label) == char_acc_by_hand(pred, label)


def test_score_outputs_pools_characters_and_skips_steps_that_do_not_apply():
    task = QuadraticTask("seed")
    none_src = "1x^2+1x+1=0"
    none_tgt = "D=(1^2-4*1*1)=-3;x=nan;"
    ex = [Example(SRC, RIGHT, "two"), Example(none_src, none_tgt, "none"),
          Example(SRC, RIGHT, "two")]
    outs = [RIGHT, "D=(1^2-4*1*1)=-3;x=na", f"{D_};{X1};{X2};x=3;x=-2;"]
    m = score_outputs(task, ex, outs)
    # characters: all of the first, the 21 the second writes of its 23, and the third's
    # counted position by position
    third = char_acc_by_hand(outs[2], RIGHT)
    total = 2 * len(RIGHT) + len(none_tgt)
    assert m["char_accuracy"] == pytest.approx((len(RIGHT) + 21 + third[0]) / total)
    assert m["exact_match"] == pytest.approx(1 / 3)
    assert m["per_class"]["two"] == {"n": 2, "exact_match": 0.5,
                                     "char_accuracy": pytest.approx((len(RIGHT) + third[0])
                                                                    / (2 * len(RIGHT)))}
    assert m["per_class"]["none"]["exact_match"] == 0.0
    # root steps apply to the two-root examples only; nan to the no-root one only
    assert m["per_step"]["final"] == 0.5 and m["per_step"]["x1_value"] == 1.0
    assert m["per_step"]["nan"] == 0.0 and m["per_step"]["D_value"] == 1.0
    assert "format" not in m["per_step"]
