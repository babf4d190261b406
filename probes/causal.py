"""The causal checks of probes: erase what a probe reads, check that it is gone, then test
whether the answer needs it (`erasure_check`, the erasers in `probes.erasure`); and the single
probe direction removed or added (`remove_direction`, steering). Over 400 lines because both
checks share one set of hooks, the position lookup and the teacher-forced runs.

    res = erasure_check(bridge, task, acts, "D_value", "resid_pre", 2, ["in:=#0"])
    res.power       # a fresh probe after erasure, here and one step on (read it first)
    res.frame()     # the effect against random erasures; res.meta["verdict"], ["conclusion"]

`remove_direction` (amnesic probing / INLP, one step) removes a probe's own direction:

    res = remove_direction(bridge, task, examples, "resid_pre", 1, "in:=#0",
                           probe.direction("resid_pre", 1, "in:=#0"))
    res.frame()     # one row per metric: clean, removed, damage, controls, difference [CI], p
    res.figure()    # the damage of the probe direction against each random direction

Removal (amnesic probing / INLP, Elazar et al. 2021): at hook (site, layer, stack) and at the
token index of each aligned position key (`in:<role>#<k>`, `out:<token>#<k>`, as
`circuits.ablation.positions.prepare` and `probes.collect` align them), the activation loses
its component in the row space of `directions: [rank, d_model]`:
`x <- x - ((x - c) V^T) V` with V an orthonormal basis of that row space and c a centre
(0 by default: plain projection, as in INLP; give the dataset mean to move the component to
its mean instead of to 0). Nothing else changes: other positions, other layers, other examples
that lack the key.

Steering (`mode="steer"`): `x <- x + alpha * v` with v the unit vector of a rank-1 direction.
`steering_vector` gives the difference-in-means vector from one label's activations to
another's at a cell (e.g. from D < 0 to D > 0 at `in:=#0`) and alpha = that difference's norm,
so that an example of the first class is moved, on average, exactly onto the second class's
mean along v. Controls add random unit vectors with the same alpha.

Measure: teacher-forced against the clean run of the same examples, per example: answer loss,
exact match, token accuracy and per solution field the share of examples with every token right
(`field:<name>`) and the mean loss over its tokens (`loss:<name>`) (the ablation's measures,
`circuits.ablation.Run`). Control: `n_controls` random orthonormal
bases of the same rank (per position key), seeded. Statistics: damage of the probe direction
minus the mean damage of the controls, per example, with a bootstrap interval
(`circuits.stats.bootstrap_ci`) and the control-rank p-value (`rank_p_value`), through
`circuits.ablation.compare`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from circuits.ablation import HIGHER_IS_WORSE, Run, compare
from circuits.stats import bootstrap_ci, distinct, rank_p_value, untestable_note, verdict
from circuits.ablation.interventions import Scores, batches, forward
from circuits.ablation.positions import Prepared, prepare
from interp.errors import InterpError
from interp.hooks import hook_name, n_layers
from probes.positions import STACKS, side_keys

MODES = ("remove", "steer")
#: probe site -> the block hook that carries it
SITE_HOOKS = {"resid_pre": "hook_resid_pre", "resid_post": "hook_resid_post",
              "attn_out": "hook_attn_out", "mlp_out": "hook_mlp_out"}


@dataclass
class CausalResult:
    """What `remove_direction` found.

    Attributes
    ----------
    summary : DataFrame
        One row per metric (`answer_loss`, `exact_match`, `token_accuracy`, `field:<name>`):
        clean, ablated (with the direction removed / added), target_damage and, with controls,
        control_damage_mean/sd/min/max, difference, ci_low, ci_high, p_value
        (`circuits.ablation.compare`).
    control_damage : DataFrame
        One row per (control, metric): its mean damage.
    per_example : DataFrame
        `[N]` rows: loss and exact match, clean, with the direction, and the controls' mean.
    meta : dict
        site, stack, layer, positions, rank per position, mode, alpha, n, controls, seed.
    """

    summary: pd.DataFrame
    control_damage: pd.DataFrame
    per_example: pd.DataFrame
    meta: dict = field(default_factory=dict)

    def frame(self) -> pd.DataFrame:
        """The summary with the cell it was measured at: columns site, stack, layer,
        positions, rank, mode, centered, then `summary`'s."""
        m = self.meta
        head = {"site": m["site"], "stack": m["stack"], "layer": m["layer"],
                "positions": " ".join(m["positions"]), "rank": max(m["rank"].values()),
                "mode": m["mode"], "centered": m["centered"]}
        return pd.concat([pd.DataFrame([head] * len(self.summary)),
                          self.summary.reset_index(drop=True)], axis=1)

    def figure(self):
        """The damage of the probe direction (red diamond) against each random direction
        (grey dots): `interp.viz.figures.ablation_figure`."""
        from interp.viz.figures import ablation_figure, esc

        def keep(df):          # the figure shows answer loss and accuracies (not field losses)
            return df[~df.metric.str.startswith("loss:")]

        fig = ablation_figure(keep(self.summary), keep(self.control_damage))
        m = self.meta
        what = "removing" if m["mode"] == "remove" else "adding"
        fig.update_layout(title=esc(f"{what} the probe direction at {m['site']} L{m['layer']} "
                                    f"{' '.join(m['positions'])} vs random directions"))
        return fig


