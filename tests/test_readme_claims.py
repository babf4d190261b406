"""README claims that had no test: each one checked against an oracle of its own (an
enumeration, plain HF forwards, a hand-computed schedule, the models' interp.json)."""

import json
import math
import re
from pathlib import Path

import pandas as pd
import pytest
import torch
from clihelp import run
from conftest import tiny_config
from test_shipped import quadratic_population, quadratic_src

ROOT = Path(__file__).resolve().parent.parent
# the README and the pages its details moved to (docs/)
README = "\n".join(p.read_text() for p in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))])


# -- the held-out counts of the small preset ---------------------------------------------------
def heldout_counts() -> dict[str, int]:
    """Every input of the small preset (enumerated from the README's generator definition),
    counted per class in the held-out partition."""
    from interp.tasks import get_task, is_heldout

    r = get_task("quadratic", "small").ranges
    pop = quadratic_population(r.root_max, r.k_max, r.coef_max)
    return {cls: sum(is_heldout(quadratic_src(*t)) for t in coefs) for cls, coefs in pop.items()}


def test_the_heldout_partition_is_a_tenth_of_the_inputs_and_fixed():
    """10% of all inputs (within 3 binomial standard deviations), and the fixed function the
    shipped models were trained with: blake2b-64 of the input string, modulo 10,000, below
    1,000 (recomputed here with hashlib), so their held-out figures stay held out."""
    import hashlib

    from interp.tasks import get_task, is_heldout

    r = get_task("quadratic", "small").ranges
    pop = quadratic_population(r.root_max, r.k_max, r.coef_max)
    srcs = [quadratic_src(*t) for coefs in pop.values() for t in coefs]
    mine = [int.from_bytes(hashlib.blake2b(s.encode(), digest_size=8).digest(), "big")
            % 10_000 < 1_000 for s in srcs]
    assert [is_heldout(s) for s in srcs] == mine
    n, k = len(srcs), sum(mine)
    print("held-out of the small preset:", heldout_counts(), "of",
          {c: len(v) for c, v in pop.items()})
    assert abs(k - 0.1 * n) <= 3 * math.sqrt(n * 0.1 * 0.9), (k, n)


def _number(text: str) -> int:
    return int(text.replace(",", ""))


def test_readme_states_the_enumerated_heldout_counts():
    counts = heldout_counts()
    m = re.search(r"leaves\s+([\d,]+)\s+two-root,\s+([\d,]+)\s+one-root\s+and\s+(~?[\d,]+)"
                  r"\s+no-root", README)
    assert m, "the held-out sentence of the Tasks section"
    assert "~" not in m[0]  # an enumeration is exact
    assert {"two": _number(m[1]), "one": _number(m[2]), "none": _number(m[3])} == counts
    m = re.search(r"held-out no-root equations.{0,160}?over all\s+([\d,]+)\s+of them", README, re.S)
    assert m and _number(m[1]) == counts["none"] and "about" not in m[0]


# -- PatchResult.normalised: the share of the gap restored --------------------------------------
def _hf_metric(model, ids, pairs, pos, hook=None):
    """Mean logit difference (clean answer token minus corrupted one) at the answer position,
    from a plain HF forward; hook: (layer, replacement of that block's input at pos)."""
    handle = None
    if hook is not None:
        layer, value = hook

        def pre(module, args, kwargs):
            h = (args[0] if args else kwargs["hidden_states"]).clone()
            h[:, pos] = value
            if args:
                return (h, *args[1:]), kwargs
            return args, {**kwargs, "hidden_states": h}
        handle = model.transformer.h[layer].register_forward_pre_hook(pre, with_kwargs=True)
    try:
        with torch.no_grad():
            out = model(input_ids=ids, output_hidden_states=True)
    finally:
        if handle is not None:
            handle.remove()
    last = out.logits[:, pairs.answer_pos].double()
    rows = torch.arange(ids.shape[0])
    diff = last[rows, pairs.clean_token] - last[rows, pairs.corrupt_token]
    return float(diff.mean()), out.hidden_states


