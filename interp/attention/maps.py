"""Maps for people: role-averaged maps, the layer x input-token summary map, attention rollout.

All pure functions of cached patterns `P: [layer, batch, head, query, key]`, the validity mask
`M: [batch, query, key]` and per-position roles, so maps can be averaged across examples of
different lengths (every equation has one `=`, but a different number of `b_digit`s).
"""

from __future__ import annotations

import torch

from interp.attention.scores import role_onehot as _onehot


def role_map(P: torch.Tensor, mask: torch.Tensor, q_roles: list[list[str]],
             k_roles: list[list[str]]) -> tuple[list[str], list[str], torch.Tensor]:
    """Query role x key role: the attention a query of role r sends to all keys of role s,
    averaged over the queries of role r. Returns (query roles, key roles, [layer, head, r, s]).
    Each row sums to 1 (over key roles)."""
    P = P * mask[None, :, None].to(P.dtype)
    qn, qh = _onehot(q_roles, P.shape[-2])
    kn, kh = _onehot(k_roles, P.shape[-1])
    qh = qh * mask.any(-1)[..., None].float()
    summed = torch.einsum("lbhqk,bqr,bks->lhrs", P, qh, kh)
    count = qh.sum((0, 1))                                   # queries per role
    return qn, kn, summed / count.clamp_min(1)[None, None, :, None]


def summary_map(P: torch.Tensor, mask: torch.Tensor, k_roles: list[list[str]],
                key_select: torch.Tensor | None = None) -> tuple[list[str], torch.Tensor]:
    """Layers x key roles: attention each key role receives per query, averaged over heads,
    queries and examples (seed 001's "summary map"). key_select [batch, key] keeps only some
    keys (e.g. the input equation's positions) without renormalising.
    Returns (roles, [layer, role])."""
    if key_select is not None:
        k_roles = [[r if bool(key_select[b, i]) else "" for i, r in enumerate(row)]
                   for b, row in enumerate(k_roles)]
    names, kh = _onehot(k_roles, P.shape[-1])
    keep = [i for i, n in enumerate(names) if n]
    names = [names[i] for i in keep]
    kh = kh[..., keep]
    P = P * mask[None, :, None].to(P.dtype)
    recv = torch.einsum("lbhqk,bks->lbhqs", P, kh)            # [L, B, H, Q, R]
    qv = mask.any(-1).float()[None, :, None, :, None]
    return names, (recv * qv).sum((1, 2, 3)) / (qv.sum((1, 3)) * P.shape[2]).clamp_min(1)[:, 0]


def rollout(P: torch.Tensor, mask: torch.Tensor, residual: float = 0.5) -> torch.Tensor:
    """Attention rollout (Abnar & Zuidema 2020): A' = residual * I + (1 - residual) * mean_h A,
    rows renormalised, multiplied from the first layer up. Returns [batch, query, key]: how
    much each output position draws on each input position through attention alone.
    Works for causal and bidirectional self-attention (not for cross attention)."""
    B, Q, K = mask.shape
    if Q != K:
        raise ValueError("rollout needs self-attention (query and key positions the same)")
    eye = torch.eye(Q)[None] * mask.any(-1).float()[..., None]
    out = eye.clone()
    for layer in range(P.shape[0]):
        a = residual * torch.eye(Q)[None] + (1 - residual) * P[layer].mean(1)
        a = a * mask.float()
        a = a / a.sum(-1, keepdim=True).clamp_min(1e-12)
        out = a @ out
    return out * mask.float()
