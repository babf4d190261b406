"""Induction mechanisms tested by intervention (REFERENCE §3).

    heads = head_scores(bridge)
    mechanism_check(bridge, heads)       # ablate the previous-token head, re-measure
    unmixing_check(bridge, heads)        # smeared keys / conv: remove the mixing, re-measure

`ablation_hooks` gives the (hook name, fn) pairs that remove heads' outputs; any analysis
that takes `fwd_hooks` (`model_patterns`, `head_scores`) runs under them.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import torch

from circuits.induction.weights import composition_table
from circuits.stats import bootstrap_ci
from interp.attention.induction import model_patterns, per_prompt_induction, score_prompts
from interp.errors import InterpError
from interp.hooks import capture, hook_name


def ablation_hooks(bridge, heads: Sequence[tuple[int, int]], how: str = "zero",
                   mean_over: torch.Tensor | None = None) -> list:
    """Forward hooks that remove heads' outputs: "zero" sets hook_z of each (layer, head)
    to 0; "mean" sets it to its mean over `mean_over` token ids ([batch, pos]; all batches and
    positions)."""
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
        names = {hook_name(bridge, "self", layer, "hook_z") for layer, _ in heads}
        cache = capture(bridge, mean_over, names=names)           # [batch, pos, head, d_head]
        means = {n: cache[n].float().mean((0, 1)) for n in names}  # [head, d_head]
    hooks = []
    for layer, h in heads:
        name = hook_name(bridge, "self", layer, "hook_z")

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

    def ind_scores(hooks):                                          # [batch]
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
    spec = getattr(bridge, "native_spec", None)
    if spec is None or spec.mixing == "none":
        raise InterpError("the un-mixing check needs a native model with smeared keys or conv")
    best = heads.loc[heads.induction.idxmax()]
    layer, head = int(best.layer), int(best["head"])
    ids, half, _, _ = score_prompts(bridge, n, seed=seed)

    def scores():                                                   # [batch]
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


__all__ = ["ablation_hooks", "mechanism_check", "unmixing_check"]
