"""--device and --dtype for evaluate, solve and train: float32 figures are those of the
default load, bfloat16 runs end to end with finite figures, and a bfloat16 training run keeps
float32 weights and says so in its resume state."""

import json

import pytest
import torch
from conftest import tiny_config

from interp.errors import InterpError
from interp.metrics import answer_loss, evaluate, solve_one
from interp.models import load_checkpoint
from interp.models.generate import greedy_decode
from interp.tasks import CharCodec
from interp.tokens import make_batch
from interp.training.recipe import TrainConfig
from interp.training.task import Trainer, train

PROBLEMS = ["1x^2-3x+2=0", "-4x^2+3x-11=0"]


def bf16(path):
    return load_checkpoint(path, device="cpu", dtype="bfloat16")


@pytest.mark.parametrize("arch", ["decoder", "t5"])
def test_an_explicit_cpu_float32_load_gives_the_default_figures(tiny_checkpoints, arch):
    default = load_checkpoint(tiny_checkpoints[arch])
    explicit = load_checkpoint(tiny_checkpoints[arch], device="cpu", dtype="float32")
    exs = default.task.generate(12, seed=3)
    a, outs_a = evaluate(default.model, arch, default.task, exs, default.config.n_ctx)
    b, outs_b = evaluate(explicit.model, arch, explicit.task, exs, explicit.config.n_ctx)
    assert (a, outs_a) == (b, outs_b)
    batch = make_batch(arch, CharCodec(), [(e.src, e.tgt) for e in exs], 128)
    with torch.no_grad():
        assert float(answer_loss(default.model, arch, batch)) == \
            float(answer_loss(explicit.model, arch, batch))


@pytest.mark.parametrize("arch", ["decoder", "t5"])
def test_bfloat16_decodes_and_scores_with_finite_figures(tiny_checkpoints, arch):
    ckpt = bf16(tiny_checkpoints[arch])
    assert next(ckpt.model.parameters()).dtype == torch.bfloat16
    exs = ckpt.task.generate(8, seed=4)
    metrics, outs = evaluate(ckpt.model, arch, ckpt.task, exs, ckpt.config.n_ctx)
    assert len(outs) == 8 and 0 <= metrics["exact_match"] <= 1
    assert 0 <= metrics["char_accuracy"] <= 1
    batch = make_batch(arch, CharCodec(), [(e.src, e.tgt) for e in exs], 128)
    with torch.no_grad():
        loss = answer_loss(ckpt.model, arch, batch)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    r = solve_one(ckpt, PROBLEMS[1])
    assert r["model"] == greedy_decode(ckpt.model, arch, [r["input"]], ckpt.config.n_ctx)[0]


def test_evaluate_command_runs_in_bfloat16(tiny_checkpoints, tmp_path, capsys):
    from interp.evaluate import main

    out = tmp_path / "m.json"
    assert main([str(tiny_checkpoints["t5"]), "--n", "6", "--device", "cpu", "--dtype",
                 "bfloat16", "--json", str(out), "--quiet"]) == 0
    m = json.loads(out.read_text())
    assert m["n"] == 6 and 0 <= m["exact_match"] <= 1 and 0 <= m["char_accuracy"] <= 1
    assert "exact match" in capsys.readouterr().out


@pytest.mark.parametrize("args", [["--dtype", "bfloat16", "--json", PROBLEMS[1]],
                                  [PROBLEMS[1], "--device", "cpu", "--dtype", "bfloat16",
                                   "--json"]])
def test_solve_command_runs_in_bfloat16_with_a_leading_minus(tiny_checkpoints, capsys, args):
    from interp.solve import main

    assert main([str(tiny_checkpoints["decoder"]), *args]) == 0
    r = json.loads(capsys.readouterr().out)
    task = load_checkpoint(tiny_checkpoints["decoder"]).task
    assert r["input"] == task.parse(PROBLEMS[1]) and r["exact"] == task.solve(r["input"])


def tiny_run(**kw):
    base = dict(task="arithmetic", preset="default", steps=6, eval_every=3, eval_n=8,
                save_every=2, batch_size=8, warmup=2, model=tiny_config("decoder", n_ctx=16))
    return TrainConfig(**{**base, **kw})


def test_bfloat16_training_keeps_float32_weights_and_resumes_only_in_bfloat16(tmp_path):
    trainer = Trainer(tiny_run(), tmp_path / "run", quiet=True, dtype="bfloat16")
    with pytest.raises(InterpError, match="interrupted after step 4"):
        trainer.run(stop_at=4)
    state = json.loads((tmp_path / "run" / "resume" / "state.json").read_text())
    assert state["dtype"] == "bfloat16"
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())
    assert all(t.dtype == torch.float32 for s in trainer.opt.state.values()
               for k, t in s.items() if k != "step")
    with pytest.raises(InterpError, match="trains in bfloat16; resume it with --dtype bfloat16"):
        Trainer.resume(tmp_path / "run", quiet=True)
    meta = Trainer.resume(tmp_path / "run", quiet=True, dtype="bfloat16").run()
    assert meta["training"]["dtype"] == "bfloat16" and meta["training"]["total_steps"] == 6
    assert all(h["train_loss"] == h["train_loss"] for h in meta["history"])   # not NaN
    ckpt = load_checkpoint(tmp_path / "run")
    assert next(ckpt.model.parameters()).dtype == torch.float32


def test_float32_training_records_no_dtype(tmp_path):
    meta = train(tiny_run(steps=3), tmp_path / "run", quiet=True, dtype="float32")
    assert "dtype" not in meta["training"]
    state = json.loads((tmp_path / "run" / "resume" / "state.json").read_text())
    assert "dtype" not in state


def test_float16_training_is_refused_with_the_reason(tmp_path):
    with pytest.raises(InterpError, match="loss scaling"):
        Trainer(tiny_run(), tmp_path / "run", quiet=True, dtype="float16")
