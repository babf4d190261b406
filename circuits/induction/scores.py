"""Induction-head scores on repeated random tokens (REFERENCE §3; Olsson et al. 2022).

    bridge, _ = interp.load_model("induction-attn2l")
    heads = head_scores(bridge)          # DataFrame: layer, head, induction, prefix_matching,
                                         # previous_token, duplicate_token, copying,
                                         # ov_eigen_positivity, and the baselines
    comp = composition_table(bridge)     # Q/K/V composition with z against random heads
    mechanism_check(bridge, heads)       # ablate the previous-token head, re-measure

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
- copying (Olsson, as REFERENCE §3 puts it): for ordinary tokens t, the head's direct-path
  logits W_E[t] W_V W_O W_U minus their mean, through a ReLU; the share that falls on t itself,
  rescaled from [0, 1] to [-1, 1]. Layer norms are left out, as in Elhage et al.
- ov_eigen_positivity (Elhage et al. 2021): sum / sum of absolute values of the eigenvalues
  of W_E W_V W_O W_U; 1 when the head only copies.
- icl (in-context learning): mean loss at a late position minus at an early one (Olsson: 500
  and 50; here scaled to the context length unless given). Negative = later tokens are
  predicted better.
- composition: TransformerLens's K/Q/V composition score of every earlier/later head pair,
  next to the mean and spread of the same score for random Gaussian heads of the same shapes.

Every attention score comes with the same score of a head that attends uniformly
(`*_uniform`); the two OV scores come with heads whose W_V, W_O are random (`*_random`,
`*_random_sd`).
Pure functions take patterns `P: [layer, batch, head, query, key]`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd
import torch

from interp.attention.scores import (
    detection_score,
    duplicate_token_pattern,
    induction_pattern,
    previous_token_pattern,
    uniform_like,
)
from interp.errors import InterpError
from interp.hooks import arch_of, capture, hook_name, n_layers
from interp.tokens import repeated_random_tokens, repeated_tokens, token_pool


def _renorm_without_bos(P: torch.Tensor) -> torch.Tensor:
    P = P.clone()
    P[..., 0] = 0
    return P / P.sum(-1, keepdim=True).clamp_min(1e-30)


def induction_score(P: torch.Tensor, half: int, exclude_bos: bool = True) -> torch.Tensor:
    """[layer, head]: mean attention from each second-half query q (positions half + 1 ..
    2 * half) to key q - half + 1, for BOS + `half` tokens + the same `half` tokens."""
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





# ---------------------------------------------------------------- scores of a model's heads

def _check_decoder(bridge):
    if arch_of(bridge) != "decoder":
        raise InterpError("induction scores need a decoder-only (causal) model; "
                          f"this one is {arch_of(bridge)!r}")


def model_patterns(bridge, ids: torch.Tensor, fwd_hooks: Sequence = ()) -> torch.Tensor:
    """[layer, batch, head, query, key] attention patterns of a decoder on `ids`, optionally
    under `fwd_hooks` (TransformerLens (name, fn) pairs, e.g. an ablation). The forward pass
    stops at the last pattern (`interp.hooks.capture`)."""
    _check_decoder(bridge)
    names = [hook_name(bridge, "self", layer) for layer in range(n_layers(bridge, "self"))]
    store = capture(bridge, ids, names=names, hooks=fwd_hooks)
    return torch.stack([store[n].float() for n in names])


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


def copying_from_weights(W_E: torch.Tensor, W_OV: torch.Tensor, W_U: torch.Tensor,
                         tokens: torch.Tensor) -> torch.Tensor:
    """Copying score per head. W_E: [vocab, d_model]; W_OV: [..., d_model, d_model] (W_V W_O);
    W_U: [d_model, vocab]; tokens: [n]. Returns [...]: the mean over tokens t of
    2 * relu(l - mean l)[t] / sum relu(l - mean l) - 1, with l = W_E[t] W_OV W_U."""
    logits = W_E[tokens] @ W_OV @ W_U                              # [..., n, vocab]
    x = torch.relu(logits - logits.mean(-1, keepdim=True))
    own = x[..., torch.arange(len(tokens)), tokens]
    share = own / x.sum(-1).clamp_min(1e-30)
    return (2 * share - 1).mean(-1)


def eigen_positivity(W_E: torch.Tensor, W_OV: torch.Tensor, W_U: torch.Tensor
                     ) -> torch.Tensor:
    """Elhage et al.'s copying measure of the OV circuit W_E W_OV W_U: sum(eigenvalues) /
    sum(|eigenvalues|), in [-1, 1] (1 = every eigenvalue positive: the head copies). Computed
    on the d_model x d_model matrix W_OV W_U W_E, which has the same nonzero eigenvalues.
    Shapes as in `copying_from_weights`; returns [...]."""
    lam = torch.linalg.eigvals((W_OV @ W_U @ W_E).double())
    return (lam.sum(-1).real / lam.abs().sum(-1).clamp_min(1e-30)).float()


@torch.no_grad()
def copying_scores(bridge, n_tokens: int = 512, n_random: int = 20, seed: int = 0
                   ) -> dict:
    """{"copying": [layer, head], "ov_eigen_positivity": [layer, head], and for each the
    mean and sd over random heads ("<name>_random", "<name>_random_sd")}: random heads have
    Gaussian W_V, W_O of the model's shapes and scale, and the model's W_E, W_U."""
    _check_decoder(bridge)
    g = torch.Generator().manual_seed(seed)
    _, special, _ = token_pool(bridge)
    pool = torch.tensor([i for i in range(int(bridge.cfg.d_vocab)) if i not in special])
    tokens = pool[torch.randperm(len(pool), generator=g)[:n_tokens]]
    W_E, W_U = bridge.W_E.detach().float(), bridge.W_U.detach().float()
    W_V, W_O = bridge.W_V.detach().float(), bridge.W_O.detach().float()
    rv = torch.randn(n_random, *W_V.shape[-2:], generator=g) * W_V.std()
    ro = torch.randn(n_random, *W_O.shape[-2:], generator=g) * W_O.std()
    out = {}
    for name, fn in (("copying", lambda ov: copying_from_weights(W_E, ov, W_U, tokens)),
                     ("ov_eigen_positivity", lambda ov: eigen_positivity(W_E, ov, W_U))):
        out[name] = fn(W_V @ W_O)
        rand = fn(rv @ ro)
        out[f"{name}_random"], out[f"{name}_random_sd"] = float(rand.mean()), float(rand.std())
    return out


def head_scores(bridge, n: int = 32, half: int | None = None, seed: int = 0,
                exclude_bos: bool = True, fwd_hooks: Sequence = (),
                copying: bool = True) -> pd.DataFrame:
    """One row per head: layer, head, induction, prefix_matching, previous_token,
    duplicate_token, copying, ov_eigen_positivity, and the baselines (`*_uniform`, `copying_random`).

    Prompts: `score_prompts(bridge, n, half, seed=seed)`. `fwd_hooks` run during the
    attention scores (not copying, a weight score), for ablations."""
    ids, half, pre, length = score_prompts(bridge, n, half, seed=seed)
    P = model_patterns(bridge, ids, fwd_hooks)
    P_pre = model_patterns(bridge, pre, fwd_hooks)
    s = scores_from_patterns(P, ids, half, P_pre, pre, length, exclude_bos)
    L, H = s["induction"].shape
    rows = {"layer": [layer for layer in range(L) for _ in range(H)],
            "head": [h for _ in range(L) for h in range(H)]}
    for k in ("induction", "prefix_matching", "previous_token", "duplicate_token"):
        rows[k] = s[k].flatten().tolist()
    cop = copying_scores(bridge, seed=seed) if copying else {}
    for k in ("copying", "ov_eigen_positivity"):
        if k in cop:
            rows[k] = cop[k].flatten().tolist()
    for k in ("induction", "prefix_matching", "previous_token", "duplicate_token"):
        rows[f"{k}_uniform"] = [float(s[f"{k}_uniform"].flatten()[0])] * (L * H)
    for k, v in cop.items():
        if not torch.is_tensor(v):
            rows[k] = [v] * (L * H)
    return pd.DataFrame(rows)


@torch.no_grad()
def token_losses(bridge, ids: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """[batch, pos - 1]: cross-entropy of predicting ids[:, p + 1] at position p."""
    out = []
    was = bridge.training
    bridge.eval()
    try:
        for i in range(0, len(ids), batch_size):
            x = ids[i:i + batch_size]
            logits = bridge(x).float()
            out.append(torch.nn.functional.cross_entropy(
                logits[:, :-1].transpose(1, 2), x[:, 1:], reduction="none"))
    finally:
        bridge.train(was)
    return torch.cat(out)


def icl_positions(n_ctx: int) -> tuple[int, int]:
    """Olsson's positions 50 and 500 of a 512-token context, scaled to `n_ctx` tokens."""
    early = max(1, round(50 * n_ctx / 512))
    late = max(early + 1, min(n_ctx - 2, round(500 * n_ctx / 512)))
    return early, late


