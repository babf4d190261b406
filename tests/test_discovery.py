"""Circuit discovery's engine against oracles that do not share its code: the bridge's and
HF's own forward passes, node and receiver patches made through the bridge's hooks, finite
differences for the attribution scores, and closed forms for the faithfulness areas."""

import numpy as np
import pandas as pd
import pytest
import torch

import interp
from circuits.discovery import EdgeGraph, GraphModel, agreement, areas, discover
from circuits.discovery import faithfulness as F
from circuits.discovery import scores as S
from circuits.patching import corrupt_pairs
from circuits.patching.pairs import metric_values
from interp.hooks import capture, hook_name, run
from interp.models.native import NativeSpec, build_native


@pytest.fixture(scope="module")
def small():
    """The shipped quadratic-small with 8 pairs (a trained model: real gaps)."""
    bridge, task = interp.load_model("quadratic-small")
    pairs = corrupt_pairs(bridge, task, n=8, seed=3)
    return bridge, task, pairs


@pytest.fixture(scope="module")
def t5(tiny_checkpoints):
    bridge, task = interp.load_model(tiny_checkpoints["t5"])
    pairs = corrupt_pairs(bridge, task, n=6, seed=1)
    return bridge, task, pairs


def _setup(bridge, pairs, positions="none", ablation="resample"):
    gm = GraphModel(bridge, {s: v.shape[1] for s, v in pairs.clean.items()})
    g = EdgeGraph(gm, pairs.roles, positions, pairs.answer_pos)
    return S.prepare(gm, g, pairs, "logit_diff", ablation)


def _bridge_metric(bridge, pairs, hooks=()):
    if "seq" in pairs.clean:
        logits = run(bridge, pairs.clean["seq"], hooks=list(hooks))
    else:
        logits = run(bridge, pairs.clean["src"], decoder_input=pairs.clean["tgt"],
                     hooks=list(hooks))
    return metric_values(logits, pairs).mean().item()


@pytest.mark.parametrize("mixing", ["none", "smeared", "conv"])
def test_the_graph_pass_gives_the_bridges_logits_on_native_models(mixing):
    spec = NativeSpec(n_layers=2, d_model=32, n_heads=4, d_vocab=40, d_mlp=64, mixing=mixing)
    bridge = build_native(spec, seed=2)
    if mixing == "smeared":
        with torch.no_grad():
            for l in range(2):
                bridge.native_params[f"layers.{l}.attn.k.alpha"].normal_()
    ids = torch.randint(0, 40, (3, 11))
    gm = GraphModel(bridge)
    with torch.no_grad():
        ours = gm.forward(gm.embed({"seq": ids}), answer_pos=7)
    theirs = run(bridge, ids)[:, 7]
    assert torch.allclose(ours, theirs, atol=1e-4), (ours - theirs).abs().max()


def test_the_graph_pass_gives_the_bridges_logits_on_gpt2(small):
    bridge, _, pairs = small
    su = _setup(bridge, pairs)
    with torch.no_grad():
        ours = su.gm.forward(su.inputs["clean"], answer_pos=pairs.answer_pos)
    theirs = run(bridge, pairs.clean["seq"])[:, pairs.answer_pos]
    assert torch.allclose(ours, theirs, atol=1e-3)
    assert (theirs.abs().max() > 5)


@pytest.mark.parametrize("which", ["tiny", "shipped"])
def test_the_graph_pass_gives_hfs_logits_on_t5(t5, which):
    """The tiny T5's norms are all ones at initialisation; the shipped one's are trained
    (so a cross-attention key read through the wrong norm shows)."""
    if which == "shipped":
        bridge, task = interp.load_model("quadratic-t5-small")
        pairs = corrupt_pairs(bridge, task, n=4, seed=2)
    else:
        bridge, _, pairs = t5
    su = _setup(bridge, pairs)
    with torch.no_grad():
        ours = su.gm.forward(su.inputs["corrupt"], answer_pos=pairs.answer_pos)
        hf = bridge.original_model(input_ids=pairs.corrupt["src"],
                                   decoder_input_ids=pairs.corrupt["tgt"]).logits
    assert torch.allclose(ours, hf[:, pairs.answer_pos], atol=1e-4)


