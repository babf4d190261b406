"""The route knockout report (`ablate --route`): the terminal table, the JSON and the HTML
page of a `RouteResult`, and its figure (pure: a result in, text/dict/Page/figure out)."""

from __future__ import annotations

import json
import math

import pandas as pd

from interp.viz.figures import ARROW, esc, esc_all
from interp.viz.page import Page
from interp.viz.reports import rounded

COLUMNS = ["knockout", "measure", "clean", "target", "control", "effect", "ci_lo", "ci_hi", "p",
           "verdict", "target_mass", "control_mass", "mass_ratio", "control_rule", "other_heads",
           "unmatched"]


def decimals(*values) -> int:
    """Decimals that show the largest of `values` with at least two significant digits
    (3 at least): 0.35 -> 3, 0.0031 -> 4, 0.00054 -> 5, so that a small effect never
    reads as a zero."""
    m = max((abs(v) for v in values if v is not None and not math.isnan(v)), default=0.0)
    if m == 0 or m >= 0.01:
        return 3
    return min(12, 1 - math.floor(math.log10(m)))


def effect_text(effect: float, lo: float, hi: float) -> str:
    """"+0.346 [+0.310, +0.384]"; small effects with significant digits ("+0.00031
    [+0.00012, +0.00054]"); "-" when there is no effect."""
    if effect is None or math.isnan(effect):
        return "-"
    d = decimals(effect, lo, hi)
    f = lambda x: "nan" if x is None or math.isnan(x) else f"{x:+.{d}f}"  # noqa: E731
    return f"{f(effect)} [{f(lo)}, {f(hi)}]"


def verdict_text(word, n_controls: int) -> str:
    """The printed verdict: "confirmed", "NOT confirmed" or "untestable at N controls"."""
    if word is None or (isinstance(word, float) and math.isnan(word)):
        return "-"
    if word == "untestable":
        return f"untestable at {n_controls} controls"
    return "confirmed" if word == "confirmed" else "NOT confirmed"


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
    fig.update_layout(height=440, title="Route knockout: damage beyond equal-mass controls")
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
    measure damaged beyond the controls (the CSV has them all), the masses the target and
    its equal-mass controls cut and the rule the controls took; a verdict per knockout
    ("untestable at N controls" when N controls cannot reach p <= 0.05), and with reads the
    value path patch."""
    s = res.summary
    n_controls = int(res.meta.get("controls", 0))
    lines = [title, "", "effect = damage of the knockout - mean damage of the equal-mass "
             "controls (loss up, accuracies down); the main measures, the query field's loss "
             "and every measure with CI above 0 and p <= 0.05 (all measures: routes.csv); "
             "mass t/c = clean attention cut per affected row by target / controls",
             f"  {'knockout':<28}{'measure':<22}{'clean':>8}{'target':>9}{'control':>9}"
             f"{'effect [95% CI]':>34}{'p':>7}{'mass t/c':>12}"]
    for _, r in s.iterrows():
        if not _shown(r):
            continue
        lines.append(f"  {r.knockout:<28}{r.measure:<22}{r.clean:>8.3f}{r.target:>9.3f}"
                     f"{r.control:>9.3f}{effect_text(r.effect, r.ci_lo, r.ci_hi):>34}"
                     f"{r.p:>7.3f}{f'{r.target_mass:.2f}/{r.control_mass:.2f}':>12}")
    lines.append("")
    for spec, part in s.groupby("knockout", sort=False):
        r = part.set_index("measure").loc["answer_loss"]
        word = verdict_text(r.get("verdict"), n_controls)
        un = r.get("unmatched", float("nan"))
        why = (f"; {100 * un:.1f}% of control rows outside [0.8, 1.25] of the target's mass: "
               "neither the head's other keys nor the other heads could match there"
               if isinstance(un, float) and un > 0 else "")
        lines.append(f"  {spec}: {word} against equal-mass controls (answer loss effect "
                     f"{effect_text(r.effect, r.ci_lo, r.ci_hi)}, p = {r.p:.3f}; mass "
                     f"{r.target_mass:.2f} target / {r.control_mass:.2f} controls, ratio "
                     f"{r.get('mass_ratio', float('nan')):.2f}, {r.get('control_rule', '?')}"
                     f"{why})")
    rd = getattr(res, "reads", None)
    if rd is not None and len(rd):
        lines += ["", "reads K (the head's values at K from a same-layout donor, in the "
                  "query rows only; controls resample the equal-mass controls' entries):"]
        for spec, part in rd.groupby("knockout", sort=False):
            r = part.set_index("measure").loc["answer_loss"]
            if int(r.donors) == 0:
                lines.append(f"  {spec}: no test (no same-layout donor differs at K: its "
                             "keys hold literals only)")
                continue
            lines.append(f"  {spec}: {verdict_text(r.verdict, n_controls)} (answer loss "
                         f"effect {effect_text(r.effect, r.ci_lo, r.ci_hi)}, p = {r.p:.3f}, "
                         f"{int(r.donors)} examples with a donor)")
    if res.meta.get("note"):
        lines += ["", res.meta["note"]]
    return "\n".join(lines)


def to_json(res) -> dict:
    """The machine-readable result: meta and summary."""
    out = {"meta": res.meta, "summary": json.loads(res.summary.to_json(orient="records"))}
    rd = getattr(res, "reads", None)
    if rd is not None:
        out["reads"] = json.loads(rd.to_json(orient="records"))
    return out


def build_page(res, title: str) -> Page:
    """The report page: the effects table and figure."""
    page = Page(title)
    page.paragraph(
        "Each knockout cuts, in one head, the attention from the selected queries to the "
        "selected keys and renormalises those rows. Each control cuts the SAME clean "
        "attention mass in the same query rows: other keys of the same head where they hold "
        "it, else entries of the other heads of the layer (control_rule; target_mass and "
        "control_mass are the mean mass cut per row, mass_ratio their ratio). The effect is "
        "the knockout's damage minus the controls' mean damage per example, with a 95% "
        "bootstrap interval over examples; p is the control-rank p-value; verdict is "
        "'untestable' when the controls cannot reach p <= 0.05.")
    if res.meta.get("note"):
        page.paragraph(res.meta["note"])
    page.table(rounded(res.summary[[c for c in COLUMNS if c in res.summary.columns]]))
    page.plotly(route_figure(res.summary))
    rd = getattr(res, "reads", None)
    if rd is not None and len(rd):
        page.heading("Reads K: the head's values at K resampled from a same-layout donor")
        page.paragraph("In the knockout's head and query rows only, the values at the key "
                       "positions come from a donor example of the same layout whose tokens "
                       "there differ; the controls resample the entries of the equal-mass "
                       "controls. donors: the examples that had one.")
        page.table(rounded(rd[[c for c in COLUMNS + ["donors"] if c in rd.columns]]))
    return page