def icl_score(losses: torch.Tensor, early: int, late: int) -> tuple[float, float]:
    """(loss at token `late` minus loss at token `early`, its standard error) from
    `token_losses` output; token p's loss is the prediction of token p made at p - 1."""
    if not 1 <= early < late <= losses.shape[1]:
        raise InterpError(f"ICL positions must satisfy 1 <= early < late <= "
                          f"{losses.shape[1]}, got {early} and {late}")
    d = losses[:, late - 1] - losses[:, early - 1]
    return float(d.mean()), float(d.std() / math.sqrt(len(d))) if len(d) > 1 else float("nan")


def composition_table(bridge, n_random: int = 200, seed: int = 0) -> pd.DataFrame:
    """Q/K/V composition of every (earlier head -> later head) pair, with the random
    baseline: columns mode, layer_from, head_from, layer_to, head_to, score,
    random_mean, random_sd, z ((score - random_mean) / random_sd)."""
    _check_decoder(bridge)
    L, H = int(bridge.cfg.n_layers), int(bridge.cfg.n_heads)
    d_model, d_head = int(bridge.cfg.d_model), int(bridge.cfg.d_head)
    rows = []
    for mode in ("Q", "K", "V"):
        scores = bridge.all_composition_scores(mode).scores.detach().float()
        mean, sd = random_composition_baseline(d_model, d_head, mode, n_random, seed)
        for l1 in range(L):
            for l2 in range(l1 + 1, L):
                for h1 in range(H):
                    for h2 in range(H):
                        v = float(scores[l1, h1, l2, h2])
                        rows.append({"mode": mode, "layer_from": l1, "head_from": h1,
                                     "layer_to": l2, "head_to": h2, "score": v,
                                     "random_mean": mean, "random_sd": sd,
                                     "z": (v - mean) / sd})
    return pd.DataFrame(rows, columns=["mode", "layer_from", "head_from", "layer_to", "head_to",
                                       "score", "random_mean", "random_sd", "z"])