def test_keeping_every_edge_is_the_clean_run_and_cutting_every_edge_the_corrupted(small):
    bridge, _, pairs = small
    su = _setup(bridge, pairs, "field")
    E = su.graph.n_edges
    m = S.run_keep(su, torch.stack([torch.ones(E), torch.zeros(E)]))
    assert torch.allclose(m[0], su.m_clean, atol=1e-4)
    assert torch.allclose(m[1], su.m_corrupt, atol=1e-3)
    assert abs(su.m_clean.mean() - su.m_corrupt.mean()) > 1


def _cut(su, pred):
    keep = torch.ones(1, su.graph.n_edges)
    idx = [i for i in range(su.graph.n_edges) if pred(su.graph.senders[i], su.graph.receivers[i])]
    assert idx
    keep[0, idx] = 0
    return S.run_keep(su, keep)[0].mean().item()


@pytest.mark.parametrize("layer,head", [(0, 2), (2, 1)])
def test_cutting_every_edge_out_of_a_head_is_patching_its_output(small, layer, head):
    """Oracle: the corrupted run's hook_z of that head, patched through the bridge's hooks."""
    bridge, _, pairs = small
    su = _setup(bridge, pairs)
    name = hook_name(bridge, "self", layer, "hook_z")
    z_bad = capture(bridge, pairs.corrupt["seq"], names=[name])[name]

    def patch(z, hook):
        z = z.clone()
        z[:, :, head] = z_bad[:, :, head]
        return z
    want = _bridge_metric(bridge, pairs, [(name, patch)])
    got = _cut(su, lambda s, r: s == f"L{layer}H{head}")
    assert got == pytest.approx(want, abs=2e-3)
    assert abs(want - su.m_clean.mean().item()) > 1e-3       # the patch changes something


@pytest.mark.parametrize("part", ["q", "k", "v"])
def test_cutting_every_edge_into_a_heads_input_is_patching_that_input(small, part):
    """Oracle: the corrupted run's hook_q / hook_k / hook_v of that head, patched."""
    bridge, _, pairs = small
    su = _setup(bridge, pairs)
    layer, head = 2, 0
    name = hook_name(bridge, "self", layer, f"hook_{part}")
    bad = capture(bridge, pairs.corrupt["seq"], names=[name])[name]

    def patch(x, hook):
        x = x.clone()
        x[:, :, head] = bad[:, :, head]
        return x
    want = _bridge_metric(bridge, pairs, [(name, patch)])
    got = _cut(su, lambda s, r: r == f"L{layer}H{head}.{part}")
    assert got == pytest.approx(want, abs=2e-3)


def test_cutting_every_edge_into_an_mlp_is_patching_its_output(small):
    bridge, _, pairs = small
    su = _setup(bridge, pairs)
    name = hook_name(bridge, "self", 1, "hook_mlp_out")
    bad = capture(bridge, pairs.corrupt["seq"], names=[name])[name]
    want = _bridge_metric(bridge, pairs, [(name, lambda x, hook: bad)])
    assert _cut(su, lambda s, r: r == "MLP1") == pytest.approx(want, abs=2e-3)


def test_t5_cross_attention_keys_read_the_encoder(t5):
    """Cutting every edge into a cross head's keys and values = patching its hook_k and
    hook_v with the corrupted run's (the keys are computed from the encoder's output)."""
    bridge, _, pairs = t5
    su = _setup(bridge, pairs)
    hooks = []
    for part in "kv":
        name = hook_name(bridge, "cross", 1, f"hook_{part}")
        bad = capture(bridge, pairs.corrupt["src"], decoder_input=pairs.corrupt["tgt"],
                      names=[name])[name]

        def patch(x, hook, bad=bad):
            x = x.clone()
            x[:, :, 3] = bad[:, :, 3]
            return x
        hooks.append((name, patch))
    want = _bridge_metric(bridge, pairs, hooks)
    got = _cut(su, lambda s, r: r in ("cross.L1H3.k", "cross.L1H3.v"))
    assert got == pytest.approx(want, abs=1e-4)
    senders = {su.graph.senders[i] for i in range(su.graph.n_edges)
               if su.graph.receivers[i] == "cross.L1H3.k"}
    assert senders and all(s.startswith("enc.") for s in senders)


