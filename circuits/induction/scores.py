"""Induction-head scores of every head of a decoder, as one table (REFERENCE §3).

    bridge, _ = interp.load_model("induction-attn2l")
    heads = head_scores(bridge)          # DataFrame: layer, head, induction, prefix_matching,
                                         # previous_token, duplicate_token, copying,
                                         # ov_eigen_positivity, and the baselines

The attention scores and their definitions live in `interp.attention.induction` (training
records them too); the weight scores (copying, OV eigenvalues, composition) are
`circuits.induction.weights`.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import torch

from circuits.induction.weights import copying_scores
from interp.attention.induction import model_patterns, score_prompts, scores_from_patterns

ATTENTION_SCORES = ("induction", "prefix_matching", "previous_token", "duplicate_token")


def head_scores(bridge, n: int = 32, half: int | None = None, seed: int = 0,
                exclude_bos: bool = True, fwd_hooks: Sequence = (),
                copying: bool = True) -> pd.DataFrame:
    """One row per head: layer, head, induction, prefix_matching, previous_token,
    duplicate_token, copying, ov_eigen_positivity, and the baselines (`*_uniform`,
    `copying_random`, ...).

    Prompts: `score_prompts(bridge, n, half, seed=seed)`. `fwd_hooks` run during the
    attention scores (not copying, a weight score), for ablations."""
    ids, half, pre, length = score_prompts(bridge, n, half, seed=seed)
    P = model_patterns(bridge, ids, fwd_hooks)              # [layer, batch, head, q, k]
    P_pre = model_patterns(bridge, pre, fwd_hooks)
    s = scores_from_patterns(P, ids, half, P_pre, pre, length, exclude_bos)
    L, H = s["induction"].shape
    rows = {"layer": [layer for layer in range(L) for _ in range(H)],
            "head": [h for _ in range(L) for h in range(H)]}
    for k in ATTENTION_SCORES:
        rows[k] = s[k].flatten().tolist()
    cop = copying_scores(bridge, seed=seed) if copying else {}
    for k in ("copying", "ov_eigen_positivity"):
        if k in cop:
            rows[k] = cop[k].flatten().tolist()
    for k in ATTENTION_SCORES:
        rows[f"{k}_uniform"] = [float(s[f"{k}_uniform"].flatten()[0])] * (L * H)
    for k, v in cop.items():
        if not torch.is_tensor(v):
            rows[k] = [v] * (L * H)
    return pd.DataFrame(rows)


__all__ = ["head_scores"]
