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


def default_grouping(task) -> str:
    """`field` for task examples, `class` for raw text (no task)."""
    return "class" if task is None else "field"


__all__ = ["GROUPINGS", "field_of_role", "token_class", "group_role", "default_grouping"]