def ablation_hooks(bridge, heads: Sequence[tuple[int, int]], how: str = "zero",
                   mean_over: torch.Tensor | None = None) -> list:
    """Forward hooks that remove heads' outputs: "zero" sets hook_z of each (layer, head)
    to 0; "mean" sets it to its mean over `mean_over` token ids (all batches and positions)."""
    if how not in ("zero", "mean"):
        raise InterpError(f"head ablation must be 'zero' or 'mean', got {how!r}")
    L, H = int(bridge.cfg.n_layers), int(bridge.cfg.n_heads)
    for layer, h in heads:
        if not (0 <= layer < L and 0 <= h < H):
            raise InterpError(f"no head L{layer}H{h}: the model has {L} layers x {H} heads")
    means = {}
    if how == "mean":
        if mean_over is None:
            raise InterpError("mean ablation needs token ids to average over (mean_over=...)")
        names = {f"blocks.{layer}.attn.hook_z" for layer, _ in heads}
        with torch.no_grad():
            _, cache = bridge.run_with_cache(mean_over, names_filter=lambda n: n in names)
        means = {n: cache[n].float().mean((0, 1)) for n in names}          # [head, d_head]
    hooks = []
    for layer, h in heads:
        name = f"blocks.{layer}.attn.hook_z"

        def fn(z, hook, h=h, name=name):
            z = z.clone()
            z[:, :, h] = 0 if how == "zero" else means[name][h].to(z.dtype)
            return z
        hooks.append((name, fn))
    return hooks


