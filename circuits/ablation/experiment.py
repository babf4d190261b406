"""The whole experiment: ablate the target positions, as many random control positions and as
many role-matched (structural, non-digit) control positions, and compare what the answer
loses (`ablate_tokens` -> `AblationResult`).

Two tests per metric. Random positions: the control-rank p-value over `n_controls` drawn sets.
Role-matched positions: the pool of other structural positions is small (for `x ^ =` on a
quadratic equation: `2`, the signs of b and c, the trailing `0`, a's sign when negative, so 1
to 5 distinct sets of 4), so their drawn sets repeat and a rank among them is no test; their
p-value is a paired sign-flip permutation test of target minus role-matched damage over
equations (`sign_flip_p`). Both verdicts go through `circuits.stats.verdict`."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from circuits.stats import bootstrap_ci, distinct, rank_p_value, untestable_note, verdict
from interp.errors import InterpError
from interp.hooks import n_layers as kind_layers
from interp.tasks.base import Example, Task

from .decoding import check_decodable, decode_condition
from .interventions import check_mode, clean_residuals, replacement_values, run_condition
from .positions import (DONORS, control_masks, layout_groups, parse_layers, prepare, role_masks,
                        role_pool, role_sets, target_masks, token_ids)

#: metrics whose damage is "ablated minus clean" (and every `loss:<field>`); the others are
#: "clean minus ablated"
HIGHER_IS_WORSE = {"answer_loss"}
#: random sign patterns of the role-matched test (exact enumeration when fewer exist)
N_FLIPS = 9999


@dataclass
class AblationResult:
    """What `ablate_tokens` found.

    Attributes
    ----------
    summary : DataFrame
        One row per metric (`answer_loss`, `exact_match`, `token_accuracy`,
        `field:<name>`): clean, ablated, target_damage and, with controls,
        control_damage_mean/sd/min/max, difference, ci_low, ci_high, p_value, verdict
        (random positions, control-rank p) and the same with the prefix `role_`
        (role_damage_mean/sd/min/max, role_difference, role_ci_low, role_ci_high,
        role_p_value, role_tests, role_verdict: role-matched positions, sign-flip p over
        `role_tests` sign patterns). Intervals resample equations.
    sweep : DataFrame
        One row per (starting layer, metric): the same columns for ablating from that layer on.
    decoded : dict or None
        Free-running metrics of the clean and the target run, and their outputs (None
        without decoding).
    per_example : DataFrame
        `[N]` rows: losses and exact matches, clean, target and mean of the controls.
    control_damage : DataFrame
        One row per (random control, metric): its mean damage.
    role_damage : DataFrame
        The same for the role-matched controls (empty when none could be drawn).
    meta : dict
        What was run (tokens, mode, scope, layers, n, controls, seed, ...).
    """

    summary: pd.DataFrame
    sweep: pd.DataFrame
    decoded: dict | None
    per_example: pd.DataFrame
    control_damage: pd.DataFrame | None = None
    meta: dict = field(default_factory=dict)
    role_damage: pd.DataFrame | None = None

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


def compare(clean: dict, target: dict, controls: list[dict], seed: int = 0, groups=None,
            role: list[dict] | None = None, n_flips: int = N_FLIPS) -> pd.DataFrame:
    """One row per metric: clean and ablated means, control distribution, and the difference
    target damage minus mean control damage with a 95% bootstrap interval and p-value.

    Parameters
    ----------
    clean, target : metric -> `[N]` per-example values (`Run.metrics`)
    controls : one such dict per random control set (control-rank p-value, `verdict`)
    groups : `[N]` each example's equation: the intervals resample equations (None: rows)
    role : one such dict per role-matched control set: the `role_` columns, whose p-value is
        `sign_flip_p` over equations with `n_flips` random sign patterns
    """
    with warnings.catch_warnings():  # a field no example of a control has: NaN, no warning
        for message in ("Mean of empty slice", "All-NaN slice encountered",
                        "Degrees of freedom <= 0 for slice"):
            warnings.filterwarnings("ignore", message=message, category=RuntimeWarning)
        rows = _compare_rows(clean, target, controls, seed, groups)
        if role:
            for row, extra in zip(rows, _role_rows(clean, target, role, seed, groups,
                                                   n_flips)):
                row.update(extra)
        return pd.DataFrame(rows)


def _control_stats(metric, c, controls):
    """`[controls, N]` damage per control and example, and `[controls]` each one's mean."""
    dcs = np.stack([_damage(metric, ctl[metric], c).numpy() for ctl in controls]) \
        if controls else np.full((0, len(c)), np.nan)
    ctl_means = np.array([np.nanmean(x) if np.any(~np.isnan(x)) else np.nan for x in dcs])
    return dcs, ctl_means


