"""Patching beyond one slice (`circuits.patching.slices`): every layout group, no-root pairs,
later answer tokens, and the joint position-set patch with equal-size controls, each against
an oracle outside the code under test (an HF model run on its own with the activations
replaced by hand, the solver's solution string read with regular expressions, numpy)."""

import random
import re

import numpy as np
import pytest
import torch

from circuits import patching as P
from circuits.patching import slices as SL
from circuits.patching.slice_result import SliceResult
from interp.tasks import QuadraticTask
from interp.tasks.tokenizer import CharCodec
from test_patching import sharpened


@pytest.fixture(scope="module")
def dec(tiny_checkpoints, tmp_path_factory):
    return sharpened(tiny_checkpoints["decoder"], tmp_path_factory, "decoder")


@pytest.fixture(scope="module")
def t5(tiny_checkpoints, tmp_path_factory):
    return sharpened(tiny_checkpoints["t5"], tmp_path_factory, "t5")


def hf_logit_diffs(model, arch, recv, src, layer, positions, clean_tok, bad_tok):
    """The oracle: the HF model alone. The input to block `layer` of the source run is
    captured with output_hidden_states; the receiving run gets it written at `positions` by
    a torch pre-hook on that block; the logit difference at the last position."""
    if arch == "decoder":
        blocks = model.transformer.h
        with torch.no_grad():
            hs = model(src["seq"], output_hidden_states=True).hidden_states[layer]
    else:
        blocks = model.encoder.block
        if layer == len(blocks):   # the encoder's output before its final norm
            blocks = list(blocks) + [model.encoder.final_layer_norm]
            keep = {}
            h = model.encoder.block[-1].register_forward_hook(
                lambda m, a, out: keep.__setitem__("h", out[0]))
            with torch.no_grad():
                model.encoder(input_ids=src["src"])
            h.remove()
            hs = keep["h"]
        else:
            with torch.no_grad():
                hs = model.encoder(input_ids=src["src"], output_hidden_states=True
                                   ).hidden_states[layer]

    def pre(module, args, kwargs):
        h = (args[0] if args else kwargs["hidden_states"]).clone()
        h[:, positions] = hs[:, positions]
        if args:
            return (h,) + tuple(args[1:]), kwargs
        return args, {**kwargs, "hidden_states": h}
    handle = blocks[layer].register_forward_pre_hook(pre, with_kwargs=True)
    try:
        with torch.no_grad():
            if arch == "decoder":
                logits = model(recv["seq"]).logits
            else:
                logits = model(input_ids=recv["src"], decoder_input_ids=recv["tgt"]).logits
    finally:
        handle.remove()
    last = logits[:, -1].float()
    rows = torch.arange(last.shape[0])
    return last[rows, clean_tok] - last[rows, bad_tok]


def test_pooled_and_group_statistics_against_numpy():
    """A synthetic two-group result with planted values: shares, intervals, controls and the
    rank p-value recomputed with numpy."""
    from circuits.stats import bootstrap_ci

    g = torch.Generator().manual_seed(0)

    def fake(n, shift, singles=2):
        """A group whose layout has `singles` other input positions (they differ between
        layouts, so pooled control k sits at a different index in each group)."""
        ex = [(type("E", (), {"src": f"eq{shift}-{i}", "cls": "two"})(), None)
              for i in range(n)]
        pairs = type("Pp", (), {"examples": ex, "answer_index": 3})()
        clean, corrupt = torch.full((n,), 4.0), torch.full((n,), -2.0)
        cells = torch.randn(2, 2 + 1 + singles + 19, n, generator=g) + shift
        labels = ["=", "0", "joint"] + [f"s{j}" for j in range(singles)] + \
            [f"control {k}" for k in range(19)]
        return SL.GroupRun(pairs, labels, 2, singles, 19, cells, clean, corrupt,
                           [e.src for e, _ in ex], 19)
    runs = [fake(5, 0.0), fake(7, 3.0, singles=3)]
    res = SliceResult(runs, ("=", "0"), "denoise", "logit_diff", {})
    df = res.frame()
    row = df[(df.scope == "pooled") & (df.layer == 1) & (df.cell == "joint")].iloc[0]
    v = np.concatenate([(r.cells[1, 2] + 2.0).numpy() / 6.0 for r in runs])
    ctrl = np.stack([np.concatenate([(r.cells[1, 3 + r.n_singles + k] + 2.0).numpy() / 6.0
                                     for r in runs]) for k in range(19)])
    assert row.restored == pytest.approx(v.mean(), abs=1e-6)
    assert row.control == pytest.approx(ctrl.mean(), abs=1e-6)
    p = (1 + np.sum(ctrl.mean(1) >= v.mean())) / 20
    assert row.p == pytest.approx(p)
    eqs = [e for r in runs for e in r.eqs]
    lo, hi = bootstrap_ci(v - ctrl.mean(0), groups=eqs)
    assert (row.effect_lo, row.effect_hi) == pytest.approx((lo, hi), abs=1e-6)
    assert row.pairs == 12 and row.distinct == 12 and row.n_controls == 19
    one = df[(df.scope == "pooled") & (df.layer == 0) & (df.cell == "=")].iloc[0]
    assert one.verdict == "untestable" and one.n_controls == 2
    assert set(df.scope) - {"pooled"}                          # the groups have their rows
    # a group of one equation has no interval, so no "confirmed" however its p falls
    lone = SliceResult([fake(1, 50.0)], ("=", "0"), "denoise", "logit_diff", {}).frame()
    assert lone.lo.isna().all() and (lone.verdict != "confirmed").all()