def orthonormal(directions: torch.Tensor, tol: float = 1e-6) -> torch.Tensor:
    """An orthonormal basis `[rank, d]` of the row space of `directions: [k, d]` (rows whose
    part outside the earlier rows is below `tol` of the largest row norm are dropped; zero
    rows or k = 0 give rank 0)."""
    D = torch.as_tensor(directions, dtype=torch.float64)
    if D.ndim == 1:
        D = D[None]
    if D.ndim != 2:
        raise InterpError(f"directions must be [rank, d_model], got shape {tuple(D.shape)}")
    scale = float(D.norm(dim=1).max()) if len(D) else 0.0
    basis: list[torch.Tensor] = []
    for row in D:
        for b in basis:                               # Gram-Schmidt, twice for stability
            row = row - (row @ b) * b
        for b in basis:
            row = row - (row @ b) * b
        n = float(row.norm())
        if scale > 0 and n > tol * scale:
            basis.append(row / n)
    return torch.stack(basis).float() if basis else torch.zeros(0, D.shape[1])


def project_out(x: torch.Tensor, V: torch.Tensor, center: torch.Tensor | None = None
                ) -> torch.Tensor:
    """`x - ((x - center) V^T) V` for `x: [..., d]`, orthonormal `V: [rank, d]`, computed in
    float32 and returned in x's dtype."""
    xf = x.float()
    c = xf if center is None else xf - center.to(xf)
    V = V.to(xf)
    return (xf - (c @ V.T) @ V).to(x.dtype)


def random_basis(rank: int, d: int, rng: np.random.Generator) -> torch.Tensor:
    """A uniformly random orthonormal basis `[rank, d]` (QR of a Gaussian matrix)."""
    if rank == 0:
        return torch.zeros(0, d)
    q, r = np.linalg.qr(rng.standard_normal((d, rank)))
    return torch.from_numpy((q * np.sign(np.diag(r))).T.copy()).float()


def locate(bridge, prep: Prepared, site: str, layer: int, keys: Sequence[str],
           stack: str | None = None) -> tuple[str, str, dict[str, torch.Tensor]]:
    """(stack, hook name, key -> `[N]` token index, -1 absent) of aligned position `keys` at
    `site` and `layer`: the keys and stacks of `probes.positions` (`side_keys`, `STACKS`), so
    the place is the one `probes.collect` read."""
    if site not in SITE_HOOKS:
        raise InterpError(f"unknown site {site!r}; choose one of {', '.join(SITE_HOOKS)}")
    stacks = STACKS[prep.arch]
    if stack is not None and stack not in stacks:
        raise InterpError(f"unknown stack {stack!r}; this model has {', '.join(stacks)}")
    lengths = [len(ex.src) for ex in prep.examples]
    at: dict[str, dict[str, torch.Tensor]] = {}
    for st, (_, side) in stacks.items():
        rows = side_keys(prep.arch, side, prep.sides[side], lengths)
        at[st] = {k: torch.tensor([row.index(k) if k in row else -1 for row in rows])
                  for k in keys}
    found = {st: [k for k in keys if bool((idx[k] >= 0).any())] for st, idx in at.items()}
    missing = [k for k in keys if not any(k in f for f in found.values())]
    if missing:
        raise InterpError(f"no example has the position {', '.join(missing)}; positions are "
                          "keys like in:<role>#<k>, out:<token>#<k> or <sep>#0 (e.g. in:=#0)")
    if stack is None:
        whole = [st for st, f in found.items() if len(f) == len(keys)]
        if not whole:
            raise InterpError(f"the positions {', '.join(keys)} lie in different stacks; "
                              "intervene in one stack at a time")
        stack = whole[0]
    elif len(found[stack]) < len(keys):
        raise InterpError(f"the {stack} stack has no position "
                          f"{', '.join(k for k in keys if k not in found[stack])}; "
                          f"its positions are those of its side ({stacks[stack][1]})")
    name = hook_name(bridge, stacks[stack][0], layer, SITE_HOOKS[site])
    return stack, name, at[stack]


