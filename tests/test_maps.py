"""Role-averaged maps and the summary map (kept by HeadStats) against numpy loops and
closed-form cases; rollout against closed-form cases."""

import numpy as np
import pandas as pd
import pytest
import torch

from interp.attention.maps import role_maps, rollout
from interp.attention.stats import HeadStats, role_index


def role_map_loops(P, mask, q_roles, k_roles):
    """Query role x key role, one cell at a time: the attention a query of role r sends to
    keys of role s, averaged over the valid queries of role r. (query roles, key roles,
    [layer, head, r, s])."""
    P, mask = np.asarray(P, dtype=np.float64), np.asarray(mask)
    qn = sorted({r for row in q_roles for r in row})
    kn = sorted({r for row in k_roles for r in row})
    L, B, H = P.shape[:3]
    out = np.zeros((L, H, len(qn), len(kn)))
    count = np.zeros(len(qn))
    for b in range(B):
        for q, r in enumerate(q_roles[b]):
            if not mask[b, q].any():
                continue
            count[qn.index(r)] += 1
            for k, s in enumerate(k_roles[b]):
                if mask[b, q, k]:
                    out[:, :, qn.index(r), kn.index(s)] += P[:, b, :, q, k]
    return qn, kn, out / np.maximum(count, 1)[None, None, :, None]


def summary_map_loops(P, mask, k_roles, key_select=None):
    """Layers x key roles, one cell at a time: attention each (selected) key role receives
    per valid query, mean over heads. (roles found at selected keys, [layer, role])."""
    P, mask = np.asarray(P, dtype=np.float64), np.asarray(mask)
    L, B, H = P.shape[:3]
    chosen = lambda b, k: key_select is None or bool(key_select[b, k])  # noqa: E731
    names = sorted({s for b, row in enumerate(k_roles) for k, s in enumerate(row)
                    if chosen(b, k)})
    out, n_queries = np.zeros((L, len(names))), 0
    for b in range(B):
        for q in range(mask.shape[1]):
            if not mask[b, q].any():
                continue
            n_queries += 1
            for k, s in enumerate(k_roles[b]):
                if mask[b, q, k] and chosen(b, k):
                    out[:, names.index(s)] += P[:, b, :, q, k].sum(-1)
    return names, out / max(n_queries * H, 1)


def stats_of(P, mask, q_roles, k_roles, key_select=None):
    """HeadStats fed the patterns as one batch."""
    qn = sorted({r for row in q_roles for r in row})
    kn = sorted({r for row in k_roles for r in row})
    st = HeadStats(P.shape[0], P.shape[2], kn, qn)
    st.update(P, mask, role_index(k_roles, kn, P.shape[-1]),
              role_index(q_roles, qn, P.shape[-2]), key_select=key_select)
    return st


def causal(b, n):
    return torch.ones(b, n, n, dtype=torch.bool).tril()


def test_role_map_averages_across_examples_of_different_lengths():
    # two examples: 'a = b' and 'a a = b'; every query looks only at '='
    roles = [["a", "=", "b"], ["a", "a", "=", "b"]]
    mask = causal(2, 4)
    mask[0, 3] = False
    mask[0, :, 3] = False
    P = torch.zeros(1, 2, 1, 4, 4)
    for b, row in enumerate(roles):
        eq = row.index("=")
        for q in range(len(row)):
            if q >= eq:
                P[0, b, 0, q, eq] = 1
            else:
                P[0, b, 0, q, 0] = 1  # before '=' exists: first token
    st = stats_of(P, mask, roles, roles)
    qn, kn, m = st.query_names, st.key_names, st.query_role_map()
    get = lambda r, s: m[0, 0, qn.index(r), kn.index(s)].item()  # noqa: E731
    assert get("b", "=") == pytest.approx(1.0)
    assert get("=", "=") == pytest.approx(1.0)
    assert get("a", "a") == pytest.approx(1.0)
    assert torch.allclose(m[0, 0].sum(-1), torch.ones(len(qn)))
    want = role_map_loops(P, mask, roles, roles)
    assert (qn, kn) == want[:2] and np.allclose(m.numpy(), want[2], atol=1e-6)


