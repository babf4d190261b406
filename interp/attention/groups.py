"""Role groups: the units routes are named in.

A task names the role of every token (`b_digit`, `D_value_sign`, `x`, `=` ...). Routes read
better by field: the digits and sign of one number form one group (`b_digit`, `b_sign` -> `b`;
`x1expr_s_digit` -> `x1expr_s`), and every other role stands alone (`x`, `^`, `=`, `;`).
For raw text (the native text models, HF BERT-family or GPT-2 checkpoints, where a role is
the token string) the role is the token's class (`token_classes`): `special` ([CLS], [SEP],
BOS ...), `word` (a token that starts a word), `subword` (one that continues a word),
`digit`, `punctuation` or `whitespace` (spaces, tabs, newlines, the indentation of source).

The quadratic task names the letters of the answer `x=nan;` (no real root) with the role `nan`,
which pandas reads back from a CSV as a missing value; it enters the analyses as `no_root`
(`role_name`).

Labels and reads quote every group that is not a plain name (letters, digits, underscores),
so punctuation groups cannot clash with the label syntax: `routed('-'->D_value)`,
`routed(x1->Dexpr_c,')')` (`quote_group`, `read_groups`).

    group_role("b_digit")               -> "b"
    group_role("b_digit", "fine")       -> "b_digit"
    token_classes(["<bos>", "Ġthe", "re", "Ġ1984", "ĠĠĠ"])
        -> ["special", "word", "subword", "digit", "whitespace"]
"""

from __future__ import annotations

import re
import string

import torch

GROUPINGS = ("field", "fine", "class")
#: the token classes of raw text (`token_classes`), in reading order
TOKEN_CLASSES = ("special", "word", "subword", "digit", "punctuation", "whitespace")
#: task roles renamed on their way into the analyses (a role pandas would read as NaN)
RENAMED = {"nan": "no_root"}
FIELD_SUFFIXES = ("_digit", "_sign")
SPECIAL = {"<bos>", "<eos>", "<sep>", "<start>", "<pad>", "[CLS]", "[SEP]", "[PAD]", "[MASK]",
           "[UNK]", "<s>", "</s>", "<|endoftext|>", "<unk>", "<mask>"}
#: word-piece markers: the space, newline and tab of byte-level BPE (GPT-2) and SentencePiece
_SPACE_MARKERS = {"Ġ": " ", "Ċ": "\n", "ĉ": "\t", "▁": " "}
_PUNCT = set(string.punctuation) | {"…", "“", "”", "‘", "’", "–", "—"}
_PLAIN = re.compile(r"[A-Za-z0-9_]+")


def role_name(role: str) -> str:
    """The name a task role takes in the analyses (`RENAMED`: `nan` -> `no_root`)."""
    return RENAMED.get(role, role)


def quote_group(name: str) -> str:
    """A group as labels and reads write it: plain names (ASCII letters, digits, underscores)
    bare, anything else in single quotes with `\\` and `'` escaped: `D_value`, `'-'`,
    `')'`, `'<bos>'`, `'\\''`."""
    if _PLAIN.fullmatch(name):
        return name
    return "'" + name.replace("\\", "\\\\").replace("'", "\\'") + "'"


def read_groups(text: str) -> list[str]:
    """The groups of a comma-separated list written by `quote_group` (bare names are
    stripped; an unquoted name is read up to the next comma, as before quoting)."""
    out, i, n = [], 0, len(text)
    while True:
        while i < n and text[i] == " ":
            i += 1
        if i < n and text[i] == "'":
            j, name = i + 1, []
            while j < n and text[j] != "'":
                if text[j] == "\\" and j + 1 < n:
                    j += 1
                name.append(text[j])
                j += 1
            if j >= n:
                raise ValueError(f"unclosed quote in {text!r}")
            out.append("".join(name))
            i = j + 1
            while i < n and text[i] == " ":
                i += 1
            if i < n and text[i] != ",":
                raise ValueError(f"expected ',' after {out[-1]!r} in {text!r}")
        else:
            j = text.find(",", i)
            j = n if j < 0 else j
            out.append(text[i:j].strip())
            i = j
        if i >= n:
            return out
        i += 1                                   # past the comma


def field_of_role(role: str) -> str:
    """`b_digit` / `b_sign` -> `b`; any other role is its own group."""
    for suffix in FIELD_SUFFIXES:
        if role.endswith(suffix) and len(role) > len(suffix):
            return role[: -len(suffix)]
    return role


def _text_of(token: str) -> tuple[str, bool]:
    """(the characters a token string stands for, whether it is a WordPiece continuation)."""
    if token.startswith("##") and len(token) > 2:
        return token[2:], True
    return "".join(_SPACE_MARKERS.get(ch, ch) for ch in token), False


def _is_special(token: str) -> bool:
    return token in SPECIAL or (len(token) > 2 and " " not in token and (
        (token.startswith("<") and token.endswith(">"))
        or (token.startswith("[") and token.endswith("]") and token[1:-1].isupper())))


def token_class(token: str, word_start: bool = True) -> str:
    """The class of one raw token string: special, word, subword, digit, punctuation (no
    letter or digit) or whitespace. A token with letters is a `subword` when it is a
    WordPiece continuation (`##ing`), or when it has no space in front and `word_start` is
    False (it continues the letters of the token before: see `token_classes`); else a
    `word`."""
    if _is_special(token):
        return "special"
    text, continuation = _text_of(token)
    core = text.strip()
    if not core:
        return "whitespace"
    if core.isdigit():
        return "digit"
    if not any(ch.isalnum() for ch in core):
        return "punctuation"
    if continuation:
        return "subword"
    return "word" if word_start or text[:1].isspace() else "subword"


def token_classes(tokens: list[str]) -> list[str]:
    """The class of every token of one text (`token_class`), read in context. WordPiece
    vocabularies (a `##` token in the text) mark continuations themselves. Byte-level BPE and
    SentencePiece mark a space in front of a word, so a token with letters and no space in
    front is a `subword` when the token before it ends in a letter or digit (`Ġdef` `ault`),
    and a `word` after punctuation, whitespace, a special token or at the start."""
    wordpiece = any(t.startswith("##") and len(t) > 2 for t in tokens)
    out: list[str] = []
    for i, t in enumerate(tokens):
        prev = _text_of(tokens[i - 1])[0] if i else ""
        start = (wordpiece or not i or _is_special(tokens[i - 1])
                 or not prev[-1:].isalnum())
        out.append(token_class(t, start))
    return out


def group_role(role: str, grouping: str = "field") -> str:
    """The group of one role under `grouping` ("field", "fine" or "class")."""
    role = role_name(role)
    if grouping == "fine":
        return role
    if grouping == "field":
        return field_of_role(role)
    if grouping == "class":
        return role if role in TOKEN_CLASSES else token_class(role)
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


__all__ = ["GROUPINGS", "TOKEN_CLASSES", "RENAMED", "role_name", "quote_group", "read_groups",
           "field_of_role", "token_class", "token_classes", "group_role", "default_grouping",
           "BOUNDARIES", "role_index", "onehot", "segments_from_roles", "input_keys"]
