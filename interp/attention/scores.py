"""Per-head pattern scores over cached attention, each with its uniform-attention baseline.

Every score is a pure function of patterns `P: [layer, batch, head, query, key]` and the
validity mask `M: [batch, query, key]` of an AttentionCache kind. The baseline of a score is
the same function applied to the uniform head `U = M / M.sum(-1)`, which attends equally to
every key it may see; a score means something only against its baseline.

The previous-token, duplicate-token and induction scores use TransformerLens's `head_detector`
recipe ("mul" measure: attention on the detection pattern over all attention, per prompt, then
averaged over prompts), so they can be compared with `detect_head` number for number.
"""

from __future__ import annotations

import torch


def uniform_like(mask: torch.Tensor) -> torch.Tensor:
    """[1, batch, 1, query, key]: equal attention over each query's valid keys."""
    m = mask.float()
    return (m / m.sum(-1, keepdim=True).clamp_min(1))[None, :, None]


def query_valid(mask: torch.Tensor) -> torch.Tensor:
    """[batch, query] True for queries with at least one valid key."""
    return mask.any(-1)


def _mean_over_queries(x: torch.Tensor, qmask: torch.Tensor) -> torch.Tensor:
    """x: [layer, batch, head, query] -> [layer, head], mean over valid (batch, query)."""
    w = qmask.float()[None, :, None]
    return (x * w).sum((1, 3)) / w.sum((1, 3)).clamp_min(1)


def offset_profile(P: torch.Tensor, mask: torch.Tensor, offsets) -> torch.Tensor:
    """Share of all attention at each relative offset d = query - key: [layer, head, offsets].

    d = 0 is the token itself, 1 the previous token, -1 the next one. Each entry is the
    attention at that offset summed over queries, divided by the number of valid queries, so
    the entries of a head sum to 1 over all offsets (rare long offsets cannot look large).
    One scatter-add over the relative index does every offset at once.
    """
    L, B, H, Q, K = P.shape
    nq = query_valid(mask).float().sum().clamp_min(1)
    rel = (torch.arange(Q)[:, None] - torch.arange(K)[None, :] + (K - 1)).reshape(-1)
    summed = (P * mask[None, :, None].to(P.dtype)).sum(1).reshape(L * H, Q * K)  # [L*H, Q*K]
    by_rel = torch.zeros(L * H, Q + K - 1).index_add_(1, rel, summed)
    offsets = torch.as_tensor(list(offsets))
    inside = (offsets > -K) & (offsets < Q)
    out = torch.zeros(L * H, len(offsets))
    out[:, inside] = by_rel[:, offsets[inside] + K - 1]
    return (out / nq).reshape(L, H, len(offsets))


def offset_model(profile: torch.Tensor, mask: torch.Tensor, offsets) -> torch.Tensor:
    """The pattern a head would have if its attention depended on the offset alone.

    profile: [layer, head, offsets] -> [layer, batch, head, query, key], each row
    renormalised over the query's valid keys.
    """
    B, Q, K = mask.shape
    rel = torch.arange(Q)[:, None] - torch.arange(K)[None, :]          # [Q, K]
    lut = torch.zeros(*profile.shape[:2], Q + K)                        # offset -> weight
    for i, d in enumerate(offsets):
        if -K < d < Q:
            lut[..., d + K] = profile[..., i]
    w = lut[..., rel + K]                                               # [L, H, Q, K]
    w = w[:, None] * mask[None, :, None].float()                        # [L, B, H, Q, K]
    return w / w.sum(-1, keepdim=True).clamp_min(1e-12)


def detection_score(P: torch.Tensor, mask: torch.Tensor, detect: torch.Tensor,
                    exclude_bos: bool = False, exclude_current: bool = False) -> torch.Tensor:
    """TransformerLens's "mul" head-detector score, per head: [layer, head].

    detect: [batch, query, key] 0/1. For each prompt, the attention that falls on the detection
    pattern divided by all attention (after dropping the BOS column and/or the diagonal when
    asked), then the mean over prompts.
    """
    P = P * mask[None, :, None].to(P.dtype)
    if exclude_bos:
        P = P.clone()
        P[..., 0] = 0
    if exclude_current:
        P = P * (1 - torch.eye(P.shape[-2], P.shape[-1]))
    num = (P * detect[None, :, None].to(P.dtype)).sum((-1, -2))   # [L, B, H]
    den = P.sum((-1, -2)).clamp_min(1e-30)
    return (num / den).mean(1)


def previous_token_pattern(ids: torch.Tensor) -> torch.Tensor:
    """[batch, q, k] 1 where k == q - 1."""
    n = ids.shape[1]
    return torch.diag(torch.ones(n - 1), -1).expand(ids.shape[0], n, n)


def duplicate_token_pattern(ids: torch.Tensor) -> torch.Tensor:
    """[batch, q, k] 1 where k < q and token k equals token q."""
    eq = (ids[:, :, None] == ids[:, None, :]).float()
    return torch.tril(eq, -1)


def induction_pattern(ids: torch.Tensor) -> torch.Tensor:
    """[batch, q, k] 1 where 1 <= k <= q and token k-1 equals token q (attend to the token
    after an earlier copy of the current one)."""
    dup = duplicate_token_pattern(ids)
    out = torch.zeros_like(dup)
    out[:, :, 1:] = dup[:, :, :-1]
    return torch.tril(out)


def entropy(P: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean attention entropy in nats over valid queries (Clark et al. 2019): [layer, head]."""
    p = P.clamp_min(1e-12)
    h = -(P * p.log()).sum(-1)
    return _mean_over_queries(h, query_valid(mask))


def key_mass(P: torch.Tensor, mask: torch.Tensor, key_sel: torch.Tensor) -> torch.Tensor:
    """Mean attention per query on the selected keys: key_sel [batch, key] -> [layer, head]."""
    m = (P * key_sel[None, :, None, None, :].to(P.dtype)).sum(-1)
    return _mean_over_queries(m, query_valid(mask))


def role_onehot(roles: list[list[str]], width: int, names: list[str] | None = None
                ) -> tuple[list[str], torch.Tensor]:
    """(role names, [batch, width, role]) with a 1 where a position has that role."""
    names = names or sorted({r for row in roles for r in row})
    index = {r: i for i, r in enumerate(names)}
    out = torch.zeros(len(roles), width, len(names))
    for b, row in enumerate(roles):
        for p, r in enumerate(row[:width]):
            if r in index:
                out[b, p, index[r]] = 1
    return names, out


def role_mass(P: torch.Tensor, mask: torch.Tensor, key_roles: list[list[str]]
              ) -> tuple[list[str], torch.Tensor]:
    """Mean attention per query received by each key role: (roles, [layer, head, role])."""
    roles, onehot = role_onehot(key_roles, P.shape[-1])
    recv = torch.einsum("lbhqk,bkr->lbhqr", P, onehot)
    w = query_valid(mask).float()[None, :, None, :, None]
    return roles, (recv * w).sum((1, 3)) / w.sum((1, 3)).clamp_min(1)


def segment_share(P: torch.Tensor, mask: torch.Tensor, q_seg: torch.Tensor, k_seg: torch.Tensor
                  ) -> torch.Tensor:
    """Mean share of each query's attention that stays in its own segment: [layer, head].

    q_seg: [batch, query], k_seg: [batch, key] integer segment ids (-1 for none).
    """
    same = (q_seg[:, :, None] == k_seg[:, None, :]) & (q_seg[:, :, None] >= 0)
    m = (P * (same & mask)[None, :, None].to(P.dtype)).sum(-1)
    return _mean_over_queries(m, query_valid(mask))
