"""The route knockout report (`ablate --route`): the terminal table, the JSON and the HTML
page of a `RouteResult`, and its figure (pure: a result in, text/dict/Page/figure out)."""

from __future__ import annotations

import json

import pandas as pd

from interp.viz.figures import ARROW, esc, esc_all
from interp.viz.page import Page

COLUMNS = ["knockout", "measure", "clean", "target", "control", "effect", "ci_lo", "ci_hi", "p",
           "target_mass", "control_mass"]


def _label(spec: str) -> str:
    return esc(spec.replace("->", ARROW))


def route_figure(summary: pd.DataFrame):
    """Effect (target damage - control damage) per measure with its 95% interval, one trace
    per knockout; loss measures on the left, accuracies (points) on the right."""
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, column_widths=[0.4, 0.6],
                        subplot_titles=("answer loss (up)", "accuracies (points lost)"))
    loss = summary.measure.str.startswith("loss:") | (summary.measure == "answer_loss")
    for spec, part in summary.groupby("knockout", sort=False):
        for col, sel in ((1, loss[part.index]), (2, ~loss[part.index])):
            p = part[sel]
            if not len(p):
                continue
            scale = 1.0 if col == 1 else 100.0
            fig.add_scatter(x=esc_all(p.measure), y=(p.effect * scale).round(4).tolist(),
                            error_y=dict(type="data", symmetric=False,
                                         array=((p.ci_hi - p.effect) * scale).round(4).tolist(),
                                         arrayminus=((p.effect - p.ci_lo) * scale).round(4)
                                         .tolist()),
                            mode="markers", name=_label(spec), legendgroup=_label(spec),
                            showlegend=col == 1, row=1, col=col)
    fig.add_hline(y=0, line_color="grey", line_width=1)
    fig.update_xaxes(type="category")
    fig.update_layout(height=440, title="Route knockout: damage beyond mass-matched controls")
    return fig


MAIN = ("answer_loss", "exact_match", "decode:exact")


def _shown(r) -> bool:
    """The terminal's rows: the main measures, the loss of the route's query fields, and
    every measure the knockout damages beyond the controls (all rows go to routes.csv)."""
    queries = r.knockout.split(":", 1)[1].split("->")[0].split(",") if "->" in r.knockout \
        else []
    return (r.measure in MAIN or r.measure in [f"loss:{q}" for q in queries]
            or (r.ci_lo > 0 and r.p <= 0.05))


def format_routes(res, title: str) -> str:
    """The terminal table: per knockout its main measures, its query fields' loss and every
    measure damaged beyond the controls (the CSV has them all)."""
    s = res.summary
    lines = [title, "", "effect = damage of the knockout - mean damage of the mass-matched "
             "controls (loss up, accuracies down); the main measures, the query field's loss "
             "and every measure with CI above 0 and p <= 0.05 (all measures: routes.csv)",
             f"  {'knockout':<28}{'measure':<22}{'clean':>8}{'target':>9}{'control':>9}"
             f"{'effect [95% CI]':>30}{'p':>7}{'mass t/c':>14}"]
    for _, r in s.iterrows():
        if not _shown(r):
            continue
        ci = f"{r.effect:+.3f} [{r.ci_lo:+.3f}, {r.ci_hi:+.3f}]"
        lines.append(f"  {r.knockout:<28}{r.measure:<22}{r.clean:>8.3f}{r.target:>9.3f}"
                     f"{r.control:>9.3f}{ci:>30}{r.p:>7.3f}"
                     f"{f'{r.target_mass:.2f}/{r.control_mass:.2f}':>14}")
    lines.append("")
    for spec, part in s.groupby("knockout", sort=False):
        r = part.set_index("measure").loc["answer_loss"]
        more = r.ci_lo > 0 and r.p <= 0.05
        lines.append(f"  {spec}: the route matters {'MORE' if more else 'NOT more'} than "
                     f"mass-matched controls (answer loss effect {r.effect:+.3f}, 95% CI "
                     f"[{r.ci_lo:+.3f}, {r.ci_hi:+.3f}], p = {r.p:.3f})")
    return "\n".join(lines)


def to_json(res) -> dict:
    """The machine-readable result: meta and summary."""
    return {"meta": res.meta, "summary": json.loads(res.summary.to_json(orient="records"))}


def build_page(res, title: str) -> Page:
    """The report page: the effects table and figure."""
    page = Page(title)
    page.paragraph(
        "Each knockout cuts, in one head, the attention from the selected queries to the "
        "selected keys and renormalises those rows. Each control cuts as many other keys of "
        "the same query rows, drawn to match the target's clean attention mass (target_mass "
        "and control_mass are the mean mass cut per row). The effect is the knockout's damage "
        "minus the controls' mean damage per example, with a 95% bootstrap interval over "
        "examples; p is the control-rank p-value.")
    page.table(res.summary[[c for c in COLUMNS if c in res.summary.columns]].round(4))
    page.plotly(route_figure(res.summary))
    return page
