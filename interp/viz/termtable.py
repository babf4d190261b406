"""Tables that fit the terminal.

`fit(df)` writes a DataFrame as plain text no wider than the terminal
(`shutil.get_terminal_size()`, or `width=`): numbers right-aligned, text left-aligned. When
the full row is wider, text columns are cut (with "~" marking the cut), widest first, down to
`min_text` characters; columns that still do not fit are left out from the right, and a last
line names them and says that `--wide` shows them. `wide=True` writes every column in full.
"""

from __future__ import annotations

import shutil

import pandas as pd

CUT = "~"


def width_now(default: int = 120) -> int:
    """The terminal's width in columns (COLUMNS wins; `default` when there is no terminal)."""
    return shutil.get_terminal_size((default, 24)).columns


def _cell(v, fmt: dict, col: str) -> str:
    if v is None or (isinstance(v, float) and v != v):
        return "-"
    f = fmt.get(col)
    if f is not None:
        return f(v) if callable(f) else format(v, f)
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1e-3 and v != 0 else f"{v:.3f}"
    return str(v)


def _cut(s: str, n: int) -> str:
    return s if len(s) <= n else s[: max(n - 1, 0)] + CUT


def fit(df: pd.DataFrame, width: int | None = None, wide: bool = False, min_text: int = 12,
        formats: dict | None = None, gap: int = 2) -> str:
    """`df` as text lines no wider than `width` (the terminal's by default) unless `wide`."""
    formats = formats or {}
    cols = [str(c) for c in df.columns]
    cells = {c: [_cell(v, formats, c) for v in df[c].tolist()] for c in df.columns}
    numeric = {str(c): pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c])
               for c in df.columns}
    size = {str(c): max([len(str(c)), *map(len, cells[c])]) for c in df.columns}
    cells = {str(c): v for c, v in cells.items()}
    limit = None if wide else (width if width is not None else width_now())
    hidden: list[str] = []
    if limit is not None:
        def total(cs):
            return sum(size[c] for c in cs) + gap * max(len(cs) - 1, 0)
        shown = list(cols)
        while total(shown) > limit:
            texts = [c for c in shown if not numeric[c] and size[c] > max(min_text, len(c))]
            if texts:                              # cut the widest text column by what is over
                c = max(texts, key=lambda c: size[c])
                size[c] = max(min_text, len(c), size[c] - (total(shown) - limit))
                continue
            if len(shown) == 1:
                break
            hidden.insert(0, shown.pop())          # then leave columns out from the right
        cols = shown

    def row(values: dict) -> str:
        out = []
        for c in cols:
            s = _cut(values[c], size[c])
            out.append(s.rjust(size[c]) if numeric[c] else s.ljust(size[c]))
        return (" " * gap).join(out).rstrip()

    lines = [row({c: c for c in cols})]
    lines += [row({c: cells[c][i] for c in cols}) for i in range(len(df))]
    if hidden:
        import textwrap

        note = (f"({len(hidden)} more column{'s' * (len(hidden) > 1)}: "
                f"{', '.join(hidden)}; --wide shows every column)")
        lines += textwrap.wrap(note, max(limit, 20))
    return "\n".join(lines)


def decimals(*values, least: int = 3) -> int:
    """Decimals that show the largest of `values` with at least two significant digits
    (`least` at least): 0.35 -> 3, 0.0031 -> 4, 0.00054 -> 5, so that a small effect never
    reads as a zero."""
    import math

    m = max((abs(float(v)) for v in values if v is not None and float(v) == float(v)),
            default=0.0)
    if m == 0 or m >= 10 ** (1 - least):
        return least
    return min(12, max(least, 1 - math.floor(math.log10(m))))


def signed(v: float, least: int = 3) -> str:
    """A signed number with `least` decimals, or as many as give it two significant digits
    when it is smaller (+0.00042, not +0.000, which reads as a measured zero)."""
    v = float(v)
    if v != v:
        return "nan"
    return f"{v + 0.0:+.{decimals(v, least=least)}f}"


def interval(est: float, lo: float, hi: float, least: int = 3) -> str:
    """'est [lo, hi]' on one number of decimals, set by the largest of the three
    (`decimals`): "+0.0000 [+0.0000, +0.0012]", never "+0.000 [+0.000, +0.001]"."""
    d = decimals(est, lo, hi, least=least)
    f = lambda x: "nan" if x != x else f"{float(x) + 0.0:+.{d}f}"  # noqa: E731
    return f"{f(float(est))} [{f(float(lo))}, {f(float(hi))}]"
