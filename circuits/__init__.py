"""Interventions: token ablation, activation and attribution patching, induction heads.

The notebook API (every name is loaded on first use)::

    import circuits
    res = circuits.ablate_tokens(bridge, task, examples, ["x", "^", "="], n_controls=20)
    res.frame(); res.figure()                                   # summary table, plotly figure
    rr = circuits.ablate_route(bridge, task, examples, ["L2H0:D_value->b,c"])  # RouteResult
    circuits.verify_heads(bridge, task, examples, interp.head_taxonomy(...).frame())
    pairs = circuits.corrupt_pairs(bridge, task, n=32)
    sweep = circuits.activation_patch(bridge, pairs, "resid_pre")   # PatchResult
    grads = circuits.attribute(bridge, pairs, "head_pos")           # attribution patching
    ind = circuits.induction_heads(bridge)                      # InductionResult (decoders)
    res = circuits.discover(bridge, task, pairs, method="eap-ig")  # DiscoveryResult (a circuit)

`activation_patch` is `circuits.patching.patch` (the name `circuits.patch` is the command).
"""

from interp.api import lazy_names

# public name -> (module, attribute)
_API = {
    "ablate_tokens": ("circuits.ablation", "ablate_tokens"),
    "AblationResult": ("circuits.ablation", "AblationResult"),
    "ablate_route": ("circuits.ablation", "ablate_route"),
    "verify_heads": ("circuits.ablation", "verify_heads"),
    "HeadKnockout": ("circuits.ablation", "HeadKnockout"),
    "RouteResult": ("circuits.ablation", "RouteResult"),
    "parse_route": ("circuits.ablation", "parse_route"),
    "corrupt_pairs": ("circuits.patching", "corrupt_pairs"),
    "activation_patch": ("circuits.patching", "patch"),
    "attribute": ("circuits.patching", "attribute"),
    "PatchResult": ("circuits.patching", "PatchResult"),
    "discover": ("circuits.discovery", "discover"),
    "DiscoveryResult": ("circuits.discovery", "DiscoveryResult"),
    "induction_heads": ("circuits.induction", "analyse"),
    "InductionResult": ("circuits.induction", "InductionResult"),
    "induction_head_scores": ("circuits.induction", "head_scores"),
    "bootstrap_ci": ("interp.stats", "bootstrap_ci"),
    "rank_p_value": ("circuits.stats", "rank_p_value"),
}


__getattr__, __dir__ = lazy_names(globals(), _API)

__all__ = list(_API)
