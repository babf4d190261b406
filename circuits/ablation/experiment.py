"""The whole experiment: ablate the target positions, as many random control positions, and
compare what the answer loses (`ablate_tokens` -> `AblationResult`)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from circuits.stats import bootstrap_ci, rank_p_value
from interp.errors import InterpError
from interp.hooks import n_layers as kind_layers
from interp.tasks.base import Example, Task

from .decoding import check_decodable, decode_condition
from .interventions import check_mode, clean_residuals, replacement_values, run_condition
from .positions import control_masks, parse_layers, prepare, target_masks, token_ids

#: metrics whose damage is "ablated minus clean" (and every `loss:<field>`); the others are
#: "clean minus ablated"
HIGHER_IS_WORSE = {"answer_loss"}


@dataclass
class AblationResult:
    """What `ablate_tokens` found.

    Attributes
    ----------
    summary : DataFrame
        One row per metric (`answer_loss`, `exact_match`, `token_accuracy`,
        `field:<name>`): clean, ablated, target_damage and, with controls,
        control_damage_mean/sd/min/max, difference, ci_low, ci_high, p_value.
    sweep : DataFrame
        One row per (starting layer, metric): the same columns for ablating from that layer on.
    decoded : dict or None
        Free-running metrics of the clean and the target run, and their outputs (None
        without decoding).
    per_example : DataFrame
        `[N]` rows: losses and exact matches, clean, target and mean of the controls.
    control_damage : DataFrame
        One row per (control, metric): its mean damage.
    meta : dict
        What was run (tokens, mode, scope, layers, n, controls, seed, ...).
    """

    summary: pd.DataFrame
    sweep: pd.DataFrame
    decoded: dict | None
    per_example: pd.DataFrame
    control_damage: pd.DataFrame | None = None
    meta: dict = field(default_factory=dict)

    def frame(self) -> pd.DataFrame:
        """The summary table: one row per metric, target against controls.

        Returns
        -------
        DataFrame
            `summary` (see the class docstring for its columns).
        """
        return self.summary

    def figure(self):
        """The damage of the target (red diamond) against each control set (grey dots).

        Returns
        -------
        plotly.graph_objects.Figure
            `interp.viz.figures.ablation_figure` of `summary` and `control_damage`.
        """
        from interp.viz.figures import ablation_figure

        cd = self.control_damage
        return ablation_figure(self.summary, cd if cd is not None else pd.DataFrame(
            columns=["control", "metric", "damage"]))


def _damage(metric: str, ablated: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
    worse_up = metric in HIGHER_IS_WORSE or metric.startswith("loss:")  # a field's loss
    return ablated - clean if worse_up else clean - ablated


def compare(clean: dict, target: dict, controls: list[dict], seed: int = 0) -> pd.DataFrame:
    """One row per metric: clean and ablated means, control distribution, and the difference
    target damage minus mean control damage with a 95% bootstrap interval and p-value.

    Parameters
    ----------
    clean, target : metric -> `[N]` per-example values (`Run.metrics`)
    controls : one such dict per control set
    """
    with warnings.catch_warnings():  # a field no example of a control has: NaN, no warning
        warnings.filterwarnings("ignore", message="Mean of empty slice",
                                category=RuntimeWarning)
        return pd.DataFrame(_compare_rows(clean, target, controls, seed))


def _compare_rows(clean, target, controls, seed) -> list[dict]:
    rows = []
    for metric, c in clean.items():
        dt = _damage(metric, target[metric], c).numpy()
        dcs = np.stack([_damage(metric, ctl[metric], c).numpy() for ctl in controls]) \
            if controls else np.full((0, len(dt)), np.nan)
        ctl_means = np.array([np.nanmean(x) if np.any(~np.isnan(x)) else np.nan for x in dcs])
        row = {"metric": metric, "clean": float(np.nanmean(c.numpy())),
               "ablated": float(np.nanmean(target[metric].numpy())),
               "target_damage": float(np.nanmean(dt))}
        if controls:
            diff = dt - np.nanmean(dcs, axis=0)
            lo, hi = bootstrap_ci(diff, seed=seed)
            row.update(control_damage_mean=float(np.nanmean(ctl_means)),
                       control_damage_sd=float(np.nanstd(ctl_means, ddof=1))
                       if len(ctl_means) > 1 else 0.0,
                       control_damage_min=float(np.nanmin(ctl_means)),
                       control_damage_max=float(np.nanmax(ctl_means)),
                       difference=float(np.nanmean(diff)), ci_low=lo, ci_high=hi,
                       p_value=rank_p_value(row["target_damage"], ctl_means))
        rows.append(row)
    return rows


def ablate_tokens(bridge, task: Task, examples: Sequence[Example], tokens: Sequence[str],
                  mode: str = "knockout", layers: str | Sequence[int] | None = None,
                  scope: str = "input", n_controls: int = 20, seed: int = 0,
                  sweep: bool = True, decode: bool = True, batch_size: int = 128,
                  progress=None) -> AblationResult:
    """Ablate the positions holding `tokens` and measure what the answer loses, against
    `n_controls` random position sets of the same size. See `circuits.ablation`.

    Parameters
    ----------
    bridge : TransformerBridge of a decoder-only or T5 task model (any device and dtype)
    task, examples : the task and its examples (`task.generate(...)`)
    tokens : tokens as typed, e.g. ["x", "^", "="]
    mode : one of `MODES`; layers : '0-3', '1,3', '2-', a list, or None for all
    scope : 'input' (the equation's tokens) or 'all' (also in the solution)
    sweep : also ablate from each chosen layer on; decode : free-running greedy decoding
    progress : an optional callable(str) told what runs next (the CLI prints it)

    Returns
    -------
    AblationResult
        `.frame()` the summary table, `.figure()` target against controls.
    """
    say = progress or (lambda _msg: None)
    _check_request(mode, n_controls, decode, scope)
    ids = token_ids(bridge, tokens)
    prep = prepare(bridge, task, examples)
    n_layers = kind_layers(bridge, "encoder" if prep.arch == "t5" else "self")
    chosen = parse_layers(layers, n_layers)
    targets = target_masks(prep, ids, scope)
    n_targets = sum(int(m.sum()) for m in targets.values())
    if n_targets == 0:
        raise InterpError(f"none of the tokens {', '.join(tokens)} occurs in the "
                          f"{'input' if scope == 'input' else 'input or solution'} of these "
                          "examples; nothing to ablate")
    controls = control_masks(prep, targets, n_controls, seed, scope)
    say("clean run")
    clean = run_condition(bridge, prep, batch_size=batch_size)
    values, means = None, {}
    if mode in ("mean", "resample"):
        say("clean residual stream")
        resid = clean_residuals(bridge, prep, list(range(n_layers)), batch_size)
        values, means = replacement_values(prep, resid, mode, seed)
        del resid

    def ablated(layer_set, masks):
        vals = None if values is None else {s: v[layer_set] for s, v in values.items()}
        return run_condition(bridge, prep, mode, layer_set, masks, vals, batch_size)

    names = prep.field_names
    say(f"target ({n_targets} positions), layers {chosen}")
    target = ablated(chosen, targets)
    ctl_runs = []
    for j, cm in enumerate(controls):
        say(f"control {j + 1}/{len(controls)}")
        ctl_runs.append(ablated(chosen, cm))
    cm_clean = clean.metrics(names)
    summary = compare(cm_clean, target.metrics(names), [r.metrics(names) for r in ctl_runs],
                      seed)
    control_damage = pd.DataFrame(
        [{"control": j, "metric": k, "damage": float(np.nanmean(_damage(k, v, cm_clean[k])))}
         for j, r in enumerate(ctl_runs) for k, v in r.metrics(names).items()
         if bool((~torch.isnan(v)).any())],
        columns=["control", "metric", "damage"])
    sweep_rows = []
    for l in chosen if sweep else []:                 # ablate from layer l on
        from_l = [x for x in chosen if x >= l]
        say(f"sweep: from layer {l} on")
        part = compare({k: cm_clean[k] for k in ("answer_loss", "exact_match")},
                       ablated(from_l, targets).metrics(names),
                       [ablated(from_l, cm).metrics(names) for cm in controls], seed)
        sweep_rows += [{"from_layer": l, "layers": ",".join(map(str, from_l)), **r.to_dict()}
                       for _, r in part.iterrows()]
    decoded = None
    if decode:
        from interp.metrics import score_outputs

        say("free-running decoding (clean, target)")
        outs_clean = decode_condition(bridge, prep, clean, mode, [], None, None, {}, ids, scope,
                                      batch_size)
        outs_target = decode_condition(
            bridge, prep, target, mode, chosen, targets,
            None if values is None else {s: v[chosen] for s, v in values.items()},
            means_at(means, chosen), ids, scope, batch_size)
        decoded = {"clean": score_outputs(task, prep.examples, outs_clean),
                   "target": score_outputs(task, prep.examples, outs_target),
                   "outputs": {"clean": outs_clean, "target": outs_target}}
    meta = {"tokens": list(tokens), "mode": mode, "scope": scope, "layers": chosen,
            "n": prep.n, "controls": n_controls, "seed": seed, "family": prep.arch,
            "target_positions": n_targets,
            "target_positions_per_example": n_targets / prep.n}
    return AblationResult(summary, pd.DataFrame(sweep_rows), decoded,
                          _per_example(prep, targets, clean, target, ctl_runs), control_damage,
                          meta)


def _check_request(mode: str, n_controls: int, decode: bool, scope: str) -> None:
    check_mode(mode)
    if n_controls < 0:
        raise InterpError(f"the number of controls must be 0 or more, got {n_controls}")
    if decode:
        check_decodable(mode, scope)


def _per_example(prep, targets, clean, target, ctl_runs) -> pd.DataFrame:
    per = pd.DataFrame({"src": [e.src for e in prep.examples],
                        "cls": [e.cls for e in prep.examples],
                        "targets": sum(m.sum(1) for m in targets.values()).numpy(),
                        "loss_clean": clean.loss.numpy(), "loss_target": target.loss.numpy(),
                        "exact_clean": clean.exact.numpy(), "exact_target": target.exact.numpy()})
    if ctl_runs:
        per["loss_controls_mean"] = torch.stack([r.loss for r in ctl_runs]).mean(0).numpy()
        per["exact_controls_mean"] = torch.stack([r.exact.float() for r in ctl_runs]
                                                 ).mean(0).numpy()
    return per


def means_at(means: dict, layer_set: Sequence[int]) -> dict:
    """side -> {key: `[len(layer_set), d]`}: the per-key means at the chosen layers."""
    return {s: {k: v[list(layer_set)] for k, v in d.items()} for s, d in means.items()}