def test_normalised_patching_is_the_share_of_the_gap_from_plain_hf_forwards():
    """normalised() = (x - corrupt) / (clean - corrupt) when denoising, (clean - x) /
    (clean - corrupt) when noising, with x, clean and corrupt all computed here by plain HF
    GPT-2 forwards of the shipped `arithmetic` model and a hook that overwrites one block
    input at one position."""
    from transformers import GPT2LMHeadModel

    from circuits.patching import corrupt_pairs, patch
    from interp.models import load_model
    from interp.models.checkpoint import SHIPPED_DIR

    bridge, task = load_model("arithmetic")
    pairs = corrupt_pairs(bridge, task, n=8, seed=3)
    hf = GPT2LMHeadModel.from_pretrained(str(SHIPPED_DIR / "arithmetic"),
                                         use_safetensors=True).eval()
    clean, clean_h = _hf_metric(hf, pairs.clean["seq"], pairs, None)
    corrupt, corrupt_h = _hf_metric(hf, pairs.corrupt["seq"], pairs, None)
    assert clean - corrupt > 1.0  # a trained model: a real gap to share
    n_layers, width = len(hf.transformer.h), pairs.clean["seq"].shape[1]
    for direction in ("denoise", "noise"):
        res = patch(bridge, pairs, "resid_pre", direction=direction)
        norm = res.normalised()
        assert norm.shape == (n_layers, width)
        src_h, recv = (clean_h, pairs.corrupt["seq"]) if direction == "denoise" else \
            (corrupt_h, pairs.clean["seq"])
        for layer in range(n_layers):
            for pos in range(width):
                x, _ = _hf_metric(hf, recv, pairs, pos, (layer, src_h[layer][:, pos]))
                want = (x - corrupt) / (clean - corrupt) if direction == "denoise" else \
                    (clean - x) / (clean - corrupt)
                assert float(norm[layer, pos]) == pytest.approx(want, abs=1e-4), \
                    (direction, layer, pos)
        assert res.frame().normalised.tolist() == pytest.approx(norm.flatten().tolist())


# -- scheduled sampling -------------------------------------------------------------------
def test_scheduled_sampling_share_ramps_linearly_to_the_set_share(tmp_path, monkeypatch):
    """The share of answer inputs replaced at step t (0-based) of T is S * t / T: 0 at the
    first step, rising in equal steps towards S (README: "ramps up to it")."""
    import interp.training.task as train_mod
    from interp.training.recipe import TrainConfig
    from interp.training.task import Trainer

    seen = []
    real = train_mod.scheduled_sampling

    def spy(model, arch, batch, share, gen):
        seen.append(share)
        return real(model, arch, batch, share, gen)

    monkeypatch.setattr(train_mod, "scheduled_sampling", spy)
    cfg = TrainConfig(task="arithmetic", preset="default", steps=20, eval_every=20, eval_n=8,
                      save_every=100, batch_size=4, warmup=2, scheduled_sampling=0.4,
                      model=tiny_config("decoder", n_ctx=16))
    Trainer(cfg, tmp_path / "run", quiet=True).run()
    hand = [0.0, 0.02, 0.04, 0.06, 0.08, 0.10, 0.12, 0.14, 0.16, 0.18,
            0.20, 0.22, 0.24, 0.26, 0.28, 0.30, 0.32, 0.34, 0.36, 0.38]   # 0.4 * t / 20
    assert seen == pytest.approx(hand, abs=1e-12)


class _ConstantGuess(torch.nn.Module):
    """A stand-in model whose greedy prediction is always token `guess`."""

    def __init__(self, vocab: int, guess: int):
        super().__init__()
        self.vocab, self.guess = vocab, guess

    def forward(self, input_ids, attention_mask=None, decoder_input_ids=None):
        ids = input_ids if decoder_input_ids is None else decoder_input_ids
        logits = torch.zeros(*ids.shape, self.vocab)
        logits[..., self.guess] = 1.0
        return type("Out", (), {"logits": logits})()


