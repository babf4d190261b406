"""Linear probes on cached activations, with control tasks: what is linearly readable where.

    import interp, probes
    bridge, task = interp.load_model("quadratic-small")
    examples = task.generate(600, seed=0, unique=True)   # distinct equations
    acts = probes.collect(bridge, task, examples, sites=("resid_pre",), positions="input")
    res = probes.fit(acts, "D_sign")        # or any labels [n_examples] a user brings
    res.frame()                             # site, stack, layer, position, score, control ...
    res.figure("selectivity")
    res.direction("resid_pre", 2, "in:=#0")  # [rank, d_model], what the causal check removes
    res = probes.probe(bridge, task, examples, "class")     # collect + fit in one call
    probes.remove_direction(bridge, task, test_examples, "resid_pre", 2, ["in:=#0"],
                            res.direction("resid_pre", 2, "in:=#0"))  # does the model use it?

Modules: `positions` (aligned keys, stacks, control types: token + role), `activations`
(collect, store, load; the layer-0 token+position features), `estimators` (batched ridge and
logistic regression), `controls` (control labels, split by equation), `fitting` (the grid of
probes and its result: `fit`, `ProbeResult`, with the positional baseline, equation
intervals and distinct test equations), `scores` (within-class and class-mean R^2, the R^2
cluster bootstrap, targets that coincide), `erasure` (LEACE, iterated INLP, the fresh-probe
power check), `causal` (the erasure check against random erasures; a probe's direction
removed; steering vectors).
"""

from __future__ import annotations

from collections.abc import Sequence

from probes.activations import SITES, Activations, collect, load
from probes.causal import (CausalResult, ErasureResult, erasure_check, remove_direction,
                           steering_vector)
from probes.fitting import ProbeResult, fit, resolve_labels
from probes.positions import STACKS


def probe(bridge, task, examples: Sequence, target, sites: Sequence[str] = ("resid_pre",),
          positions="input", layers: Sequence[int] | None = None, batch_size: int = 64,
          folder=None, progress: bool = False, **fit_options) -> ProbeResult:
    """`collect` then `fit` in one call: `target` is a target name of the task
    (`task.probe_target_info()`) or labels [n_examples]; `fit_options` go to `fit`."""
    acts = collect(bridge, task, examples, sites=sites, layers=layers, positions=positions,
                   batch_size=batch_size, folder=folder, progress=progress)
    return fit(acts, target, **fit_options)


def targets(task) -> dict[str, tuple[str, str]]:
    """name -> (kind, description) of a task's probe targets."""
    out = {}
    for name, text in task.probe_target_info().items():
        kind, _, desc = text.partition(":")
        out[name] = (kind.strip(), desc.strip())
    return out


__all__ = [
    "SITES",
    "STACKS",
    "Activations",
    "CausalResult",
    "ErasureResult",
    "ProbeResult",
    "collect",
    "erasure_check",
    "fit",
    "load",
    "probe",
    "remove_direction",
    "resolve_labels",
    "steering_vector",
    "targets",
]
