"""Activation patching and attribution patching on decoder-only and T5 models.

    bridge, task = interp.load_model("quadratic-small")
    pairs = corrupt_pairs(bridge, task, n=64, field="c", answer="D_value")
    res = patch(bridge, pairs, "head_pos")              # exact: [layer, head, pos]
    att = attribute(bridge, pairs, "head_pos")          # first-order estimate of the same
    res.frame(), res.figure()                           # a DataFrame, a plotly heatmap

A pair is a clean input and a corrupted one that differs in one digit of one coefficient
(symmetric token replacement: same length, same format, and the corrupted equation is one the
task's checker accepts). Every pair is cut just before the answer token, the first token of
the chosen solution field that differs between the two solutions, and all pairs share one
layout (the same role at every position), so positions line up across pairs.

Metrics (REFERENCE §5): `logit_diff` = logit of the clean answer token minus logit of the
corrupted one at the answer position; `logprob` = log-probability of the clean answer token.
`denoise` runs the corrupted input and patches in clean activations (is this component
sufficient to restore the answer?); `noise` runs the clean input and patches in corrupted
ones (is it necessary?).

Sites (`what`), named after the TransformerLens hooks they patch:

    decoder-only   resid_pre, attn_out, mlp_out   [layer, pos]
                   head (hook_z, every position)  [layer, head]
                   head_pos (hook_z)              [layer, head, pos]
                   pattern (hook_pattern)         [layer, head]
    T5             the same with a stack: enc.resid_pre, enc.attn_out, enc.mlp_out, enc.head,
                   enc.head_pos, enc.pattern, dec.resid_pre, dec.attn_out,
                   dec.cross_attn_out, dec.mlp_out, dec.head, dec.head_pos, dec.pattern,
                   cross.head, cross.head_pos, cross.pattern (positions are encoder positions
                   for enc.*, decoder positions otherwise)

Beyond one slice (`slices`): `pair_groups` gives the pairs of every layout group from
unique problems of every class, `slice_patch` patches the residual stream at each target
position (`x ^ = 0 <sep>` by default) alone, at all of them jointly and at equal-size control
sets, per group and pooled (`SliceResult`); the answer read may be a later token (`answer=
"sqrt"`, `"x1"`, `token="digit"` or `"differ"`).

The stages, one module each: `pairs` (the inputs and the metric), `sites` (what is patched,
the setters that write one cell, the forward passes), `fast` (the exact GPT-2 tail that runs
only what a patch can change) and `experiments` (`patch`, `attribute`, `PatchResult`);
`atp` (AtP*: `attribute(..., method="atp+qkv" | "atp*")`, the attention softmax recomputed
for what a cell moves, and GradDrop) and `compare` (`agreement`: attribution against exact).
"""

from circuits.patching.experiments import DIRECTIONS, PatchResult, attribute, patch
from circuits.patching.pairs import (ANSWER_ALIASES, DEFAULT_FIELDS, METRICS, TOKENS, Pairs,
                                     answer_index, corrupt_equation, corrupt_pairs,
                                     metric_values)
from circuits.patching.slice_result import SliceResult
from circuits.patching.slices import TARGETS, PairGroups, pair_groups, patch_sets, slice_patch
from circuits.patching.sites import DECODER_SITES, T5_SITES, Site, site

__all__ = ["Pairs", "PatchResult", "Site", "METRICS", "DIRECTIONS", "DEFAULT_FIELDS",
           "DECODER_SITES", "T5_SITES", "corrupt_equation", "corrupt_pairs", "metric_values",
           "site", "patch", "attribute", "ANSWER_ALIASES", "TOKENS", "answer_index",
           "TARGETS", "PairGroups", "SliceResult", "pair_groups", "patch_sets", "slice_patch"]
