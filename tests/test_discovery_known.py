"""The circuit finder on models whose circuits are known: the shipped two-layer induction
model (a previous-token head K-composing with the induction head L1H3) and a model planted
by hand with a circuit of a few edges beside distractor heads."""

import pytest
import torch

import interp
from circuits.discovery import discover
from circuits.discovery.induction import induction_pairs, logprob_metric
from circuits.patching import Pairs
from interp.hooks import capture, hook_name
from interp.models.native import NativeSpec, build_native


@pytest.fixture(scope="module")
def attn2l():
    bridge, _ = interp.load_model("induction-attn2l")
    return bridge, induction_pairs(bridge, n=24, seed=1)


def _previous_token_head(bridge, pairs) -> int:
    """The layer-0 head that attends most to the previous token (the oracle: the attention
    pattern itself, read through the bridge's hooks)."""
    name = hook_name(bridge, "self", 0, "hook_pattern")
    P = capture(bridge, pairs.clean["seq"], names=[name])[name]      # [b, head, q, k]
    prev = P.diagonal(offset=-1, dim1=-2, dim2=-1).mean((0, 2))
    assert prev.max() > 0.5
    return int(prev.argmax())


@pytest.mark.parametrize("method", ["exact", "eap", "eap-ig"])
def test_the_induction_circuit_is_found_by_every_method(attn2l, method):
    bridge, pairs = attn2l
    p = _previous_token_head(bridge, pairs)
    res = discover(bridge, None, pairs, method=method, positions="field",
                   metric=logprob_metric, edges=3)
    top = set(res.frame().head(3)["edge"])
    assert top == {f"input->L0H{p}.v@prev", f"L0H{p}->L1H3.k@next", "L1H3->logits@query"}
    # those three edges alone carry a third of the behaviour (the other layer-1 heads
    # induct too); the smallest circuit with f >= 0.8 holds them
    assert res.chosen.f_lo > 0.25
    at = discover(bridge, None, pairs, method=method, positions="field",
                  metric=logprob_metric, target=0.8, scores=res.scores).chosen
    assert at.f >= 0.8 and top <= set(at.edges)


def test_the_induction_circuit_without_its_k_composition_edge_is_not_faithful(attn2l):
    bridge, pairs = attn2l
    p = _previous_token_head(bridge, pairs)
    res = discover(bridge, None, pairs, method="exact", positions="field",
                   metric=logprob_metric, edges=3)
    keep = res.chosen.keep.clone()
    keep[res.graph.index[f"L0H{p}->L1H3.k@next"]] = False
    from circuits.discovery.result import make_circuit

    assert make_circuit(res.setup, keep).f < res.chosen.f / 2


# ------------------------------------------------------------------ a planted model
V, N = 8, 6            # tokens, positions


def planted():
    """Attention-only, two layers, four heads, LayerNorm as shipped. The residual stream
    (d = 64): token one-hot in 0..7, position one-hot in 8..13, L0H0's copy in 16..23,
    L1H2's copy in 24..31, distractor writes in 40..63.

    L0H0 attends from every position to position 1 and copies its token into 16..23; L1H2
    attends from the last position to itself and moves 16..23 into 24..31, which the
    unembedding reads. The other six heads attend somewhere and write only into 40..63,
    which nothing reads. The planted circuit for a change of the token at position 1:
    input->L0H0.v, L0H0->L1H2.v, L1H2->logits."""
    spec = NativeSpec(n_layers=2, d_model=64, n_heads=4, n_ctx=N, d_vocab=V)
    bridge = build_native(spec, seed=0)
    P = bridge.native_params
    big = 30.0
    with torch.no_grad():
        for t in P.values():
            t.zero_()
        for l in range(2):
            P[f"layers.{l}.ln1.weight"].fill_(1.0)
        P["ln_out.weight"].fill_(1.0)
        P["tok_embed.weight"][:, :V] = torch.eye(V) * 4
        P["pos.weight"][:, 8:8 + N] = torch.eye(N) * 4
        dh = 16

        def head(l, h, q_from, k_dims, v_src, o_dst, gain=1.0):
            q = P[f"layers.{l}.attn.q.weight"]        # [H * dh, d]: q = x @ W.T
            k = P[f"layers.{l}.attn.k.weight"]
            v = P[f"layers.{l}.attn.v.weight"]
            o = P[f"layers.{l}.attn.o.weight"]        # [d, H * dh]
            rows = slice(h * dh, h * dh + 1)
            q[rows, q_from] = big
            k[rows, k_dims] = big
            for i, (s, d) in enumerate(zip(v_src, o_dst)):
                v[h * dh + i, s] = gain
                o[d, h * dh + i] = gain
        # L0H0: every query (all positions read bias dim via position one-hots) -> position 1
        head(0, 0, list(range(8, 8 + N)), [9], list(range(V)), list(range(16, 16 + V)), 3.0)
        # L1H2: the last position attends to itself, copies 16..23 into 24..31
        head(1, 2, [8 + N - 1], [8 + N - 1], list(range(16, 16 + V)),
             list(range(24, 24 + V)), 3.0)
        # distractors: attend to various positions, write into 40..63 (read by nobody)
        g = torch.Generator().manual_seed(0)
        for l, h in [(0, 1), (0, 2), (0, 3), (1, 0), (1, 1), (1, 3)]:
            src = torch.randint(0, 24, (8,), generator=g).tolist()
            dst = torch.randint(40, 64, (8,), generator=g).tolist()
            head(l, h, list(range(8, 8 + N)), [8 + int(torch.randint(0, N, (1,), generator=g))],
                 src, dst, 0.5)
        P["head.weight"][:, 24:24 + V] = torch.eye(V) * 5
    return bridge


