"""Which positions an ablation touches: the dataset prepared once (ids, regions, matching
keys, answer labels), the target positions of the named tokens, random control positions,
role-matched control positions (the other structural, non-digit positions), the donors of
`resample` (same layout by default), and the layers to ablate at."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from interp.errors import InterpError
from interp.hooks import arch_of
from interp.tasks.base import Example, Task
from interp.tasks.tokenizer import CharCodec
from interp.tokens import IGNORE, Side, build_sides, check_length

SCOPES = ("input", "all")
#: who donates `resample`'s values: "layout" an equation of the same layout (the same role at
#: every input position, so a donor's value sits at the same absolute position; only the
#: values differ), "any" any other equation (matched by key)
DONORS = ("layout", "any")


@dataclass
class Prepared:
    """Examples as padded tensors with their regions and answer labels.

    Attributes
    ----------
    arch : str
        The model's architecture (`interp.hooks.arch_of`), "decoder" or "t5".
    sides : dict[str, Side]
        "seq" (decoder-only) or "src" and "tgt" (T5), as `interp.tokens.build_sides` makes
        them; `ids: [N, W]`.
    input_region, solution_region : dict[str, Tensor]
        side -> `[N, W]` bool, where the equation's and the solution's tokens stand.
    keys : dict[str, list[list[str | None]]]
        side -> per example, per position, the key that `mean` and `resample` match on
        ("in:<role>#<k>" or "out:<token>#<k>", None elsewhere).
    labels : Tensor
        `[N, Wout]` the answer token each logit position must predict (IGNORE elsewhere), on
        the side that carries the logits ("seq" or "tgt").
    fields : Tensor
        `[N, Wout]` index into `field_names` of the solution field of that answer token, -1
        for literals and <eos>.
    """

    arch: str
    examples: list[Example]
    sides: dict[str, Side]
    input_region: dict[str, torch.Tensor]
    solution_region: dict[str, torch.Tensor]
    keys: dict[str, list[list[str | None]]]
    labels: torch.Tensor
    fields: torch.Tensor
    field_names: list[str]

    @property
    def n(self) -> int:
        return len(self.examples)

    @property
    def out_side(self) -> str:
        return "seq" if self.arch == "decoder" else "tgt"

    @property
    def main_side(self) -> str:
        return "seq" if self.arch == "decoder" else "src"


def field_of(role: str) -> str | None:
    """The solution field a role belongs to (`D_value_digit` -> `D_value`), None for literals."""
    for suffix in ("_digit", "_sign"):
        if role.endswith(suffix):
            return role[: -len(suffix)]
    return "nan" if role == "nan" else None


def prepare(bridge, task: Task, examples: Sequence[Example]) -> Prepared:
    """Tokenize `examples` once (`interp.tokens.build_sides`) and mark their regions, keys,
    answer labels and solution fields for a decoder-only or T5 `bridge`."""
    arch = arch_of(bridge)
    if arch not in ("decoder", "t5"):
        raise InterpError("token ablation needs a model that writes the answer (decoder-only "
                          f"or T5); this one is {arch!r}")
    if not examples:
        raise InterpError("no examples to ablate; give at least one (e.g. --n 500)")
    sides = build_sides(arch, task, examples)
    n_ctx = int(getattr(bridge.cfg, "n_ctx", 0) or 0)
    inp = {name: torch.zeros_like(s.ids, dtype=torch.bool) for name, s in sides.items()}
    sol = {name: torch.zeros_like(s.ids, dtype=torch.bool) for name, s in sides.items()}
    keys = {name: [[None] * s.ids.shape[1] for _ in examples] for name, s in sides.items()}
    width = sides["seq" if arch == "decoder" else "tgt"].ids.shape[1]
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    field_idx = torch.full((len(examples), width), -1, dtype=torch.long)
    names: list[str] = []
    for i, ex in enumerate(examples):
        ns, nt = len(ex.src), len(ex.tgt)
        if arch == "decoder":
            s = sides["seq"]
            if n_ctx:
                check_length(int(s.lengths[i]), n_ctx, f"the sequence for {ex.src!r}")
            _mark(inp["seq"], sol["seq"], keys["seq"][i], s, i, range(1, 1 + ns),
                  range(ns + 2, ns + 2 + nt))
            # logits at t predict the token at t + 1
            labels[i, ns + 1:ns + 2 + nt] = s.ids[i, ns + 2:ns + 3 + nt]
            _set_fields(field_idx, names, i, ns + 1, s.roles[i][ns + 2:ns + 3 + nt])
        else:
            src, tgt = sides["src"], sides["tgt"]
            _mark(inp["src"], sol["src"], keys["src"][i], src, i, range(ns), range(0))
            _mark(inp["tgt"], sol["tgt"], keys["tgt"][i], tgt, i, range(0), range(1, 1 + nt))
            labels[i, :nt] = tgt.ids[i, 1:1 + nt]
            labels[i, nt] = CharCodec().eos
            _set_fields(field_idx, names, i, 0, list(tgt.roles[i][1:1 + nt]) + [""])
    return Prepared(arch, list(examples), sides, inp, sol, keys, labels, field_idx, names)


def _mark(inp, sol, keys, side: Side, i, in_pos, sol_pos) -> None:
    seen: dict[str, int] = {}
    for region, positions, prefix, names in ((inp, in_pos, "in:", side.roles[i]),
                                             (sol, sol_pos, "out:", side.tokens[i])):
        if len(positions):
            region[i, positions.start:positions.stop] = True   # one write per region
        for p in positions:
            keys[p] = occurrence_key(prefix + names[p], seen)


def occurrence_key(base: str, seen: dict[str, int]) -> str:
    """`base#k` for the k-th occurrence of `base` (counted in `seen`): the second `x` of an
    equation is matched with second `x`s only."""
    k = seen.get(base, 0)
    seen[base] = k + 1
    return f"{base}#{k}"


def _set_fields(field_idx, names, i, start, roles) -> None:
    """Row i of `field_idx` from position `start` on: the index in `names` of each role's
    solution field (new fields appended in order of appearance; -1 kept for literals)."""
    row = field_idx[i].tolist()
    for k, role in enumerate(roles):
        f = field_of(role)
        if f is None:
            continue
        if f not in names:
            names.append(f)
        row[start + k] = names.index(f)
    field_idx[i] = torch.tensor(row, dtype=field_idx.dtype)


def token_ids(bridge, tokens: Sequence[str]) -> list[int]:
    """Ids of tokens named as a user types them; an unknown token lists the vocabulary."""
    vocab = _vocab(bridge)
    if not tokens:
        raise InterpError("no tokens to ablate; name at least one, e.g. --tokens 'x,^,='")
    bad = [t for t in tokens if t not in vocab]
    if bad:
        shown = " ".join(sorted((t for t in vocab if not t.startswith("<")),
                                key=lambda t: vocab[t]))
        raise InterpError(f"unknown token{'s' if len(bad) > 1 else ''} "
                          f"{', '.join(repr(t) for t in bad)}; the vocabulary is: {shown} "
                          "(separate tokens with commas, e.g. 'x,^,=')")
    return sorted({vocab[t] for t in tokens})


def _vocab(bridge) -> dict[str, int]:
    tok = getattr(bridge, "tokenizer", None)
    return dict(tok.get_vocab()) if tok is not None else dict(CharCodec().vocab)


def target_masks(prep: Prepared, ids: Sequence[int], scope: str = "input"
                 ) -> dict[str, torch.Tensor]:
    """side -> `[N, W]` True at the positions holding one of `ids` in the chosen scope."""
    if scope not in SCOPES:
        raise InterpError(f"unknown scope {scope!r}; choose one of {', '.join(SCOPES)}")
    want = torch.tensor(list(ids))
    out = {}
    for name, s in prep.sides.items():
        region = prep.input_region[name] | (prep.solution_region[name] if scope == "all" else
                                            torch.zeros_like(prep.input_region[name]))
        out[name] = torch.isin(s.ids, want) & region
    return out


def control_masks(prep: Prepared, targets: dict[str, torch.Tensor], n_controls: int,
                  seed: int = 0, scope: str = "input") -> list[dict[str, torch.Tensor]]:
    """`n_controls` position sets (side -> `[N, W]` bool): per example and region as many
    positions as the targets have there, drawn uniformly among that region's other positions
    (never a target)."""
    anywhere = {name: torch.ones_like(tmask) for name, tmask in targets.items()}
    return _draw_sets(prep, targets, anywhere, n_controls, [seed], scope, lambda i, k, n: (
        f"example {prep.examples[i].src!r} has {k} target positions but only {n} other "
        "positions to draw controls from; ablate fewer tokens or use --controls 0"))


def _draw_sets(prep: Prepared, targets: dict[str, torch.Tensor],
               pools: dict[str, torch.Tensor], n_controls: int, key: list, scope: str,
               too_few) -> list[dict[str, torch.Tensor]]:
    """`n_controls` position sets: per example and region as many positions as the targets
    have there, drawn without replacement among that region's `pools` positions that are not
    targets; set j draws from the generator seeded `key` with j inserted second. An example
    whose pool is smaller than its targets is an InterpError, `too_few(i, k, n)` its text (a
    smaller control would remove less than the target)."""
    regions = [prep.input_region] + ([prep.solution_region] if scope == "all" else [])
    out = []
    for j in range(n_controls):
        rng = np.random.default_rng([key[0], j, *key[1:]])
        masks = {}
        for name, tmask in targets.items():
            m = torch.zeros_like(tmask)
            for region in regions:
                r = region[name]
                for i in range(prep.n):
                    k = int((tmask[i] & r[i]).sum())
                    if k == 0:
                        continue
                    pool = torch.nonzero(r[i] & pools[name][i] & ~tmask[i]).flatten().numpy()
                    if len(pool) < k:
                        raise InterpError(too_few(i, k, len(pool)))
                    m[i, torch.from_numpy(rng.choice(pool, size=k, replace=False))] = True
            masks[name] = m
        out.append(masks)
    return out


def digit_role(role: str) -> bool:
    """Whether a position's role is a digit of a number (`b_digit`, `D_value_digit`): the
    values an equation is made of. Everything else (signs, `x`, `^`, the `2` of `^2`, `=`, the
    trailing `0`, literals of the solution) is structure."""
    return role.endswith("_digit")


def role_pool(prep: Prepared, targets: dict[str, torch.Tensor], scope: str = "input"
              ) -> dict[str, torch.Tensor]:
    """side -> `[N, W]` bool: the positions a role-matched control may take: in the chosen
    scope's regions, structural (not `digit_role`) and not a target."""
    regions = [prep.input_region] + ([prep.solution_region] if scope == "all" else [])
    out = {}
    for name, tmask in targets.items():
        roles = prep.sides[name].roles
        pool = torch.zeros_like(tmask)
        for region in regions:
            for i, p in torch.nonzero(region[name] & ~tmask).tolist():
                if not digit_role(roles[i][p]):
                    pool[i, p] = True
        out[name] = pool
    return out