def test_edge_attribution_is_the_derivative_of_edge_patching(small):
    """Oracle: finite differences. With the reference moved a small step eps towards the
    corrupted outputs, exact edge patching changes the metric by eps times the EAP score."""
    bridge, _, pairs = small
    su = _setup(bridge, pairs)
    eap = S.eap(su)
    eps = 1e-2
    su_eps = _setup(bridge, pairs)
    su_eps.ref = {s: su.outs["clean"][s] + eps * (su.outs["corrupt"][s] - su.outs["clean"][s])
                  for s in su.gm.sides}
    top = torch.topk(eap.abs(), 12).indices
    keep = torch.ones(len(top), su.graph.n_edges)
    keep[torch.arange(len(top)), top] = 0
    fd = (S.run_keep(su_eps, keep).mean(1) - su.m_clean.mean()) / eps
    assert torch.allclose(fd, eap[top], rtol=0.05, atol=0.05 * eap.abs().max())


@pytest.mark.parametrize("ablation", ["resample", "mean"])
def test_eap_ig_over_the_input_edges_adds_up_to_cutting_them_all(small, ablation):
    """Completeness of integrated gradients: summed over every edge out of the embeddings,
    EAP-IG's scores approach the change measured by cutting all those edges at once (the
    path runs from the reference embeddings to the clean ones); EAP, one point of the
    path, is far off."""
    bridge, _, pairs = small
    su = _setup(bridge, pairs, ablation=ablation)
    g = su.graph
    inputs = torch.tensor([s == "input" for s in g.senders])
    keep = torch.ones(1, g.n_edges)
    keep[0, inputs] = 0
    want = (S.run_keep(su, keep)[0] - su.m_clean).mean().item()
    got = S.eap_ig(su, steps=24)[inputs].sum().item()
    assert got == pytest.approx(want, rel=0.03)
    assert abs(S.eap(su)[inputs].sum().item() - want) > 0.1 * abs(want)


def test_exact_scores_batched_and_started_late_equal_one_full_run_per_edge(small):
    """What this checks is the batching (K edges as K copies) and the late start (steps before
    the receiver taken from the clean run); the independent oracles are the bridge-hook
    tests above and the tracr plain-torch test."""
    bridge, _, pairs = small
    su = _setup(bridge, pairs)
    assert torch.allclose(S.eap_ig(su, steps=1), S.eap(su), atol=1e-5)
    ex = S.exact(su)
    for i in torch.topk(ex.abs(), 3).indices.tolist() + [int(su.graph.n_edges - 1)]:
        keep = torch.ones(1, su.graph.n_edges)
        keep[0, i] = 0
        assert ex[i].item() == pytest.approx(S.run_keep(su, keep)[0].mean().item()
                                             - su.m_clean.mean().item(), abs=1e-3)


def test_field_positions_split_the_edges_into_groups_that_sum_to_the_unsplit_attribution(small):
    """EAP is linear in the cut: the per-group scores of an edge add up to its score without
    positions."""
    bridge, _, pairs = small
    none, field = _setup(bridge, pairs, "none"), _setup(bridge, pairs, "field")
    a, b = S.eap(none), S.eap(field)
    df = pd.DataFrame({"edge": [n.split("@")[0] for n in field.graph.names], "s": b.numpy()})
    summed = df.groupby("edge")["s"].sum()
    ours = pd.Series(a.numpy(), index=none.graph.names)
    logits = [n for n in ours.index if n.endswith("->logits")]
    rest = [n for n in ours.index if n not in logits]
    assert np.allclose(summed[rest].to_numpy(), ours[rest].to_numpy(), atol=1e-3)
    # the logits read the answer position only: their edges exist at its group alone
    assert all(field.graph.edge_groups[i] == field.graph.edge_groups[
        field.graph.index[f"MLP3->logits@{field.graph.edge_groups[i]}"]]
        for i in range(field.graph.n_edges) if field.graph.receivers[i] == "logits")
    assert sum(r == "logits" for r in field.graph.receivers) == \
        sum(r == "logits" for r in none.graph.receivers)