def _compare_rows(clean, target, controls, seed, groups=None) -> list[dict]:
    rows = []
    for metric, c in clean.items():
        dt = _damage(metric, target[metric], c).numpy()
        dcs, ctl_means = _control_stats(metric, c, controls)
        row = {"metric": metric, "clean": float(np.nanmean(c.numpy())),
               "ablated": float(np.nanmean(target[metric].numpy())),
               "target_damage": float(np.nanmean(dt))}
        if controls:
            diff = dt - np.nanmean(dcs, axis=0)
            lo, hi = bootstrap_ci(diff, seed=seed, groups=groups)
            row.update(control_damage_mean=float(np.nanmean(ctl_means)),
                       control_damage_sd=float(np.nanstd(ctl_means, ddof=1))
                       if len(ctl_means) > 1 else 0.0,
                       control_damage_min=float(np.nanmin(ctl_means)),
                       control_damage_max=float(np.nanmax(ctl_means)),
                       difference=float(np.nanmean(diff)), ci_low=lo, ci_high=hi,
                       p_value=rank_p_value(row["target_damage"], ctl_means))
            row["verdict"] = verdict(lo, row["p_value"], len(controls))
        rows.append(row)
    return rows


def _role_rows(clean, target, role, seed, groups, n_flips) -> list[dict]:
    rows = []
    for metric, c in clean.items():
        dt = _damage(metric, target[metric], c).numpy()
        dcs, means = _control_stats(metric, c, role)
        diff = dt - np.nanmean(dcs, 0)           # per example: target minus its role controls
        lo, hi = bootstrap_ci(diff, groups=groups, seed=seed)
        p, tests = sign_flip_p(diff, groups, n_flips, seed)
        rows.append({"role_damage_mean": float(np.nanmean(means)),
                     "role_damage_sd": float(np.nanstd(means, ddof=1)) if len(means) > 1
                     else 0.0,
                     "role_damage_min": float(np.nanmin(means)),
                     "role_damage_max": float(np.nanmax(means)),
                     "role_difference": float(np.nanmean(diff)), "role_ci_low": lo,
                     "role_ci_high": hi, "role_p_value": p, "role_tests": tests,
                     "role_verdict": verdict(lo, p, tests)})
    return rows


def sign_flip_p(diff, groups=None, n_flips: int = N_FLIPS, seed: int = 0) -> tuple[float, int]:
    """One-sided paired permutation p-value that the mean of `diff` (target minus control
    damage per example) is above 0: under the null the target and the control are
    exchangeable within each equation, so each equation's mean difference is as likely
    negated. Rows of one equation (`groups`) move together; NaNs are dropped.

    Returns (p, tests): with m equations and 2^m - 1 <= n_flips every sign pattern is
    enumerated (p = share of patterns whose mean is at least the observed one, floor
    1/2^m, tests = 2^m - 1); else `n_flips` random patterns, p = (1 + #at least) /
    (1 + n_flips) and tests = n_flips. `circuits.stats.verdict(ci_low, p, tests)` then
    judges whether the floor 1/(tests + 1) can reach the level."""
    x = np.asarray(diff, dtype=float)
    keep = ~np.isnan(x)
    if groups is None:
        d = x[keep]
    else:
        g = pd.Series(np.asarray(groups, dtype=object)[keep]).astype(str)
        d = pd.Series(x[keep]).groupby(g.to_numpy(), sort=False).mean().to_numpy()
    m = len(d)
    if m == 0:
        return float("nan"), 0
    obs = d.mean()
    tol = 1e-9 * max(1.0, float(np.abs(d).max()))
    if 2 ** m - 1 <= n_flips:
        signs = 1 - 2 * ((np.arange(2 ** m)[:, None] >> np.arange(m)[None, :]) & 1)
        stats = signs @ d / m
        return float(np.mean(stats >= obs - tol)), 2 ** m - 1
    rng = np.random.default_rng([seed, 7])
    hits = 0
    for start in range(0, n_flips, 1000):
        signs = rng.choice(np.array([-1.0, 1.0]), size=(min(1000, n_flips - start), m))
        hits += int(np.sum(signs @ d / m >= obs - tol))
    return float((1 + hits) / (1 + n_flips)), n_flips


