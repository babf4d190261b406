"""Control tasks (Hewitt & Liang 2019) and the split by equation.

A control task keeps the label set and its distribution but gives every input *type* a
label at random, fixed across examples and occurrences: a probe that does as well on it as
on the real task is reading the type, not the property. The type at a position is its
`Activations.types` entry: the current token and its role (`positions.control_types`), one
definition at every position. The map type -> label is drawn once per seed and holds at
every key where the type occurs (a digit `7` of a gets one label at a's first and second
digit), for every site, stack and layer; another seed draws another map.

Where every example has one type at a key (`x`, `^`, `=`: the same token in the same role)
the control labels are constant there, a control probe is trivially right, and the control
says nothing: `fit` reports no control (NaN) at such a key rather than a selectivity that is
<= 0 by construction.
"""

from __future__ import annotations

import numpy as np
import torch

from interp.errors import InterpError


def control_labels(types: torch.Tensor, keys: list[str], labels: np.ndarray, seed: int = 0
                   ) -> np.ndarray:
    """[n, P] control labels (NaN where a key is absent or no label exists).

    types: [n, P] long type ids shared by every key (-1 absent); labels: [n] float (class
    indices or values, NaN = missing); `keys` names the positions (kept for the callers;
    the map does not depend on them). The types are put in a random order (a generator
    seeded by `seed`) and given the task's labels by stratified sampling over every
    (example, key) occurrence that has a label: the type whose occurrences fill the share
    (u0, u1] of all occurrences gets the label at quantile (u0 + u1) / 2 of the task's
    sorted labels over those occurrences. The map is random, but the control labels keep
    the task's distribution up to one type's share (independent draws would give, with few
    types, a control majority class much larger than the task's, and a noise probe a
    spurious negative selectivity)."""
    labels = np.asarray(labels, dtype=float)
    n, P = types.shape
    out = np.full((n, P), np.nan)
    t = types.numpy()
    rows = (t >= 0) & ~np.isnan(labels)[:, None]
    if not rows.any():
        return out
    pool = np.sort(np.broadcast_to(labels[:, None], (n, P))[rows])  # one label per occurrence
    counts = np.bincount(t[rows], minlength=int(t.max()) + 1)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(counts))
    ends = np.cumsum(counts[order]) / counts.sum()
    mids = ends - counts[order] / counts.sum() / 2
    table = np.empty(len(counts))
    table[order] = pool[np.minimum((mids * len(pool)).astype(int), len(pool) - 1)]
    out[rows] = table[t[rows]]
    return out


def split_groups(groups: torch.Tensor, split=(0.6, 0.2, 0.2), seed: int = 0,
                 minimum: int = 2) -> torch.Tensor:
    """[n] long part of each example: 0 train, 1 validation, 2 test; whole groups (equations)
    go to one part, in a seeded random order. Raises when a part would hold fewer than
    `minimum` groups."""
    split = tuple(float(s) for s in split)
    if len(split) != 3 or min(split) <= 0:
        raise InterpError(f"split {split} must be three positive fractions (train, validation, "
                          "test), e.g. (0.6, 0.2, 0.2)")
    total = sum(split)
    uniq = torch.unique(groups)
    g = len(uniq)
    counts = [round(g * s / total) for s in split[:2]]
    counts.append(g - sum(counts))
    if min(counts) < minimum:
        need = int(np.ceil(minimum * total / min(split)))
        raise InterpError(f"{g} distinct equations are too few for the split {split}: each "
                          f"part needs at least {minimum}; give at least {need} (e.g. --n {need})")
    order = uniq[torch.from_numpy(np.random.default_rng(seed).permutation(g))]
    part_of = {}
    for j, gid in enumerate(order.tolist()):
        part_of[gid] = 0 if j < counts[0] else 1 if j < counts[0] + counts[1] else 2
    return torch.tensor([part_of[x] for x in groups.tolist()], dtype=torch.long)
