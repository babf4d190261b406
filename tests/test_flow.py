"""Attention flow (max-flow through the layers' attention graph) against networkx's own
max-flow on random graphs, and against closed forms: one layer, two layers, the identity,
a single path (flow = its narrowest edge, rollout = the product), and the bounds
rollout <= flow <= 1, widest single path <= flow."""

import networkx as nx
import numpy as np
import pytest
import torch

from interp.attention.maps import attention_flow, rollout


def capacities(P, mask, residual=0.5):
    """A'_l in numpy, written out independently: [batch, layer, query, key]."""
    P, mask = np.asarray(P, dtype=np.float64), np.asarray(mask, dtype=np.float64)
    L, B, _, n, _ = P.shape
    out = np.zeros((B, L, n, n))
    for b in range(B):
        for layer in range(L):
            a = (residual * np.eye(n) + (1 - residual) * P[layer, b].mean(0)) * mask[b]
            s = a.sum(-1, keepdims=True)
            out[b, layer] = np.divide(a, s, out=np.zeros_like(a), where=s > 0)
    return out


def nx_flow(C, k, q):
    """networkx's max-flow from (0, k) to (L, q); C: [layer, query, key] of one example."""
    L, n, _ = C.shape
    G = nx.DiGraph()
    G.add_nodes_from([(0, k), (L, q)])
    for layer in range(L):
        for u in range(n):
            for v in range(n):
                if C[layer, u, v] > 0:
                    G.add_edge((layer, v), (layer + 1, u), capacity=float(C[layer, u, v]))
    return nx.maximum_flow_value(G, (0, k), (L, q))


def widest_path(C, k, q):
    """The largest bottleneck over single paths (0, k) -> (L, q), by max-min recursion."""
    width = np.zeros(C.shape[-1])
    width[k] = np.inf
    for layer in range(C.shape[0]):
        width = np.minimum(C[layer], width[None, :]).max(1)
    return width[q]


def random_patterns(seed, L, B, H, n, causal, lengths):
    g = torch.Generator().manual_seed(seed)
    valid = torch.arange(n)[None] < torch.tensor(lengths)[:, None]
    mask = valid[:, :, None] & valid[:, None, :]
    if causal:
        mask &= torch.ones(n, n, dtype=torch.bool).tril()
    logits = torch.randn(L, B, H, n, n, generator=g) * 2.5
    P = torch.softmax(logits.masked_fill(~mask[None, :, None], -1e9), -1) * mask[None, :, None]
    return P, mask


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("L", [2, 3, 4])
def test_flow_equals_networkx_max_flow_with_padding(causal, L):
    P, mask = random_patterns(10 * L + causal, L, 2, 2, 6, causal, [6, 4])
    flow = attention_flow(P, mask).double().numpy()
    C = capacities(P, mask)
    for b, length in enumerate([6, 4]):
        for q in range(6):
            for k in range(6):
                want = nx_flow(C[b], k, q) if q < length and k < length else 0.0
                assert flow[b, q, k] == pytest.approx(want, abs=2e-6), (b, q, k)
    # padding and (causal) future keys get nothing
    assert np.all(flow[1, 4:] == 0) and np.all(flow[1, :, 4:] == 0)
    if causal:
        assert np.all(np.triu(flow[0], 1) == 0)


def test_flow_on_a_deeper_wider_graph_equals_networkx_and_respects_the_bounds():
    P, mask = random_patterns(7, 5, 1, 3, 8, False, [8])
    flow = attention_flow(P, mask, residual=0.3).double().numpy()[0]
    C = capacities(P, mask, residual=0.3)[0]
    roll = rollout(P, mask, residual=0.3).double().numpy()[0]
    for q in range(8):
        for k in range(8):
            assert flow[q, k] == pytest.approx(nx_flow(C, k, q), abs=2e-6)
            assert widest_path(C, k, q) <= flow[q, k] + 1e-6
    assert np.all(flow <= 1 + 1e-6)
    assert np.all(roll <= flow + 1e-6)        # rollout is one feasible flow: never above
    assert not np.allclose(roll, flow, atol=1e-3)


