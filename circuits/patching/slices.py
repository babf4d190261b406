"""Patching beyond one slice: every layout group of pairs drawn from unique problems
(`pair_groups`), and position-set patches of the residual stream entering each layer
(`slice_patch`): each target position alone, all of them jointly in one run, and control
sets of as many other input positions patched jointly, per layout group and pooled.

    groups = pair_groups(bridge, task, answer="sqrt", classes=("two", "one", "none"))
    res = slice_patch(bridge, groups, targets=("x", "^", "=", "0", "<sep>"), n_controls=20)
    res.frame()          # one row per (scope, layer, cell): restored share, interval, verdict

The restored share of pair i is (patched_i - corrupted_i) / gap (denoise; noise:
(clean_i - patched_i) / gap), gap being the mean clean-corrupted metric difference of the
scope (a layout group, or all pairs pooled), so its mean over the pairs is the share of
the scope's gap. Intervals: `circuits.stats.bootstrap_ci` resampling whole equations (the
clean problem), with the gap held fixed. The joint patch's test: its share minus the mean
share of the controls of the same pairs (interval), the control-rank p-value of its share
among the controls' (`rank_p_value`) and `circuits.stats.verdict`. A single position's
controls are the other input positions one at a time (all of them, so its p-value is exact
and usually untestable: fewer than 19 positions).
"""

from __future__ import annotations

import itertools
import random
import re
from dataclasses import dataclass, field

import torch

from circuits.patching.experiments import _inputs
from circuits.patching.pairs import (
    DEFAULT_FIELDS,
    Pairs,
    _check_task,
    _group_pairs,
    _make_pairs,
    _no_pair,
    metric_values,
)
from circuits.patching.sites import forward_keep, site
from interp.errors import InterpError, TaskError
from interp.hooks import hook_name, run
from interp.tasks.base import Example, Task
from interp.tasks.tokenizer import EOS, SEP

#: the positions of the seed's hypothesis (`x ^ =`, the trailing 0 and the end of the input)
TARGETS = ("x", "^", "=", "0", "<sep>")


