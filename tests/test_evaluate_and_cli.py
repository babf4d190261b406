"""Metrics against hand-computed values, and the command lines' error behaviour."""

import json

import pytest

from clihelp import one_line_error, run, run_here
from interp.metrics import char_accuracy, score_outputs
from interp.tasks import QuadraticTask
from interp.tasks.base import Example


def test_char_accuracy_is_positionwise_over_the_label_length():
    assert char_accuracy("abcd", "abXd") == (3, 4)
    assert char_accuracy("ab", "abcd") == (2, 4)          # missing characters count as wrong
    assert char_accuracy("abcdef", "abcd") == (4, 4)      # extra output is not penalised
    assert char_accuracy("", "ab") == (0, 2)


def test_score_outputs_counts_by_hand():
    task = QuadraticTask("small")
    two = Example("1x^2-3x+2=0", task.solve("1x^2-3x+2=0"), "two")
    one = Example("1x^2-2x+1=0", task.solve("1x^2-2x+1=0"), "one")
    none = Example("1x^2+1x+1=0", task.solve("1x^2+1x+1=0"), "none")
    wrong_two = two.tgt.replace("x=1;x=2;", "x=1;x=3;")      # final answer wrong
    wrong_none = none.tgt.replace("=-3;", "=-4;")             # D value wrong
    m = score_outputs(task, [two, one, none, two], [wrong_two, one.tgt, wrong_none, two.tgt])
    assert m["n"] == 4 and m["exact_match"] == 0.5
    total = len(two.tgt) * 2 + len(one.tgt) + len(none.tgt)
    assert m["char_accuracy"] == pytest.approx((total - 2) / total)
    assert m["per_class"]["two"]["exact_match"] == 0.5
    assert m["per_class"]["none"]["exact_match"] == 0.0
    assert m["per_class"]["one"]["exact_match"] == 1.0
    assert m["per_step"]["final"] == pytest.approx(2 / 3)    # applies to two/one only
    assert m["per_step"]["D_value"] == pytest.approx(3 / 4)
    assert m["per_step"]["x2_value"] == 1.0 and m["per_step"]["nan"] == 1.0


def test_cli_missing_checkpoint_is_one_line(tmp_path):
    one_line_error(run("interp.evaluate", str(tmp_path / "missing")), "no checkpoint directory")


def test_cli_corrupt_checkpoint_is_one_line(tiny_checkpoints, tmp_path):
    import shutil

    d = tmp_path / "c"
    shutil.copytree(tiny_checkpoints["decoder"], d)
    (d / "model.safetensors").write_bytes(b"garbage")
    one_line_error(run("interp.evaluate", str(d), "--n", "5"), "corrupt or truncated")


def test_cli_bad_equation_names_the_position(tiny_checkpoints):
    one_line_error(run_here("interp.solve", str(tiny_checkpoints["decoder"]), "7x^2+35y+1=0"),
                   "position 7", "found 'y'")


def test_cli_solve_reads_a_problem_with_a_leading_minus(tiny_checkpoints):
    # argparse would take "-4x^2+3x-11=0" for an option; the problem must be read as given
    task = QuadraticTask("small")
    for args in (["--json", "-4x^2+3x-11=0"], ["-4x^2+3x-11=0", "--json"]):
        proc = run_here("interp.solve", str(tiny_checkpoints["decoder"]), *args)
        assert proc.returncode == 0, proc.stderr
        r = json.loads(proc.stdout)
        assert r["input"] == task.parse("-4x^2+3x-11=0")
        assert r["exact"] == task.solve(r["input"])
    one_line_error(run_here("interp.solve", str(tiny_checkpoints["decoder"]), "-4x^2+3y-11=0"),
                   "found 'y'")


def test_cli_train_refuses_bad_options_without_writing(tmp_path):
    one_line_error(run("interp.train", "quadratic", "--out", str(tmp_path / "o")),
                   "--steps N, --minutes M or --epochs E")
    one_line_error(run("interp.train", "quadratic", "--steps", "5", "--d-model", "30",
                       "--heads", "4", "--out", str(tmp_path / "o")), "divisible")
    one_line_error(run("interp.train", "--resume", str(tmp_path)), "no resumable run")
    assert not (tmp_path / "o").exists()


def test_cli_evaluate_writes_the_json_keys(tiny_checkpoints, tmp_path):
    out = tmp_path / "m.json"
    proc = run("interp.evaluate", str(tiny_checkpoints["t5"]), "--n", "6", "--json", str(out))
    assert proc.returncode == 0, proc.stderr
    m = json.loads(out.read_text())
    assert {"n", "exact_match", "char_accuracy", "per_class", "per_step"} <= set(m)
    assert m["n"] == 6 and sum(v["n"] for v in m["per_class"].values()) == 6
    assert m["sample"] == {"seed": 12345, "heldout": True}


def test_cli_evaluate_into_a_missing_folder_is_an_error(tiny_checkpoints, tmp_path):
    one_line_error(run("interp.evaluate", str(tiny_checkpoints["decoder"]), "--n", "2",
                       "--json", str(tmp_path / "no" / "m.json")), "does not exist")


def test_umbrella_command_dispatches_and_rejects_unknown():
    proc = run("interp.cli", "frobnicate")
    assert proc.returncode == 2 and "unknown command" in proc.stderr
    proc = run("interp.cli", "solve", "--help")
    assert proc.returncode == 0 and "PROBLEM" in proc.stdout
    for cmd, needle in (("ablate", "--tokens"), ("patch", "--sites")):
        proc = run("interp.cli", cmd, "--help")
        assert proc.returncode == 0 and needle in proc.stdout, cmd
