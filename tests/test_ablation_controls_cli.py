"""`ablate --tokens`'s new options on the command line: bad input is one line `error: ...`
with exit status 2 and nothing written; a good run shows both control kinds in every output."""

import csv
import json

from clihelp import one_line_error, run, run_here


def test_bad_donor_and_example_requests_are_one_line_and_write_nothing(tiny_checkpoints,
                                                                       tmp_path):
    ck = str(tiny_checkpoints["decoder"])
    out = tmp_path / "never"
    one_line_error(run_here("circuits.ablate", ck, "--tokens", "x", "--donors", "any", "--out",
                       str(out)), "--donors applies to --mode resample", "--mode knockout")
    one_line_error(run_here("circuits.ablate", ck, "--tokens", "x", "--mode", "resample",
                       "--donors", "same", "--out", str(out)), "--donors", "layout", "any")
    one_line_error(run_here("circuits.ablate", ck, "--route", "L0H0:offset=1", "--donors", "any",
                       "--out", str(out)), "--donors applies to --tokens")
    # unique held-out equations: the small preset has 21 of one root, so 70 at 50/30/20
    one_line_error(run_here("circuits.ablate", ck, "--tokens", "x", "--n", "72", "--out",
                       str(out)), "n <= 70")
    # two equations of different layouts: neither has a same-layout donor
    one_line_error(run_here("circuits.ablate", ck, "--tokens", "x", "--mode", "resample", "--n",
                       "2", "--data-seed", "1", "--out", str(out)), "alone in their layout",
                   "--donors any")
    assert not out.exists()


def test_a_run_shows_both_control_kinds_in_table_json_and_csv(tiny_checkpoints, tmp_path):
    out = tmp_path / "abl"
    proc = run("circuits.ablate", str(tiny_checkpoints["decoder"]), "--tokens", "x,^,=",
               "--mode", "resample", "--n", "30", "--controls", "2", "--no-sweep",
               "--no-decode", "--out", str(out), "--quiet")
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    assert "target - random" in text and "target - role" in text
    assert "random input positions" in text and "role-matched structural positions" in text
    assert "untestable at 2 controls" in text                 # the floor 1/3, said so
    assert "distinct" in text and "alone in their layout" in text
    data = json.loads((out / "ablation.json").read_text())
    m = data["meta"]
    assert m["donors"] == "layout" and m["n"] + m["no_donor"] == m["n_asked"] == 30
    assert m["distinct"] == m["n"] and len(data["role_controls"]) and len(data["controls"])
    rows = list(csv.DictReader((out / "controls.csv").open()))
    assert {r["kind"] for r in rows} == {"random", "role"}
    summary = list(csv.DictReader((out / "summary.csv").open()))
    assert {"verdict", "role_verdict", "role_p_value", "role_tests"} <= set(summary[0])
    page = (out / "report.html").read_text()
    assert "role-matched" in page