@pytest.mark.parametrize("arch", ["decoder", "t5"])
def test_scheduled_sampling_replaces_that_share_of_answer_inputs_only(arch):
    """With a model that always predicts one marker token, the inputs that become the marker
    are answer inputs only (never the prompt or padding), and their share is the requested
    one (within 4 binomial standard deviations)."""
    from interp.tasks import CharCodec, get_task
    from interp.tokens import make_batch
    from interp.training.task import scheduled_sampling

    codec = CharCodec()
    task = get_task("quadratic", "small")
    exs = task.generate(64, seed=5)
    batch = make_batch(arch, codec, [(e.src, e.tgt) for e in exs], 128)
    marker = codec.vocab["<unk>"]
    share = 0.3
    got = scheduled_sampling(_ConstantGuess(len(codec.vocab), marker), arch, batch, share,
                             torch.Generator().manual_seed(0))
    before, after = (batch.input_ids, got.input_ids) if arch == "decoder" else \
        (batch.decoder_input_ids, got.decoder_input_ids)
    assert (before != marker).all()
    changed = after != before
    # the solution characters fed back as inputs may be replaced; the prompt never (positions
    # after the solution, <eos> or padding, carry no label that depends on them)
    eligible = torch.zeros_like(changed)
    prompt = torch.zeros_like(changed)
    for i, e in enumerate(exs):
        start = len(e.src) + 2 if arch == "decoder" else 1   # <bos> src <sep> / <start>
        eligible[i, start:start + len(e.tgt)] = True
        prompt[i, :start] = True
    assert not (changed & prompt).any()
    assert (after[changed] == marker).all()
    n = int(eligible.sum())
    frac = int((changed & eligible).sum()) / n
    assert abs(frac - share) <= 4 * math.sqrt(share * (1 - share) / n), (frac, n)
    if arch == "decoder":
        assert torch.equal(got.labels, batch.labels)


# -- interp models ----------------------------------------------------------------------
def test_interp_models_lists_every_shipped_model_with_its_recorded_figures():
    from interp.models.checkpoint import SHIPPED_DIR, shipped_models

    proc = run("interp.cli", "models")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    names = shipped_models()
    assert len(names) >= 8
    for name in names:
        mine = [l for l in lines if l.split() and l.split()[0] == name]
        assert len(mine) == 1, (name, proc.stdout)
        line = mine[0]
        meta = json.loads((SHIPPED_DIR / name / "interp.json").read_text())
        if meta["model"]["arch"] == "native":
            last = meta["history"][-1]
            got = re.search(r"induction score ([\d.]+)", line)[1]
            assert float(got) == pytest.approx(last["induction_max"], abs=0.005), line
            got = re.search(r"ICL \(64 windows\) ([-+][\d.]+)", line)[1]
            assert float(got) == pytest.approx(last["icl"], abs=0.005), line
            got = re.search(r"trained ([\d.]+) CPU-min", line)[1]
            assert float(got) == pytest.approx(meta["cpu_minutes"]["training"]), line
            continue
        ev = meta["evaluation"]
        m = re.search(r"exact\s+([\d.]+)% \(n=(\d+)\)", line)
        assert float(m[1]) == pytest.approx(100 * ev["exact_match"], abs=0.05), line
        assert int(m[2]) == ev["n"] == 1000
        assert _number(re.search(r"params\s+([\d,]+)", line)[1]) == meta["params"]
        assert f"{meta['task']['task']}/{meta['task']['preset']}" in line
        tr = meta["training"]
        got = re.search(r"trained ([\d.]+) CPU-min", line)[1]
        assert float(got) == pytest.approx(tr.get("cpu_minutes_all_stages",
                                                  tr["cpu_minutes"])), line