def test_one_and_two_layers_have_closed_forms():
    P, mask = random_patterns(3, 2, 1, 2, 7, True, [7])
    C = capacities(P, mask)[0]
    # one layer: the flow is the edge k -> q itself
    assert np.allclose(attention_flow(P[:1], mask).double().numpy()[0], C[0], atol=1e-6)
    # two layers: the paths k -> p -> q share no edge, so flow = sum_p min(A'0[p,k], A'1[q,p])
    want = np.minimum(C[0][None, :, :], C[1][:, :, None]).sum(1)   # [q, k]
    assert np.allclose(attention_flow(P, mask).double().numpy()[0], want, atol=1e-6)


def test_residual_one_gives_the_identity():
    P, mask = random_patterns(5, 3, 2, 2, 5, True, [5, 3])
    flow = attention_flow(P, mask, residual=1.0)
    want = torch.eye(5).expand(2, 5, 5) * mask
    assert torch.allclose(flow, want)


def single_path(caps):
    """Bidirectional, three positions, residual 0, one head. Position 2 only reads itself,
    so it never carries flow from position 0; positions 0 and 1 read each other (weight c)
    and position 2 (1 - c): from input 0 the one path goes 0 -> 1 -> 0 -> 1 ..., edge l with
    capacity caps[l]."""
    L = len(caps)
    P = torch.zeros(L, 1, 1, 3, 3)
    for layer, c in enumerate(caps):
        P[layer, 0, 0, 2, 2] = 1.0
        P[layer, 0, 0, 1, 0] = c           # even layers: 0 -> 1, odd: 1 -> 0
        P[layer, 0, 0, 0, 1] = c
        P[layer, 0, 0, 0, 2] = P[layer, 0, 0, 1, 2] = 1 - c
    return P, torch.ones(1, 3, 3, dtype=torch.bool)


def test_a_single_path_carries_its_narrowest_edge_and_rollout_the_product():
    caps = [0.9, 0.35, 0.6, 0.8]
    P, mask = single_path(caps)
    top = len(caps) % 2                     # the path ends at position 0 after even layers
    flow = attention_flow(P, mask, residual=0.0)[0]
    roll = rollout(P, mask, residual=0.0)[0]
    assert flow[top, 0] == pytest.approx(min(caps), abs=1e-6)
    assert roll[top, 0] == pytest.approx(float(np.prod(caps)), abs=1e-6)
    assert flow[1 - top, 0] == 0 and flow[2, 0] == 0
    # every edge but one at capacity 1: the one path gives rollout = flow
    P1, _ = single_path([1.0, 0.45, 1.0])
    f1 = attention_flow(P1, mask, residual=0.0)[0, 1, 0]
    r1 = rollout(P1, mask, residual=0.0)[0, 1, 0]
    assert f1 == pytest.approx(0.45, abs=1e-6) and r1 == pytest.approx(0.45, abs=1e-6)


def test_positions_restrict_rows_and_normalize_gives_the_papers_shares():
    P, mask = random_patterns(11, 3, 1, 2, 6, True, [6])
    full = attention_flow(P, mask)
    part = attention_flow(P, mask, positions=[2, 5])
    assert torch.equal(part[:, [2, 5]], full[:, [2, 5]])
    assert torch.isnan(part[:, [0, 1, 3, 4]]).all()
    shares = attention_flow(P, mask, normalize=True)
    assert torch.allclose(shares.sum(-1), torch.ones(1, 6), atol=1e-5)
    assert torch.allclose(shares, full / full.sum(-1, keepdim=True), atol=1e-6)


def test_cross_attention_and_bad_positions_are_refused():
    P = torch.rand(2, 1, 1, 3, 5)
    with pytest.raises(ValueError, match="self-attention"):
        attention_flow(P, torch.ones(1, 3, 5, dtype=torch.bool))
    P, mask = random_patterns(1, 2, 1, 1, 4, True, [4])
    with pytest.raises(ValueError, match="positions"):
        attention_flow(P, mask, positions=[4])