def test_controls_have_the_targets_size_avoid_them_and_are_distinct():
    rng = random.Random(0)
    pool = list(range(20, 29))                                   # 9 other positions
    sets, k = SL.control_sets(pool, 6, 20, rng)                  # C(9, 6) = 84 >= 20
    assert k == 20 and len({tuple(s) for s in sets}) == 20
    assert all(len(s) == 6 and len(set(s)) == 6 and set(s) <= set(pool) for s in sets)
    sets, k = SL.control_sets(list(range(7)), 6, 20, rng)        # only C(7, 6) = 7 exist
    assert k == 7 and len(sets) == 20 and len({tuple(s) for s in sets[:7]}) == 7
    assert all(len(s) == 6 for s in sets)
    big = list(range(40))                                        # the sampled path
    sets, k = SL.control_sets(big, 5, 30, rng)
    assert k == 30 and len({tuple(s) for s in sets}) == 30 and all(len(s) == 5 for s in sets)


def test_answer_index_reads_the_sqrt_and_x1_digit_on_hand_written_solutions():
    task = QuadraticTask("small")
    clean, bad = "2x^2+34x+120=0", "2x^2+34x+104=0"
    rc, rb = task.roles(clean)[1], task.roles(bad)[1]
    tc, tb = task.solve(clean), task.solve(bad)
    assert tc.startswith("D=(34^2-4*2*120)=196;x=(-34-14)/(2*2)=-12;")
    assert tb.startswith("D=(34^2-4*2*104)=324;x=(-34-18)/(2*2)=-13;")
    d = tc.index(")=") + 2
    assert P.answer_index(rc, rb, tc, tb, "D", "first") == d                 # '1' vs '3'
    assert P.answer_index(rc, rb, tc, tb, "D_value", "differ") == d
    assert P.answer_index(rc, rb, tc, tb, "sqrt", "first") is None           # '1' both
    assert P.answer_index(rc, rb, tc, tb, "sqrt", "differ") == tc.index("-14)") + 2
    assert P.answer_index(rc, rb, tc, tb, "x1", "first") is None             # '-' both
    assert P.answer_index(rc, rb, tc, tb, "x1", "digit") is None             # '1' both
    assert P.answer_index(rc, rb, tc, tb, "x1", "differ") == tc.index("=-12;") + 3
    assert P.answer_index(rc, rb, tc, tb, "x7", "first") is None             # no such field
    # x1 < 0 in both: its first token is the sign, equal; its first digit differs
    clean, bad = "1x^2+34x+280=0", "1x^2+34x+285=0"
    tc, tb = task.solve(clean), task.solve(bad)
    assert tc.startswith("D=(34^2-4*1*280)=36;x=(-34-6)/(2*1)=-20;")
    assert tb.startswith("D=(34^2-4*1*285)=16;x=(-34-4)/(2*1)=-19;")
    rc, rb = task.roles(clean)[1], task.roles(bad)[1]
    assert P.answer_index(rc, rb, tc, tb, "x1", "first") is None
    assert P.answer_index(rc, rb, tc, tb, "x1", "digit") == tc.index("=-20;") + 2
    assert P.answer_index(rc, rb, tc, tb, "sqrt", "first") == tc.index("-6)") + 1
    with pytest.raises(Exception, match="unknown answer token"):
        P.answer_index(rc, rb, tc, tb, "x1", "last")


