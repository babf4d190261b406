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

The stages, one module each: `pairs` (the inputs and the metric), `sites` (what is patched,
the setters that write one cell, the forward passes), `fast` (the exact GPT-2 tail that runs
only what a patch can change) and `experiments` (`patch`, `attribute`, `PatchResult`).
"""

from circuits.patching.experiments import DIRECTIONS, PatchResult, attribute, patch
from circuits.patching.pairs import (DEFAULT_FIELDS, METRICS, Pairs, corrupt_equation,
                                     corrupt_pairs, metric_values)
from circuits.patching.sites import DECODER_SITES, T5_SITES, Site, site

__all__ = ["Pairs", "PatchResult", "Site", "METRICS", "DIRECTIONS", "DEFAULT_FIELDS",
           "DECODER_SITES", "T5_SITES", "corrupt_equation", "corrupt_pairs", "metric_values",
           "site", "patch", "attribute"]