@dataclass
class PairGroups:
    """Pairs of every layout group (`pair_groups`).

    Attributes
    ----------
    groups : list of Pairs
        One per layout with at least `min_pairs` pairs, largest first.
    drawn : dict of str to int
        Class -> distinct problems drawn (unique, so each is one independent problem).
    dropped : int
        Pairs in layout groups smaller than `min_pairs` (not patched).
    """

    groups: list[Pairs]
    drawn: dict[str, int]
    dropped: int = 0

    @property
    def n(self) -> int:
        return sum(g.n for g in self.groups)

    def distinct(self) -> int:
        """Distinct clean equations over all groups."""
        return len({c.src for g in self.groups for c, _ in g.examples})

    def classes(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for g in self.groups:
            for c, _ in g.examples:
                out[c.cls] = out.get(c.cls, 0) + 1
        return out


_DRAWN: dict[tuple, list[Example]] = {}


def unique_draw(task: Task, n: int, seed: int, cls: str, heldout: bool | None
                ) -> list[Example]:
    """Up to `n` distinct problems of class `cls` (`task.generate(unique=True)`); all the
    generator has when it has fewer (finding that out takes the generator's 20,000 fruitless
    draws, so the answer is kept for the same task, n, seed, class and partition)."""
    key = (task.name, repr(task.describe()), repr(getattr(task, "ranges", None)), n, seed,
           cls, heldout)
    if key not in _DRAWN:
        _DRAWN[key] = _unique_draw(task, n, seed, cls, heldout)
    return list(_DRAWN[key])


def _unique_draw(task: Task, n: int, seed: int, cls: str, heldout: bool | None
                 ) -> list[Example]:
    try:
        return task.generate(n, seed=seed, mix={cls: 1.0}, heldout=heldout, unique=True)
    except TaskError as e:
        m = re.search(r"gave only (\d+) distinct", str(e))
        if not m:
            raise
        k = int(m.group(1))
        return task.generate(k, seed=seed, mix={cls: 1.0}, heldout=heldout, unique=True) \
            if k else []


def pair_groups(bridge, task: Task, field: str | None = None, answer: str | None = None,
                token: str = "first", seed: int = 0, heldout: bool | None = True,
                classes=None, per_class: int = 200, min_pairs: int = 2,
                max_pairs: int | None = None) -> PairGroups:
    """Clean/corrupted pairs of every layout group (see `corrupt_pairs` for a pair, `answer`
    and `token`), from up to `per_class` unique problems of each class of `classes` (the
    task's classes by default; held-out by default). Groups with fewer than `min_pairs`
    pairs are dropped (counted in `dropped`); `max_pairs` caps each group."""
    arch = _check_task(bridge, task, 1)
    field = field or DEFAULT_FIELDS[task.name][0]
    answer = answer or DEFAULT_FIELDS[task.name][1]
    classes = tuple(classes or task.classes)
    bad = [c for c in classes if c not in task.classes]
    if bad:
        raise InterpError(f"unknown class {bad[0]!r}; the {task.name} task's classes are "
                          f"{', '.join(task.classes)}")
    if per_class < 1 or min_pairs < 1:
        raise InterpError("per_class and min_pairs must be at least 1")
    pool, drawn = [], {}
    for i, c in enumerate(classes):
        got = unique_draw(task, per_class, seed * 1_000_003 + i, c, heldout)
        drawn[c] = len(got)
        pool += got
    by_layout = _group_pairs(task, pool, field, answer, token, random.Random(seed))
    if not by_layout:
        raise _no_pair(field, answer, token)
    ranked = sorted(by_layout.values(), key=len, reverse=True)
    keep = [g[:max_pairs] for g in ranked if len(g) >= min_pairs]
    if not keep:
        raise InterpError(f"no layout group has {min_pairs} pairs (the largest has "
                          f"{len(ranked[0])}); ask for fewer or draw more problems")
    dropped = sum(len(g) for g in ranked if len(g) < min_pairs)
    return PairGroups([_make_pairs(arch, task, g, answer, token) for g in keep], drawn,
                      dropped)


def input_labels(pairs: Pairs) -> tuple[str, list[int], list[str]]:
    """(side, positions, labels) of the input positions of `pairs` (decoder: after <bos>, up
    to <sep>; T5: the encoder input with its <eos>); a label is the role with its
    occurrence when the role repeats (`x#0`, `x#1`)."""
    side = "seq" if pairs.arch == "decoder" else "src"
    roles = pairs.roles[side]
    if pairs.arch == "decoder":
        pos = list(range(1, roles.index(SEP) + 1))
    else:
        pos = list(range(len(roles)))
    seen: dict[str, int] = {}
    count = {r: sum(roles[p] == r for p in pos) for r in roles}
    labels = []
    for p in pos:
        r = roles[p]
        labels.append(f"{r}#{seen.get(r, 0)}" if count[r] > 1 else r)
        seen[r] = seen.get(r, 0) + 1
    return side, pos, labels


def _target_positions(pairs: Pairs, targets) -> tuple[list[int], list[str]]:
    side, pos, labels = input_labels(pairs)
    roles = pairs.roles[side]
    want = {EOS if (t == SEP and pairs.arch == "t5") else t for t in targets}
    hit = [(p, lab) for p, lab in zip(pos, labels) if roles[p] in want]
    if not hit:
        raise InterpError(f"none of the target roles {', '.join(targets)} is an input "
                          f"position here; input roles are {', '.join(dict.fromkeys(labels))}")
    return [p for p, _ in hit], [lab for _, lab in hit]


@torch.no_grad()
def patch_sets(bridge, pairs: Pairs, sets: list[list[int]], direction: str = "denoise",
               metric: str = "logit_diff", max_rows: int = 256):
    """The metric after patching the residual stream entering each layer at every position
    of one set together (decoder `resid_pre`, T5 `enc.resid_pre` and, as one layer more,
    the encoder's last `resid_post`: its output before the final norm, which the decoder's
    cross attention reads), one run per (layer, set).

    Returns (patched [layer, set, batch], receiving [batch], source [batch]) metrics, float32
    on the CPU. Positions index the input side (`seq` or `src`)."""
    s = site(bridge, "resid_pre" if pairs.arch == "decoder" else "enc.resid_pre")
    names = s.names(bridge)
    if pairs.arch == "t5":
        names.append(hook_name(bridge, "encoder", len(names) - 1, "hook_resid_post"))
    recv, src = _inputs(pairs, direction)
    src_logits, src_acts = forward_keep(bridge, src, names)
    recv_logits, recv_acts = forward_keep(bridge, recv, names)
    B = pairs.n
    out = torch.empty(len(names), len(sets), B)
    chunk = max(1, max_rows // B)
    for l, name in enumerate(names):
        for k in range(0, len(sets), chunk):
            part = sets[k:k + chunk]

            def hook(act, hook, part=part, l=l):
                act = act.clone()
                view = act.view(len(part), B, *act.shape[1:])
                for j, ps in enumerate(part):
                    view[j, :, ps] = src_acts[names[l]][:, ps].to(act.dtype)
                return act
            if pairs.arch == "decoder":
                logits = run(bridge, recv_acts[name].repeat(len(part), 1, 1),
                             hooks=[(name, hook)], start_at_layer=l)
            else:
                rep = {side: ids.repeat(len(part), 1) for side, ids in recv.items()}
                logits = run(bridge, rep["src"], decoder_input=rep["tgt"],
                             hooks=[(name, hook)])
            out[l, k:k + len(part)] = metric_values(logits, pairs, metric,
                                                    len(part)).view(len(part), B)
    return out, metric_values(recv_logits, pairs, metric), metric_values(src_logits, pairs,
                                                                          metric)


def control_sets(pool: list[int], size: int, n: int, rng: random.Random
                 ) -> tuple[list[list[int]], int]:
    """`n` control sets of `size` positions of `pool`, and how many of them are distinct:
    `n` distinct sets when `pool` has that many; otherwise every set once, then sets drawn
    uniformly again until there are `n` (so that each layout group adds a control to each
    of the `n` pooled controls; a group's own p-value uses its distinct sets only)."""
    if size > len(pool):
        raise InterpError(f"a control needs {size} other input positions but only "
                          f"{len(pool)} exist; patch fewer targets")
    if len(pool) <= 24:
        combos = [list(c) for c in itertools.combinations(sorted(pool), size)]
        if len(combos) >= n:
            return rng.sample(combos, n), n
        return combos + [rng.choice(combos) for _ in range(n - len(combos))], len(combos)
    seen: set[tuple] = set()
    while len(seen) < n:
        seen.add(tuple(sorted(rng.sample(pool, size))))
    return [list(c) for c in sorted(seen)], n


@dataclass
class GroupRun:
    """One layout group's patched metrics: cells [layer, set, batch] for the sets `labels`
    (targets one by one, then "joint", then the single non-target positions, then the
    joint controls, the first `distinct_controls` of them distinct; `sets`: their
    positions), and its unpatched clean and corrupted metrics [batch]."""

    pairs: Pairs
    labels: list[str]
    n_targets: int
    n_singles: int
    n_controls: int
    cells: torch.Tensor
    clean: torch.Tensor
    corrupt: torch.Tensor
    eqs: list[str] = field(default_factory=list)
    distinct_controls: int = 0
    sets: list[list[int]] = field(default_factory=list)


def slice_patch(bridge, groups: PairGroups | list[Pairs], targets=TARGETS,
                n_controls: int = 20, direction: str = "denoise",
                metric: str = "logit_diff", seed: int = 0, progress=None):
    """Patch every target position alone, all of them jointly and `n_controls` control sets
    of as many other input positions jointly, in every layout group; a `SliceResult`."""
    from circuits.patching.slice_result import SliceResult

    gs = groups.groups if isinstance(groups, PairGroups) else list(groups)
    if not gs:
        raise InterpError("no pairs to patch")
    rng = random.Random(seed)
    runs = []
    found = [_target_positions(pairs, targets) for pairs in gs]     # refuse before running
    for gi, (pairs, (tpos, tlab)) in enumerate(zip(gs, found)):
        if progress:
            progress(f"layout group {gi + 1}/{len(gs)}: {pairs.n} pairs")
        _, pos, labels = input_labels(pairs)
        first = 1 if pairs.arch == "decoder" else 0
        others = [p for p in pos if p not in tpos]
        ctrls, n_distinct = control_sets(others, len(tpos), n_controls, rng)
        sets = [[p] for p in tpos] + [tpos] + [[p] for p in others] + ctrls
        names = tlab + ["joint"] + [labels[p - first] for p in others] + \
            [f"control {k}" for k in range(len(ctrls))]
        cells, recv_m, src_m = patch_sets(bridge, pairs, sets, direction, metric)
        clean, corrupt = (src_m, recv_m) if direction == "denoise" else (recv_m, src_m)
        runs.append(GroupRun(pairs, names, len(tpos), len(others), len(ctrls), cells, clean,
                             corrupt, [c.src for c, _ in pairs.examples], n_distinct,
                             sets))
    drawn = groups.drawn if isinstance(groups, PairGroups) else {}
    return SliceResult(runs, tuple(targets), direction, metric, drawn,
                       groups.dropped if isinstance(groups, PairGroups) else 0)
