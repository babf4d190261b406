"""The `probe` report: the terminal table, the JSON and the self-contained HTML page of a probe
grid (`ProbeResult.frame()` rows) and its causal checks (`CausalResult`s); pure: frames in,
text/dict/Page out (`probes` makes them; `interp` never imports `probes`).

A probe is *accurate but not selective* when its score beats the baseline by at least
`ACCURATE` (accuracy points, or R^2) while its selectivity (score - control task score,
Hewitt & Liang 2019) is below `SELECTIVE`: the probe could have learnt as much from the token
types alone, so its accuracy says little about what the representation holds. Where the
control task is undefined (every example has the same token at the position) the flag says
`accurate, no control`.

A regression row is *explained by the class* (`class_only`) when its R^2 within classes is
below `ACCURATE`: what the probe reads beyond the class means is next to nothing, so its R^2
is the class's (compare `class_r2`, the class-mean oracle). Each row also carries its 95%
interval (equations resampled), the distinct test equations, and the positional baseline
(the same probe on the layer-0 token+position features).
"""

from __future__ import annotations

import json

import pandas as pd

from interp.viz.figures import esc, esc_all
from interp.viz.page import Page

ACCURATE = 0.05    # score - baseline at least this: the probe reads something
SELECTIVE = 0.05   # selectivity below this: not more than the control task reads
COLUMNS = ["target", "site", "stack", "layer", "position", "metric", "n_test", "n_eq_test",
           "score", "score_lo", "score_hi", "baseline", "control", "selectivity", "positional",
           "within_r2", "class_r2", "within_r2_by_class", "flag", "class_only"]


def flag(score: float, baseline: float, selectivity: float) -> str:
    """'accurate, not selective', 'selective', 'accurate, no control' (selectivity NaN: the
    control is undefined there) or '' (see the module docstring)."""
    if not score - baseline >= ACCURATE:
        return ""
    if pd.isna(selectivity):
        return "accurate, no control"
    return "selective" if selectivity >= SELECTIVE else "accurate, not selective"


def class_only(within_r2) -> bool:
    """Whether a regression row's R^2 is the class's: within-class R^2 below `ACCURATE`."""
    return within_r2 is not None and not pd.isna(within_r2) and within_r2 < ACCURATE


def with_flags(frame: pd.DataFrame) -> pd.DataFrame:
    """`frame` with a `flag` column (see `flag`) and `class_only` (see `class_only`)."""
    out = frame.copy()
    out["flag"] = [flag(s, b, v) for s, b, v in
                   zip(out.score, out.baseline, out.selectivity)]
    within = out["within_r2"] if "within_r2" in out else [float("nan")] * len(out)
    out["class_only"] = [class_only(w) for w in within]
    return out


def _num(v, fmt: str, width: int) -> str:
    return f"{'-':>{width}}" if v is None or pd.isna(v) else format(v, fmt).rjust(width)


def _stack(v) -> str:
    return "" if v is None or pd.isna(v) else str(v)


