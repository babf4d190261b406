"""The `probe` report: the terminal table, the JSON and the self-contained HTML page of a probe
grid (`ProbeResult.frame()` rows) and its causal checks (`CausalResult`s); pure: frames in,
text/dict/Page out (`probes` makes them; `interp` never imports `probes`).

A probe is *accurate but not selective* when its score beats the baseline by at least
`ACCURATE` (accuracy points, or R^2) while its selectivity (score - control task score,
Hewitt & Liang 2019) is below `SELECTIVE`: the probe could have learnt as much from the token
types alone, so its accuracy says little about what the representation holds.
"""

from __future__ import annotations

import json

import pandas as pd

from interp.viz.figures import esc, esc_all
from interp.viz.page import Page

ACCURATE = 0.05    # score - baseline at least this: the probe reads something
SELECTIVE = 0.05   # selectivity below this: not more than the control task reads
COLUMNS = ["target", "site", "stack", "layer", "position", "metric", "n_test", "score",
           "baseline", "control", "selectivity", "flag"]


def flag(score: float, baseline: float, selectivity: float) -> str:
    """'accurate, not selective', 'selective' or '' (see the module docstring)."""
    if not score - baseline >= ACCURATE:
        return ""
    return "selective" if selectivity >= SELECTIVE else "accurate, not selective"


def with_flags(frame: pd.DataFrame) -> pd.DataFrame:
    """`frame` with a `flag` column (see `flag`)."""
    out = frame.copy()
    out["flag"] = [flag(s, b, v) for s, b, v in
                   zip(out.score, out.baseline, out.selectivity)]
    return out


def _stack(v) -> str:
    return "" if v is None or pd.isna(v) else str(v)


def format_table(frame: pd.DataFrame, causal: pd.DataFrame | None, title: str) -> str:
    """The terminal table: per target and site, one line per (layer, position) with score,
    baseline, control and selectivity, flagged; then one line per causal check."""
    f = with_flags(frame)
    lines = [title, "",
             (f"score: accuracy (classes) or R^2 (regression) on the test split; control: the "
             f"control task's score; selectivity = score - control; '!' accurate (>= "
             f"{ACCURATE:+.2f} over the baseline) but not selective (< {SELECTIVE:.2f})")]
    for (target, site, stack), g in f.groupby(["target", "site", "stack"], sort=False,
                                              dropna=False):
        metric = g.metric.iloc[0]
        lines += ["", (f"{target} at {site}{' (' + _stack(stack) + ')' if _stack(stack) else ''}"
                      f" ({metric}):"),
                  (f"  {'layer':<6}{'position':<22}{'n_test':>7}{'score':>8}{'baseline':>9}"
                  f"{'control':>9}{'select.':>9}")]
        for _, r in g.iterrows():
            mark = {"accurate, not selective": "  !", "selective": "  *"}.get(r.flag, "")
            lines.append(f"  L{int(r.layer):<5}{str(r.position)[:21]:<22}{int(r.n_test):>7}"
                         f"{r.score:>8.3f}{r.baseline:>9.3f}{r.control:>9.3f}"
                         f"{r.selectivity:>+9.3f}{mark}")
        best = g.loc[g.selectivity.idxmax()]
        lines.append(f"  most selective: L{int(best.layer)} {best.position} (score "
                     f"{best.score:.3f}, selectivity {best.selectivity:+.3f}); '*' selective")
    if causal is not None and len(causal):
        lines += ["", ("causal check: remove the probe direction at the cell, teacher-forced "
                  "(damage = answer loss up / accuracy points down), against random "
                  "directions of the same rank"),
                  (f"  {'target':<10}{'layer':<6}{'positions':<28}{'rank':>5}{'metric':>16}"
                  f"{'damage':>9}{'controls':>10}{'difference [95% CI]':>30}{'p':>7}")]
        shown = causal[causal.metric.isin(["answer_loss", "field:D_value", "exact_match"])]
        for _, r in shown.iterrows():
            pct = r.metric != "answer_loss"
            k = 100.0 if pct else 1.0
            ci = (f"{k * r.difference:+.3f} [{k * r.ci_low:+.3f}, {k * r.ci_high:+.3f}]"
                  if "difference" in r and r.difference == r.difference else "-")
            p = f"{r.p_value:.3f}" if "p_value" in r and r.p_value == r.p_value else "-"
            ctl = r.get("control_damage_mean", float("nan"))
            lines.append(f"  {r.get('target', '')!s:<10}L{int(r.layer):<5}"
                         f"{str(r.positions)[:27]:<28}{int(r['rank']):>5}"
                         f"{r.metric.replace('field:', 'field '):>16}"
                         f"{k * r.target_damage:>+9.3f}{k * ctl:>+10.3f}{ci:>30}{p:>7}")
    return "\n".join(lines)


