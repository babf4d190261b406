"""Role groups: the units routes are named in.

A task names the role of every token (`b_digit`, `D_value_sign`, `x`, `=` ...). Routes read
better by field: the digits and sign of one number form one group (`b_digit`, `b_sign` -> `b`;
`x1expr_s_digit` -> `x1expr_s`), and every other role stands alone (`x`, `^`, `=`, `;`).
For raw text (HF BERT-family or GPT-2 checkpoints, where a role is the token string) the group
is the token's class: `special` ([CLS], [SEP], BOS ...), `punct`, `digit` or `word` (words and
subwords).

    group_role("b_digit")               -> "b"
    group_role("b_digit", "fine")       -> "b_digit"
    group_role("Ġ1984", "class")        -> "digit"
"""

from __future__ import annotations

import string

import torch

GROUPINGS = ("field", "fine", "class")
FIELD_SUFFIXES = ("_digit", "_sign")
SPECIAL = {"<bos>", "<eos>", "<sep>", "<start>", "<pad>", "[CLS]", "[SEP]", "[PAD]", "[MASK]",
           "[UNK]", "<s>", "</s>", "<|endoftext|>", "<unk>", "<mask>"}
#: word-piece markers that carry no character of their own (GPT-2's space, BERT's ##)
_MARKERS = ("Ġ", "Ċ", "▁", "##")
_PUNCT = set(string.punctuation) | {"…", "“", "”", "‘", "’", "–", "—"}


def field_of_role(role: str) -> str:
    """`b_digit` / `b_sign` -> `b`; any other role is its own group."""
    for suffix in FIELD_SUFFIXES:
        if role.endswith(suffix) and len(role) > len(suffix):
            return role[: -len(suffix)]
    return role


def token_class(token: str) -> str:
    """The class of a raw token string: special, punct, digit or word."""
    if token in SPECIAL:
        return "special"
    core = token
    for m in _MARKERS:
        core = core.replace(m, "")
    core = core.strip()
    if not core:
        return "punct"           # a bare space or newline marker
    if core.isdigit():
        return "digit"
    if all(ch in _PUNCT for ch in core):
        return "punct"
    return "word"


def group_role(role: str, grouping: str = "field") -> str:
    """The group of one role under `grouping` ("field", "fine" or "class")."""
    if grouping == "fine":
        return role
    if grouping == "field":
        return field_of_role(role)
    if grouping == "class":
        return token_class(role)
    from interp.errors import InterpError

    raise InterpError(f"unknown role grouping {grouping!r}; choose one of {', '.join(GROUPINGS)}")


def default_grouping(sides: dict) -> str:
    """`class` when the roles are the token strings (raw text prompts), else `field`.

    sides: {name: interp.tokens.Side} (a cache's or stream's `.sides`)."""
    raw = all(s.roles == s.tokens for s in sides.values())
    return "class" if raw else "field"


BOUNDARIES = {";", "<sep>", "<bos>", "<eos>", "<start>", "[SEP]", "[CLS]", ".", "<s>", "</s>"}


def role_index(roles: list[list[str]], names: list[str], width: int) -> torch.Tensor:
    """[batch, width] index of each position's role in `names` (-1 past the end or unknown)."""
    index = {r: i for i, r in enumerate(names)}
    rows = [[index.get(r, -1) for r in row[:width]] + [-1] * (width - min(len(row), width))
            for row in roles]
    return torch.tensor(rows, dtype=torch.long).reshape(len(roles), width)


def onehot(ridx: torch.Tensor, n: int) -> torch.Tensor:
    """[batch, width] role indices -> [batch, width, n] float one-hot (all zero for -1)."""
    out = torch.zeros(*ridx.shape, n + 1)
    out.scatter_(-1, (ridx % (n + 1)).unsqueeze(-1), 1.0)   # -1 lands in the spare last slot
    return out[..., :n]


def segments_from_roles(roles: list[list[str]], width: int, mode: str = "statement"
                        ) -> torch.Tensor:
    """Segment ids [batch, width] (-1 past the end) for the block score.

    mode "statement": a boundary token (`;`, `<sep>`, `<bos>`, `[SEP]`, `.` ...) ends a segment
    (the equation, the D statement, each root statement, a sentence). mode "number": each run
    of one number's sign and digits is a segment, every other token stands alone.
    """
    if mode not in ("statement", "number"):
        from interp.errors import InterpError

        raise InterpError(f"unknown segment mode {mode!r}; choose statement or number")
    rows = []
    for row in roles:
        ids, sid, prev_field = [], 0, None
        for r in row[:width]:
            if mode == "statement":
                ids.append(sid)
                if r in BOUNDARIES:
                    sid += 1
            else:
                field = r.rsplit("_", 1)[0] if r.endswith(("_digit", "_sign")) else None
                if field is None or field != prev_field or r.endswith("_sign"):
                    sid += 1
                ids.append(sid)
                prev_field = field
        rows.append(ids + [-1] * (width - len(ids)))
    return torch.tensor(rows, dtype=torch.long).reshape(len(roles), width)


def input_keys(tokens: list[list[str]], width: int) -> torch.Tensor:
    """[batch, width] True for the positions of the input (before `<sep>`, or all)."""
    out = torch.zeros(len(tokens), width, dtype=torch.bool)
    for b, toks in enumerate(tokens):
        out[b, :toks.index("<sep>") if "<sep>" in toks else len(toks)] = True
    return out


__all__ = ["GROUPINGS", "field_of_role", "token_class", "group_role", "default_grouping", "BOUNDARIES", "role_index", "onehot",
           "segments_from_roles", "input_keys"]