def _hook(index: torch.Tensor, at: dict[str, torch.Tensor], bases: dict[str, torch.Tensor],
          mode: str, alpha: float, centers: dict[str, torch.Tensor | None]):
    """A TransformerLens hook on `x: [batch, pos, d]` editing, for each key, the batch rows
    `index` at their token index `at[key]` (skipping -1)."""
    def hook(x, hook):
        x = x.clone()
        for key, V in bases.items():
            if len(V) == 0:
                continue
            pos = at[key][index].to(x.device)
            rows = torch.nonzero((pos >= 0) & (pos < x.shape[1])).flatten()
            if len(rows) == 0:
                continue
            cols = pos[rows]
            if mode == "remove":
                x[rows, cols] = project_out(x[rows, cols], V, centers.get(key))
            else:
                x[rows, cols] = (x[rows, cols].float() + alpha * V[0].to(x.device)).to(x.dtype)
        return x
    return hook


def teacher_forced(bridge, prep: Prepared, hooks_for=None, batch_size: int = 128) -> Run:
    """Per-example teacher-forced metrics (`circuits.ablation.Run`, scored by the ablation's
    `Scores`) with the hooks `hooks_for(index) -> [(hook name, fn)]` attached to each batch
    of examples `index: [batch]` (None: the clean run)."""
    acc = Scores(prep)
    for index, _, ids, valid, _, _ in batches(prep, batch_size):
        hooks = (hooks_for(index) if hooks_for else [], [])
        acc.add(index, forward(bridge, prep.arch, ids, valid, hooks))
    return acc.run()


def remove_direction(bridge, task, examples, site: str, layer: int,
                     position: str | Sequence[str],
                     directions: torch.Tensor | dict[str, torch.Tensor],
                     stack: str | None = None, n_controls: int = 20, seed: int = 0,
                     batch_size: int = 128, mode: str = "remove", alpha: float | None = None,
                     center: torch.Tensor | dict[str, torch.Tensor] | None = None,
                     prep: Prepared | None = None, clean: Run | None = None,
                     progress=None) -> CausalResult:
    """Remove (or add) a probe direction at one cell during the forward pass and measure what
    the answer loses, against `n_controls` random directions of the same rank there.

    Parameters
    ----------
    bridge : TransformerBridge of a decoder-only or T5 task model (any device and dtype)
    task, examples : the task and its examples (`task.generate(...)`)
    site : one of `SITE_HOOKS` ("resid_pre", "resid_post", "attn_out", "mlp_out")
    layer : the block index (of `stack` for T5)
    position : an aligned position key or several (`"in:=#0"`, `["in:x#0", "in:^#0"]`)
    directions : `[rank, d_model]` applied at every key, or key -> `[rank_k, d_model]`
        (e.g. `ProbeResult.direction(...)`); orthonormalised here; rank 0 changes nothing
    stack : `probes.STACKS`: "decoder" for a decoder-only model; for T5 "encoder" (in: keys)
        or "decoder" (out: keys); None: the stack holding the keys
    mode : "remove" (project out) or "steer" (add `alpha` times the unit rank-1 direction)
    center : `[d_model]` (or key -> `[d_model]`): remove the component relative to it
    prep, clean : the prepared examples and their clean run, when already at hand (a grid of
        cells shares them)

    Returns
    -------
    CausalResult
        `.frame()` one row per metric, `.figure()` the probe direction against controls.
    """
    if mode not in MODES:
        raise InterpError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")
    if n_controls < 0:
        raise InterpError(f"the number of controls must be 0 or more, got {n_controls}")
    say = progress or (lambda _m: None)
    keys = [position] if isinstance(position, str) else list(position)
    if not keys:
        raise InterpError("no position to intervene at; name at least one key, e.g. 'in:=#0'")
    prep = prep or prepare(bridge, task, examples)
    stack, name, at = locate(bridge, prep, site, layer, keys, stack)
    per_key = directions if isinstance(directions, dict) else dict.fromkeys(keys, directions)
    bases = {k: orthonormal(per_key[k]) for k in keys}
    d = int(bridge.cfg.d_model)
    bad = [k for k, V in bases.items() if V.shape[1] != d]
    if bad:
        raise InterpError(f"directions at {bad[0]} have {bases[bad[0]].shape[1]} columns; "
                          f"this model's d_model is {d}")
    if mode == "steer" and (any(len(V) != 1 for V in bases.values()) or alpha is None):
        raise InterpError("steering adds one direction per position: give a rank-1 "
                          "direction and alpha (see probes.causal.steering_vector)")
    centers = center if isinstance(center, dict) else dict.fromkeys(keys, center)
    a = float(alpha or 0.0)

    def hooks(bs):
        return lambda index: [(name, _hook(index, at, bs, mode, a, centers))]

    if clean is None:
        say("clean run")
        clean = teacher_forced(bridge, prep, None, batch_size)
    say(f"{mode} the direction at {site} L{layer} {' '.join(keys)}")
    target = teacher_forced(bridge, prep, hooks(bases), batch_size)
    ctl_runs = []
    for j in range(n_controls):
        say(f"control {j + 1}/{n_controls}")
        rng = np.random.default_rng([seed, j])
        ctl = {k: random_basis(len(V), d, rng) for k, V in bases.items()}
        ctl_runs.append(teacher_forced(bridge, prep, hooks(ctl), batch_size))
    names = prep.field_names
    cm = clean.metrics(names, field_loss=True)
    summary = compare(cm, target.metrics(names, field_loss=True),
                      [r.metrics(names, field_loss=True) for r in ctl_runs], seed)
    control_damage = pd.DataFrame(
        [{"control": j, "metric": k, "damage": float(np.nanmean(_damage(k, v, cm[k])))}
         for j, r in enumerate(ctl_runs) for k, v in r.metrics(names, field_loss=True).items()
         if bool((~torch.isnan(v)).any())], columns=["control", "metric", "damage"])
    per = pd.DataFrame({"src": [e.src for e in prep.examples],
                        "present": sum((at[k] >= 0).long() for k in keys).numpy(),
                        "loss_clean": clean.loss.numpy(), "loss_target": target.loss.numpy(),
                        "exact_clean": clean.exact.numpy(),
                        "exact_target": target.exact.numpy()})
    if ctl_runs:
        per["loss_controls_mean"] = torch.stack([r.loss for r in ctl_runs]).mean(0).numpy()
    meta = {"site": site, "stack": stack, "layer": int(layer), "positions": keys,
            "rank": {k: len(V) for k, V in bases.items()}, "mode": mode,
            "centered": any(c is not None for c in centers.values()),
            "alpha": a if mode == "steer" else None, "n": prep.n, "controls": n_controls,
            "seed": seed, "arch": prep.arch}
    return CausalResult(summary, control_damage, per, meta)


