"""Induction-head scores on repeated random tokens (REFERENCE §3; Olsson et al. 2022).

    bridge, _ = interp.load_model("some-decoder")
    scores = head_scores(bridge)        # DataFrame: layer, head, induction, prefix_matching,
                                        # previous_token, duplicate_token, and *_uniform

- induction (the "diagonal recipe"): on BOS + n random tokens + the same n again, the mean
  over second-half queries of the attention on the token after the query's earlier copy
  (offset -(n - 1)). With `exclude_bos` each query's attention is renormalised over the
  non-BOS keys first, so a head that parks unused attention on BOS is not penalised; a
  perfect induction head scores 1.
- prefix_matching (Olsson): on BOS + 25 random tokens repeated 4 times, the mean over queries
  in repeats 2-4 of the attention on every token that followed an earlier copy of the
  query's token.
- previous_token / duplicate_token: TransformerLens's head-detector scores ("mul") on the
  same prompts (`interp.attention.scores.detection_score`).

Every score comes with the same score of a head that attends uniformly (`*_uniform`).
Pure functions take patterns `P: [layer, batch, head, query, key]`.
"""

from __future__ import annotations

import torch

from interp.attention.scores import (detection_score, duplicate_token_pattern,
                                     induction_pattern, previous_token_pattern, uniform_like)
from interp.cache import repeated_tokens  # noqa: F401  (part of this module's API)
from interp.errors import InterpError


def _renorm_without_bos(P: torch.Tensor) -> torch.Tensor:
    P = P.clone()
    P[..., 0] = 0
    return P / P.sum(-1, keepdim=True).clamp_min(1e-30)


def induction_score(P: torch.Tensor, half: int, exclude_bos: bool = True) -> torch.Tensor:
    """[layer, head]: mean attention from each second-half query q (positions half + 1 ..
    2 * half) to key q - half + 1, for BOS + `half` tokens + the same `half` tokens."""
    if P.shape[-1] != 2 * half + 1:
        raise InterpError(f"patterns of width {P.shape[-1]} do not fit BOS + 2 x {half} tokens")
    if exclude_bos:
        P = _renorm_without_bos(P)
    q = torch.arange(half + 1, 2 * half + 1)
    return P[..., q, q - half + 1].mean((1, -1))


def prefix_matching_score(P: torch.Tensor, ids: torch.Tensor, first_repeat_len: int,
                          exclude_bos: bool = True) -> torch.Tensor:
    """[layer, head]: mean over queries after the first repeat (positions >
    `first_repeat_len`) of the attention on tokens that followed an earlier copy of the
    query's token. ids: [batch, pos] with BOS at 0."""
    if exclude_bos:
        P = _renorm_without_bos(P)
    detect = induction_pattern(ids)                         # [batch, q, k]
    mass = (P * detect[None, :, None]).sum(-1)              # [layer, batch, head, q]
    return mass[..., first_repeat_len + 1:].mean((1, -1))


def scores_from_patterns(P_ind: torch.Tensor, ids_ind: torch.Tensor, half: int,
                         P_pre: torch.Tensor, ids_pre: torch.Tensor, length: int,
                         exclude_bos: bool = True) -> dict[str, torch.Tensor]:
    """Every score ([layer, head]) and its uniform-head baseline ([1, 1]), from the patterns
    of the induction prompts (2 repeats of `half`) and the prefix-matching prompts (repeats
    of `length`)."""
    mask = torch.ones(ids_ind.shape[1], ids_ind.shape[1], dtype=torch.bool).tril()
    mask = mask.expand(ids_ind.shape[0], -1, -1)
    U = uniform_like(mask)
    mask_pre = torch.ones(ids_pre.shape[1], ids_pre.shape[1], dtype=torch.bool).tril()
    U_pre = uniform_like(mask_pre.expand(ids_pre.shape[0], -1, -1))
    out = {}
    for name, fn in (("induction", lambda P: induction_score(P, half, exclude_bos)),
                     ("previous_token", lambda P: detection_score(
                         P, mask, previous_token_pattern(ids_ind))),
                     ("duplicate_token", lambda P: detection_score(
                         P, mask, duplicate_token_pattern(ids_ind)))):
        out[name] = fn(P_ind)
        out[f"{name}_uniform"] = fn(U)
    out["prefix_matching"] = prefix_matching_score(P_pre, ids_pre, length, exclude_bos)
    out["prefix_matching_uniform"] = prefix_matching_score(U_pre, ids_pre, length, exclude_bos)
    return out


def random_composition_baseline(d_model: int, d_head: int, mode: str = "K", n: int = 200,
                                seed: int = 0) -> tuple[float, float]:
    """(mean, standard deviation) of the composition score (Elhage et al. 2021, as computed
    by TransformerLens) between heads whose W_Q, W_K, W_V, W_O are random Gaussian matrices
    of the given shapes: the score a pair of unrelated heads gets by chance."""
    from transformer_lens import FactoredMatrix
    from transformer_lens.utilities.matrix import composition_scores

    if mode not in ("Q", "K", "V"):
        raise InterpError(f"composition mode must be Q, K or V, got {mode!r}")
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape):
        return torch.randn(n, *shape, generator=g)
    left = FactoredMatrix(rnd(d_model, d_head), rnd(d_head, d_model))      # W_V W_O
    right = FactoredMatrix(rnd(d_model, d_head), rnd(d_head, d_model))     # W_Q W_K^T or W_V W_O
    if mode == "K":
        right = right.T
    s = composition_scores(left, right, broadcast_dims=False)
    return float(s.mean()), float(s.std())


__all__ = ["induction_score", "prefix_matching_score", "repeated_tokens",
           "scores_from_patterns", "random_composition_baseline"]