def ablate_tokens(bridge, task: Task, examples: Sequence[Example], tokens: Sequence[str],
                  mode: str = "knockout", layers: str | Sequence[int] | None = None,
                  scope: str = "input", n_controls: int = 20, seed: int = 0,
                  sweep: bool = True, decode: bool = True, batch_size: int = 128,
                  progress=None, donors: str = "layout", role_controls: bool = True
                  ) -> AblationResult:
    """Ablate the positions holding `tokens` and measure what the answer loses, against
    `n_controls` random position sets and `n_controls` role-matched position sets of the
    same size. See `circuits.ablation`.

    Parameters
    ----------
    bridge : TransformerBridge of a decoder-only or T5 task model (any device and dtype)
    task, examples : the task and its examples (`task.generate(..., unique=True)`: a
        repeated equation is no independent observation; intervals resample equations)
    tokens : tokens as typed, e.g. ["x", "^", "="]
    mode : one of `MODES`; layers : '0-3', '1,3', '2-', a list, or None for all
    scope : 'input' (the equation's tokens) or 'all' (also in the solution)
    donors : `resample` only: "layout" (default) donors of the same layout, "any" the old
        rule (any other equation, matched by key). Under "layout" an example alone in its
        layout has no donor and is left out (all conditions); `meta["no_donor"]` counts them
        (with repeated equations a donor may be the same equation: use unique examples)
    role_controls : also draw role-matched controls (structural positions, never a digit or
        a target); when some example has too few, they are left out and `meta["role"]` says
        why
    sweep : also ablate from each chosen layer on; decode : free-running greedy decoding
    progress : an optional callable(str) told what runs next (the CLI prints it)

    Returns
    -------
    AblationResult
        `.frame()` the summary table, `.figure()` target against controls.
    """
    say = progress or (lambda _msg: None)
    _check_request(mode, n_controls, decode, scope)
    if donors not in DONORS:
        raise InterpError(f"unknown donor rule {donors!r}; choose one of {', '.join(DONORS)}")
    ids = token_ids(bridge, tokens)
    prep = prepare(bridge, task, examples)
    asked = prep.n
    no_donor: list[str] = []
    if mode == "resample" and donors == "layout":
        alone = {g[0] for g in layout_groups(prep) if len(g) == 1}
        if alone:
            no_donor = [prep.examples[i].src for i in sorted(alone)]
            if prep.n - len(alone) < 2:
                raise InterpError(
                    f"resample with same-layout donors: {len(alone)} of {prep.n} equations "
                    "are alone in their layout, leaving fewer than two; ask for more "
                    "examples (--n) or use --donors any")
            prep = prepare(bridge, task, [e for i, e in enumerate(prep.examples)
                                          if i not in alone])
    n_layers = kind_layers(bridge, "encoder" if prep.arch == "t5" else "self")
    chosen = parse_layers(layers, n_layers)
    targets = target_masks(prep, ids, scope)
    n_targets = sum(int(m.sum()) for m in targets.values())
    if n_targets == 0:
        raise InterpError(f"none of the tokens {', '.join(tokens)} occurs in the "
                          f"{'input' if scope == 'input' else 'input or solution'} of these "
                          "examples; nothing to ablate")
    controls = control_masks(prep, targets, n_controls, seed, scope)
    roles, role_meta = _role_controls(prep, targets, n_controls if role_controls else 0,
                                      seed, scope)
    groups = [e.src for e in prep.examples]
    say("clean run")
    clean = run_condition(bridge, prep, batch_size=batch_size)
    values, means = None, {}
    if mode in ("mean", "resample"):
        say("clean residual stream")
        resid = clean_residuals(bridge, prep, list(range(n_layers)), batch_size)
        values, means = replacement_values(prep, resid, mode, seed, donors)
        del resid

    def ablated(layer_set, masks):
        vals = None if values is None else {s: v[layer_set] for s, v in values.items()}
        return run_condition(bridge, prep, mode, layer_set, masks, vals, batch_size)

    def runs(layer_set, sets, what):
        for j, cm in enumerate(sets):
            say(f"{what} {j + 1}/{len(sets)}")
            yield ablated(layer_set, cm)

    names = prep.field_names
    say(f"target ({n_targets} positions), layers {chosen}")
    target = ablated(chosen, targets)
    ctl_runs = list(runs(chosen, controls, "control"))
    role_runs = list(runs(chosen, roles, "role-matched control"))
    cm_clean = clean.metrics(names)
    summary = compare(cm_clean, target.metrics(names), [r.metrics(names) for r in ctl_runs],
                      seed, groups, [r.metrics(names) for r in role_runs])
    sweep_rows = []
    for l in chosen if sweep else []:                 # ablate from layer l on
        from_l = [x for x in chosen if x >= l]
        say(f"sweep: from layer {l} on")
        part = compare({k: cm_clean[k] for k in ("answer_loss", "exact_match")},
                       ablated(from_l, targets).metrics(names),
                       [ablated(from_l, cm).metrics(names) for cm in controls], seed, groups,
                       [ablated(from_l, cm).metrics(names) for cm in roles])
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
            "target_positions_per_example": n_targets / prep.n,
            "distinct": distinct(groups), "n_asked": asked,
            "donors": donors if mode == "resample" else None,
            "no_donor": len(no_donor), "no_donor_examples": no_donor, "role": role_meta,
            "untestable_note": untestable_note(n_controls), "role_untestable_note":
            f"untestable at {distinct(groups)} equations (sign-flip floor above 0.05)"}
    return AblationResult(summary, pd.DataFrame(sweep_rows), decoded,
                          _per_example(prep, targets, clean, target, ctl_runs, role_runs),
                          _damage_frame(ctl_runs, cm_clean, names), meta,
                          _damage_frame(role_runs, cm_clean, names))


