"""Route knockouts shared out over processes (`interp.distributed`), with results identical to
one process: the sharded form of `ablate_route` that `verify_heads` uses under a launcher.

The unit. One process stacks the target and control conditions of the knockouts at one
layer (decoder; every knockout of a T5 model is one stack) into forward passes of `step =
max_rows // batch` conditions, chunk after chunk, so a pass may hold the tail of one knockout
and the head of the next. The rows of a pass are not independent in floating point (the
matrix products of a stacked pass are not those of a smaller one), so the unit is a GROUP of
knockouts: a new group starts at a knockout whose first condition starts a pass in every
batch (its offset in the layer's stack a multiple of each batch's step). A process given
whole groups stacks them exactly as one process does, pass for pass.

Everything else of a knockout is its own: its controls are drawn from its own generator
(seeded by the sweep's seed and the knockout's spec, `_conditions`), its bootstrap and
donors from the sweep's seed; none depends on which process runs it or what runs beside it.
"""

from __future__ import annotations

import math

import pandas as pd

from interp import distributed
from interp.tokens import length_batches


def route_groups(arch: str, lengths, kos, n_controls: int, batch_size: int,
                 max_rows: int) -> list[list[int]]:
    """Indices into `kos`, in groups that one process must run together (see the module):
    `lengths` are the main side's example lengths (`prep.sides[prep.main_side].lengths`)."""
    steps = {max(1, max_rows // len(index)) for index in length_batches(lengths, batch_size)}
    period = math.lcm(*steps) if steps else 1
    per = 1 + n_controls                           # conditions per knockout
    seen: dict[int, int] = {}                      # stack -> knockouts stacked so far
    open_: dict[int, list[int]] = {}               # stack -> its group being filled
    groups: list[list[int]] = []
    for j, ko in enumerate(kos):
        stack = ko.layer if arch == "decoder" else 0
        i = seen.get(stack, 0)
        seen[stack] = i + 1
        if i == 0 or (i * per) % period == 0:
            open_[stack] = [j]
            groups.append(open_[stack])
        else:
            open_[stack].append(j)
    return groups


def ablate_route_shared(bridge, task, examples, knockouts, n_controls: int = 20,
                        seed: int = 0, batch_size: int = 128, max_rows: int = 128,
                        grouping: str = "field", progress=None, controls: str = "mass",
                        reads: bool = False):
    """`ablate_route(..., decode=False)` with its knockouts shared out over the launched
    processes in groups (`route_groups`); every process gets the whole `RouteResult`, its
    rows in the order one process gives them. Not launched: `ablate_route` itself."""
    from circuits.ablation.positions import prepare
    from circuits.ablation.routes import RouteResult, ablate_route, parse_route

    def run(kos):
        return ablate_route(bridge, task, examples, kos, n_controls, seed, False, batch_size,
                            max_rows, grouping, progress, controls=controls, reads=reads)

    if not distributed.launched():
        return run(knockouts)
    prep = prepare(bridge, task, examples)
    kos = [parse_route(k, prep.arch, grouping) if isinstance(k, str) else k
           for k in knockouts]
    groups = route_groups(prep.arch, prep.sides[prep.main_side].lengths, kos, n_controls,
                          batch_size, max_rows)
    mine = distributed.shard_groups(groups, "knockout groups")
    res = run([kos[j] for j in mine])
    parts = distributed.gather([(res.summary, res.reads, res.meta)])
    order = {ko.spec: j for j, ko in enumerate(kos)}

    def joined(frames):
        frames = [f for f in frames if f is not None]
        if not frames:
            return None
        f = pd.concat(frames, ignore_index=True)
        rank = f["knockout"].map(order)
        return f.iloc[rank.argsort(kind="stable").to_numpy()].reset_index(drop=True)

    meta = dict(parts[0][2], knockouts=[ko.spec for ko in kos])
    return RouteResult(joined([p[0] for p in parts]), meta, {},
                       joined([p[1] for p in parts]) if reads else None)
