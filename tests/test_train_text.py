"""Training the text language models (tiny sizes) and the induction command line."""

import json

import pytest
import torch

from clihelp import one_line_error, run
from interp.errors import InterpError
from interp.training.text import TextTrainConfig, lr_factor, synthetic_rows, train_text

TINY = dict(steps=6, batch_size=4, n_ctx=32, d_model=32, n_heads=4, vocab=300, warmup=2,
            eval_every=3, eval_windows=4, files=40)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("lm") / "smeared"
    bridge, meta = train_text(TextTrainConfig(model="smeared1l", **TINY), out)
    return out, bridge, meta


def test_training_records_scores_over_steps_and_saves_a_loadable_checkpoint(trained):
    from interp.models import load_model

    out, bridge, meta = trained
    assert [r["step"] for r in meta["history"]] == [0, 3, 6]
    assert meta["history"][0]["train_loss"] is None     # strict JSON: no NaN anywhere
    json.loads((out / "interp.json").read_text(), parse_constant=lambda c: 1 / 0)
    last = meta["history"][-1]
    assert len(last["induction"]) == 1 and len(last["induction"][0]) == 4
    assert len(last["smear"][0]) == 4 and last["icl_positions"] == [3, 30]
    assert meta["task"]["corpus"]["train_tokens"] > 0 and meta["task"]["corpus"]["vocab"] == 300
    loaded, task = load_model(out)
    x = torch.randint(3, 300, (2, 16), generator=torch.Generator().manual_seed(0))
    assert task is None and torch.equal(loaded(x), bridge(x))
    # the stored curve is what the scores give on the saved weights
    from interp.attention.induction import induction_score, model_patterns, score_prompts

    ids, half, _, _ = score_prompts(loaded, n=16, seed=0)
    got = induction_score(model_patterns(loaded, ids), half)
    assert torch.allclose(got, torch.tensor(last["induction"]), atol=1e-6)


def test_the_same_seed_gives_the_same_weights(trained, tmp_path):
    out, _, _ = trained
    train_text(TextTrainConfig(model="smeared1l", **TINY), tmp_path / "again")
    assert (out / "model.safetensors").read_bytes() == \
        (tmp_path / "again" / "model.safetensors").read_bytes()


def test_synthetic_rows_repeat_one_random_block_after_bos():
    g = torch.Generator().manual_seed(0)
    rows = synthetic_rows(50, {0, 1, 2}, 3, 40, bos=1, generator=g)
    assert rows.shape == (3, 40) and (rows[:, 0] == 1).all()
    assert not torch.isin(rows[:, 1:], torch.tensor([0, 1, 2])).any()
    body = rows[:, 1:]
    period = next(p for p in range(8, 20) if torch.equal(body[:, p:], body[:, :-p]))
    assert 8 <= period < 19


def test_learning_rate_warms_up_then_decays_to_a_tenth():
    assert lr_factor(0, 100, 10) == pytest.approx(0.1)
    assert lr_factor(9, 100, 10) == pytest.approx(1.0)
    assert lr_factor(10, 100, 10) == pytest.approx(1.0)
    assert lr_factor(100, 100, 10) == pytest.approx(0.1)


@pytest.mark.parametrize("kw, msg", [({"model": "attn3l"}, "unknown model"),
                                     ({"mix": 1.0}, "share of synthetic"),
                                     ({"steps": 0}, "--steps"), ({"lr": 0.0}, "--lr")])
def test_bad_training_options_are_clear_errors(kw, msg):
    with pytest.raises(InterpError, match=msg):
        TextTrainConfig(**kw).check()


def test_train_text_cli_refuses_an_out_that_is_a_file(tmp_path):
    f = tmp_path / "x"
    f.write_text("keep")
    one_line_error(run("interp.train_text", "attn2l", "--out", str(f)), "is a file")
    assert f.read_text() == "keep"


def test_induction_cli_writes_tables_that_match_the_library(trained, tmp_path):
    from circuits.induction import head_scores
    from interp.models import load_model

    out, _, _ = trained
    proc = run("circuits.induction", str(out), "--n", "4", "--icl-windows", "8",
               "--out", str(tmp_path / "ind"))
    assert proc.returncode == 0, proc.stderr
    assert "smeared keys, layer 0" in proc.stdout and "in-context learning" in proc.stdout
    data = json.loads((tmp_path / "ind" / "induction.json").read_text())
    bridge, _ = load_model(out)
    want = head_scores(bridge, n=4, seed=0)
    got = [r["induction"] for r in data["heads"]]
    assert got == pytest.approx(want.induction.tolist(), abs=1e-6)
    assert data["mixing"]["smear"][0] == pytest.approx(data["history"][-1]["smear"][0], abs=1e-6)
    assert (tmp_path / "ind" / "report.html").stat().st_size > 10_000


def test_induction_cli_errors_are_one_line(trained, tmp_path):
    out, _, _ = trained
    one_line_error(run("circuits.induction", str(out), "--n", "1"), "--n")
    one_line_error(run("circuits.induction", str(tmp_path / "nope")), "no checkpoint")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "keep.txt").write_text("x")
    one_line_error(run("circuits.induction", str(out), "--out", str(tmp_path / "other")),
                   "holds other files")
    assert (tmp_path / "other" / "keep.txt").read_text() == "x"


def test_classify_heads_reads_a_text_model_on_validation_source(trained, tmp_path):
    import pandas as pd

    out, _, _ = trained
    proc = run("interp.classify_heads", str(out), "--n", "6", "--out", str(tmp_path / "c"),
               "--no-report", "--quiet")
    assert proc.returncode == 0, proc.stderr
    table = pd.read_csv(tmp_path / "c" / "heads.csv")
    assert sorted(zip(table.layer, table["head"])) == [(0, h) for h in range(4)]


def test_induction_cli_reads_a_task_decoder_and_refuses_t5(tiny_checkpoints, tmp_path):
    proc = run("circuits.induction", str(tiny_checkpoints["decoder"]), "--n", "4",
               "--out", str(tmp_path / "d"), "--no-report")
    assert proc.returncode == 0, proc.stderr
    data = json.loads((tmp_path / "d" / "induction.json").read_text())
    assert len(data["heads"]) == 8 and data["mechanism"] is not None
    assert data["icl"] is None and data["history"] == []
    one_line_error(run("circuits.induction", str(tiny_checkpoints["t5"]), "--n", "4",
                       "--out", str(tmp_path / "t")), "decoder-only")
