"""The seed's protocol: a split that keeps repeats, training in bounded runs, and the
evaluation that separates test rows seen in training from the others."""

import json
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest
from clihelp import one_line, run_here

import interp.protocol as protocol
from interp.errors import InterpError
from interp.stats import bootstrap_ci
from interp.metrics import score_outputs
from interp.models.config import ModelConfig
from interp.tasks import get_task, split_examples
from interp.training.recipe import TrainConfig

ROOT = Path(__file__).resolve().parent.parent


def test_the_seed_split_keeps_repeats_and_the_distinct_split_removes_them():
    task = get_task("quadratic", "small")
    rows = task.generate(500, seed=3)
    assert len({e.src for e in rows}) < 450          # the small preset repeats inputs
    train, test = split_examples(rows, 0.2, dedup=False)
    assert [e.src for e in train] == [e.src for e in rows[:400]]
    assert [e.src for e in test] == [e.src for e in rows[400:]]
    counts = Counter(e.src for e in rows[:400])
    repeats = sum(1 for e in rows[400:] if counts[e.src] > 0)
    assert repeats > 0
    dtrain, dtest = split_examples(rows, 0.2)
    assert not {e.src for e in dtrain} & {e.src for e in dtest}
    assert len(dtrain) + len(dtest) == len(set(e.src for e in rows))


def fake_checkpoint(rows=400, eval_n=10, holdout=True):
    cfg = TrainConfig(task="quadratic", preset="small", steps=1, data="fixed", split="seed",
                      rows=rows, eval_n=eval_n, holdout=holdout,
                      model=ModelConfig(n_ctx=64))
    return SimpleNamespace(meta={"training": {"recipe": cfg.to_dict()}},
                           task=get_task("quadratic", "small"), model=None, arch="decoder",
                           config=cfg.model), cfg


def planted(right):
    """An `evaluate` whose model answers exactly the examples `right(example)` picks."""
    calls = []

    def fake(model, arch, task, examples, n_ctx, batch_size=256, progress=False):
        calls.append([e.src for e in examples])
        outs = [e.tgt if right(e) else "D=(" for e in examples]
        return score_outputs(task, examples, outs), outs
    return fake, calls


def test_rows_seen_in_training_are_scored_apart(monkeypatch):
    ckpt, cfg = fake_checkpoint()
    task = ckpt.task
    rows = task.generate(cfg.rows, cfg.seed, heldout=False)
    train_inputs = {e.src for e in rows[:320]}
    fake, calls = planted(lambda e: e.src in train_inputs)
    monkeypatch.setattr(protocol, "evaluate", fake)
    res = protocol.seed_protocol(ckpt, novel_n=20)
    scored = rows[320 + cfg.eval_n:]                  # the rows that chose it are left out
    assert calls[0] == [e.src for e in scored]
    seen = [e.src in train_inputs for e in scored]
    ov = res["overlap"]
    assert ov["share"] == pytest.approx(sum(seen) / len(seen))
    assert 0 < ov["share"] < 1
    assert ov["seen"]["exact_match"] == 1.0 and ov["unseen"]["exact_match"] == 0.0
    assert ov["exact_from_seen"] == 1.0
    assert res["test"]["exact_match"] == pytest.approx(ov["share"])
    lo, hi = res["test"]["exact_ci"]
    assert lo < res["test"]["exact_match"] < hi
    # the interval resamples equations, not rows (the small preset repeats many)
    ok = [float(s) for s in seen]
    srcs = [e.src for e in scored]
    assert len(set(srcs)) < len(srcs)
    assert [lo, hi] == list(bootstrap_ci(ok, groups=srcs, seed=0))
    assert [lo, hi] != list(bootstrap_ci(ok, seed=0))
    assert res["test"]["distinct"] == len({e.src for e in scored})
    for c, v in ov["per_class"].items():
        mine = [s for s, e in zip(seen, scored) if e.cls == c]
        assert v["rows"] == len(mine) and v["seen_share"] == pytest.approx(sum(mine) / len(mine))
    assert ov["unseen_at_class_mix"] in (0.0, None)
    # the novel set: distinct held-out inputs, none of them a training row
    novel = calls[1]
    assert len(novel) == len(set(novel)) == 20 and res["novel"]["dropped_as_training_rows"] == 0
    assert res["novel"]["exact_match"] == 0.0
    text = protocol.format_protocol(res, "planted")
    assert f"{ov['share']:.1%}" in text and "never trained on" in text


def test_unseen_rows_are_reweighted_to_the_class_mix(monkeypatch):
    ckpt, cfg = fake_checkpoint(rows=2000)
    fake, _ = planted(lambda e: e.cls == "one")
    monkeypatch.setattr(protocol, "evaluate", fake)
    ov = protocol.seed_protocol(ckpt, novel_n=0)["overlap"]
    assert ov["per_class"]["one"]["exact_unseen"] == 1.0
    assert ov["per_class"]["two"]["exact_unseen"] == 0.0
    assert ov["unseen_at_class_mix"] == pytest.approx(0.3)