def test_summary_map_counts_received_attention_per_layer():
    n = 4
    roles = [["x", "^", "=", "0"]]
    mask = causal(1, n)
    P = torch.zeros(2, 1, 2, n, n)
    P[0, 0, :, :, 0] = 1          # layer 0: all heads on 'x'
    P[1, 0, 0, :, 0] = 1          # layer 1: head 0 on 'x', head 1 on itself
    P[1, 0, 1] = torch.eye(n)
    st = stats_of(P, mask, roles, roles)
    names, sm = st.key_names, st.summary_map()
    assert sm[0, names.index("x")] == pytest.approx(1.0)
    assert sm[1, names.index("x")] == pytest.approx(0.5 + 0.5 / n)
    assert torch.allclose(sm.sum(-1), torch.ones(2))
    sel = torch.tensor([[True, True, False, False]])
    sm2 = stats_of(P, mask, roles, roles, key_select=sel).summary_map()
    names2, want2 = summary_map_loops(P, mask, roles, key_select=sel)
    assert names2 == ["^", "x"] and sm2[0, names.index("x")] == pytest.approx(1.0)
    assert float(sm2[:, [names.index("="), names.index("0")]].abs().sum()) == 0.0
    assert np.allclose(sm2[:, [names.index(r) for r in names2]].numpy(), want2, atol=1e-6)


@pytest.mark.parametrize("causal_mask", [True, False])
def test_streamed_maps_equal_the_loops_on_random_patterns_in_batches(causal_mask):
    g = torch.Generator().manual_seed(3)
    B, n, L, H = 5, 7, 2, 3
    lengths = torch.tensor([7, 4, 6, 3, 5])
    pool = ["x", "=", "^", "0", "<bos>"]
    roles = [[pool[int(i)] for i in torch.randint(len(pool), (int(m),), generator=g)]
             for m in lengths]
    valid = torch.arange(n)[None] < lengths[:, None]
    mask = valid[:, :, None] & valid[:, None, :]
    if causal_mask:
        mask &= torch.ones(n, n, dtype=torch.bool).tril()
    P = torch.rand(L, B, H, n, n, generator=g) * mask[None, :, None]
    P = P / P.sum(-1, keepdim=True).clamp_min(1e-12)
    sel = torch.rand(B, n, generator=g) > 0.3
    qn = sorted({r for row in roles for r in row})
    st = HeadStats(L, H, qn, qn)
    for part in (slice(0, 2), slice(2, 5)):      # two batches, cut to their own widths
        w = int(lengths[part].max())
        st.update(P[:, part, :, :w, :w], mask[part, :w, :w],
                  role_index(roles[part], qn, w), role_index(roles[part], qn, w),
                  key_select=sel[part, :w])
    _, _, want = role_map_loops(P, mask, roles, roles)
    assert np.allclose(st.query_role_map().numpy(), want, atol=1e-5)
    names, summ = summary_map_loops(P, mask, roles, key_select=sel)
    assert np.allclose(st.summary_map()[:, [qn.index(r) for r in names]].numpy(), summ,
                       atol=1e-5)
    maps = role_maps({"self": st})["self"]
    assert maps["key_roles"] == qn and torch.equal(maps["summary"], st.summary_map())


def test_rollout_of_identity_attention_is_identity_and_of_uniform_is_closed_form():
    n = 5
    mask = causal(1, n)
    P = torch.eye(n).expand(3, 1, 2, n, n)
    assert torch.allclose(rollout(P, mask), torch.eye(n)[None])
    # one layer, every head attends to token 0: A' = 0.5 I + 0.5 e0
    P1 = torch.zeros(1, 1, 1, n, n)
    P1[..., 0] = 1
    r = rollout(P1, mask)
    want = 0.5 * torch.eye(n)
    want[:, 0] += 0.5
    assert torch.allclose(r[0], want)
    # two such layers: row q>0 puts 0.25 on itself and 0.75 on token 0
    r2 = rollout(P1.expand(2, 1, 1, n, n), mask)
    assert r2[0, 3, 3] == pytest.approx(0.25) and r2[0, 3, 0] == pytest.approx(0.75)
    assert torch.allclose(r2.sum(-1), torch.ones(1, n))


def rollout_numpy(P, mask, residual):
    """Rollout written out per example: A'_l = residual I + (1 - residual) mean_h P_l,
    masked, each row divided by its sum; the product A'_{L-1} ... A'_0 (the first layer
    applied first), started from the identity on the real positions."""
    P, mask = np.asarray(P, dtype=np.float64), np.asarray(mask, dtype=np.float64)
    L, B, _, n, _ = P.shape
    out = np.zeros((B, n, n))
    for b in range(B):
        R = np.diag(mask[b].any(-1).astype(float))
        for layer in range(L):
            a = (residual * np.eye(n) + (1 - residual) * P[layer, b].mean(0)) * mask[b]
            s = a.sum(-1, keepdims=True)
            R = np.divide(a, s, out=np.zeros_like(a), where=s > 0) @ R
        out[b] = R * mask[b]
    return out