def _damage_frame(runs, cm_clean, names) -> pd.DataFrame:
    """One row per (control, metric): that control's mean damage."""
    return pd.DataFrame(
        [{"control": j, "metric": k, "damage": float(np.nanmean(_damage(k, v, cm_clean[k])))}
         for j, r in enumerate(runs) for k, v in r.metrics(names).items()
         if bool((~torch.isnan(v)).any())],
        columns=["control", "metric", "damage"])


def _role_controls(prep, targets, n, seed, scope) -> tuple[list, dict]:
    """The role-matched control sets and what to say about them (size, pool, distinct sets;
    or why there are none)."""
    if n == 0:
        return [], {"drawn": 0, "why": "not asked for"}
    try:
        sets = role_masks(prep, targets, n, seed, scope)
    except InterpError as e:
        return [], {"drawn": 0, "why": str(e)}
    pool = sum(m.sum(1) for m in role_pool(prep, targets, scope).values()).float()
    k = sum(m.sum(1) for m in targets.values()).float()
    per = role_sets(prep, targets, scope)
    return sets, {"drawn": n, "positions_per_example": float(k.mean()),
                  "pool_per_example": float(pool.mean()),
                  "distinct_sets_min": float(per.min()), "distinct_sets_max": float(per.max()),
                  "single_set_examples": int((per == 1).sum())}


def _check_request(mode: str, n_controls: int, decode: bool, scope: str) -> None:
    check_mode(mode)
    if n_controls < 0:
        raise InterpError(f"the number of controls must be 0 or more, got {n_controls}")
    if decode:
        check_decodable(mode, scope)


def _per_example(prep, targets, clean, target, ctl_runs, role_runs=()) -> pd.DataFrame:
    per = pd.DataFrame({"src": [e.src for e in prep.examples],
                        "cls": [e.cls for e in prep.examples],
                        "targets": sum(m.sum(1) for m in targets.values()).numpy(),
                        "loss_clean": clean.loss.numpy(), "loss_target": target.loss.numpy(),
                        "exact_clean": clean.exact.numpy(), "exact_target": target.exact.numpy()})
    if ctl_runs:
        per["loss_controls_mean"] = torch.stack([r.loss for r in ctl_runs]).mean(0).numpy()
        per["exact_controls_mean"] = torch.stack([r.exact.float() for r in ctl_runs]
                                                 ).mean(0).numpy()
    if role_runs:
        per["loss_role_mean"] = torch.stack([r.loss for r in role_runs]).mean(0).numpy()
        per["exact_role_mean"] = torch.stack([r.exact.float() for r in role_runs]
                                             ).mean(0).numpy()
    return per


def means_at(means: dict, layer_set: Sequence[int]) -> dict:
    """side -> {key: `[len(layer_set), d]`}: the per-key means at the chosen layers."""
    return {s: {k: v[list(layer_set)] for k, v in d.items()} for s, d in means.items()}
