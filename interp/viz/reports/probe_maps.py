"""The probe report's maps: layer x position heatmaps of one (target, site, stack) grid, and
the rule that decides which cells count (`reliable`); pure, frames in, figures out.

A cell is reliable when its test split holds at least `MIN_TEST` distinct equations
(`n_eq_test`: examples, not rows). The maps mask the others (grey, their count written in)
and take their colour range from the reliable cells alone; R^2 is drawn within `R2_RANGE`
and selectivity within [-1, 1] (the hover gives the value); score maps mark the baseline.
"""

from __future__ import annotations

import pandas as pd

from interp.viz.figures import esc, esc_all

#: a cell needs this many distinct test equations to be drawn, chosen or checked: at 20 a
#: one-equation swing moves an accuracy by 0.05 and the interval's width is about +-0.2
MIN_TEST = 20
R2_RANGE = (-1.0, 1.0)    # R^2 drawn within this range (selectivity within [-1, 1])


def reliable(frame: pd.DataFrame, min_test: int = MIN_TEST) -> pd.Series:
    """Whether each row's test split holds at least `min_test` distinct equations."""
    return pd.to_numeric(frame["n_eq_test"], errors="coerce").fillna(0) >= min_test


def colour_range(g: pd.DataFrame, column: str) -> tuple[float, float]:
    """The colour range of one map, set by the reliable cells alone: selectivity symmetric
    around 0 (the largest |selectivity|, within [0.05, 1]); an accuracy from the lowest
    reliable score or baseline (at least 0) to 1; R^2 from the lowest reliable value
    (clipped to `R2_RANGE`, at most 0) to 1."""
    ok = g[reliable(g)]
    vals = pd.to_numeric(ok[column], errors="coerce").dropna()
    if column == "selectivity":
        hi = float(vals.abs().max()) if len(vals) else 1.0
        hi = min(max(hi, 0.05), 1.0)
        return -hi, hi
    if g.metric.iloc[0] == "r2":
        low = float(vals.min()) if len(vals) else R2_RANGE[0]
        return max(R2_RANGE[0], min(0.0, low)), R2_RANGE[1]
    base = pd.to_numeric(ok.baseline, errors="coerce").dropna()
    low = ([float(vals.min())] if len(vals) else []) + \
        ([float(base.min())] if len(base) and column != "control" else [])
    return max(0.0, min(min(low, default=0.0), 0.95)), 1.0


def reference(g: pd.DataFrame) -> float | None:
    """The baseline a score map marks: the most common baseline of the reliable cells
    (the majority class's share, or R^2 of the training mean), None without one."""
    b = g[reliable(g)].baseline.dropna().round(6)
    return None if not len(b) else float(b.mode().iloc[0])


def _ticks(lo: float, hi: float, mark: float | None, label: str) -> dict:
    """Five ticks over [lo, hi]; the baseline `mark` replaces the nearest one (named), and a
    tick closer to it than 0.7 of a step is left out."""
    vals = [lo + (hi - lo) * i / 4 for i in range(5)]
    text = [f"{v:.2f}" for v in vals]
    if mark is not None and lo - 1e-6 <= mark <= hi + 1e-6:
        i = min(range(5), key=lambda i: abs(vals[i] - mark))
        vals[i], text[i] = mark, f"{mark:.2f} {label}".replace("-0.00 ", "0.00 ")
        near = {j for j in range(5) if j != i and abs(vals[j] - mark) < 0.7 * (hi - lo) / 4}
        vals = [v for j, v in enumerate(vals) if j not in near]   # labels never overlap
        text = [t for j, t in enumerate(text) if j not in near]
    return {"tickvals": vals, "ticktext": text}


def grid_figure(g: pd.DataFrame, column: str, title: str):
    """Heatmap layer x position of one column of one (target, site, stack) grid. Cells under
    `MIN_TEST` distinct test equations are masked (grey, 'n=' their count); the colour range
    comes from the reliable cells (`colour_range`); R^2 is clipped to `R2_RANGE`
    (selectivity to +-1), the hover giving the value. Score and positional maps mark the
    baseline: a colour-bar tick named "baseline" (`reference`) and, in each cell, its score
    minus its own baseline."""
    import plotly.graph_objects as go

    positions = list(dict.fromkeys(g.position))
    layers = sorted(set(g.layer))

    def grid(col):
        z = g.pivot_table(index="layer", columns="position", values=col, aggfunc="first")
        return z.reindex(index=layers, columns=positions).to_numpy(dtype=float)

    raw = grid(column)
    n_eq = grid("n_eq_test")
    ok = pd.DataFrame(n_eq).fillna(0).to_numpy() >= MIN_TEST
    lo, hi = colour_range(g, column)
    diverging = column == "selectivity"
    clip = (-1.0, 1.0) if diverging else R2_RANGE if g.metric.iloc[0] == "r2" else (0.0, 1.0)

    def cell(v, keep):
        return None if not keep or v != v else round(min(max(float(v), clip[0]), clip[1]), 4)

    z = [[cell(v, k) for v, k in zip(row, ks)] for row, ks in zip(raw, ok)]
    hover = [[("-" if v != v else f"{v:.4f}") for v in row] for row in raw]
    marked = column in ("score", "positional")
    ref = reference(g) if marked else None
    bar = {"thickness": 15}
    bar.update(_ticks(lo, hi, ref, "baseline"))
    text = None
    if marked and len(positions) <= 30:
        base = grid("baseline")
        text = [[("" if not k or v != v else f"{v - b:+.2f}") for v, b, k in zip(r, br, ks)]
                for r, br, ks in zip(raw, base, ok)]
    x, y = esc_all(positions), [f"L{l}" for l in layers]
    fig = go.Figure(go.Heatmap(
        z=z, x=x, y=y, zmin=lo, zmax=hi, colorscale="RdBu" if diverging else "Blues",
        reversescale=diverging, colorbar=bar, customdata=hover, text=text,
        texttemplate="%{text}" if text else None, textfont={"size": 10},
        hovertemplate="%{y} %{x}: %{customdata}<extra></extra>", name=esc(column)))
    if not ok.all():
        fig.add_heatmap(z=[[None if k else 1 for k in ks] for ks in ok], x=x, y=y, zmin=0,
                        zmax=1, colorscale=[[0, "#d9d9d9"], [1, "#d9d9d9"]], showscale=False,
                        text=[[("" if k or n != n else f"n={int(n)}") for k, n in zip(ks, ns)]
                              for ks, ns in zip(ok, n_eq)], texttemplate="%{text}",
                        textfont={"size": 9, "color": "#555"}, name="under the minimum",
                        hovertemplate=(f"%{{y}} %{{x}}: %{{text}} test equations, under "
                                       f"{MIN_TEST}: masked<extra></extra>"))
    fig.update_layout(title=esc(title), height=max(260, 40 * len(layers) + 200),
                      margin={"l": 60, "r": 20, "t": 50, "b": 140}, yaxis_autorange="reversed",
                      xaxis_type="category", yaxis_type="category")
    return fig


MAPS = ("Maps: cells with fewer than {m} distinct test equations are grey (their count "
        "written in), set no colour range and are never chosen. R^2 is drawn within "
        "[{r0:g}, {r1:g}] and selectivity within [-1, 1] (hover for the value). Score maps "
        "mark the baseline: the colour bar's tick named 'baseline' is the most common "
        "majority-class share (accuracy) or training-mean R^2 (regression) of the reliable "
        "cells, and each cell's text is its score minus its own baseline.")
