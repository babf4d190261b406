"""AtP* (circuits.patching.atp) and the agreement report (circuits.patching.compare).

Oracles: exact patching through TransformerLens hooks (`patch(fast=False)`, not the GPT-2
modules AtP* recomputes attention with) on toy GPT-2s built so that the only nonlinearity
left is the one under test (affine layer norms, a linear MLP activation); a forward pass
with layer 1's outputs frozen (an independent hook) for the direct effect GradDrop keeps;
scipy's spearmanr / pearsonr and hand counts for the agreement table.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import circuits.patching as P
from interp.tasks.quadratic import QuadraticTask


def toy(tiny_checkpoints, n_layer: int = 2, plant=None):
    """A GPT-2 from the tiny decoder whose layer norms are affine (epsilon 1e12 swamps the
    variance; weights scaled back by 1e6: each norm is (x - mean) times its weight) and whose
    MLP activation is linear: its logits are linear in everything except the attention
    softmaxes. `plant(model)` edits the weights before the bridge is built."""
    from transformer_lens.model_bridge import TransformerBridge
    from transformers import AutoTokenizer, GPT2LMHeadModel

    path = str(tiny_checkpoints["decoder"])
    model = GPT2LMHeadModel.from_pretrained(path, n_layer=n_layer, activation_function="linear",
                                            layer_norm_epsilon=1e12, use_safetensors=True)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.LayerNorm):
                m.weight.mul_(1e6)
        for name, p in model.named_parameters():
            if "ln" not in name:
                p.mul_(6.0)                          # effects well above float noise
        model.transformer.ln_f.weight.mul_(100.0)    # the metric 100x: clear of float noise
        if plant:
            plant(model)
    model.eval()
    bridge = TransformerBridge.boot_transformers(path, hf_model=model,
                                                 tokenizer=AutoTokenizer.from_pretrained(path))
    bridge.eval()
    return bridge


def saturate(model):
    """Layer 1's queries and keys 30x larger (its softmax saturates), layer 0's MLP off
    (layer 0's outputs write straight into layer 1's input), layer 2's queries and keys 0
    (its pattern uniform whatever its input: no nonlinearity after layer 1's softmax)."""
    d = model.config.n_embd
    model.transformer.h[1].attn.c_attn.weight[:, :2 * d] *= 30.0
    model.transformer.h[0].mlp.c_proj.weight.zero_()
    model.transformer.h[0].mlp.c_proj.bias.zero_()
    model.transformer.h[2].attn.c_attn.weight[:, :2 * d] = 0
    model.transformer.h[2].attn.c_attn.bias[:2 * d] = 0


@pytest.fixture(scope="module")
def saturated(tiny_checkpoints):
    bridge = toy(tiny_checkpoints, n_layer=3, plant=saturate)
    pairs = P.corrupt_pairs(bridge, QuadraticTask("small"), n=3, field="c", answer="D_value")
    return bridge, pairs


def test_atp_star_equals_exact_where_the_metric_is_linear_in_the_activation(tiny_checkpoints):
    """1 layer, affine norms, linear MLP: the metric is linear in attn_out / mlp_out / z, so
    AtP, and AtP* (no later softmax to fix, no other layer to drop), equal exact patching."""
    bridge = toy(tiny_checkpoints, n_layer=1)
    pairs = P.corrupt_pairs(bridge, QuadraticTask("small"), n=3, field="c", answer="D_value")
    for what in ("attn_out", "head_pos"):
        exact = P.patch(bridge, pairs, what, fast=False)
        assert (exact.values - exact.corrupt).abs().max() > 1e-3
        for method in ("atp", "atp*"):
            est = P.attribute(bridge, pairs, what, method=method)
            assert torch.allclose(est.per_example, exact.per_example, atol=1e-5, rtol=1e-4)


def test_qk_fix_with_values_is_exact_where_the_only_nonlinearity_is_a_later_softmax(saturated):
    """3 layers, affine norms, linear MLP, layer 1's softmax saturated (not the last layer:
    every query row counts), layer 0's MLP off, layer 2's pattern fixed. A cell that writes
    straight into layer 1's input (layer 0's outputs, resid_pre of layer 1) acts on the
    metric linearly except through layer 1's attention read, which the fix with values
    recomputes: it equals exact patching there, and on the later cells (linear). Plain AtP,
    linearising a saturated softmax, is far off there."""
    bridge, pairs = saturated
    base = _base(bridge, pairs)
    for what, rows in (("mlp_out", slice(None)), ("resid_pre", slice(1, 3)),
                       ("attn_out", slice(None)), ("head_pos", slice(None)),
                       ("head", slice(None))):
        exact = P.patch(bridge, pairs, what, fast=False).per_example[rows]
        fixed = P.attribute(bridge, pairs, what, qk_fix="qkv").per_example[rows]
        assert (exact - base).abs().max() > 0.1
        assert torch.allclose(fixed, exact, atol=1e-4, rtol=1e-4), what
    exact = P.patch(bridge, pairs, "resid_pre", fast=False).per_example[1]
    plain = (P.attribute(bridge, pairs, "resid_pre").per_example[1] - exact).abs().max()
    assert plain > 0.3 * (exact - base).abs().max()


def test_the_attention_read_equals_the_bridge_s_own(saturated):
    """atp.qkv / atp.read (what the QK fix recomputes) against the bridge's hook_z at every
    layer, all query rows and a subset of them."""
    from circuits.patching.atp import qkv, read
    from circuits.patching.fast import GPT2Tail
    from circuits.patching.sites import forward_keep

    bridge, pairs = saturated
    tail = GPT2Tail(bridge)
    names = [f"blocks.{l}.{h}" for l in range(3) for h in ("hook_resid_pre", "attn.hook_z")]
    _, acts = forward_keep(bridge, pairs.corrupt, names)
    rows = torch.tensor([3, 7, 20])
    for l in range(3):
        q, k, v = qkv(tail, l, acts[f"blocks.{l}.hook_resid_pre"])
        z = acts[f"blocks.{l}.attn.hook_z"].transpose(1, 2)               # [b, h, pos, dh]
        assert torch.allclose(read(tail, l, q, k, v), z, atol=1e-5)
        assert torch.allclose(read(tail, l, q[:, :, rows], k, v, rows), z[:, :, rows],
                              atol=1e-5)


def _base(bridge, pairs):
    from circuits.patching.sites import forward

    return P.metric_values(forward(bridge, pairs.corrupt), pairs)


def test_qk_fix_equals_a_key_and_query_only_patch(saturated):
    """The paper's QK fix alone, per cell of resid_pre at layer 1: AtP+QK - AtP = (exact -
    linearised) effect of patching ONLY that position's query and key of layer 1 (hooks on
    hook_q / hook_k, the bridge's own attention; linearised: d/d epsilon of the same patch
    scaled by epsilon, by autograd). The saturated softmax makes the linearised part miss."""
    from circuits.patching.sites import forward, forward_keep

    bridge, pairs = saturated
    base = _base(bridge, pairs)
    names = ["blocks.1.attn.hook_q", "blocks.1.attn.hook_k"]
    _, src = forward_keep(bridge, pairs.clean, names)
    _, rec = forward_keep(bridge, pairs.corrupt, names)
    B, T = pairs.corrupt["seq"].shape
    ids = {"seq": pairs.corrupt["seq"].repeat(T, 1)}             # copy p patches position p

    def hooks(scale):
        def mix(n):
            def f(t, hook):
                t = t.clone()
                for p in range(T):
                    rows = slice(p * B, (p + 1) * B)
                    t[rows, p] = rec[n][:, p] + scale[rows].view(-1, 1, 1) * (
                        src[n][:, p] - rec[n][:, p])
                return t
            return f
        return [(n, mix(n)) for n in names]
    full = P.metric_values(forward(bridge, ids, hooks(torch.ones(T * B))), pairs,
                           "logit_diff", T).view(T, B) - base
    eps = torch.zeros(T * B, requires_grad=True)
    with torch.enable_grad():
        m = P.metric_values(forward(bridge, ids, hooks(eps), grad=True), pairs, "logit_diff", T)
        (lin,) = torch.autograd.grad(m.sum(), eps)
    bridge.zero_grad(set_to_none=True)
    lin = lin.view(T, B)
    fixed = P.attribute(bridge, pairs, "resid_pre", qk_fix=True).per_example[1]
    plain = P.attribute(bridge, pairs, "resid_pre").per_example[1]
    assert full.abs().max() > 0.1
    assert (full - lin).abs().max() > 0.3 * full.abs().max()       # saturation
    assert torch.allclose(fixed - plain, full - lin, atol=1e-4, rtol=1e-3)


def cancel(model):
    """Uniform attention (zero queries and keys), norms x - mean, and layer 1's MLP = -(x -
    mean(x)): layer 1 removes whatever reaches it, so every earlier cell's direct path (the
    skip connection to the logits) and its path through layer 1 cancel exactly."""
    d, ff = model.config.n_embd, model.config.n_inner or 4 * model.config.n_embd
    for blk in model.transformer.h:
        blk.attn.c_attn.weight[:, :2 * d] = 0
        blk.attn.c_attn.bias[:2 * d] = 0
    for m in model.modules():
        if isinstance(m, torch.nn.LayerNorm):
            m.weight.fill_(1e6)
            m.bias.zero_()
    mlp = model.transformer.h[1].mlp
    mlp.c_fc.weight.zero_()
    mlp.c_fc.bias.zero_()
    mlp.c_proj.weight.zero_()
    mlp.c_proj.bias.zero_()
    model.transformer.ln_f.weight.fill_(1e8)           # the metric 100x
    mlp.c_fc.weight[:, :d] = torch.eye(d)
    mlp.c_proj.weight[:d] = -torch.eye(d)
    assert ff >= d


def test_graddrop_recovers_the_direct_effect_of_a_planted_cancellation(tiny_checkpoints):
    """Planted cancellation: AtP (and the exact total) of layer 0's MLP outputs are ~0;
    GradDrop's estimate is the mean |estimate| over the drops that keep the cell a path, here
    only layer 1's: the direct effect, measured by a forward with the cell patched and layer
    1's outputs frozen at the receiving run's values."""
    from circuits.patching.sites import forward, forward_keep

    bridge = toy(tiny_checkpoints, plant=cancel)
    pairs = P.corrupt_pairs(bridge, QuadraticTask("small"), n=3, field="c", answer="D_value")
    base = _base(bridge, pairs)
    plain = P.attribute(bridge, pairs, "mlp_out")
    drop = P.attribute(bridge, pairs, "mlp_out", graddrop=True)
    frozen = ["blocks.1.hook_attn_out", "blocks.1.hook_mlp_out"]
    _, rec = forward_keep(bridge, pairs.corrupt, frozen)
    T = pairs.corrupt["seq"].shape[1]

    def direct(name):
        """[pos, b]: the metric's change when `name` at one position takes its clean value
        and layer 1's outputs keep their corrupted-run values (the skip path alone)."""
        _, src = forward_keep(bridge, pairs.clean, [name])
        out = torch.zeros(T, pairs.n)
        for p in range(T):
            def put(t, hook, p=p):
                t = t.clone()
                t[:, p] = src[name][:, p]
                return t
            hooks = [(name, put)] + [(n, (lambda t, hook, n=n: rec[n])) for n in frozen]
            out[p] = P.metric_values(forward(bridge, pairs.corrupt, hooks), pairs) - base
        return out
    mlp0 = direct("blocks.0.hook_mlp_out")
    assert mlp0.abs().max() > 1e-2
    exact = P.patch(bridge, pairs, "mlp_out", fast=False)
    for total in (plain, exact):             # the cancellation: AtP and the truth are ~0
        assert (total.per_example[0] - base).abs().max() < 1e-3 * mlp0.abs().max()
    assert torch.allclose((drop.per_example[0] - base).abs(), mlp0.abs(), atol=1e-4,
                          rtol=1e-3)
    # no attention pattern moves (zero queries and keys): AtP* is GradDrop here
    star = P.attribute(bridge, pairs, "mlp_out", method="atp*")
    assert star.method == "atp*" and torch.allclose(star.per_example, drop.per_example,
                                                    atol=1e-5)
    # resid_pre of layer 1: two drops keep its path (layer 0's: the plain estimate, ~0;
    # layer 1's: the direct effect): half the direct effect
    res1 = direct("blocks.1.hook_resid_pre")
    r = P.attribute(bridge, pairs, "resid_pre", graddrop=True).per_example[1] - base
    assert res1.abs().max() > 1e-2
    assert torch.allclose(r.abs(), res1.abs() / 2, atol=1e-4, rtol=1e-3)


def test_agreement_against_scipy_and_a_hand_count():
    from scipy import stats

    from circuits.patching.compare import agreement, missed
    from circuits.patching.experiments import PatchResult

    rng = np.random.default_rng(0)
    e = rng.normal(0, 1, (3, 10))
    a = e + rng.normal(0, 0.8, (3, 10))
    a.flat[int(np.argmax(np.abs(e)))] = 0.0          # the largest exact cell missed

    def res(v, method):
        t = torch.tensor(v, dtype=torch.float32)
        return PatchResult("resid_pre", ("layer", "pos"), t + 1.0, t[..., None] + 1.0, 2.0,
                           1.0, "logit_diff", "denoise",
                           {"layer": ["0", "1", "2"], "pos": [f"r{i}" for i in range(10)]},
                           method)
    row = agreement(res(e, "exact"), res(a, "atp*")).iloc[0]
    ef, af = e.ravel().astype(np.float32), a.ravel().astype(np.float32)
    assert row.cells == 30 and row.method == "atp*"
    assert row.spearman == pytest.approx(stats.spearmanr(ef, af)[0], abs=1e-6)
    assert row.pearson == pytest.approx(stats.pearsonr(ef, af)[0], abs=1e-6)
    for k in (10, 20):
        top_e = sorted(range(30), key=lambda i: -abs(ef[i]))[:k]
        top_a = sorted(range(30), key=lambda i: -abs(af[i]))[:k]
        assert row[f"top{k}_recall"] == len(set(top_e) & set(top_a)) / k
    ranks = {i: r + 1 for r, i in enumerate(sorted(range(30), key=lambda i: -abs(af[i])))}
    top_e = sorted(range(30), key=lambda i: -abs(ef[i]))[:10]
    assert row.worst_top10_rank == max(ranks[i] for i in top_e)
    big = int(np.argmax(np.abs(ef)))
    assert row.under_exact == pytest.approx(ef[big], abs=1e-6) and row.under_attributed == 0
    assert row.under_cell == f"L{big // 10} p{big % 10} (r{big % 10})"
    m = missed(res(e, "exact"), res(a, "atp*"))
    assert len(m) == 10 and m.attributed_rank.iloc[0] == row.worst_top10_rank


def test_the_site_title_names_the_method_its_recall_and_largest_underestimate():
    from circuits.patching.compare import summary_line
    from interp.viz.reports.patch import title_line

    agree = {"method": "atp*", "spearman": 0.8481, "top10_recall": 0.7,
             "worst_top10_rank": 22, "under_cell": "L3 p33 (=)", "under_exact": 0.526,
             "under_attributed": 0.186}
    line = title_line("resid_pre", 0.8481, summary_line(agree))
    assert "(AtP* vs exact: Spearman 0.848" in line and "top-10 recall 70%" in line
    assert "ranked down to 22" in line and "L3 p33 (=)" in line
    assert "52.6%" in line and "18.6%" in line
    assert title_line("resid_pre", 0.5) == \
        "  resid_pre: largest shares of the gap (attribution vs exact: Spearman 0.500)"


def test_the_command_refuses_atp_star_off_gpt2_in_one_line(tiny_checkpoints, capsys,
                                                           tmp_path):
    """In process: --attribution atp* on T5 is one line naming the way out, exit 2, nothing
    written."""
    from clihelp import one_line

    from circuits.patch import main

    rc = main([str(tiny_checkpoints["t5"]), "--sites", "enc.head", "--n", "2",
               "--attribution", "atp*", "--out", str(tmp_path / "o")])
    one_line(rc, capsys.readouterr().err, "--attribution atp*", "--attribution atp")
    assert not (tmp_path / "o").exists()
