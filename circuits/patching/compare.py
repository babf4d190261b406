"""How well an attribution estimate agrees with exact patching on one site.

`agreement(exact, attributed)` compares the two `PatchResult`s cell by cell on their shares of
the clean-corrupt gap (`PatchResult.normalised`): Spearman and Pearson correlation over every
cell; recall of the exact top-k cells (by |share|, k = 10 and 20) in the attributed top-k;
the worst rank the attribution gives any exact top-10 cell (1 = first); and the largest
underestimate: the cell whose |exact share| exceeds its |attributed share| the most, with
both shares. Cells where either share is NaN (a zero gap) are left out.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

TOPS = (10, 20)
#: `PatchResult.method` -> the name the reports print
METHOD_NAMES = {"attribution": "AtP", "atp*": "AtP*", "atp+qk": "AtP+QK fix",
                "atp+qkv": "AtP+QKV fix", "atp+graddrop": "AtP+GradDrop",
                "atp*+qkv": "AtP*+QKV fix"}


def _cell(res, flat: int) -> str:
    """`L3 p33 (=)`, `L2 H0`, `L3 H3 p33 (=)`: layer, head, position and its role."""
    idx = np.unravel_index(flat, tuple(res.values.shape))
    parts = [f"{'p' if axis == 'pos' else axis[0].upper()}{i}"
             for axis, i in zip(res.axes, idx)]
    if "pos" in res.axes:
        parts.append(f"({res.labels['pos'][idx[res.axes.index('pos')]]})")
    return " ".join(parts)


def _order(v: np.ndarray) -> np.ndarray:
    """Cell indices by decreasing |v|, ties by index (stable)."""
    return np.argsort(-np.abs(v), kind="stable")


def agreement(exact, attributed) -> pd.DataFrame:
    """One row comparing `attributed` (from `attribute`) with `exact` (from `patch`) on the
    same site and pairs.

    Returns
    -------
    DataFrame
        columns site, method, cells, spearman, pearson, top10_recall, top20_recall,
        worst_top10_rank (the attributed rank of the exact top-10 cell it ranks lowest),
        under_cell, under_exact, under_attributed (the largest underestimate: its cell and
        the two shares of the gap).
    """
    import pandas as pd
    from scipy import stats

    if tuple(exact.values.shape) != tuple(attributed.values.shape):
        raise ValueError(f"{exact.site} and {attributed.site}: cells of different shapes "
                         f"{tuple(exact.values.shape)} and {tuple(attributed.values.shape)}")
    e = exact.normalised().double().flatten().numpy()
    a = attributed.normalised().double().flatten().numpy()
    keep = ~(np.isnan(e) | np.isnan(a))
    cells = np.flatnonzero(keep)
    e, a = e[keep], a[keep]
    row = {"site": exact.site, "method": attributed.method, "cells": len(e)}
    if len(e) >= 2 and e.std() > 0 and a.std() > 0:
        row["spearman"] = float(stats.spearmanr(e, a)[0])
        row["pearson"] = float(stats.pearsonr(e, a)[0])
    else:
        row["spearman"] = row["pearson"] = float("nan")
    oe, oa = _order(e), _order(a)
    rank = np.empty(len(a), dtype=int)
    rank[oa] = np.arange(1, len(a) + 1)
    for k in TOPS:
        kk = min(k, len(e))
        row[f"top{k}_recall"] = len(set(oe[:kk]) & set(oa[:kk])) / kk if kk else float("nan")
    row["worst_top10_rank"] = int(rank[oe[:10]].max()) if len(e) else 0
    if len(e):
        i = int(np.argmax(np.abs(e) - np.abs(a)))
        row.update(under_cell=_cell(exact, int(cells[i])), under_exact=float(e[i]),
                   under_attributed=float(a[i]))
    return pd.DataFrame([row])


def missed(exact, attributed, top: int = 10) -> pd.DataFrame:
    """The exact top-`top` cells (by |share|) with their attributed shares and ranks, the
    ones attribution ranks lowest first: where an attribution fails, cell by cell."""
    import pandas as pd

    e = exact.normalised().double().flatten().numpy()
    a = attributed.normalised().double().flatten().numpy()
    a_rank = np.empty(len(a), dtype=int)
    a_rank[_order(np.nan_to_num(a))] = np.arange(1, len(a) + 1)
    rows = [{"cell": _cell(exact, int(i)), "exact_rank": r + 1, "exact": float(e[i]),
             "attributed": float(a[i]), "attributed_rank": int(a_rank[i])}
            for r, i in enumerate(_order(np.nan_to_num(e))[:top])]
    return pd.DataFrame(rows).sort_values("attributed_rank", ascending=False,
                                          kind="stable").reset_index(drop=True)


def summary_line(row: dict) -> str:
    """One row of `agreement` as the command prints it after a site's title: the method,
    Spearman, top-10 recall, the worst rank of an exact top-10 cell, the largest
    underestimate (exact share next to attributed share)."""
    from interp.viz.reports.patch import pct

    name = METHOD_NAMES.get(row["method"], row["method"])
    return (f"{name} vs exact: Spearman {row['spearman']:.3f}, top-10 recall "
            f"{row['top10_recall']:.0%}, exact top-10 ranked down to {row['worst_top10_rank']}"
            f"; largest underestimate {row['under_cell']}: exact {pct(row['under_exact'])}, "
            f"{name} {pct(row['under_attributed'])}")