def _planted_pairs(n=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    clean = torch.randint(0, V, (n, N), generator=g)
    bad = clean.clone()
    bad[:, 1] = (clean[:, 1] + 1 + torch.randint(0, V - 1, (n,), generator=g)) % V
    roles = ["a", "target", "b", "c", "d", "last"]
    return Pairs("decoder", {"seq": clean}, {"seq": bad}, N - 1, clean[:, 1], bad[:, 1],
                 {"seq": roles}, {"seq": roles}, [], "planted", "first", 0)


def test_the_planted_model_computes_what_it_was_built_to():
    bridge = planted()
    pairs = _planted_pairs()
    from interp.hooks import run

    logits = run(bridge, pairs.clean["seq"])[:, -1]
    assert (logits.argmax(-1) == pairs.clean_token).all()


@pytest.mark.parametrize("method", ["exact", "eap", "eap-ig"])
def test_every_method_finds_the_planted_circuit_and_it_is_faithful(method):
    bridge = planted()
    res = discover(bridge, None, _planted_pairs(), method=method, edges=3)
    planted_edges = {"input->L0H0.v", "L0H0->L1H2.v", "L1H2->logits"}
    assert set(res.frame().head(3)["edge"]) == planted_edges
    assert set(res.chosen.edges) == planted_edges          # the circuit: the top 3 by |score|
    assert res.chosen.f == pytest.approx(1.0, abs=0.05)
    # no distractor head is in the circuit
    assert {n for n in res.chosen.nodes if "H" in n} == {"L0H0", "L1H2"}


# ------------------------------------------------------------------ tracr-compiled programs
TRACR = ["reverse", "frac_prevs", "sort"]


@pytest.mark.parametrize("name", TRACR)
@pytest.mark.parametrize("method", ["exact", "eap", "eap-ig"])
def test_every_method_scores_the_tracr_circuits_known_edges_first(name, method):
    """AUROC of |score| against the compiled program's known edges: 1 against the edges a
    same-length resample can see (`edges_varying`), and against the whole known circuit the
    value exact patching itself reaches (the rest of the circuit carries constants there)."""
    from circuits.discovery.known import finder_auroc

    got = finder_auroc(name, method, n=24, seed=2)
    assert got["edges_varying"] == pytest.approx(1.0)
    assert got["edges"] == pytest.approx({"reverse": 0.5769, "frac_prevs": 0.8,
                                          "sort": 0.8}[name], abs=1e-3)


@pytest.mark.parametrize("name", TRACR)
def test_exact_edge_patching_equals_a_plain_torch_oracle_on_tracr_models(name):
    """The oracle: tests/test_tracr_known.py's forward pass written from the weights in plain
    torch (no code shared with circuits.discovery), one edge patched at a time."""
    from circuits.discovery.known import known_pairs, load_known, program_info
    from tests.test_tracr_known import exact_edge_effects

    bridge, info, _ = load_known(name)
    pairs = known_pairs(bridge, name, n=12, seed=3)
    want = exact_edge_effects(bridge, name, pairs)
    res = discover(bridge, None, pairs, method="exact", edges=1,
                   metric=program_info(name)["metric"] or "logit_diff")
    got = dict(zip(res.frame()["edge"], res.frame()["score"]))
    assert set(got) == set(want)
    # the oracle reports metric(clean) - metric(cut); the engine metric(cut) - metric(clean)
    for e, v in want.items():
        assert -got[e] == pytest.approx(v, abs=1e-4), e
    assert max(abs(v) for v in want.values()) > 0.1