@pytest.mark.parametrize("arch", ["decoder", "t5"])
def test_joint_patch_equals_the_hf_model_with_the_positions_replaced_by_hand(request, arch):
    ckpt, bridge = request.getfixturevalue("dec" if arch == "decoder" else "t5")
    pairs = P.corrupt_pairs(bridge, ckpt.task, n=3, field="b" if arch == "t5" else "a",
                            answer="D_value")
    side, pos, labels = SL.input_labels(pairs)
    tpos = [p for p, lab in zip(pos, labels) if lab.split("#")[0] in ("x", "^", "=", "0",
                                                                       "<sep>", "<eos>")]
    sets = [tpos, [tpos[0]], pos[:3]]
    got, recv_m, src_m = SL.patch_sets(bridge, pairs, sets, "denoise", "logit_diff")
    L = got.shape[0]
    assert L == len(ckpt.model.transformer.h if arch == "decoder" else
                    ckpt.model.encoder.block) + (arch == "t5")
    moved = 0
    for layer in range(L):
        for j, ps in enumerate(sets):
            want = hf_logit_diffs(ckpt.model, arch, pairs.corrupt, pairs.clean, layer, ps,
                                  pairs.clean_token, pairs.corrupt_token)
            assert torch.allclose(got[layer, j], want, atol=1e-4), (layer, ps)
            moved += float((want - recv_m).abs().max()) > 1e-3
    assert moved > 0   # some patch changes the metric: the comparison can fail
    # nothing patched at all: the receiving run itself (the hook really replaces)
    none = hf_logit_diffs(ckpt.model, arch, pairs.corrupt, pairs.clean, 0, [],
                          pairs.clean_token, pairs.corrupt_token)
    assert torch.allclose(none, recv_m, atol=1e-4)


def test_the_joint_cell_patches_every_target_position_and_only_them(dec):
    """Against the sum of its parts: on the decoder, the joint set's value equals the run
    with those positions patched by hand (above), and differs from every single one."""
    ckpt, bridge = dec
    pairs = P.corrupt_pairs(bridge, ckpt.task, n=3, field="a", answer="D_value")
    res = SL.slice_patch(bridge, [pairs], n_controls=3)
    run = res.runs[0]
    tpos, tlab = SL._target_positions(pairs, SL.TARGETS)
    assert run.labels[:run.n_targets + 1] == tlab + ["joint"]
    assert tlab == ["x#0", "^", "x#1", "=", "0", "<sep>"]
    want = hf_logit_diffs(ckpt.model, "decoder", pairs.corrupt, pairs.clean, 1, tpos,
                          pairs.clean_token, pairs.corrupt_token)
    assert torch.allclose(run.cells[1, run.n_targets], want, atol=1e-4)
    for j in range(run.n_targets):
        one = hf_logit_diffs(ckpt.model, "decoder", pairs.corrupt, pairs.clean, 1,
                             [tpos[j]], pairs.clean_token, pairs.corrupt_token)
        assert torch.allclose(run.cells[1, j], one, atol=1e-4)


def test_slice_patch_controls_match_the_target_set_in_size(dec):
    ckpt, bridge = dec
    pairs = P.corrupt_pairs(bridge, ckpt.task, n=2, field="c", answer="D_value")
    res = SL.slice_patch(bridge, [pairs], targets=("=", "0"), n_controls=4)
    run = res.runs[0]
    assert run.n_targets == 2 and run.n_controls == 4
    df = res.frame()
    joint = df[df.cell == "joint"]
    assert (joint["size"] == 2).all()
    _, pos, _ = SL.input_labels(pairs)
    tpos, _ = SL._target_positions(pairs, ("=", "0"))
    first = run.n_targets + 1 + run.n_singles
    assert run.sets[run.n_targets] == tpos
    for k in range(run.n_controls):
        ctrl = run.sets[first + k]
        assert len(ctrl) == len(tpos) == len(set(ctrl))          # equal size
        assert not set(ctrl) & set(tpos) and set(ctrl) <= set(pos)
        # its value is that set patched, re-run by hand (layer 1: after c reached them)
        v = hf_logit_diffs(ckpt.model, "decoder", pairs.corrupt, pairs.clean, 1, ctrl,
                           pairs.clean_token, pairs.corrupt_token)
        assert torch.allclose(run.cells[1, first + k], v, atol=1e-4)


