"""Training: answer-only loss, schedules, resume equals an uninterrupted run."""

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import one_thread, tiny_config

from interp.errors import InterpError
from interp.metrics import answer_loss
from interp.models import build_model, load_checkpoint
from interp.tasks import CharCodec
from interp.tokens import IGNORE, make_batch
from interp.training.recipe import TrainConfig, lr_at
from interp.training.task import Trainer, train

ROOT = Path(__file__).resolve().parent.parent


def tiny_train_config(arch="decoder", **kw):
    base = dict(task="arithmetic", preset="default", steps=24, eval_every=10, eval_n=16,
                save_every=5, batch_size=8, warmup=4, model=tiny_config(arch, n_ctx=16))
    base.update(kw)
    return TrainConfig(**base)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("arch", ["decoder", "t5"])
def test_loss_covers_answer_tokens_only(arch):
    codec = CharCodec()
    pairs = [("1x^2-2x+1=0", "D=(-2^2"), ("12+7=", "19")]
    b = make_batch(arch, codec, pairs, 64)
    model = build_model(tiny_config(arch), seed=0).eval()
    n_answer = sum(len(t) + 1 for _, t in pairs)  # answer characters and <eos>
    assert int((b.labels != IGNORE).sum()) == n_answer
    with torch.no_grad():
        if arch == "decoder":
            logits = model(input_ids=b.input_ids, attention_mask=b.attention_mask).logits
            lp = logits[:, :-1].log_softmax(-1)
            labels = b.labels[:, 1:]
        else:
            lp = model(input_ids=b.input_ids, attention_mask=b.attention_mask,
                       decoder_input_ids=b.decoder_input_ids).logits.log_softmax(-1)
            labels = b.labels
        manual = []
        for i, (src, tgt) in enumerate(pairs):
            want = codec.encode(tgt) + [codec.eos]
            pos = (labels[i] != IGNORE).nonzero().flatten().tolist()
            assert [int(labels[i, p]) for p in pos] == want
            manual += [float(lp[i, p, labels[i, p]]) for p in pos]
        ref = -sum(manual) / len(manual)
        assert float(answer_loss(model, arch, b)) == pytest.approx(ref, rel=1e-5)


def test_lr_schedule_warms_up_then_decays():
    cfg = TrainConfig(steps=100, warmup=10, lr=1.0)
    lrs = [lr_at(cfg, s, 100, 1.0) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))
    assert lrs[-1] < 0.1
    assert lr_at(TrainConfig(steps=1, schedule="plateau", lr=1.0, warmup=0), 50, 100, 0.25) == 0.25


@pytest.mark.parametrize("arch,extra", [
    ("decoder", {"scheduled_sampling": 0.5}),
    ("t5", {"scheduled_sampling": 0.5}),
    ("decoder", {"data": "fixed", "rows": 200, "schedule": "plateau"}),
    ("decoder", {"task": "quadratic", "preset": "small", "steps": 16, "eval_every": 8,
                 "eval_n": 4, "model": tiny_config("decoder", n_ctx=100)}),
])
def test_resume_reaches_the_same_weights_as_an_uninterrupted_run(tmp_path, arch, extra):
    Trainer(tiny_train_config(arch, **extra), tmp_path / "a", quiet=True).run()
    with pytest.raises(InterpError, match="--resume"):
        Trainer(tiny_train_config(arch, **extra), tmp_path / "b", quiet=True).run(stop_at=13)
    assert not (tmp_path / "b" / "resume" / "state.json").read_text().count('"step": 24')
    Trainer.resume(tmp_path / "b", quiet=True).run()
    for f in ("resume/model.safetensors", "resume/optimizer.safetensors", "model.safetensors"):
        assert digest(tmp_path / "a" / f) == digest(tmp_path / "b" / f), f


CLI_ARGS = ["--layers", "1", "--d-model", "16", "--heads", "2", "--batch-size", "4",
            "--eval-every", "40", "--eval-n", "8", "--save-every", "3", "--threads", "1",
            "--steps", "120", "--quiet"]