def mechanism_check(bridge, heads: pd.DataFrame, n: int = 32, seed: int = 0,
                    composition: pd.DataFrame | None = None) -> dict:
    """The two-head induction mechanism, tested by intervention (models with >= 2 layers).

    Takes the layer-0 head with the highest previous-token score and the later head with the
    highest induction score (from `head_scores`), zero-ablates the previous-token head and
    re-measures the induction head on the same prompts (also with the head's output replaced
    by its mean over those prompts: mean ablation); as a control, the same for the
    layer-0 head with the lowest previous-token score. Returns the scores, the per-prompt
    drop with a 95% bootstrap interval, and the pair's K-composition against random heads."""
    from circuits.stats import bootstrap_ci

    L = int(bridge.cfg.n_layers)
    if L < 2:
        raise InterpError("the previous-token -> induction mechanism needs at least 2 layers")
    l0 = heads[heads.layer == 0]
    prev = l0.loc[l0.previous_token.idxmax()]
    ctrl = l0.loc[l0.previous_token.idxmin()]
    later = heads[heads.layer >= 1]
    ind = later.loc[later.induction.idxmax()]
    il, ih, ph, ch = int(ind.layer), int(ind["head"]), int(prev["head"]), int(ctrl["head"])
    ids, half, _, _ = score_prompts(bridge, n, seed=seed)

    def ind_scores(hooks):
        return per_prompt_induction(model_patterns(bridge, ids, hooks), half)[il, :, ih]

    base = ind_scores(())
    after = ind_scores(ablation_hooks(bridge, [(0, ph)]))
    after_ctrl = ind_scores(ablation_hooks(bridge, [(0, ch)]))
    after_mean = ind_scores(ablation_hooks(bridge, [(0, ph)], "mean", mean_over=ids))
    drop, drop_ctrl = (base - after).numpy(), (base - after_ctrl).numpy()
    out = {"previous_token_head": [0, ph], "previous_token_score": float(prev.previous_token),
           "induction_head": [il, ih], "induction_score": float(base.mean()),
           "induction_after_ablation": float(after.mean()),
           "induction_after_mean_ablation": float(after_mean.mean()),
           "drop": float(drop.mean()), "drop_ci": list(bootstrap_ci(drop, seed=seed)),
           "control_head": [0, ch], "control_previous_token_score": float(ctrl.previous_token),
           "induction_after_control_ablation": float(after_ctrl.mean()),
           "control_drop": float(drop_ctrl.mean()),
           "control_drop_ci": list(bootstrap_ci(drop_ctrl, seed=seed)), "prompts": n}
    comp = composition if composition is not None else composition_table(bridge, seed=seed)
    k = comp[(comp["mode"] == "K") & (comp.layer_from == 0) & (comp.head_from == ph) &
             (comp.layer_to == il) & (comp.head_to == ih)]
    if len(k):
        r = k.iloc[0]
        out.update(k_composition=float(r.score), k_composition_z=float(r.z),
                   k_random_mean=float(r.random_mean), k_random_sd=float(r.random_sd))
    return out


@torch.no_grad()
def unmixing_check(bridge, heads: pd.DataFrame, n: int = 32, seed: int = 0) -> dict:
    """The smeared-key / conv mechanism, tested by intervention: remove the mixing (smeared
    keys: sigmoid(alpha) = 1 for the best induction head, i.e. its plain key; conv: the
    identity kernel, i.e. each position's own embedding) and re-measure that head's
    induction score on the same prompts. The weights are restored afterwards."""
    from circuits.stats import bootstrap_ci

    spec = getattr(bridge, "native_spec", None)
    if spec is None or spec.mixing == "none":
        raise InterpError("the un-mixing check needs a native model with smeared keys or conv")
    best = heads.loc[heads.induction.idxmax()]
    layer, head = int(best.layer), int(best["head"])
    ids, half, _, _ = score_prompts(bridge, n, seed=seed)

    def scores():
        return per_prompt_induction(model_patterns(bridge, ids), half)[layer, :, head]

    before = scores()
    if spec.mixing == "smeared":
        p = bridge.native_params[f"layers.{layer}.attn.k.alpha"]
        saved = p.detach().clone()
        p[head] = 50.0                                   # sigmoid = 1: the plain key
        what = f"sigmoid(alpha) of L{layer}H{head} set to 1 (its own key only)"
    else:
        p = bridge.native_params["tok_embed.kernel"]
        saved = p.detach().clone()
        p.zero_()
        p[:, -1] = 1.0
        what = "conv kernel set to the identity (each position's own embedding only)"
    try:
        after = scores()
    finally:
        p.copy_(saved)
    drop = (before - after).numpy()
    return {"head": [layer, head], "intervention": what,
            "induction_score": float(before.mean()), "induction_unmixed": float(after.mean()),
            "drop": float(drop.mean()), "drop_ci": list(bootstrap_ci(drop, seed=seed)),
            "prompts": n}


__all__ = ["induction_score", "prefix_matching_score", "repeated_tokens",
           "scores_from_patterns", "random_composition_baseline", "model_patterns",
           "score_prompts", "copying_from_weights", "copying_scores", "head_scores",
           "token_losses", "icl_positions", "icl_score", "composition_table",
           "ablation_hooks", "per_prompt_induction", "mechanism_check", "eigen_positivity",
           "unmixing_check"]