def to_json(frame: pd.DataFrame, causal: pd.DataFrame | None, meta: dict) -> dict:
    """The machine-readable result: meta, the probe grid (with flags), the causal checks."""
    out = {"meta": meta,
           "probes": json.loads(with_flags(frame).to_json(orient="records"))}
    out["causal"] = json.loads(causal.to_json(orient="records")) if causal is not None else []
    return out


def grid_figure(g: pd.DataFrame, column: str, title: str):
    """Heatmap layer x position of one column of one (target, site, stack) grid; selectivity
    on a diverging scale centred on 0."""
    import plotly.graph_objects as go

    positions = list(dict.fromkeys(g.position))
    layers = sorted(set(g.layer))
    z = g.pivot_table(index="layer", columns="position", values=column, aggfunc="first")
    z = z.reindex(index=layers, columns=positions)
    vals = [[None if pd.isna(v) else round(float(v), 4) for v in row] for row in z.to_numpy()]
    diverging = column == "selectivity"
    hi = max(1.0, float(g[column].abs().max())) if diverging else 1.0
    lo = -hi if diverging else min(0.0, float(g[column].min()))
    fig = go.Figure(go.Heatmap(
        z=vals, x=esc_all(positions), y=[f"L{l}" for l in layers], zmin=lo, zmax=hi,
        colorscale="RdBu" if diverging else "Blues", reversescale=diverging,
        colorbar={"nticks": 6, "thickness": 15},
        hovertemplate="%{y} %{x}: %{z}<extra></extra>"))
    fig.update_layout(title=esc(title), height=max(260, 40 * len(layers) + 200),
                      margin={"l": 60, "r": 20, "t": 50, "b": 140}, yaxis_autorange="reversed",
                      xaxis_type="category", yaxis_type="category")
    return fig


def build_page(frame: pd.DataFrame, causal_results: list, title: str) -> Page:
    """The report page: per target and site the layer x position heatmaps of score, control
    and selectivity, the table, then each causal check's table and figure."""
    page = Page(title)
    page.paragraph(
        "Each cell is a linear probe fitted on the activation at one layer and one aligned "
        "position (in:<role>#<k> is the k-th input token of that role, out:<token>#<k> the "
        "k-th such token of the solution), on a train split, its regularisation chosen on a "
        "validation split, scored on a test split; equations never cross splits. The control "
        "task (Hewitt & Liang 2019) reassigns labels at random per token type; selectivity = "
        "score - control. A probe that is accurate but not selective says little about the "
        "representation.")
    f = with_flags(frame)
    for (target, site, stack), g in f.groupby(["target", "site", "stack"], sort=False,
                                              dropna=False):
        where = f"{site}{' (' + _stack(stack) + ')' if _stack(stack) else ''}"
        page.heading(f"{target} at {where}")
        for column in ("score", "control", "selectivity"):
            name = g.metric.iloc[0] if column == "score" else column
            page.plotly(grid_figure(g, column, f"{target}: {name} at {where}"))
    page.heading("Every probe")
    page.table(f[[c for c in COLUMNS if c in f.columns]].round(4), max_rows=2000)
    if causal_results:
        page.heading("Causal check: removing the probe direction")
        page.paragraph(
            "During the forward pass the activation at the cell loses its component along "
            "the probe's direction (its row space for several classes), as in amnesic probing "
            "(Elazar et al. 2021); teacher-forced answer loss and accuracies are compared with "
            "the clean run. Each grey dot removes a random direction of the same rank at the "
            "same place; the difference target - controls has a 95% bootstrap interval over "
            "examples, p is the control-rank p-value.")
        for res in causal_results:
            m = res.meta
            page.heading(f"{m.get('target', '')}: {m['site']} L{m['layer']} "
                         f"{' '.join(m['positions'])}", level=3)
            page.table(res.summary.round(4))
            page.plotly(res.figure())
    return page