def test_mean_ablation_takes_the_mean_of_the_clean_and_corrupted_runs(small):
    bridge, _, pairs = small
    su = _setup(bridge, pairs, ablation="mean")
    want = (su.outs["clean"]["seq"] + su.outs["corrupt"]["seq"]).sum(0) / (2 * pairs.n)
    assert torch.allclose(su.ref["seq"][0], want, atol=1e-5)


def test_areas_of_closed_form_curves():
    pct = np.array(F.PERCENTS, float)
    flat = pd.DataFrame({"percent": pct, "f": np.ones_like(pct)})
    assert areas(flat) == pytest.approx((1.0 - 0.0005, 0.0005))   # the first segment rises
    line = pd.DataFrame({"percent": pct, "f": pct / 100})
    cpr, cmd = areas(line)
    assert cpr == pytest.approx(0.5) and cmd == pytest.approx(0.5)
    over = pd.DataFrame({"percent": pct, "f": np.full_like(pct, 1.5)})
    over.loc[over.percent == 100, "f"] = 1.0
    assert areas(over)[1] > 0.3                                  # overshoot counts in CMD


def test_pruning_drops_edges_into_nodes_that_reach_nothing(small):
    bridge, _, pairs = small
    su = _setup(bridge, pairs)
    g = su.graph
    keep = torch.zeros(g.n_edges, dtype=torch.bool)
    for name in ["input->L0H1.v", "L0H1->L2H0.q", "L2H0->logits", "input->L1H3.k"]:
        keep[g.index[name]] = True
    pruned = F.prune(g, keep)
    kept = {g.names[i] for i in pruned.nonzero()[:, 0].tolist()}
    assert kept == {"input->L0H1.v", "L0H1->L2H0.q", "L2H0->logits"}


def test_top_k_circuits_get_more_faithful_and_the_full_circuit_is_one(small):
    bridge, task, pairs = small
    res = discover(bridge, task, pairs, method="eap", edges=30)
    cur = res.faithfulness()
    assert cur["f"].iloc[-1] == pytest.approx(1.0, abs=1e-4)
    assert cur["f"].iloc[-2] > cur["f"].iloc[3]                 # 50% beats 1%
    assert res.circuit_edges <= 30
    c = res.circuit(30)
    assert len(c) == res.circuit_edges and c.f_lo <= c.f <= c.f_hi
    df = res.frame()
    assert df["rank"].iloc[0] == 1 and df["abs_score"].is_monotonic_decreasing
    assert set(df.columns) >= {"edge", "sender", "receiver", "group", "score", "abs_score",
                               "rank", "in_circuit"}


def test_top_k_takes_the_largest_absolute_scores_whatever_their_sign():
    scores = torch.tensor([0.5, -3.0, 2.0, -0.1, 1.0])
    got = set(F.top_k(scores, 3).nonzero()[:, 0].tolist())
    assert got == set(np.argsort(-np.abs(scores.numpy()))[:3].tolist()) == {1, 2, 4}


def test_the_smallest_circuit_reaches_the_target_and_one_edge_fewer_does_not(small):
    bridge, task, pairs = small
    res = discover(bridge, task, pairs, method="eap", target=0.7)
    assert res.at_target is not None and res.chosen.f >= 0.7
    found = F.smallest(res.setup, res.scores, 0.7)
    k = found[0]
    assert k > 1 and F.circuit_keep(res.graph, res.scores, k).equal(res.at_target.keep)
    fewer = F.evaluate(res.setup, F.circuit_keep(res.graph, res.scores, k - 1)[None])
    assert fewer["f"].iloc[0] < 0.7


