"""Attention rollout, the one map not kept as a running sum.

The role-averaged maps (query role x key role) and the layer x input-role summary map are
sums over the data, kept by `interp.attention.stats.HeadStats` (`query_role_map()`,
`summary_map()`, `role_masses()`) however many examples stream past; `role_maps` reads them
for a notebook. Rollout multiplies the layers' patterns of one example, so it is computed
here from cached patterns `P: [layer, batch, head, query, key]` and the mask
`M: [batch, query, key]`.
"""

from __future__ import annotations

import torch


def rollout(P: torch.Tensor, mask: torch.Tensor, residual: float = 0.5) -> torch.Tensor:
    """Attention rollout (Abnar & Zuidema 2020): A' = residual * I + (1 - residual) * mean_h A,
    rows renormalised, multiplied from the first layer up.

    Parameters
    ----------
    P : [layer, batch, head, query, key] self-attention patterns (zero on padding)
    mask : [batch, query, key] bool, True where both positions are real (and allowed)
    residual : weight of the identity (the residual stream) in each layer

    Returns
    -------
    [batch, query, key]: how much each output position draws on each input position through
    attention alone. Works for causal and bidirectional self-attention (not for cross
    attention).
    """
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


def role_maps(stats: dict) -> dict[str, dict]:
    """The maps of `collect_stats` output, per attention kind, for a notebook.

    Returns
    -------
    {kind: {"query_roles": [...], "key_roles": [...],
            "role_map": [layer, head, query role, key role] (rows sum to 1; None when the
            stats kept no role map), "summary": [layer, key role] (attention each input
            role receives per query, mean over heads)}}
    """
    return {kind: {"query_roles": st.query_names, "key_roles": st.key_names,
                   "role_map": st.query_role_map() if st.role_map is not None else None,
                   "summary": st.summary_map()}
            for kind, st in stats.items()}