def format_table(frame: pd.DataFrame, causal: pd.DataFrame | None, title: str,
                 notes=()) -> str:
    """The terminal table: per target and site, one line per (layer, position) with score
    and interval, distinct test equations, baseline, control, selectivity and positional
    baseline (regression: within-class and class-mean R^2), flagged; `notes` (e.g. targets
    that coincide) after the title; then one line per causal check."""
    f = with_flags(frame)
    lines = [title, *notes, "",
             (f"score: accuracy (classes) or R^2 (regression) on the test split, [95% interval "
              f"resampling equations]; eq: distinct test equations; control: the control "
              f"task's score (a random label per token and role, floored at its baseline; '-' "
              f"where every example has one token there); selectivity = score - control (at "
              f"most 1 - the control's baseline); positional: the same probe on the layer-0 "
              f"token+position embedding; '!' accurate (>= {ACCURATE:+.2f} over the baseline) "
              f"but not selective (< {SELECTIVE:.2f})")]
    for (target, site, stack), g in f.groupby(["target", "site", "stack"], sort=False,
                                              dropna=False):
        metric = g.metric.iloc[0]
        reg = metric == "r2"
        lines += ["", (f"{target} at {site}{' (' + _stack(stack) + ')' if _stack(stack) else ''}"
                      f" ({metric}):"),
                  (f"  {'layer':<6}{'position':<22}{'n_test':>7}{'eq':>5}{'score':>8}"
                   f"{'[95% interval]':>17}{'baseline':>9}{'control':>9}{'select.':>9}"
                   f"{'position.':>10}" + (f"{'within':>8}{'class':>7}" if reg else ""))]
        for _, r in g.iterrows():
            mark = {"accurate, not selective": "  !", "selective": "  *"}.get(r.flag, "")
            if r.class_only:
                mark += "  c"
            ci = ("-" if pd.isna(r.score_lo) else f"[{r.score_lo:+.3f}, {r.score_hi:+.3f}]")
            lines.append(f"  L{int(r.layer):<5}{str(r.position)[:21]:<22}{int(r.n_test):>7}"
                         f"{int(r.n_eq_test):>5}{r.score:>8.3f}{ci:>17}{r.baseline:>9.3f}"
                         f"{_num(r.control, '.3f', 9)}{_num(r.selectivity, '+.3f', 9)}"
                         f"{_num(r.positional, '.3f', 10)}"
                         + (f"{_num(r.within_r2, '+.3f', 8)}{_num(r.class_r2, '.3f', 7)}"
                            if reg else "") + mark)
        sel = g.dropna(subset=["selectivity"])
        if len(sel):
            best = sel.loc[sel.selectivity.idxmax()]
            lines.append(f"  most selective: L{int(best.layer)} {best.position} (score "
                         f"{best.score:.3f}, selectivity {best.selectivity:+.3f}); '*' "
                         "selective")
        if reg and g.class_only.any():
            lines.append(f"  c: explained by the class: {int(g.class_only.sum())} of {len(g)} "
                         f"rows read less than {ACCURATE:.2f} of R^2 within classes (within); "
                         f"predicting each row by its class's training mean gives class R^2 "
                         f"up to {g.class_r2.max():.3f}")
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


def format_causal(power: pd.DataFrame, results: list) -> str:
    """The erasure checks (`probes.causal.ErasureResult`s) for the terminal: the power check
    first (a fresh probe after erasure, at the erased positions and one step on), then per
    check the effect against random erasures and what it supports."""
    lines = ["", ("erasure, power check first: a fresh probe on the erased activations of "
                  "held-out equations (score vs its baseline; 'ok' within the margin), at the "
                  "erased positions and one step on with the erasure in the forward pass; "
                  "'clean' the same probe without erasure")]
    for r in results:
        m = r.meta
        ranks = sorted(set(m["rank"].values()))
        lines += ["", (f"{m['target']} at {m['site']} L{m['layer']} "
                       f"{' '.join(m['positions'])}: {m['method']}, rank "
                       f"{'/'.join(map(str, ranks))} per position, margin {m['margin']}"),
                  f"  {'where':<28}{'position':<12}{'score':>8}{'baseline':>9}{'clean':>8}"
                  f"{'':>5}{'n_test':>8}{'equations':>10}"]
        p = r.power
        clean = {row.position: row.score for row in p[p["where"] == "next, clean"].itertuples()}
        for row in p[p["where"] != "next, clean"].itertuples():
            c = clean.get(row.position, float("nan")) if row.where == "next" else float("nan")
            lines.append(f"  {row.where + ' (' + row.at + ')':<28}{row.position:<12}"
                         f"{row.score:>8.3f}{row.baseline:>9.3f}"
                         f"{(f'{c:.3f}' if c == c else '-'):>8}"
                         f"{'ok' if row.at_baseline else 'LEFT':>5}{int(row.n_test):>8}"
                         f"{int(row.distinct_test):>10}")
        test = "erasure" if m["reached"] else "interchange (same-layout donor)"
        lines.append(f"  {test} vs {m['controls']} random subspaces of the same rank on "
                     f"{m['n']} test examples ({m['distinct']} equations); mean displacement "
                     f"{m['moved_target']:.3f} vs controls {m['moved_controls']:.3f}"
                     + (f"; {m['dropped']} without a donor" if m["dropped"] else ""))
        shown = r.summary[r.summary.metric.isin(["answer_loss", "exact_match",
                                                 "field:D_value", "loss:D_value"])]
        for row in shown.itertuples():
            pct = row.metric in ("exact_match", "field:D_value")
            k = 100.0 if pct else 1.0
            diff = getattr(row, "difference", float("nan"))
            ci = (f"{k * diff:+.4f} [{k * row.ci_low:+.4f}, {k * row.ci_high:+.4f}]"
                  if diff == diff else "-")
            pv = getattr(row, "p_value", float("nan"))
            ctl = getattr(row, "control_damage_mean", float("nan"))
            lines.append(f"    {row.metric.replace('field:', 'field '):<16} damage "
                         f"{k * row.target_damage:+.4f} controls {k * ctl:+.4f} difference "
                         f"{ci}{'' if pv != pv else f'  p = {pv:.3f}'}"
                         f"{'  (points)' if pct else ''}")
        label = "verdict" if m.get("reached", True) else "interchange verdict"
        lines.append(f"  {label}: {m['verdict']}"
                     + ("" if m["conclusion"] == m["verdict"] else f" ({m['conclusion']})")
                     + f": {m['note']}")
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
    top = g[column].abs().max()
    hi = max(1.0, float(top)) if diverging and not pd.isna(top) else 1.0
    low = g[column].min()
    lo = -hi if diverging else min(0.0, 0.0 if pd.isna(low) else float(low))
    fig = go.Figure(go.Heatmap(
        z=vals, x=esc_all(positions), y=[f"L{l}" for l in layers], zmin=lo, zmax=hi,
        colorscale="RdBu" if diverging else "Blues", reversescale=diverging,
        colorbar={"nticks": 6, "thickness": 15},
        hovertemplate="%{y} %{x}: %{z}<extra></extra>"))
    fig.update_layout(title=esc(title), height=max(260, 40 * len(layers) + 200),
                      margin={"l": 60, "r": 20, "t": 50, "b": 140}, yaxis_autorange="reversed",
                      xaxis_type="category", yaxis_type="category")
    return fig