def _damage(metric: str, ablated: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
    """Loss up (`answer_loss`, `loss:<field>`) or accuracy down, as `compare` counts it."""
    worse_up = metric in HIGHER_IS_WORSE or metric.startswith("loss:")
    return ablated - clean if worse_up else clean - ablated


def steering_vector(X: torch.Tensor, labels, source, target) -> tuple[torch.Tensor, float]:
    """The difference-in-means steering vector of one cell: `([1, d] unit vector, alpha)`
    from the mean activation of examples labelled `source` to that of `target`.

    Parameters
    ----------
    X : `[n, d]` activations at the cell (e.g. `acts.get(site, layer)[:, acts.position_index(key)]`
        restricted to examples present there)
    labels : `[n]` their labels; source, target : two label values (e.g. -1 and 1 for D_sign)

    Notes
    -----
    Adding `alpha * v` to a `source` example moves the mean of the source class onto the
    mean of the target class (exactly, on the examples it was computed from).
    """
    X = torch.as_tensor(X, dtype=torch.float32)
    y = np.asarray(labels)
    s, t = torch.from_numpy(y == source), torch.from_numpy(y == target)
    if not bool(s.any()) or not bool(t.any()):
        raise InterpError(f"steering needs examples labelled {source!r} and {target!r}; "
                          f"the labels hold {sorted(set(y.tolist()))}")
    diff = X[t].mean(0) - X[s].mean(0)
    norm = float(diff.norm())
    if norm == 0:
        raise InterpError("the two classes have the same mean activation here; nothing to steer")
    return (diff / norm)[None], norm


# --------------------------------------------------------------------------------------
# Erasure with a power check: `erasure_check`; the erasers are `probes.erasure`.

#: the residual stream one step after each site of layer L, as (site, layer offset): what
#: the next-layer power check reads (resid_pre L's next is resid_post L = resid_pre L + 1)
NEXT = {"resid_pre": ("resid_post", 0), "resid_post": ("resid_post", 1),
        "attn_out": ("resid_post", 0), "mlp_out": ("resid_post", 0)}


@dataclass
class ErasureResult:
    """What `erasure_check` found.

    Attributes
    ----------
    power : DataFrame
        The power check, one row per (where, position): where is "erased" (the erased layer),
        "next" (one layer on, the erasure applied in the forward pass) or "next, clean"
        (the same place without erasure); method, rank, score, baseline, excess, at_baseline,
        n_train, n_test (rows), distinct_test (equations).
    summary : DataFrame
        One row per metric: test ("erasure" when the erasure reached baseline, else
        "interchange"), clean, ablated, target_damage, control_damage_mean/sd, difference,
        ci_low, ci_high (resampled by equation), p_value.
    control_damage : DataFrame
        One row per (control, metric): its mean damage.
    meta : dict
        target, site, stack, layer, positions, method, rank, reached, verdict, conclusion,
        note, next_site, next_layer, n, distinct, controls, moved_target, moved_controls,
        dropped (examples with no same-layout donor), seed, arch.
    """

    power: pd.DataFrame
    summary: pd.DataFrame
    control_damage: pd.DataFrame
    meta: dict = field(default_factory=dict)

    def frame(self) -> pd.DataFrame:
        """The summary with the cell, method, rank, power and verdict in front."""
        m = self.meta
        head = {"target": m["target"], "site": m["site"], "stack": m["stack"],
                "layer": m["layer"], "positions": " ".join(m["positions"]),
                "method": m["method"], "rank": max(m["rank"].values(), default=0),
                "reached": m["reached"], "verdict": m["verdict"]}
        return pd.concat([pd.DataFrame([head] * len(self.summary)),
                          self.summary.reset_index(drop=True)], axis=1)

    def figure(self):
        """The target's damage (red diamond) against each random erasure (grey dots)."""
        from interp.viz.figures import ablation_figure, esc

        def keep(df):
            return df[~df.metric.str.startswith("loss:")]

        fig = ablation_figure(keep(self.summary), keep(self.control_damage))
        m = self.meta
        what = (f"erasing {m['target']}" if m["reached"] else
                f"swapping the erased subspace of {m['target']} (interchange)")
        fig.update_layout(title=esc(f"{what} at {m['site']} L{m['layer']} "
                                    f"{' '.join(m['positions'])} vs random subspaces"))
        return fig


def _edit_hook(index: torch.Tensor, at: dict[str, torch.Tensor], edit):
    """A hook editing, for each key, the batch rows at their token index `at[key]`:
    `edit(key, global example indices [r], x [r, d]) -> x'`."""
    def hook(x, hook):
        x = x.clone()
        for key, idx in at.items():
            pos = idx[index].to(x.device)
            inside = (pos >= 0) & (pos < x.shape[1])
            rows = torch.nonzero(inside).flatten()
            if len(rows) == 0:
                continue
            cols = pos[rows]
            x[rows, cols] = edit(key, index[rows.cpu()], x[rows, cols]).to(x)
        return x
    return hook


def _capture(bridge, prep: Prepared, at_next: dict[str, torch.Tensor], next_name: str,
             hooks_for=None, batch_size: int = 64) -> dict[str, torch.Tensor]:
    """key -> `[N, d]` activations at `next_name` at each key's token index (zeros where
    absent), with `hooks_for(index)` attached (None: clean)."""
    d = None
    out: dict[str, torch.Tensor] = {}
    for index, _, ids, valid, _, _ in batches(prep, batch_size):
        got = {}

        def grab(x, hook):
            got["x"] = x.detach().float().cpu()

        hooks = (hooks_for(index) if hooks_for else []) + [(next_name, grab)]
        forward(bridge, prep.arch, ids, valid, (hooks, []))
        x = got["x"]
        d = x.shape[-1]
        for key, idx in at_next.items():
            if key not in out:
                out[key] = torch.zeros(prep.n, d)
            pos = idx[index]
            ok = (pos >= 0) & (pos < x.shape[1])
            out[key][index[ok]] = x[torch.nonzero(ok).flatten(), pos[ok]]
    return out


def _donors(prep: Prepared, y: np.ndarray, side: str, rng: np.random.Generator) -> np.ndarray:
    """Per example a donor of the same input layout (the same input keys in the same order)
    whose label differs, -1 where there is none."""
    sig = [tuple(k for k in row if k is not None and k.startswith("in:"))
           for row in prep.keys[side]]
    out = np.full(len(sig), -1)
    by: dict[tuple, list[int]] = {}
    for i, s in enumerate(sig):
        by.setdefault(s, []).append(i)
    for i, s in enumerate(sig):
        pool = [j for j in by[s] if j != i and y[j] == y[j] and y[j] != y[i]]
        if pool:
            out[i] = pool[int(rng.integers(len(pool)))]
    return out


def _compare_grouped(clean: dict, target: dict, controls: list[dict], groups, seed: int
                     ) -> list[dict]:
    """`circuits.ablation.compare`'s rows, the interval resampled by equation (`groups`)."""
    import warnings

    rows = []
    for metric, c in clean.items():
        dt = _damage(metric, target[metric], c).numpy()
        if np.all(np.isnan(dt)):
            continue
        dcs = np.stack([_damage(metric, ctl[metric], c).numpy() for ctl in controls]) \
            if controls else np.full((0, len(dt)), np.nan)
        ctl_means = np.array([np.nanmean(x) for x in dcs])
        row = {"metric": metric, "clean": float(np.nanmean(c.numpy())),
               "ablated": float(np.nanmean(target[metric].numpy())),
               "target_damage": float(np.nanmean(dt))}
        if controls:
            with warnings.catch_warnings():      # an example without the field: NaN
                warnings.simplefilter("ignore", RuntimeWarning)
                diff = dt - np.nanmean(dcs, axis=0)
            lo, hi = bootstrap_ci(diff, seed=seed, groups=groups)
            row.update(control_damage_mean=float(np.mean(ctl_means)),
                       control_damage_sd=float(np.std(ctl_means, ddof=1))
                       if len(ctl_means) > 1 else 0.0,
                       difference=float(np.nanmean(diff)), ci_low=lo, ci_high=hi,
                       p_value=rank_p_value(row["target_damage"], ctl_means))
        rows.append(row)
    return rows


def erasure_check(bridge, task, acts, target, site: str, layer: int, keys: Sequence[str],
                  stack: str | None = None, method: str = "leace", n_controls: int = 20,
                  seed: int = 0, n_test: int = 400, batch_size: int = 64,
                  margin: float | None = None, parts=None, progress=None,
                  shared: dict | None = None) -> ErasureResult:
    """Erase `target` at `keys` of (site, layer), check that it is gone, then measure its use.

    Parameters
    ----------
    acts : `probes.collect` activations holding (site, layer) and `keys`
    target : a target name of the task or labels `[acts.n]` (`probes.resolve_labels`)
    method : "leace" or "inlp" (iterated to baseline, at most `probes.erasure.MAX_INLP_RANK`)
    parts : `[acts.n]` 0/1/2 train/validation/test by equation (default: the probe grid's
        split, `probes.controls.split_groups(acts.groups, seed=seed)`)
    n_test : test-split examples run through the model for the loss effect
    margin : at-baseline margin of the power check (default `probes.erasure.MARGIN`)
    shared : a dict kept between calls on the same `acts` and parts (a grid of checks): the
        prepared examples and the clean runs are computed once

    Notes
    -----
    1. Fit one eraser per key on the training rows of its activations.
    2. Power check (first): a fresh probe on the erased activations, scored on the test
       rows, at each key; then, with the erasure in the forward pass of every example, at
       the same keys one step on (`NEXT`), beside the same probe on the clean run.
    3. Reached baseline everywhere: teacher-forced loss and accuracies of `n_test` test
       examples under the erasure, against `n_controls` random orthogonal erasures of the
       same rank at the same keys around the same means; the verdict through
       `circuits.stats.verdict`. Not reached: no verdict on the erasure; the interchange
       intervention on the erased subspace (same-layout donors whose target differs)
       against random subspaces of the same rank, and its verdict.
    """
    from circuits.stats import ALPHA
    from probes.controls import split_groups
    from probes.erasure import (MARGIN, METHODS, fresh_probe, inlp, leace,
                                random_like)
    from probes.fitting import resolve_labels

    if method not in METHODS:
        raise InterpError(f"unknown erasure method {method!r}; choose one of "
                          f"{', '.join(METHODS)}")
    if n_controls < 0:
        raise InterpError(f"the number of controls must be 0 or more, got {n_controls}")
    margin = MARGIN if margin is None else float(margin)
    say = progress or (lambda _m: None)
    keys = list(keys)
    if not keys:
        raise InterpError("no position to erase at; name at least one key, e.g. 'in:=#0'")
    y, kind, name, classes = resolve_labels(acts, target)
    K = len(classes) or None
    parts = split_groups(acts.groups, seed=seed) if parts is None else torch.as_tensor(parts)
    pnp = np.asarray(parts)
    stack = acts.stack_or_default(stack) if stack is not None or len(acts.stacks) == 1 else \
        acts.key_stack[acts.position_index(keys[0])]
    X = acts.get(site, layer, stack)
    srcs = np.array([getattr(e, "src", str(e)) for e in acts.examples], dtype=object)
    # 1. the erasers, one per key, fitted on the training rows that have the key and a label
    erasers, power, cols = {}, [], {}
    for k in keys:
        c = acts.position_index(k)
        cols[k] = c
        has = (acts.present[:, c].numpy()) & ~np.isnan(y)
        if method == "leace":
            tr = has & (pnp == 0)
            erasers[k] = leace(X[tr, c], y[tr], kind, K)
        else:
            er, _steps = inlp(X[has, c], y[has], kind, pnp[has], K, margin=margin)
            erasers[k] = er
        # 2a. power at the erased place
        p = fresh_probe(erasers[k].apply(X[has, c]), y[has], kind, pnp[has], K)
        power.append(_power_row("erased", f"{site} L{layer}", k, erasers[k], p, srcs[has],
                                pnp[has], margin))
    # 2b. power one step on, the erasure in the forward pass of every example
    next_site, off = NEXT[site]
    first = STACKS[_arch(bridge)][stack][0]
    next_layer = layer + off
    shared = {} if shared is None else shared
    if "prep_all" not in shared:
        shared["prep_all"] = prepare(bridge, task, acts.examples)
    prep_all = shared["prep_all"]
    _, name_here, at_all = locate(bridge, prep_all, site, layer, keys, stack)
    next_name = None
    if next_layer < n_layers(bridge, first):
        next_name = name_next = hook_name(bridge, first, next_layer, SITE_HOOKS[next_site])

        def erase_all(index):
            return [(name_here, _edit_hook(index, at_all,
                                           lambda k, gi, x: erasers[k].apply(x)))]

        say(f"power check one step on ({next_site} L{next_layer}): clean and erased runs of "
            f"{prep_all.n} examples")
        ck = ("clean_next", name_next, tuple(keys))
        if ck not in shared:
            shared[ck] = _capture(bridge, prep_all, at_all, name_next, None, batch_size)
        clean_next = shared[ck]
        erased_next = _capture(bridge, prep_all, at_all, name_next, erase_all, batch_size)
        for k in keys:
            has = acts.present[:, cols[k]].numpy() & ~np.isnan(y)
            for where, Z in (("next", erased_next), ("next, clean", clean_next)):
                p = fresh_probe(Z[k][has], y[has], kind, pnp[has], K)
                power.append(_power_row(where, f"{next_site} L{next_layer}", k, erasers[k], p,
                                        srcs[has], pnp[has], margin))
    power = pd.DataFrame(power)
    checked = power[power["where"].isin(["erased", "next"])]
    reached = bool(checked.at_baseline.all())
    # 3. the loss effect on test examples: the erasure, or (failed) the interchange
    test = [i for i in range(acts.n) if int(parts[i]) == 2][:n_test]
    if "prep_test" not in shared:
        shared["prep_test"] = prepare(bridge, task, [acts.examples[i] for i in test])
    prep = shared["prep_test"]
    _, _, at = locate(bridge, prep, site, layer, keys, stack)
    test_t = torch.tensor(test)
    rng = np.random.default_rng(seed)
    donors = None
    if reached:
        def edit_for(ers):
            return lambda k, gi, x: ers[k].apply(x)
        use = torch.arange(prep.n)
    else:
        donors = _donors(prep, y[test], prep.main_side, rng)
        use = torch.from_numpy(np.nonzero(donors >= 0)[0])
        if len(use) == 0:
            raise InterpError("the erasure failed and no test example has a same-layout donor "
                              "with another target value; use more examples (--n)")
        prep = prepare(bridge, task, [prep.examples[int(i)] for i in use])
        _, _, at = locate(bridge, prep, site, layer, keys, stack)
        donor_acts = {k: X[test_t[torch.from_numpy(donors[use.numpy()])], cols[k]]
                      for k in keys}

        def edit_for(ers):
            return lambda k, gi, x: ers[k].swap(x, donor_acts[k][gi])
    groups = [e.src for e in prep.examples]

    def hooks(ers):
        return lambda index: [(name_here, _edit_hook(index, at, edit_for(ers)))]

    test_label = "erasure" if reached else "interchange"
    if reached and "clean_test" in shared:
        clean = shared["clean_test"]
    else:
        say(f"{test_label}: clean run of {prep.n} test examples")
        clean = teacher_forced(bridge, prep, None, batch_size)
        if reached:
            shared["clean_test"] = clean
    say(f"{test_label} of {name} at {site} L{layer} {' '.join(keys)}")
    tgt = teacher_forced(bridge, prep, hooks(erasers), batch_size)
    ctl_runs, moved_c = [], []
    Xt = {k: X[test_t[use], cols[k]] for k in keys}
    for j in range(n_controls):
        say(f"control {j + 1}/{n_controls}")
        r = np.random.default_rng([seed, j])
        ctl = {k: random_like(er, r) for k, er in erasers.items()}
        moved_c.append(np.mean([ctl[k].moved(Xt[k]) for k in keys]))
        ctl_runs.append(teacher_forced(bridge, prep, hooks(ctl), batch_size))
    names = prep.field_names
    cm = clean.metrics(names, field_loss=True)
    rows = _compare_grouped(cm, tgt.metrics(names, field_loss=True),
                            [r.metrics(names, field_loss=True) for r in ctl_runs], groups, seed)
    summary = pd.DataFrame(rows)
    summary.insert(0, "test", test_label)
    control_damage = pd.DataFrame(
        [{"control": j, "metric": k, "damage": float(np.nanmean(_damage(k, v, cm[k])))}
         for j, r in enumerate(ctl_runs) for k, v in r.metrics(names, field_loss=True).items()
         if bool((~torch.isnan(v)).any())], columns=["control", "metric", "damage"])
    loss = summary[summary.metric == "answer_loss"].iloc[0]
    v = verdict(loss.get("ci_low", float("nan")), loss.get("p_value", float("nan")),
                n_controls, ALPHA)
    conclusion, note = _conclude(reached, v, n_controls, checked, margin)
    meta = {"target": name, "site": site, "stack": stack, "layer": int(layer),
            "positions": keys, "method": method if method == "leace" else
            ("inlp" if all(er.method == "inlp" for er in erasers.values()) else
             "inlp (failed)"),
            "rank": {k: er.rank for k, er in erasers.items()}, "reached": reached,
            "verdict": v, "conclusion": conclusion, "note": note, "margin": margin,
            "next_site": next_site if next_name is not None else None,
            "next_layer": next_layer if next_name is not None else None,
            "n": prep.n, "distinct": distinct(groups), "controls": n_controls,
            "moved_target": float(np.mean([erasers[k].moved(Xt[k]) for k in keys])),
            "moved_controls": float(np.mean(moved_c)) if moved_c else float("nan"),
            "dropped": 0 if donors is None else int((donors < 0).sum()),
            "seed": seed, "arch": prep.arch}
    return ErasureResult(power, summary, control_damage, meta)


def _arch(bridge) -> str:
    from interp.hooks import arch_of
    return arch_of(bridge)


def _power_row(where, at, key, er, p, srcs, parts, margin) -> dict:
    return {"where": where, "at": at, "position": key, "method": er.method, "rank": er.rank,
            "score": p["score"], "baseline": p["baseline"], "excess": p["excess"],
            "at_baseline": (p["excess"] <= margin) if p["excess"] == p["excess"] else False,
            "n_train": p["n_train"], "n_test": p["n_test"],
            "distinct_test": distinct(srcs[parts == 2])}


def _conclude(reached: bool, v: str, n_controls: int, checked: pd.DataFrame,
              margin: float) -> tuple[str, str]:
    """(conclusion, note): what the figures support, in words."""
    why = ""
    if not reached:
        worst = checked.loc[checked.excess.fillna(np.inf).idxmax()]
        why = (f"erasure failed: a fresh probe still reads it at {worst['at']} "
               f"{worst.position} ({worst.score:.3f} vs baseline {worst.baseline:.3f}, margin "
               f"{margin}); no verdict from erasure")
    if v == "untestable":
        return ("erasure failed" if why else "untestable",
                (why + "; " if why else "") + untestable_note(n_controls))
    if not reached:
        if v == "confirmed":
            return "subspace used (interchange)", why + ("; swapping the erased subspace for "
                                                         "a donor's costs more than random "
                                                         "subspaces")
        return "not shown (interchange)", why + ("; swapping it for a donor's costs no more "
                                                  "than random subspaces")
    if v == "confirmed":
        return "used", ("erased to baseline here and one step on; the answer loses more than "
                        "under random erasures of the same rank")
    return "not shown to be used", ("erased to baseline here and one step on; the answer "
                                    "loses no more than under random erasures of the same "
                                    "rank")