def test_a_checkpoint_without_a_fixed_split_is_refused():
    ckpt, _ = fake_checkpoint()
    ckpt.meta["training"]["recipe"]["data"] = "fresh"
    with pytest.raises(InterpError, match="fresh samples"):
        protocol.seed_protocol(ckpt)
    ckpt.meta = {}
    with pytest.raises(InterpError, match="no training recipe"):
        protocol.seed_protocol(ckpt)
    ckpt, _ = fake_checkpoint()
    with pytest.raises(InterpError, match="--n 70 or less"):
        protocol.seed_protocol(ckpt, n=71)


TINY = ["quadratic", "--protocol", "seed", "--rows", "300", "--layers", "1", "--d-model", "16",
        "--heads", "2", "--steps", "4", "--eval-every", "2", "--eval-n", "8", "--batch-size",
        "4", "--warmup", "1", "--threads", "1", "--quiet"]


def test_bounded_runs_continue_to_the_weights_of_one_run(tmp_path):
    whole = run_here("interp.train", *TINY, "--out", str(tmp_path / "whole"))
    assert whole.returncode == 0, whole.stderr
    b = tmp_path / "b"
    first = run_here("interp.train", *TINY, "--until-step", "1", "--out", str(b))
    assert first.returncode == 0, first.stderr
    assert "paused at step 1 of 4" in first.stdout and "--resume" in first.stdout
    second = run_here("interp.train", "--resume", str(b), "--until-step", "2", "--quiet")
    assert second.returncode == 0 and "paused at step 2 of 4" in second.stdout
    again = run_here("interp.train", "--resume", str(b), "--until-step", "2", "--quiet")
    one_line(again.returncode, again.stderr, "--until-step 2 is not after the run's step 2")
    # a time box: a pause after the first step of this call
    third = run_here("interp.train", "--resume", str(b), "--stop-after", "1e-6", "--quiet")
    assert third.returncode == 0 and "paused at step 3 of 4" in third.stdout
    # the box counts this call's time, not the run's: a run that has already taken hours
    # still gets its 30 s
    state_path = b / "resume" / "state.json"
    state = json.loads(state_path.read_text())
    state["wall_seconds"] = 1e6
    state_path.write_text(json.dumps(state))
    last = run_here("interp.train", "--resume", str(b), "--stop-after", "0.5", "--quiet")
    assert last.returncode == 0 and "paused" not in last.stdout, last.stdout
    assert json.loads(state_path.read_text())["step"] == 4
    for f in ("model.safetensors", "resume/model.safetensors", "resume/optimizer.safetensors"):
        assert (b / f).read_bytes() == (tmp_path / "whole" / f).read_bytes(), f
    meta = json.loads((b / "interp.json").read_text())
    assert [h["step"] for h in meta["history"]] == [2, 4]
    assert all("novel_exact_match" in h and "cpu_minutes" in h for h in meta["history"])
    recipe = meta["training"]["recipe"]
    assert (recipe["preset"], recipe["data"], recipe["split"], recipe["rows"]) == \
        ("seed", "fixed", "seed", 300)

    js = tmp_path / "p.json"
    ev = run_here("interp.evaluate", str(b), "--protocol", "seed", "--novel-n", "4",
                  "--json", str(js), "--quiet")
    assert ev.returncode == 0, ev.stderr
    res = json.loads(js.read_text())
    # the oracle: the rows training drew, from a task built the way training builds it (the
    # checkpoint's own task object lists its class mix in another order, which draws others)
    rows = get_task("quadratic", "seed").generate(300, 0, heldout=False)
    train, test = rows[:240], rows[240:]
    assert res["split"]["scored_rows"] == len(test) - 8 == 52
    inputs = {e.src for e in train}
    share = sum(e.src in inputs for e in test[8:]) / len(test[8:])
    assert res["overlap"]["share"] == pytest.approx(share)
    per_class = Counter(e.cls for e in test[8:])
    assert {c: v["rows"] for c, v in res["overlap"]["per_class"].items()} == dict(per_class)
    assert "test rows whose equation is also a training row" in ev.stdout


def test_a_distinct_split_is_labelled_and_a_no_holdout_run_keeps_training_rows_out(
        monkeypatch):
    ckpt, cfg = fake_checkpoint(rows=2000, holdout=False)
    fake, calls = planted(lambda e: False)
    monkeypatch.setattr(protocol, "evaluate", fake)
    res = protocol.seed_protocol(ckpt, novel_n=60)
    inputs = {e.src for e in get_task("quadratic", "small").generate(2000, 0)[:1600]}
    novel = calls[1]
    assert not inputs & set(novel)
    assert res["novel"]["dropped_as_training_rows"] == 60 - len(novel) > 0
    assert "left out as training rows" in protocol.format_protocol(res, "m")
    ckpt.meta["training"]["recipe"]["split"] = "distinct"
    res = protocol.seed_protocol(ckpt, novel_n=0)
    text = protocol.format_protocol(res, "m")
    assert "no test equation is a training one" in text and "also a training row" not in text
    assert res["overlap"]["seen"]["exact_match"] is None
    json.dumps(res, allow_nan=False)