def build_page(frame: pd.DataFrame, causal_results: list, title: str, notes=()) -> Page:
    """The report page: per target and site the layer x position heatmaps of score, control,
    selectivity and the positional baseline, the table, then each causal check's table and
    figure."""
    page = Page(title)
    for note in notes:
        page.paragraph(note)
    page.paragraph(
        "Each cell is a linear probe fitted on the activation at one layer and one aligned "
        "position (in:<role>#<k> is the k-th input token of that role, out:<token>#<k> the "
        "k-th such token of the solution), on a train split, its regularisation chosen on a "
        "validation split, scored on a test split; equations never cross splits. The control "
        "task (Hewitt & Liang 2019) gives each token in its role a random label, the same at "
        "every occurrence; selectivity = score - control (no control where every example has "
        "the same token). A probe that is accurate but not selective says little about the "
        "representation. The positional baseline is the same probe on what the model has "
        "before any attention: the embedding of the current token plus its position. "
        "Intervals resample equations; for regression targets, 'within' is the R^2 within "
        "classes and 'class' the R^2 of predicting each row by its class's training mean; "
        "class_only marks rows the class alone explains.")
    f = with_flags(frame)
    for (target, site, stack), g in f.groupby(["target", "site", "stack"], sort=False,
                                              dropna=False):
        where = f"{site}{' (' + _stack(stack) + ')' if _stack(stack) else ''}"
        page.heading(f"{target} at {where}")
        for column in ("score", "control", "selectivity", "positional"):
            name = g.metric.iloc[0] if column == "score" else column
            if g[column].isna().all():        # no control where every example has one token
                page.paragraph(f"{target}: no {name} at these positions (every example has the "
                          "same token at each, so a control task has nothing to vary).")
                continue
            page.plotly(grid_figure(g, column, f"{target}: {name} at {where}"))
    page.heading("Every probe")
    page.table(f[[c for c in COLUMNS if c in f.columns]].round(4), max_rows=2000)
    if causal_results:
        page.heading("Causal check: erasing the target")
        page.paragraph(
            "At each checked layer the target is erased at the positions that hold it (LEACE, "
            "Belrose et al. 2023, or INLP iterated to baseline). Power check first: a fresh "
            "probe on the erased activations of held-out equations, at the erased positions "
            "and one step on with the erasure in the forward pass; a verdict is given only "
            "where both are within the margin of the baseline. Then teacher-forced loss and "
            "accuracies against random erasures of the same rank at the same positions "
            "(interval resampled by equation, control-rank p-value). Where the erasure "
            "fails, the erased subspace is swapped for a same-layout donor's instead "
            "(interchange intervention), against random subspaces of the same rank.")
        for res in causal_results:
            m = res.meta
            page.heading(f"{m.get('target', '')}: {m['site']} L{m['layer']} "
                         f"{' '.join(m['positions'])}: {m['verdict']} ({m['conclusion']})",
                         level=3)
            page.paragraph(m["note"])
            page.table(res.power.round(4))
            page.table(res.summary.round(4))
            page.plotly(res.figure())
    return page