# -- classify_heads --format, --segments number, --examples --------------------------------
def _number_segments(roles: list[str]) -> list[int]:
    """A segment per number (a sign and the digits that follow, all of one field); every
    other position is a segment of its own."""
    seg, out, prev = -1, [], None
    for r in roles:
        m = re.fullmatch(r"(.+)_(sign|digit)", r)
        if m and prev is not None and m[1] == prev[0] and m[2] == "digit":
            out.append(seg)
        else:
            seg += 1
            out.append(seg)
        prev = (m[1], m[2]) if m else None
    return out


def _hf_head_scores(path, task, examples):
    """Entropy and number-segment block share of every head from plain HF attentions:
    means over every query position of every example."""
    from transformers import GPT2LMHeadModel

    from interp.tasks import CharCodec

    codec = CharCodec()
    model = GPT2LMHeadModel.from_pretrained(str(path), use_safetensors=True,
                                            attn_implementation="eager").eval()
    ent, block, nq = 0.0, 0.0, 0
    for e in examples:
        ids = [codec.bos] + codec.encode(e.src) + [codec.sep] + codec.encode(e.tgt) + [codec.eos]
        r_src, r_tgt = task.roles(e.src, e.tgt)
        seg = torch.tensor(_number_segments(["<bos>", *r_src, "<sep>", *r_tgt, "<eos>"]))
        with torch.no_grad():
            att = torch.stack(model(input_ids=torch.tensor([ids]), output_attentions=True
                                    ).attentions)[:, 0].double()       # [layer, head, q, k]
        ent = ent - (att * att.clamp_min(1e-30).log()).sum((-1, -2))
        same = (seg[:, None] == seg[None, :]).double()
        block = block + (att * same).sum((-1, -2))
        nq += len(ids)
    return ent / nq, block / nq


def test_classify_heads_formats_segments_and_examples(tiny_checkpoints, tmp_path, capsys):
    """--format csv / json print the table that heads.csv / heads.json hold; --segments number
    gives each head the share of attention inside the query's own number, as computed from
    plain HF attentions; --examples k draws exactly k examples in the report."""
    from interp.classify_heads import _main
    from interp.viz.reports.classify import SHOW
    from interp.models import load_checkpoint

    path = tiny_checkpoints["decoder"]
    task = load_checkpoint(path).task
    examples = task.generate(6, seed=0)
    a, b = tmp_path / "a", tmp_path / "b"
    capsys.readouterr()
    assert _main([str(path), "--n", "6", "--out", str(a), "--format", "csv",
                  "--segments", "number", "--examples", "2", "--quiet"]) == 0
    printed = pd.read_csv(pd.io.common.StringIO(capsys.readouterr().out))
    table = pd.read_csv(a / "heads.csv")
    shown = [c for c in SHOW if c != "main_score"]
    shown[shown.index("label") + 1:shown.index("label") + 1] = ["score_kind", "main_score",
                                                                "stability"]
    assert list(printed.columns) == list(dict.fromkeys(shown)) and len(printed) == 8
    pd.testing.assert_frame_equal(printed, table[list(printed.columns)])
    ent, block = _hf_head_scores(path, task, examples)
    for _, r in table.iterrows():
        assert r.entropy == pytest.approx(float(ent[r["layer"], r["head"]]), abs=1e-4)
        assert r.block_share == pytest.approx(float(block[r["layer"], r["head"]]), abs=1e-4)
    html = (a / "report.html").read_text()
    shown = set(re.findall(r"Example (\d+), self attention", html))
    assert shown == {"0", "1"}
    assert _main([str(path), "--n", "6", "--out", str(b), "--format", "json", "--no-report",
                  "--quiet"]) == 0
    rows = json.loads(capsys.readouterr().out)
    stored = json.loads((b / "heads.json").read_text())
    assert [{k: r[k] for k in rows[0]} for r in stored] == rows
    assert set(SHOW) | {"score_kind", "stability", "labels"} == set(rows[0])
    assert not (b / "report.html").exists()
    statement = pd.read_csv(b / "heads.csv")
    assert (statement.entropy - table.entropy).abs().max() < 1e-6   # same data, same heads
    assert (statement.block_share - table.block_share).abs().max() > 0.05  # other segments
