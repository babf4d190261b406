"""`python -m probes` / `interp probe` on tiny random models: the files it writes and their
stable columns, checked against what they must hold by definition (the flag recomputed from
the scores, the causal check's clean run equal to the ablation's own clean run of the same
test-split examples, the split sizes), and the table it prints. Bad inputs are in
tests/test_bad_inputs.py (one line, exit 2, nothing written)."""

import json

import pandas as pd
import pytest

from circuits import ablation as A
from interp.models import load_checkpoint
from probes import __main__ as cli

PROBE_COLUMNS = ["site", "stack", "layer", "position", "target", "kind", "n_train", "n_test",
                 "n_eq_test", "metric", "score", "score_lo", "score_hi", "baseline", "control",
                 "selectivity", "positional", "within_r2", "class_r2", "within_r2_by_class",
                 "alpha"]


@pytest.fixture(scope="module")
def decoder_run(tiny_checkpoints, tmp_path_factory):
    root = tmp_path_factory.mktemp("probe-cli")
    argv = [str(tiny_checkpoints["decoder"]), "--target", "D_sign,D_value", "--n", "150",
            "--positions", "x,^,=", "--causal", "--causal-n", "24", "--controls", "2",
            "--out", str(root / "out"), "--json", str(root / "p.json"), "--quiet"]
    return root, argv


def test_the_command_writes_its_files_with_stable_columns(decoder_run, capsys):
    root, argv = decoder_run
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    out = root / "out"
    assert sorted(p.name for p in out.iterdir()) == sorted(cli.OWN_FILES)
    probes = pd.read_csv(out / "probes.csv")
    assert list(probes.columns) == PROBE_COLUMNS
    # 2 targets x 2 layers x the keys of x, ^, = (in:x#0, in:^#0, in:x#1, in:=#0)
    assert len(probes) == 2 * 2 * 4
    assert set(probes.position) == {"in:x#0", "in:^#0", "in:x#1", "in:=#0"}
    assert set(probes.target) == {"D_sign", "D_value"}
    assert set(probes[probes.target == "D_sign"].metric) == {"accuracy"}
    assert set(probes[probes.target == "D_value"].metric) == {"r2"}
    # every example is in one part: train + test never exceed the examples
    assert ((probes.n_train + probes.n_test) < 150).all() and (probes.n_test > 0).all()
    data = json.loads((out / "probes.json").read_text())
    assert set(data) == {"meta", "probes", "causal", "causal_power", "causal_verdicts"}
    written = json.loads((root / "p.json").read_text())
    assert written.pop("interp_output") == "probes.json"      # names its command (#23)
    assert written == data
    assert list(data["probes"][0]) == PROBE_COLUMNS + ["flag", "class_only", "reliable"]
    for rec in data["probes"]:                       # the flags, by their definitions
        accurate = rec["score"] - rec["baseline"] >= 0.05
        sel = rec["selectivity"]
        want = "" if not accurate else ("accurate, no control" if sel is None else
                                        "selective" if sel >= 0.05 else
                                        "accurate, not selective")
        assert rec["flag"] == want, rec
        w = rec["within_r2"]
        assert rec["class_only"] == (w is not None and w < 0.05), rec
        assert rec["reliable"] == (rec["n_eq_test"] >= 20), rec
    causal = pd.read_csv(out / "causal.csv")
    assert list(causal.columns) == cli.CAUSAL_COLUMNS
    # one check per target and layer where some reliable cell (20 distinct test equations or
    # more) holds the target (its probe beats the baseline by 0.05), erasing at exactly those
    want = {}
    for (t, layer), grid in probes.groupby(["target", "layer"]):
        hold = [p for p, s, b, n in zip(grid.position, grid.score, grid.baseline,
                                        grid.n_eq_test) if s - b >= 0.05 and n >= 20]
        if hold:
            want[(t, layer)] = " ".join(hold)
    assert want, "the tiny model's probes should read something somewhere"
    assert {k: g.positions.iloc[0] for k, g in causal.groupby(["target", "layer"])} == want
    assert {"answer_loss", "exact_match", "field:D_value", "loss:D_value"} <= set(causal.metric)
    # the power check: per check, erased and next-layer rows at every erased position; the
    # verdict "used"/"not shown to be used" only where all of them are at baseline
    power = pd.read_csv(out / "causal_power.csv")
    assert list(power.columns) == cli.POWER_COLUMNS
    for v in data["causal_verdicts"]:
        p = power[(power.target == v["target"]) & (power.layer == v["layer"])]
        keys = v["positions"]
        for where in ("erased", "next", "next, clean"):
            assert sorted(p[p["where"] == where].position) == sorted(keys)
        checked = p[p["where"].isin(["erased", "next"])]
        ok = ((checked.score - checked.baseline) <= 0.02).all()
        assert v["reached"] == ok
        if not ok:
            assert v["conclusion"] not in ("used", "not shown to be used")
            assert "erasure failed" in v["note"]
    assert (power.at_baseline == ((power.score - power.baseline) <= 0.02)).all()
    # every probe and every causal check printed, the power check before the effect
    for _, r in probes.iterrows():
        assert any(f"L{r.layer}" in x and f" {r.position} " in x for x in printed.splitlines())
    assert printed.count("answer_loss") == len(want)
    assert printed.index("power check first") < printed.index("answer_loss")
    html = (out / "report.html").read_text()
    assert "<script src" not in html and "in:=#0" in html


