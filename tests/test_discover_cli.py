"""`python -m circuits.discover`: its outputs on the shipped default model, and one line with
exit status 2 (nothing written) for every bad input issue #24 names."""

import json
import re

import pandas as pd
import pytest

from circuits.discover import main
from tests.clihelp import one_line, run


def call(argv, capsys):
    capsys.readouterr()
    rc = main(list(argv))
    return rc, capsys.readouterr()


@pytest.mark.parametrize("argv,needles", [
    (["--method", "acdc"], ["--method", "acdc"]),
    (["--target-faithfulness", "1.5"], ["--target-faithfulness", "(0, 1]"]),
    (["--target-faithfulness", "0"], ["--target-faithfulness", "(0, 1]"]),
    (["--target-faithfulness", "x"], ["--target-faithfulness"]),
    (["--edges", "0"], ["--edges", "at least 1"]),
    (["--edges", "5", "--target-faithfulness", "0.9"], ["not allowed with"]),
    (["--answer", "E_value"], ["--answer", "E_value", "D_value"]),
    (["--corrupt", "q"], ["--corrupt", "choose one of"]),
    (["--positions", "token"], ["--positions"]),
    (["--steps", "0"], ["--steps", "at least 1"]),
    (["--n", "0"], ["--n", "at least 1"]),
    (["--n", "1"], ["--n", "at least 2", "resample pairs"]),
    (["--steps", "65"], ["--steps 65", "64 forward and backward", "--steps 64"]),
    (["--answer", "class", "--answer-token", "digit"], ["--answer class", "--answer-token"]),
    (["--ablation", "zero"], ["--ablation"]),
    (["induction-attn2l"], ["without a task"]),
    (["arithmetic", "--answer", "class"], ["class decision", "arithmetic"]),
])
def test_bad_inputs_get_one_line_and_exit_2_with_nothing_written(argv, needles, capsys,
                                                                 tmp_path):
    out = tmp_path / "out"
    rc, cap = call(argv + ["--out", str(out)], capsys)
    one_line(rc, cap.err, *needles)
    assert not out.exists()


def test_a_model_with_no_pairs_of_one_layout_is_refused_in_one_line(capsys, tmp_path):
    rc, cap = call(["--n", "100000", "--no-labels", "--out", str(tmp_path / "o")], capsys)
    one_line(rc, cap.err, "pairs of one layout", "--n")
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_the_command_writes_its_tables_json_and_page(tmp_path):
    out = tmp_path / "circ"
    proc = run("circuits.discover", "--n", "8", "--method", "eap", "--edges", "20",
               "--no-labels", "--out", str(out), "--json", str(tmp_path / "d.json"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    edges = pd.read_csv(out / "edges.csv")
    assert edges["in_circuit"].sum() <= 20 and len(edges) == 479
    cur = pd.read_csv(out / "faithfulness.csv")
    assert list(cur["percent"]) == [0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100]
    assert cur["f"].iloc[-1] == pytest.approx(1.0, abs=1e-4)
    data = json.loads((tmp_path / "d.json").read_text())
    data.pop("interp_output", None)          # the --json file's owner mark
    assert data == json.loads((out / "discover.json").read_text())
    assert data["n_pairs"] == 8 and data["gap"] > 1
    page = (out / "report.html").read_text()
    assert "<script>" in page and not re.search(r"<script[^>]+src=.https?:", page)
    assert proc.stdout.startswith("circuit of quadratic-small: answer D_value, 8 pairs")