SOLUTION = re.compile(r"^D=\([^)]*\)=(?P<D>-?\d+);(x=\((?P<negb>-?\d+)[-+](?P<s>\d+)\)/"
                      r"\(2\*\d+\)=(?P<x1>-?\d+);)?")


def oracle_index(tgt: str, answer: str, token: str) -> int:
    """Where the answer token sits in the solver's solution string, found by a regular
    expression (no roles)."""
    m = SOLUTION.match(tgt)
    group = {"D_value": "D", "sqrt": "s", "x1": "x1"}[answer]
    k = m.start(group)
    if token == "digit" and tgt[k] == "-":
        k += 1
    return k


@pytest.mark.parametrize("answer,token", [("D_value", "first"), ("sqrt", "first"),
                                          ("x1", "digit"), ("D_value", "differ")])
def test_every_layout_group_is_valid_and_read_at_the_asked_token(dec, answer, token):
    ckpt, bridge = dec
    task = ckpt.task
    codec = CharCodec()
    groups = SL.pair_groups(bridge, task, field="c", answer=answer, token=token,
                            classes=("two", "none", "one"), per_class=40, min_pairs=1)
    assert len(groups.groups) >= 2                                # not only the largest
    sizes = [g.n for g in groups.groups]
    assert sizes == sorted(sizes, reverse=True)
    srcs = [c.src for g in groups.groups for c, _ in g.examples]
    assert len(srcs) == len(set(srcs)) == groups.distinct()       # unique problems
    for g in groups.groups:
        width = g.clean["seq"].shape[1]
        for (clean, bad), cid, bid, ct, bt in zip(g.examples, g.clean["seq"], g.corrupt["seq"],
                                                  g.clean_token, g.corrupt_token):
            assert clean.tgt == task.solve(clean.src) and bad.tgt == task.solve(bad.src)
            assert task.check(bad.src, bad.tgt).ok
            diff = [i for i, (x, y) in enumerate(zip(clean.src, bad.src)) if x != y]
            assert len(clean.src) == len(bad.src) and len(diff) == 1
            # one layout per group: the roles, position by position, equal the first pair's
            r0 = task.roles(g.examples[0][0].src)[0]
            assert task.roles(clean.src)[0] == r0 == task.roles(bad.src)[0]
            k = oracle_index(clean.tgt, answer, token) if token != "differ" else \
                next(i for i in range(oracle_index(clean.tgt, "D_value", "first"),
                                      len(clean.tgt)) if clean.tgt[i] != bad.tgt[i])
            assert width == 1 + len(clean.src) + 1 + k               # cut before token k
            assert codec.decode(cid[1 + len(clean.src) + 1:].tolist()) == clean.tgt[:k]
            assert codec.decode(bid[1 + len(bad.src) + 1:].tolist()) == bad.tgt[:k]
            assert codec.itos[int(ct)] == clean.tgt[k] != bad.tgt[k] == codec.itos[int(bt)]
    classes = groups.classes()
    if token == "differ":
        assert classes.get("none", 0) > 0                       # no-root pairs included
    if answer == "D_value" and token == "first":
        # D of a no-root equation starts with '-' in both: none can be read at that token
        assert classes.get("none", 0) == 0
    if answer in ("sqrt", "x1"):
        assert classes.get("none", 0) == 0                       # no such field


def test_no_root_only_pairs_come_when_asked(dec):
    ckpt, bridge = dec
    g = SL.pair_groups(bridge, ckpt.task, classes=("none",), token="differ", per_class=40)
    assert set(g.classes()) == {"none"} and g.drawn == {"none": 40}
    with pytest.raises(Exception, match="no equation gives a usable pair"):
        SL.pair_groups(bridge, ckpt.task, classes=("none",), token="first", per_class=40)

