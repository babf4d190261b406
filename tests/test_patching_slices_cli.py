"""`python -m circuits.patch --slices` from the command line: what it writes, and bad input
as exactly one `error: ...` line, exit status 2 and nothing written."""

import json

import pytest

from clihelp import one_line, run, run_here


@pytest.mark.parametrize("args,needles", [
    (["--answer-token", "last"], ["--answer-token", "first"]),
    (["--classes", "three"], ["--classes", "unknown class", "two, one, none"]),
    (["--controls", "0"], ["--controls"]),
    (["--per-class", "0"], ["--per-class"]),
    (["--targets", " , "], ["--targets"]),
    (["--answer", "y9"], ["--answer", "unknown field"]),
    (["--targets", "q"], ["none of the target roles", "q"]),
])
def test_bad_slice_options_are_one_line_and_write_nothing(tiny_checkpoints, tmp_path, args,
                                                          needles):
    out = tmp_path / "o"
    proc = run_here("circuits.patch", str(tiny_checkpoints["decoder"]), "--slices",
                    "--per-class", "30", "--out", str(out), *args)
    one_line(proc.returncode, proc.stderr, *needles)
    assert not out.exists() and proc.stdout == ""


def test_slices_cli_writes_the_pooled_and_group_rows(tiny_checkpoints, tmp_path):
    out = tmp_path / "o"
    proc = run("circuits.patch", str(tiny_checkpoints["decoder"]), "--slices", "--per-class",
               "30", "--classes", "two,none", "--answer-token", "differ", "--controls", "19",
               "--out", str(out), "--json", str(tmp_path / "s.json"), "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert "layout groups" in proc.stdout and "joint (6 positions)" in proc.stdout
    data = json.loads((tmp_path / "s.json").read_text())
    assert data["distinct"] == data["pairs"] and set(data["classes"]) <= {"two", "none"}
    import pandas as pd

    df = pd.read_csv(out / "slices.csv")
    assert {"pooled"} < set(df.scope) or data["groups"] == 1
    assert (df[df.cell == "joint"]["size"] == 6).all()
    assert (out / "report.html").is_file() and (out / "patching.json").is_file()
