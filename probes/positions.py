"""Positions aligned across examples: one key per (role, occurrence), the stacks a model has,
the positions a user selects, and the control task's token types (token + role).

Keys are the ablation's (`circuits.ablation.positions.occurrence_key`): an input position is
`in:<role>#<k>` (the k-th position of that role in the equation: `in:x#1` is the second `x`),
a solution position `out:<token>#<k>`, and the special positions are `<bos>#0`, `<sep>#0`,
`<eos>#0` and (T5's decoder start) `<start>#0`. Raw text (HF BERT / GPT-2) has
`in:<token>#<k>` everywhere. An example that lacks an occurrence (a one-digit `a` has no
`in:a_digit#1`) has it marked absent.

Stacks are the model's towers of blocks: `decoder` (decoder-only, attention kind `self`, side
`seq`), `encoder` (BERT: kind `encoder`, side `src`), and for T5 `encoder` (side `src`) and
`decoder` (kind `decoder_self`, side `tgt`). Each key lives in exactly one stack.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Sequence

import numpy as np
import torch

from circuits.ablation.positions import field_of, occurrence_key
from interp.errors import InterpError
from interp.tokens import Side

# stack -> (attention kind for interp.hooks.hook_name, side of interp.tokens.build_sides)
STACKS = {
    "decoder": {"decoder": ("self", "seq")},
    "encoder": {"encoder": ("encoder", "src")},
    "t5": {"encoder": ("encoder", "src"), "decoder": ("decoder_self", "tgt")},
}
SPECIAL_ROLES = ("<bos>", "<sep>", "<eos>", "<start>")



def side_keys(arch: str, side_name: str, side: Side, lengths_src: Sequence[int] | None
              ) -> list[list[str]]:
    """Per example, per position of `side` (unpadded), its key.

    lengths_src: the number of equation characters per example (None for raw text, where
    every position is an input position)."""
    out = []
    for i, (toks, roles) in enumerate(zip(side.tokens, side.roles)):
        seen: dict[str, int] = {}
        keys = []
        ns = None if lengths_src is None else lengths_src[i]
        for p, (tok, role) in enumerate(zip(toks, roles)):
            if ns is None:
                base = f"in:{tok}"
            elif role in SPECIAL_ROLES:
                base = role
            elif side_name == "tgt":
                base = f"out:{tok}"
            elif side_name == "src" or p <= ns:      # T5/BERT input, or decoder <bos> src
                base = f"in:{role}"
            else:
                base = f"out:{tok}"
            keys.append(occurrence_key(base, seen))
        out.append(keys)
    return out


def order_keys(per_example: list[list[str]], wanted: set[str]) -> list[str]:
    """The wanted keys in sequence order: a topological order of "comes right before in some
    example", ties (and any cycle) broken by the mean position."""
    pos_sum: dict[str, float] = {}
    count: dict[str, int] = {}
    edges: dict[str, set[str]] = {}
    for keys in per_example:
        kept = [k for k in keys if k in wanted]
        for p, k in enumerate(kept):
            pos_sum[k] = pos_sum.get(k, 0.0) + p
            count[k] = count.get(k, 0) + 1
        for a, b in itertools.pairwise(kept):
            edges.setdefault(a, set()).add(b)
    mean = {k: pos_sum[k] / count[k] for k in pos_sum}
    indeg = {k: 0 for k in mean}
    for a, bs in edges.items():
        for b in bs:
            indeg[b] += 1
    heap = [(mean[k], k) for k, d in indeg.items() if d == 0]
    heapq.heapify(heap)
    out: list[str] = []
    done: set[str] = set()
    while len(out) < len(mean):
        if not heap:   # a cycle (raw text): take the earliest remaining key
            k = min((k for k in mean if k not in done), key=lambda k: (mean[k], k))
            heap = [(mean[k], k)]
        _, k = heapq.heappop(heap)
        if k in done:
            continue
        done.add(k)
        out.append(k)
        for b in edges.get(k, ()):
            indeg[b] -= 1
            if indeg[b] == 0 and b not in done:
                heapq.heappush(heap, (mean[b], b))
    return out


def _base(key: str) -> str:
    return key.rsplit("#", 1)[0]


def select(all_keys: list[str], positions, has_roles: bool) -> set[str]:
    """The keys `positions` names: "input" (every in: key), "all", or a list whose items are
    keys (`in:x#1`), bases (`in:x`, `out:=`), input roles (`x`, `a_digit`), special
    roles (`<sep>`) or input fields (`a` = `a_sign` and `a_digit`); a bare role never selects
    solution positions (name them `out:=` or `out:=#0`). An item that names nothing raises, listing the roles."""
    if positions == "all":
        return set(all_keys)
    if positions == "input":
        return {k for k in all_keys if k.startswith("in:")}
    if isinstance(positions, str):
        positions = [p.strip() for p in positions.split(",") if p.strip()]
    chosen: set[str] = set()
    for item in positions:
        hit = {k for k in all_keys if item in (k, _base(k))
               or (not k.startswith("out:") and item == _base(k).split(":", 1)[-1])
               or (k.startswith("in:") and field_of(_base(k)[3:]) == item)}
        if not hit:
            roles = sorted({_base(k).split(":", 1)[-1] for k in all_keys if k.startswith("in:")})
            fields = sorted({f for r in roles if (f := field_of(r)) and f != "nan"})
            what = "role" if has_roles else "token"
            raise InterpError(
                f"no position has the {what} {item!r}; the input {what}s are "
                f"{', '.join(roles)}" + (f" (fields {', '.join(fields)})" if fields else "")
                + "; or give 'input', 'all', or keys such as 'out:=#0', '<sep>#0'")
        chosen |= hit
    return chosen


def control_types(tokens: Sequence[Sequence[str]], token_index: torch.Tensor,
                  keys: Sequence[str] | None = None) -> tuple[torch.Tensor, list[tuple[str, str]]]:
    """([n, P] long type ids, -1 where absent; the types, id -> (role, token)).

    Hewitt & Liang's (2019) control type: the current token's identity plus its role. The
    role is the key without its occurrence (`in:a_digit#1` -> `in:a_digit`), so the same
    token in the same role is one type at every occurrence (`7` as a digit of a is one type
    whether it is a's first or second digit); without `keys` the token alone is the type.
    One definition at every position: unlike a window of preceding tokens, whose length
    would have to change with the position to give enough types, the type never reads the
    context. Types are numbered in sorted order of (role, token)."""
    n, P = token_index.shape
    ti = token_index.numpy()
    roles = [_base(k) if keys is not None else "" for k in (keys or [""] * P)]
    cells = [(i, p) for p in range(P) for i in np.nonzero(ti[:, p] >= 0)[0]]
    pairs = [(roles[p], tokens[i][ti[i, p]]) for i, p in cells]
    table = sorted(set(pairs))
    ids = {t: j for j, t in enumerate(table)}
    out = torch.full((n, P), -1, dtype=torch.long)
    for (i, p), t in zip(cells, pairs):
        out[i, p] = ids[t]
    return out, table
