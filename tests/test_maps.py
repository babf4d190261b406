"""Role-averaged maps, summary map and rollout against closed-form cases."""

import pytest
import torch

from interp.attention.maps import role_map, rollout, summary_map


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
    qn, kn, m = role_map(P, mask, roles, roles)
    get = lambda r, s: m[0, 0, qn.index(r), kn.index(s)].item()
    assert get("b", "=") == pytest.approx(1.0)
    assert get("=", "=") == pytest.approx(1.0)
    assert get("a", "a") == pytest.approx(1.0)
    assert torch.allclose(m[0, 0].sum(-1), torch.ones(len(qn)))


def test_summary_map_counts_received_attention_per_layer():
    n = 4
    roles = [["x", "^", "=", "0"]]
    mask = causal(1, n)
    P = torch.zeros(2, 1, 2, n, n)
    P[0, 0, :, :, 0] = 1          # layer 0: all heads on 'x'
    P[1, 0, 0, :, 0] = 1          # layer 1: head 0 on 'x', head 1 on itself
    P[1, 0, 1] = torch.eye(n)
    names, sm = summary_map(P, mask, roles)
    assert sm[0, names.index("x")] == pytest.approx(1.0)
    assert sm[1, names.index("x")] == pytest.approx(0.5 + 0.5 / n)
    assert torch.allclose(sm.sum(-1), torch.ones(2))
    sel = torch.tensor([[True, True, False, False]])
    names2, sm2 = summary_map(P, mask, roles, key_select=sel)
    assert names2 == ["^", "x"] and sm2[0, 1] == pytest.approx(1.0)


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