def test_the_causal_checks_clean_run_is_the_ablations_clean_run_of_the_test_split(
        decoder_run, tiny_checkpoints, tmp_path, capsys):
    # a margin of 0.99 lets every erasure count as reaching baseline, so the erasure itself runs
    # on the whole test split (the module's run may have none that reach it: then only the
    # interchange runs, on the examples that have a same-layout donor)
    root, argv = decoder_run
    argv = [a if a != str(root / "out") else str(tmp_path / "o") for a in argv
            if a not in ("--json", str(root / "p.json"))] + ["--causal-margin", "0.99"]
    assert cli.main(argv) == 0
    capsys.readouterr()
    data = json.loads((tmp_path / "o" / "probes.json").read_text())
    ckpt = load_checkpoint(tiny_checkpoints["decoder"])
    task = ckpt.task
    examples = task.generate(150, seed=12345, unique=True)
    from probes.activations import _groups
    from probes.controls import split_groups

    part = split_groups(_groups(examples), seed=0)
    test = [examples[i] for i in range(150) if int(part[i]) == 2][:24]
    clean = A.run_condition(ckpt.bridge(), A.prepare(ckpt.bridge(), task, test))
    # checks that reached baseline run the whole test split (interchange runs only the
    # examples that have a same-layout donor)
    rows = [r for r in data["causal"] if r["metric"] == "answer_loss" and r["test"] == "erasure"]
    assert rows and all(r["clean"] == pytest.approx(float(clean.loss.mean()), rel=1e-5)
                        for r in rows)
    exact = [r for r in data["causal"] if r["metric"] == "exact_match" and
             r["test"] == "erasure"]
    assert all(r["clean"] == pytest.approx(float(clean.exact.float().mean())) for r in exact)


def test_t5_checks_the_encoder_at_every_x_caret_and_equals_sign_jointly(tiny_checkpoints,
                                                                      tmp_path, capsys):
    from interp.cli import main as umbrella

    rc = umbrella(["probe", str(tiny_checkpoints["t5"]), "--target", "D_sign", "--n", "120",
                   "--positions", "input", "--layers", "1", "--causal-at", "x,^,=",
                   "--causal-n", "16", "--controls", "1", "--json", str(tmp_path / "t5.json"),
                   "--quiet"])
    assert rc == 0
    data = json.loads((tmp_path / "t5.json").read_text())
    probes = pd.DataFrame(data["probes"])
    assert set(probes["stack"]) == {"encoder"} and set(probes.layer) == {1}
    assert all(p.startswith("in:") for p in probes.position)
    causal = pd.DataFrame(data["causal"])
    assert set(causal["stack"]) == {"encoder"} and set(causal.layer) == {1}
    assert set(causal.positions) == {"in:x#0 in:^#0 in:x#1 in:=#0"}
    # D_sign has three classes: LEACE of the one-hot labels has rank 2 (1 if two classes)
    assert set(causal["rank"]) <= {1, 2}
    assert set(pd.DataFrame(data["causal_power"])["at"]) == {"resid_pre L1", "resid_post L1"}
    assert "most selective" in capsys.readouterr().out