@pytest.mark.parametrize("causal_mask", [True, False])
def test_rollout_equals_the_renormalised_layers_multiplied_in_numpy(causal_mask):
    """Random heads, three layers, padding; the patterns are softmaxed over every key, so
    inside the mask their rows do not sum to 1 and the renormalisation counts."""
    g = torch.Generator().manual_seed(8)
    L, B, H, n = 3, 2, 2, 6
    valid = torch.arange(n)[None] < torch.tensor([6, 4])[:, None]
    mask = valid[:, :, None] & valid[:, None, :]
    if causal_mask:
        mask &= torch.ones(n, n, dtype=torch.bool).tril()
    P = torch.softmax(2 * torch.randn(L, B, H, n, n, generator=g), -1) * mask[None, :, None]
    for residual in (0.5, 0.2):
        want = rollout_numpy(P, mask, residual)
        assert np.allclose(rollout(P, mask, residual).double().numpy(), want, atol=1e-6)
    assert not np.allclose(want, rollout_numpy(P.flip(0), mask, 0.2), atol=1e-3)   # order counts


def route_frame():
    """Two heads of 'self' (query groups a, <script>; key groups b, c) and one of 'cross';
    each query's shares sum to 1."""
    rows = []
    for layer, head, shares in ((0, 1, [[0.7, 0.3], [0.2, 0.8]]),
                                (2, 0, [[0.1, 0.9], [1.0, 0.0]])):
        for qi, q in enumerate(["a", "<script>"]):
            for ki, k in enumerate(["b", "c"]):
                rows.append(("self", layer, head, q, k, shares[qi][ki]))
    rows += [("cross", 1, 3, "x", "y&z", 1.0)]
    return pd.DataFrame(rows, columns=["kind", "layer", "head", "query", "key", "share"])


def test_route_maps_figure_draws_each_heads_shares_with_escaped_labels_and_titles():
    import plotly.io as pio

    from interp.viz.figures import route_maps_figure

    maps = route_frame()
    title = "L2H0: routed(<script>->b,c) | reads <script>->c 0.90 (x3.1) | verified +0.41"
    fig = route_maps_figure(maps, [("self", 2, 0), ("self", 0, 1), ("cross", 1, 3)],
                            titles={("self", 2, 0): title})
    z = [np.array(t.z, dtype=float) for t in fig.data]
    assert np.allclose(z[0], [[0.1, 0.9], [1.0, 0.0]])
    assert np.allclose(z[1], [[0.7, 0.3], [0.2, 0.8]])
    assert np.allclose(z[2], [[1.0]])
    assert list(fig.data[0].y) == ["a", "&lt;script&gt;"] and list(fig.data[0].x) == ["b", "c"]
    assert list(fig.data[2].x) == ["y&amp;z"]
    assert all(t.zmin == 0 and t.zmax == 1 for t in fig.data)
    texts = [a.text for a in fig.layout.annotations]
    assert texts[0] == ("L2H0: routed(&lt;script&gt;-&gt;b,c)<br>reads &lt;script&gt;-&gt;c "
                        "0.90 (x3.1)<br>verified +0.41")
    assert texts[1] == "self L0H1"
    js = pio.to_json(fig)
    assert "<script>" not in js and "&lt;script&gt;" in js
    only = route_maps_figure(maps, [("self", 2, 0), ("self", 0, 1)], max_heads=1)
    assert len(only.data) == 1


def test_flow_figure_draws_rollout_whole_and_flow_only_where_it_was_computed():
    import plotly.io as pio

    from interp.viz.figures import flow_figure

    roll = torch.tensor([[1.0, 0.0, 0.0], [0.25, 0.75, 0.0], [0.1, 0.2, 0.7]])
    flow = torch.tensor([[1.0, 0.0, 0.0], [0.5, 0.75, 0.0], [float("nan")] * 3])
    fig = flow_figure(flow[None], roll, ["<b>", "x", "="])
    assert np.allclose(np.array(fig.data[0].z, dtype=float), roll.numpy())
    got = np.array(fig.data[1].z, dtype=float)
    # the row of NaN (not computed) is left out: the flow panel holds its content only
    assert got.shape == (2, 3) and np.allclose(got, flow[:2].numpy())
    assert list(fig.data[1].y) == ["0:&lt;b&gt;", "1:x"]
    assert list(fig.data[0].y) == ["0:&lt;b&gt;", "1:x", "2:="]
    assert list(fig.data[0].x) == ["0:&lt;b&gt;", "1:x", "2:="]
    roll[0, 0] = 0.8                       # each panel scaled to its own maximum
    fig = flow_figure(flow, roll, ["<b>", "x", "="])
    assert fig.data[0].zmax == pytest.approx(0.8) and fig.data[1].zmax == 1.0
    js = pio.to_json(fig)
    assert "<b>" not in js.replace("<br>", "")
