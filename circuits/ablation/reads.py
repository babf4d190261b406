"""Does the head READ K? Path patching of the head's values at the key positions.

A route knockout tells that a head matters at its queries Q when it stops attending to K;
it does not tell whether what the head takes from K (its content) matters. This test keeps
the attention as it is and changes what the head reads at K: in ONE head, for the query rows
Q only, the values at the key positions K are those of a DONOR example of the same layout
(the same role at every position, on every side; only digit values differ, and at least one
token at K differs), everything else clean:

    z'[q, h] = z[q, h] + sum_k cut[h, q, k] * A[h, q, k] * (v_donor[k, h] - v[k, h])

(A and v the clean pattern and values of that layer, v_donor the donor's values at the same
layer; cut the knockout's (head, query, key) entries). Controls resample the values, the
same way, at the entries of the route's equal-mass controls (other keys of the same head in
the same rows, or other heads' entries of the same rows where the head cannot match the
mass), so a control reads as much attention from donor values as the target.

Donors are drawn from the examples themselves and, where none of them shares an example's
layout, from `POOL` further generated examples; an example without a donor is left out of
the test (`reads_n` counts the examples that had one).
"""

from __future__ import annotations

import json

import numpy as np
import torch

from interp.hooks import KINDS, arch_of, capture, hook_name
from interp.tasks.base import Task

from .positions import Prepared, prepare

#: extra examples generated to find same-layout donors
POOL = 3000


def layout(prep: Prepared, i: int) -> tuple:
    """The role at every position of example i, on every side (its layout)."""
    return tuple(tuple(prep.sides[s].roles[i]) for s in sorted(prep.sides))


def find_donors(bridge, task: Task | None, prep: Prepared, side: str, keys: torch.Tensor,
                seed: int = 0, pool: int = POOL) -> tuple[Prepared, torch.Tensor]:
    """A same-layout donor per example whose tokens differ at `keys: [N, W]` (the key
    positions the route reads, on `side`): (the donors prepared as `prep`'s rows, so that
    row i is example i's donor; `[N]` bool, whether example i has one).

    Candidates are the other examples first, then `pool` examples `task` generates (seeded);
    among those that fit, one is picked at random."""
    rng = np.random.default_rng([seed, 7])
    cands = [(prep, j) for j in range(prep.n)]
    groups: dict[tuple, list] = {}
    for c in cands:
        groups.setdefault(layout(prep, c[1]), []).append(c)
    have_all = all(_fits(prep, i, groups.get(layout(prep, i), []), side, keys)
                   for i in range(prep.n))
    if not have_all and task is not None and pool > 0:
        extra = _pool(bridge, task, pool, seed)
        for j in range(extra.n):
            groups.setdefault(layout(extra, j), []).append((extra, j))
    chosen, has = [], torch.zeros(prep.n, dtype=torch.bool)
    for i in range(prep.n):
        fit = _fits(prep, i, groups.get(layout(prep, i), []), side, keys)
        if fit:
            chosen.append(fit[int(rng.integers(len(fit)))])
            has[i] = True
        else:
            chosen.append((prep, i))      # itself: no change (left out of the test)
    return _rows(prep, chosen), has


_POOLS: dict = {}   # (model, task, pool, seed) -> the prepared pool; a few entries


def _pool(bridge, task: Task, pool: int, seed: int) -> Prepared:
    """The `pool` generated examples (seeded), prepared for `bridge`. A route check asks for
    the same pool once per head and route; it is prepared once per model, task and seed (the
    key holds what `prepare` reads: the architecture, the context length, the task)."""
    key = (arch_of(bridge), int(getattr(bridge.cfg, "n_ctx", 0) or 0),
           json.dumps(task.describe(), sort_keys=True, default=str), pool, seed)
    if key not in _POOLS:
        if len(_POOLS) >= 4:
            _POOLS.pop(next(iter(_POOLS)))
        _POOLS[key] = prepare(bridge, task, task.generate(pool, seed=seed + 10_000))
    return _POOLS[key]


def _fits(prep, i, cands, side, keys) -> list:
    """The candidates (prepared, row) of example i's layout whose tokens at `keys[i]` differ
    (not example i itself)."""
    want = prep.sides[side].ids[i]
    at = keys[i, : want.shape[0]]
    out = []
    for p, j in cands:
        if p is prep and j == i:
            continue
        ids = p.sides[side].ids[j]
        w = min(len(ids), len(want))
        if bool((ids[:w][at[:w]] != want[:w][at[:w]]).any()):
            out.append((p, j))
    return out


def _rows(prep: Prepared, chosen: list) -> dict[str, torch.Tensor]:
    """side -> `[N, W]` the donors' ids, padded to `prep`'s widths (same layout: same
    lengths)."""
    out = {}
    for s, side in prep.sides.items():
        ids = side.ids.clone()
        for i, (p, j) in enumerate(chosen):
            n = int(side.lengths[i])
            ids[i, :n] = p.sides[s].ids[j, :n]
        out[s] = ids
    return out


def donor_values(bridge, prep: Prepared, donor_ids: dict[str, torch.Tensor], kind: str,
                 layer: int, batch_size: int = 128) -> torch.Tensor:
    """`[N, Wk, H, d_head]` float32: the values (`hook_v`) of attention `kind` at `layer` in
    the donors' runs."""
    from .interventions import batches

    name = hook_name(bridge, kind, layer, "hook_v")
    out = None
    for index, widths, _, valid, _, _ in batches(prep, batch_size):
        ids = {s: v[index, :widths[s]] for s, v in donor_ids.items()}
        kw = {"attention_mask": valid[prep.main_side].long()}
        if prep.arch == "t5":
            kw["decoder_input"] = ids["tgt"]
        v = capture(bridge, ids[prep.main_side], names=[name], **kw)[name].float().cpu()
        if out is None:
            wk = prep.sides[_key_side(prep, kind)].ids.shape[1]
            out = torch.zeros(prep.n, wk, v.shape[2], v.shape[3])
        out[index, : v.shape[1]] = v
    return out


def _key_side(prep: Prepared, kind: str) -> str:
    s = KINDS[kind].key_side
    return "src" if s == "seq" and "seq" not in prep.sides else s


def z_delta(sel: torch.Tensor, pattern: torch.Tensor, v: torch.Tensor, v_donor: torch.Tensor
            ) -> torch.Tensor:
    """`[b, Q, H, d]` what the path patch adds to `hook_z`: sel `[b, H, Q, K]` bool, the
    clean pattern `[b, H, Q, K]`, clean and donor values `[b, K, H, d]`."""
    w = (sel.to(pattern.dtype) * pattern)
    return torch.einsum("bhqk,bkhd->bqhd", w, (v_donor - v).to(pattern.dtype))


def z_hook(delta: torch.Tensor):
    """A `hook_z` hook adding `delta: [rows, Q, H, d]` (cut to the tensor's width)."""
    def hook(z, hook):
        return z + delta[:, : z.shape[1]].to(z.device, z.dtype)
    return hook


__all__ = ["POOL", "find_donors", "donor_values", "z_delta", "z_hook", "layout"]