def role_masks(prep: Prepared, targets: dict[str, torch.Tensor], n_controls: int,
               seed: int = 0, scope: str = "input") -> list[dict[str, torch.Tensor]]:
    """`n_controls` role-matched position sets (side -> `[N, W]` bool): per example and region
    exactly as many positions as the targets have there, drawn uniformly among that region's
    other structural positions (`role_pool`: never a digit, never a target). An example
    whose pool is smaller than its targets is an `InterpError` (a smaller control would
    remove less than the target); `role_sets` counts the distinct sets each example allows."""
    return _draw_sets(prep, targets, role_pool(prep, targets, scope), n_controls, [seed, 1],
                      scope, lambda i, k, n: (
                          f"example {prep.examples[i].src!r} has {k} target positions but "
                          f"only {n} other structural (non-digit) positions: no role-matched "
                          "control of the same size exists"))


def role_sets(prep: Prepared, targets: dict[str, torch.Tensor], scope: str = "input"
              ) -> np.ndarray:
    """`[N]` how many distinct role-matched position sets each example allows: the product
    over regions of C(pool, targets) (1 means every role-matched control is the same set)."""
    from math import comb

    regions = [prep.input_region] + ([prep.solution_region] if scope == "all" else [])
    pools = role_pool(prep, targets, scope)
    out = np.ones(prep.n, dtype=float)
    for name, tmask in targets.items():
        for region in regions:
            r = region[name]
            for i in range(prep.n):
                out[i] *= comb(int((r[i] & pools[name][i]).sum()), int((tmask[i] & r[i]).sum()))
    return out