@pytest.fixture(scope="module")
def cli_reference(tmp_path_factory):
    """One uninterrupted command-line run, the reference of every interrupted one."""
    out = tmp_path_factory.mktemp("cli") / "a"
    subprocess.run([sys.executable, "-m", "interp.train", "arithmetic", *CLI_ARGS, "--out",
                    str(out)], check=True, env=dict(os.environ, PYTHONPATH=str(ROOT)),
                   capture_output=True)
    return out


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
def test_an_interrupted_run_resumes_to_the_same_weights(tmp_path, sig, cli_reference):
    """Ctrl-C or SIGTERM (saves, says how to resume, exits with status 2) or SIGKILL (no
    chance to save: resume from the last periodic save) at an arbitrary moment, then
    --resume."""
    args = CLI_ARGS
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    run = [sys.executable, "-m", "interp.train", "arithmetic"]
    proc = subprocess.Popen(run + args + ["--out", str(tmp_path / "b")], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    state = tmp_path / "b" / "resume" / "state.json"
    deadline = time.time() + 120
    while not state.exists() and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    if sig == signal.SIGKILL:
        assert proc.returncode == -signal.SIGKILL
    else:
        assert proc.returncode == 2
        assert "--resume" in err and "interrupted after step" in err
        lines = [l for l in err.strip().splitlines() if l.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: "), err
    import json
    stopped_at = json.loads(state.read_text())["step"]
    assert stopped_at < 120
    subprocess.run([sys.executable, "-m", "interp.train", "--resume", str(tmp_path / "b"),
                    "--quiet"], check=True, env=env, capture_output=True)
    assert digest(cli_reference / "resume/model.safetensors") == \
        digest(tmp_path / "b/resume/model.safetensors")


@pytest.fixture(scope="module")
def uninterrupted_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("uninterrupted") / "a"
    with one_thread():   # module fixtures start before the autouse one
        Trainer(tiny_train_config(), out, quiet=True).run()
    return out


@pytest.mark.parametrize("signals,stopped_at,says", [
    ((signal.SIGINT,), 14, "interrupted after step 14"),
    ((signal.SIGTERM,), 14, "interrupted after step 14"),
    ((signal.SIGINT, signal.SIGINT), 10, "stopped at once"),
    ((signal.SIGTERM, signal.SIGINT), 10, "stopped at once"),
])
def test_signals_in_the_middle_of_a_step(tmp_path, monkeypatch, uninterrupted_run, signals,
                                         stopped_at, says):
    """The README: Ctrl-C or SIGTERM lets the step in flight finish, saves and stops; a
    second Ctrl-C stops at once and the resume starts from the last periodic save. The
    signals arrive inside the 14th step (its loss computation), delivered to this process;
    either way --resume then reaches the uninterrupted run's weights bit for bit, and the
    signal handlers are given back."""
    import interp.training.task as train_mod

    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    trainer = Trainer(tiny_train_config(), tmp_path / "b", quiet=True)
    real = train_mod.answer_loss
    fired = []

    def loss_with_signals(model, arch, batch, *a, **kw):
        if trainer.step == 13 and model.training and not fired:
            fired.append(True)
            for sig in signals:
                signal.raise_signal(sig)
        return real(model, arch, batch, *a, **kw)

    monkeypatch.setattr(train_mod, "answer_loss", loss_with_signals)
    with pytest.raises(InterpError, match=says) as err:
        trainer.run()
    assert "--resume" in str(err.value) and fired
    assert {s: signal.getsignal(s) for s in before} == before
    import json

    assert json.loads((tmp_path / "b/resume/state.json").read_text())["step"] == stopped_at
    monkeypatch.setattr(train_mod, "answer_loss", real)
    Trainer.resume(tmp_path / "b", quiet=True).run()
    for f in ("resume/model.safetensors", "resume/optimizer.safetensors", "model.safetensors"):
        assert digest(uninterrupted_run / f) == digest(tmp_path / "b" / f), f


def test_training_learns_and_keeps_the_best_checkpoint(tmp_path):
    """Held-out answer loss must fall far below the uniform guess (log 28 = 3.33 nats), and
    the checkpoint kept is the evaluation with the best exact match (ties: characters)."""
    import math

    cfg = TrainConfig(task="arithmetic", preset="default", steps=150, eval_every=50,
                      eval_n=100, batch_size=64, lr=3e-3, warmup=20,
                      model=tiny_config("decoder", n_ctx=16))
    meta = train(cfg, tmp_path / "m", quiet=True)
    hist = meta["history"]
    assert [h["step"] for h in hist] == [50, 100, 150]
    assert hist[-1]["eval_loss"] < 0.5 * math.log(28)
    assert hist[-1]["eval_loss"] < hist[0]["eval_loss"]
    best = max(hist, key=lambda h: (h["exact_match"], h["char_accuracy"]))
    ckpt = load_checkpoint(tmp_path / "m")
    assert ckpt.meta["metrics"]["exact_match"] == best["exact_match"]
    assert ckpt.meta["training"]["step"] == best["step"]
    assert ckpt.meta["training"]["recipe"]["lr"] == 3e-3
    assert ckpt.meta["training"]["finished"] is True


def test_a_second_run_into_the_same_directory_is_refused(tmp_path):
    Trainer(tiny_train_config(steps=5, eval_every=5), tmp_path / "a", quiet=True).run()
    with pytest.raises(InterpError, match="already holds a training run"):
        train(tiny_train_config(steps=5), tmp_path / "a", quiet=True)


def test_epochs_count_passes_over_the_fixed_training_set(tmp_path):
    cfg = tiny_train_config(steps=None, epochs=2, data="fixed", rows=100, batch_size=10,
                            eval_every=100)
    t = Trainer(cfg, tmp_path / "e", quiet=True)
    assert t.total == 2 * len(t.data.train) // 10
    first = [e.src for s in range(t.total // 2) for e in t.data.examples(s)]
    assert sorted(first) == sorted(e.src for e in t.data.train)  # one epoch = each row once


@pytest.mark.parametrize("kw,msg", [({"steps": None}, "exactly one of"),
                                    ({"epochs": 1}, "exactly one of"),
                                    ({"steps": None, "epochs": 1}, "--data fixed"),
                                    ({"schedule": "linear"}, "unknown schedule"),
                                    ({"data": "stream"}, "unknown data mode")])
def test_bad_training_options_are_errors(tmp_path, kw, msg):
    with pytest.raises(InterpError, match=msg):
        train(tiny_train_config(**kw), tmp_path / "x", quiet=True)


def test_init_from_starts_from_the_checkpoint_weights(tmp_path):
    Trainer(tiny_train_config(steps=6, eval_every=6), tmp_path / "a", quiet=True).run()
    src = load_checkpoint(tmp_path / "a")
    t = Trainer(tiny_train_config(steps=6, init_from=str(tmp_path / "a")), tmp_path / "b",
                quiet=True)
    for (k, v), (_, w) in zip(src.model.state_dict().items(), t.model.state_dict().items()):
        assert torch.equal(v, w), k
    assert t.cfg.init_weights_sha256
    with pytest.raises(InterpError, match="differs from this run"):
        Trainer(tiny_train_config(steps=6, init_from=str(tmp_path / "a"),
                                  model=tiny_config("decoder", n_ctx=32)), tmp_path / "c")
    with pytest.raises(InterpError, match="was trained on"):
        Trainer(tiny_train_config(steps=6, init_from=str(tmp_path / "a"), task="quadratic",
                                  preset="small"), tmp_path / "d")


def test_character_accuracy_breaks_ties_and_reselect_keeps_the_better_weights(tmp_path):
    from interp.training.recipe import rank

    assert rank({"exact_match": 0.0, "char_accuracy": 0.5}) > \
        rank({"exact_match": 0.0, "char_accuracy": 0.4})
    assert rank({"exact_match": 0.1, "char_accuracy": 0.1}) > \
        rank({"exact_match": 0.0, "char_accuracy": 0.9})
    import json

    cfg = tiny_train_config(steps=60, eval_every=20, lr=3e-3)
    Trainer(cfg, tmp_path / "a", quiet=True).run()
    meta_path = tmp_path / "a" / "interp.json"
    meta = json.loads(meta_path.read_text())
    meta["metrics"]["char_accuracy"] = -1.0  # pretend the stored best is worse than anything
    meta["metrics"]["exact_match"] = -1.0
    meta_path.write_text(json.dumps(meta))
    t = Trainer.resume(tmp_path / "a", quiet=True)
    new = t.reselect()
    assert new["training"]["step"] == 60
    from safetensors.torch import load_file

    last = load_file(str(tmp_path / "a" / "resume" / "model.safetensors"))
    kept = load_checkpoint(tmp_path / "a").model.state_dict()
    assert all(torch.equal(kept[k], v) for k, v in last.items())
