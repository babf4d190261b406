"""Induction and in-context-learning scores: definitions on attention patterns and token losses
(REFERENCE §3; Olsson et al. 2022), and the two forward passes they read.

    ids, half, pre, length = score_prompts(bridge, n=16)     # repeated random tokens
    P = model_patterns(bridge, ids)                         # [layer, batch, head, q, k]
    induction_score(P, half)                                # [layer, head]
    losses = token_losses(bridge, windows)                  # [batch, pos - 1]
    icl_score(losses, *icl_positions(n_ctx))                # (late - early, s.e.)

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
- icl (in-context learning): mean loss at a late position minus at an early one (Olsson: 500
  and 50; here scaled to the context length unless given). Negative = later tokens are
  predicted better.

Every attention score comes with the same score of a head that attends uniformly
(`*_uniform`). The pure functions take patterns `P: [layer, batch, head, query, key]`; the
forward passes (`model_patterns`, `token_losses`) go through `interp.hooks` and return CPU
float32 tensors whatever the model's device and dtype.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from interp.attention.scores import (
    detection_score,
    duplicate_token_pattern,
    induction_pattern,
    previous_token_pattern,
    uniform_like,
)
from interp.errors import InterpError
from interp.hooks import arch_of, capture, layer_hooks, run
from interp.tokens import repeated_random_tokens, repeated_tokens, token_pool


def _renorm_without_bos(P: torch.Tensor) -> torch.Tensor:
    P = P.clone()
    P[..., 0] = 0
    return P / P.sum(-1, keepdim=True).clamp_min(1e-30)


def induction_score(P: torch.Tensor, half: int, exclude_bos: bool = True) -> torch.Tensor:
    """[layer, head]: mean attention from each second-half query q (positions half + 1 ..
    2 * half) to key q - half + 1, for BOS + `half` tokens + the same `half` tokens.

    P: [layer, batch, head, query, key] with query = key = 1 + 2 * half."""
    return per_prompt_induction(P, half, exclude_bos).mean(1)


def per_prompt_induction(P: torch.Tensor, half: int, exclude_bos: bool = True
                         ) -> torch.Tensor:
    """[layer, batch, head]: `induction_score` before the mean over prompts."""
    if P.shape[-1] != 2 * half + 1:
        raise InterpError(f"patterns of width {P.shape[-1]} do not fit BOS + 2 x {half} tokens")
    if exclude_bos:
        P = _renorm_without_bos(P)
    q = torch.arange(half + 1, 2 * half + 1)
    return P[..., q, q - half + 1].mean(-1)


def prefix_matching_score(P: torch.Tensor, ids: torch.Tensor, first_repeat_len: int,
                          exclude_bos: bool = True) -> torch.Tensor:
    """[layer, head]: mean over queries after the first repeat (positions >
    `first_repeat_len`) of the attention on tokens that followed an earlier copy of the
    query's token. P: [layer, batch, head, pos, pos]; ids: [batch, pos] with BOS at 0."""
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


def icl_positions(n_ctx: int) -> tuple[int, int]:
    """Olsson's positions 50 and 500 of a 512-token context, scaled to `n_ctx` tokens."""
    early = max(1, round(50 * n_ctx / 512))
    late = max(early + 1, min(n_ctx - 2, round(500 * n_ctx / 512)))
    return early, late


def icl_score(losses: torch.Tensor, early: int, late: int) -> tuple[float, float]:
    """(loss at token `late` minus loss at token `early`, its standard error) from
    `token_losses` output ([batch, pos - 1]); token p's loss is the prediction of token p made
    at p - 1."""
    if not 1 <= early < late <= losses.shape[1]:
        raise InterpError(f"ICL positions must satisfy 1 <= early < late <= "
                          f"{losses.shape[1]}, got {early} and {late}")
    d = losses[:, late - 1] - losses[:, early - 1]
    return float(d.mean()), float(d.std() / math.sqrt(len(d))) if len(d) > 1 else float("nan")


# ---------------------------------------------------------------- the forward passes

def check_decoder(bridge) -> None:
    """Refuse a model that is not decoder-only (the scores assume causal self-attention)."""
    if arch_of(bridge) != "decoder":
        raise InterpError("induction scores need a decoder-only (causal) model; "
                          f"this one is {arch_of(bridge)!r}")


def model_patterns(bridge, ids: torch.Tensor, fwd_hooks: Sequence = ()) -> torch.Tensor:
    """[layer, batch, head, query, key] attention patterns (CPU float32) of a decoder on
    `ids` ([batch, pos]), optionally under `fwd_hooks` (TransformerLens (name, fn) pairs, e.g.
    an ablation). The forward pass stops at the last pattern (`interp.hooks.capture`)."""
    check_decoder(bridge)
    names = layer_hooks(bridge, "self", "hook_pattern")
    store = capture(bridge, ids, names=names, hooks=fwd_hooks)
    return torch.stack([store[n].float().cpu() for n in names])


def score_prompts(bridge, n: int = 32, half: int | None = None, length: int = 25,
                  repeats: int = 4, seed: int = 0):
    """(induction ids [n, 1 + 2 half], half, prefix-matching ids [n, 1 + repeats length],
    length), fitted to the context: half defaults to min(40, (n_ctx - 1) // 2), and
    repeats x length is shortened to fit n_ctx."""
    n_ctx = int(getattr(bridge.cfg, "n_ctx", 0) or 161)
    half = half or max(2, min(40, (n_ctx - 1) // 2))
    if 1 + 2 * half > n_ctx:
        raise InterpError(f"half {half} does not fit the context of {n_ctx} tokens; use at "
                          f"most {(n_ctx - 1) // 2}")
    while repeats > 2 and 1 + repeats * length > n_ctx:
        repeats -= 1
    length = min(length, (n_ctx - 1) // repeats)
    vocab, special, bos = token_pool(bridge)
    ids = repeated_random_tokens(bridge, n, half, seed)
    pre = repeated_tokens(vocab, n, length, repeats, bos, special, seed + 1)
    return ids, half, pre, length


def token_losses(bridge, ids: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """[batch, pos - 1] (CPU float32): cross-entropy of predicting ids[:, p + 1] at position p,
    for ids: [batch, pos]."""
    out = []
    for i in range(0, len(ids), batch_size):
        x = ids[i:i + batch_size]
        logits = run(bridge, x).float()                               # [batch, pos, vocab]
        target = x[:, 1:].to(logits.device)
        out.append(torch.nn.functional.cross_entropy(
            logits[:, :-1].transpose(1, 2), target, reduction="none").cpu())
    return torch.cat(out)


__all__ = ["induction_score", "per_prompt_induction", "prefix_matching_score",
           "scores_from_patterns", "icl_positions", "icl_score", "check_decoder",
           "model_patterns", "score_prompts", "token_losses"]
