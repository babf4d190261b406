"""The exact fast path of T5 patching (circuits.patching.fast_t5): every T5 site it covers,
both directions, against the batched path (full forwards through the bridge) and against
plain HF forwards with one torch hook per patch (no TransformerLens, no interp code)."""

import pytest
import torch
from test_patching import sharpened

from circuits import patching as P
from circuits.patching import fast_t5

SITES = [s for s in P.T5_SITES if "pattern" not in s]


@pytest.fixture(scope="module")
def t5(tiny_checkpoints, tmp_path_factory):
    ckpt, bridge = sharpened(tiny_checkpoints["t5"], tmp_path_factory, "t5-fast")
    return ckpt, bridge, P.corrupt_pairs(bridge, ckpt.task, n=3, field="b", answer="D_value")


@pytest.fixture
def rows_through_the_tail(monkeypatch):
    """How many rows reach T5Tail's unembedding (every fast-path patch ends there)."""
    seen = []
    logits = fast_t5.T5Tail.logits

    def count(self, r):
        seen.append(r.shape[0])
        return logits(self, r)
    monkeypatch.setattr(fast_t5.T5Tail, "logits", count)
    return seen


def changed_cells(bridge, pairs, what) -> int:
    """How many cells of `what` hold a different activation in the two inputs (for some
    pair), from TransformerLens's own cache."""
    names = P.site(bridge, what).names(bridge)
    a, b = (bridge.run_with_cache(ids["src"], decoder_input=ids["tgt"],
                                  names_filter=lambda n: n in names)[1]
            for ids in (pairs.clean, pairs.corrupt))
    n = 0
    for name in names:
        diff = a[name] != b[name]                      # [batch, pos, d] or [batch, pos, head, dh]
        if what.endswith("head"):
            n += int(diff.any(-1).any(1).any(0).sum())          # per head
        elif what.endswith("head_pos"):
            n += int(diff.any(-1).any(0).sum())                 # per (pos, head)
        else:
            n += int(diff.any(-1).any(0).sum())                 # per pos
    return n


@pytest.mark.parametrize("direction", P.DIRECTIONS)
def test_the_fast_path_equals_the_batched_path_on_every_site(t5, direction,
                                                              rows_through_the_tail):
    """In float64, so that the two summation orders agree to far below float32's resolution
    (in float32 they differ by up to ~20 ulps of these logits, ~70: 1.3e-4 measured)."""
    _, bridge, pairs = t5
    bridge.double()
    try:
        for what in SITES:
            rows_through_the_tail.clear()
            fast = P.patch(bridge, pairs, what, direction=direction)
            slow = P.patch(bridge, pairs, what, direction=direction, fast=False, max_rows=120)
            # every patch that writes something new ran through the fast path, once
            assert sum(rows_through_the_tail) == pairs.n * changed_cells(bridge, pairs, what)
            assert (fast.per_example - slow.per_example).abs().max() <= 1e-5, what
            assert fast.clean == slow.clean and fast.corrupt == slow.corrupt
            base = fast.corrupt if direction == "denoise" else fast.clean
            assert (fast.values - base).abs().max() > 1e-2, what   # patches do something
    finally:
        bridge.float()


# ------------------------------------------------------------------------------------------
# the oracle: plain HF, one forward per patch with a torch hook (written here, from HF's own
# module tree; no bridge, no interp code)
def _module(hf, what, layer):
    """(HF module, how its tensor is reached) for site `what` at `layer`: "in" the first
    input (a residual entering a block, the z entering an output projection) or "out" the
    output (its first element for an attention)."""
    stack, part = what.split(".", 1)
    block = (hf.encoder if stack == "enc" else hf.decoder).block[layer]
    if part == "resid_pre":
        return block, "in"
    if part == "attn_out":
        return block.layer[0].SelfAttention, "out"
    if part == "cross_attn_out":
        return block.layer[1].EncDecAttention, "out"
    if part == "mlp_out":
        return block.layer[-1].DenseReluDense, "out"
    attn = block.layer[1].EncDecAttention if stack == "cross" else block.layer[0].SelfAttention
    return attn.o, "in"


def _hf_run(hf, ids, module, where, edit):
    """The answer-position logits of one HF forward whose tensor at (module, where) passes
    through edit(tensor) -> tensor."""
    def pre(mod, args, kwargs):
        return (edit(args[0]),) + tuple(args[1:]), kwargs

    def post(mod, args, kwargs, out):
        return (edit(out[0]),) + tuple(out[1:]) if isinstance(out, tuple) else edit(out)
    h = module.register_forward_pre_hook(pre, with_kwargs=True) if where == "in" else \
        module.register_forward_hook(post, with_kwargs=True)
    try:
        with torch.no_grad():
            return hf(input_ids=ids["src"], decoder_input_ids=ids["tgt"]).logits[:, -1]
    finally:
        h.remove()


def hf_patch(hf, pairs, what, cell, direction):
    """The per-pair logit difference of one patched HF forward."""
    recv, src = (pairs.corrupt, pairs.clean) if direction == "denoise" else \
        (pairs.clean, pairs.corrupt)
    module, where = _module(hf, what, cell[0])
    kept = {}

    def keep(t):
        kept["t"] = t.detach().clone()
        return t
    _hf_run(hf, src, module, where, keep)
    H = hf.config.num_heads
    head = cell[1] if "head" in what else None
    pos = cell[-1] if what.endswith(("pos", "_pre", "_out")) else slice(None)

    def write(t):
        t = t.clone()
        if head is None:
            t[:, pos] = kept["t"][:, pos]
        else:                                   # z [b, pos, head * d_head]
            v, s = t.view(*t.shape[:2], H, -1), kept["t"].view(*t.shape[:2], H, -1)
            v[:, pos, head] = s[:, pos, head]
        return t
    last = _hf_run(hf, recv, module, where, write).float()
    rows = torch.arange(last.shape[0])
    return last[rows, pairs.clean_token] - last[rows, pairs.corrupt_token]


@pytest.mark.parametrize("direction", P.DIRECTIONS)
def test_the_fast_path_equals_plain_hf_forwards_with_one_hook(t5, direction):
    from transformers import T5ForConditionalGeneration

    ckpt, bridge, pairs = t5
    hf = T5ForConditionalGeneration.from_pretrained(str(ckpt.path)).eval().double()
    moved = 0
    for what in SITES:
        bridge.double()                    # both in float64 (as in the test above)
        try:
            res = P.patch(bridge, pairs, what, direction=direction)
        finally:
            bridge.float()
        width = res.per_example.shape[-2]
        if "head" in res.axes and "pos" in res.axes:   # a changed position late in the
            chosen = [(0, 1, 2), (1, 3, width - 1), (1, 0, width // 2)]    # sequence too
        elif "head" in res.axes:
            chosen = [(0, 2), (1, 1)]
        else:
            chosen = [(0, 1), (1, width - 1), (1, width // 2)]
        for cell in chosen:
            ref = hf_patch(hf, pairs, what, cell, direction)
            assert torch.allclose(res.per_example[cell], ref, atol=1e-5), (what, cell)
            base = res.corrupt if direction == "denoise" else res.clean
            moved += abs(float(ref.mean()) - base) > 1e-2
    assert moved >= 2 * len(SITES)          # most chosen patches change the metric