def test_agreement_recall_and_correlation_on_planted_scores():
    class G:
        senders = ["input"] * 4 + ["L0H0"] * 4
        rtypes = ["q", "k", "v", "mlp"] * 2
    exact = torch.tensor([8., 7, 6, 5, 4, 3, 2, 1])
    approx = torch.tensor([1., 2, 3, 4, 5, 6, 7, 8])
    df = agreement(exact, exact.clone(), G()).set_index("component")
    assert df.loc["all", "spearman"] == pytest.approx(1.0)
    assert df.loc["all", "recall10"] == 1.0
    rev = agreement(exact, approx, G()).set_index("component")
    assert rev.loc["all", "spearman"] == pytest.approx(-1.0)
    assert rev.loc["all", "worst_rank_of_top10"] == 8
    # spearman_large reads only the edges of at least 1% of the largest exact effect
    tiny = torch.tensor([8., 7, 6, 5, 1e-3, 2e-3, 3e-3, 4e-3])
    noisy = torch.tensor([8., 7, 6, 5, 4e-3, 3e-3, 2e-3, 1e-3])
    df = agreement(tiny, noisy, G()).set_index("component")
    assert df.loc["all", "large"] == 4 and df.loc["all", "spearman_large"] == pytest.approx(1)
    assert df.loc["all", "spearman"] < 0.9


def test_recall_compares_magnitudes_not_signs():
    from circuits.discovery.compare import recall

    exact = np.arange(1.0, 31.0)
    assert recall(exact, -exact, 10) == 1.0            # the same edges, every sign flipped
    assert recall(exact, exact[::-1].copy(), 10) == 0.0
    assert recall(exact, np.r_[exact[:25], -exact[25:]], 5) == 1.0


def test_knocking_out_a_circuits_largest_edges_beats_as_many_of_its_smallest(small):
    """The knockout's verdict can go both ways: cutting the three largest edges of a circuit
    costs more faithfulness than cutting three of its other edges (confirmed); cutting three
    of its smallest does not beat the rest (not confirmed)."""
    bridge, task, pairs = small
    res = discover(bridge, task, pairs, method="eap", edges=60)
    keep = res.chosen.keep
    order = [i for i in np.argsort(-res.scores.abs().numpy()) if keep[i]]
    big = torch.zeros_like(keep)
    big[order[:3]] = True
    got = F.knockout(res.setup, keep, big, keep, n_controls=19)
    assert got["verdict"] == "confirmed" and got["drop"] > got["control_drops"]
    assert got["n_controls"] == 19 and got["ci"][0] > 0
    # every control: as many edges, all of the circuit, none of the target
    targets = set(big.nonzero()[:, 0].tolist())
    for c in got["controls"]:
        assert len(c) == 3 and not set(c) & targets and all(keep[i] for i in c)
    assert F.knockout(res.setup, keep, big, keep, n_controls=5)["verdict"] == "untestable"
    tiny = torch.zeros_like(keep)
    tiny[order[-3:]] = True
    got = F.knockout(res.setup, keep, tiny, keep, n_controls=19)
    assert got["verdict"] == "not confirmed" and got["p"] > 0.05
    none = F.knockout(res.setup, keep, big, torch.zeros_like(keep))
    assert none["verdict"] == "untestable" and none["n_controls"] == 0


def test_agreement_by_size_bins_by_the_exact_share_of_the_gap_with_planted_errors():
    """Planted: per bin of |exact| / gap, approx = exact * (1 + err) with a known err and a
    known count of flipped signs; the zero-effect edge is left out."""
    from circuits.discovery import agreement_by_size

    gap = -20.0                               # the sign of the gap does not matter
    sizes = [3e-6, 3e-6, 5e-4, 5e-4, 5e-4, 0.5]
    exact = torch.tensor([0.0] + [s * 20 * (-1) ** i for i, s in enumerate(sizes)],
                         dtype=torch.float64)
    approx = exact.clone()
    approx[1:3] *= 1.5                        # bin [0, 1e-5): relative error 0.5
    approx[3:6] *= torch.tensor([1.1, 1.1, -1.0], dtype=torch.float64)   # one sign flipped
    df = agreement_by_size(exact, {"m": approx, "same": exact}, gap)
    assert df["edges"].tolist() == [2, 0, 3, 0, 0, 1]
    first, third, last = df.iloc[0], df.iloc[2], df.iloc[5]
    assert first.m_rel_err == pytest.approx(0.5) and first.m_sign == 1.0
    assert third.m_rel_err == pytest.approx(0.1) and third.m_sign == pytest.approx(2 / 3)
    assert last.m_rel_err == 0.0 and (df.dropna().same_rel_err == 0).all()
    assert np.isnan(df.iloc[1].m_rel_err)