def input_layout(prep: Prepared, i: int) -> tuple[str, ...]:
    """The roles of example i's input positions, in order: its layout (two equations of one
    layout differ only in their values: digits and signs)."""
    side = prep.main_side
    roles = prep.sides[side].roles[i]
    return tuple(roles[p] for p in torch.nonzero(prep.input_region[side][i]).flatten().tolist())


def layout_groups(prep: Prepared) -> list[list[int]]:
    """The examples grouped by `input_layout`, groups in order of first appearance."""
    groups: dict[tuple[str, ...], list[int]] = {}
    for i in range(prep.n):
        groups.setdefault(input_layout(prep, i), []).append(i)
    return list(groups.values())


def donor_indices(prep: Prepared, seed: int = 0, donors: str = "layout") -> np.ndarray:
    """`[N]` the equation that donates to each example under `resample`: "any" a random
    derangement of all examples (`interventions.derangement`, the old rule), "layout" a
    random derangement within each layout group (`layout_groups`), -1 for an example that is
    alone in its layout (no same-layout donor among the examples)."""
    if donors not in DONORS:
        raise InterpError(f"unknown donor rule {donors!r}; choose one of {', '.join(DONORS)}")
    if donors == "any":
        from .interventions import derangement

        return derangement(prep.n, seed)
    rng = np.random.default_rng(seed)
    donor = np.full(prep.n, -1, dtype=int)
    for g in layout_groups(prep):
        if len(g) < 2:
            continue
        g = np.asarray(g)
        order = rng.permutation(len(g))
        donor[g[order]] = g[np.roll(order, -1)]
    return donor


def parse_layers(spec: str | Sequence[int] | None, n_layers: int) -> list[int]:
    """'0-3', '1,3', '2-' or a list -> sorted layer indices, checked against the model."""
    if spec is None or spec == "" or spec == "all":
        return list(range(n_layers))
    if isinstance(spec, str):
        layers: set[int] = set()
        try:
            for part in spec.split(","):
                part = part.strip()
                if "-" in part:
                    lo, hi = part.split("-", 1)
                    layers.update(range(int(lo), (int(hi) if hi else n_layers - 1) + 1))
                else:
                    layers.add(int(part))
        except ValueError:
            raise InterpError(f"cannot read layers {spec!r}; write e.g. '0-3', '1,3' or '2-'"
                              ) from None
    else:
        layers = {int(x) for x in spec}
    bad = sorted(l for l in layers if not 0 <= l < n_layers)
    if bad or not layers:
        raise InterpError(f"layers {bad or spec!r} out of range; this model has layers "
                          f"0-{n_layers - 1}")
    return sorted(layers)