@pytest.mark.parametrize("args, needles", [
    (["quadratic", "--protocol", "seed", "--preset", "small"], ["--protocol seed", "--preset"]),
    (["quadratic", "--protocol", "seed", "--data", "fresh"], ["--data"]),
    (["quadratic", "--split", "seed"], ["--split needs --data fixed"]),
    (["quadratic", "--data", "fixed", "--split", "halves"], ["invalid choice"]),
    (["quadratic", "--stop-after", "0"], ["--stop-after must be a positive"]),
    (["quadratic", "--stop-after", "nan"], ["--stop-after must be a positive"]),
    (["quadratic", "--until-step", "0"], ["--until-step must be a step of 1 or more"]),
    (["arithmetic", "--protocol", "seed"], ["arithmetic has no seed protocol"]),
    (["quadratic", "--protocol", "seed", "--rows", "300", "--eval-n", "60"],
     ["--eval-n 60 takes every one of the 60 test rows"]),
])
def test_bad_protocol_and_pause_options(tmp_path, args, needles):
    p = run_here("interp.train", *args, "--steps", "2", "--out", str(tmp_path / "o"))
    one_line(p.returncode, p.stderr, *needles)
    assert not (tmp_path / "o").exists()


def test_bad_protocol_evaluations(tmp_path, tiny_checkpoints):
    p = run_here("interp.evaluate", str(tiny_checkpoints["decoder"]), "--protocol", "seed")
    one_line(p.returncode, p.stderr, "no training recipe")
    for extra, needle in ((["--preset", "seed"], "drop --preset"),
                          (["--novel-n", "-1"], "--novel-n must be 0 to"),
                          (["--all-inputs"], "drop --preset and --all-inputs")):
        p = run_here("interp.evaluate", str(tiny_checkpoints["decoder"]), "--protocol", "seed",
                     *extra)
        one_line(p.returncode, p.stderr, needle)
    p = run_here("interp.train", "--resume", str(tmp_path), "--protocol", "seed")
    one_line(p.returncode, p.stderr, "--resume and --reselect keep the recipe")
    p = run_here("interp.train", "--reselect", str(tmp_path), "--split", "seed")
    one_line(p.returncode, p.stderr, "--resume and --reselect keep the recipe")
    p = run_here("interp.evaluate", str(tiny_checkpoints["decoder"]), "--novel-n", "5")
    one_line(p.returncode, p.stderr, "--novel-n belongs to --protocol seed")


def test_the_shipped_stages_trained_only_on_rows_of_the_protocols_training_split():
    """quadratic-seed's first stages used the distinct split of the same 100,000 rows; every
    input they trained on is a training row of the seed's split too, so the protocol's
    seen/unseen parts are not blurred by the earlier stages."""
    import sys

    sys.path.insert(0, str(ROOT / "scripts"))
    from train_shipped import RECIPES

    def option(args, name, default):
        return args[args.index(name) + 1] if name in args else default
    stages = RECIPES["quadratic-seed"]
    # two stages on the distinct split, then the protocol's stages
    assert all("--protocol" not in s for s in stages[:2])
    assert len(stages) > 2 and all("--protocol" in s for s in stages[2:])
    for args in stages:   # one set of rows: the same seed and size in every stage
        assert (option(args, "--seed", "0"), option(args, "--rows", "100000")) == ("0", "100000")
    rows = get_task("quadratic", "seed").generate(100_000, 0, heldout=False)
    # the distinct split, written out: first occurrences in order, cut at 80%
    distinct = list(dict.fromkeys(e.src for e in rows))
    old_train = set(distinct[:round(len(distinct) * 0.8)])
    assert old_train <= {e.src for e in rows[:80_000]}


def test_the_campaigns_stop_rule():
    """Stop at the targets, or after three runs of the same length whose own evaluations
    did not move exact match by a point; a run that repeats the previous evaluation (shorter
    than --eval-every) is no new measurement."""
    import sys

    sys.path.insert(0, str(ROOT / "scripts"))
    from train_seed import stop_rule

    def run(i, exact, step, minutes=28, char=0.5):
        return {"run": i, "minutes": minutes, "exact_match": exact, "char_accuracy": char,
                "eval_step": step}
    flat = [run(1, 0.100, 200), run(2, 0.105, 400), run(3, 0.104, 600), run(4, 0.108, 800)]
    assert "three runs" in stop_rule(flat)
    assert stop_rule(flat[:3]) is None
    moved = [run(1, 0.10, 200), run(2, 0.12, 400), run(3, 0.104, 600), run(4, 0.108, 800)]
    assert stop_rule(moved) is None
    repeats = [run(1, 0.10, 200), run(2, 0.10, 200), run(3, 0.10, 200), run(4, 0.10, 400)]
    assert stop_rule(repeats) is None
    other_length = [run(1, 0.10, 200, 20)] + flat[1:]
    assert stop_rule(other_length) is None
    assert stop_rule([run(1, 0.37, 200, char=0.87)]) == "the targets are met"
    assert stop_rule([run(1, 0.37, 200, char=0.86)]) is None
