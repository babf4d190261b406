"""The route knockout report (`ablate --route`): the terminal table, the JSON and the HTML
page of a `RouteResult`, and its figure (pure: a result in, text/dict/Page/figure out)."""

from __future__ import annotations

import json
import math

import pandas as pd

from interp.viz.figures import ARROW, esc, esc_all
from interp.viz.page import Page
from interp.viz.reports import rounded
from interp.viz.termtable import decimals, interval  # noqa: F401 (decimals: used by reports)

COLUMNS = ["knockout", "measure", "clean", "target", "control", "effect", "ci_lo", "ci_hi", "p",
           "verdict", "target_mass", "control_mass", "mass_ratio", "control_rule", "other_heads",
           "unmatched"]


def effect_text(effect: float, lo: float, hi: float) -> str:
    """"+0.346 [+0.310, +0.384]"; small effects with significant digits ("+0.00031
    [+0.00012, +0.00054]"); "-" when there is no effect."""
    if effect is None or math.isnan(effect):
        return "-"
    return interval(effect, *(float("nan") if x is None else x for x in (lo, hi)))


def verdict_text(word, n_controls: int) -> str:
    """The printed verdict: "confirmed", "NOT confirmed" or "untestable at N controls"."""
    if word is None or (isinstance(word, float) and math.isnan(word)):
        return "-"
    if word == "untestable":
        return f"untestable at {n_controls} controls"
    return "confirmed" if word == "confirmed" else "NOT confirmed"


def _label(spec: str) -> str:
    return esc(spec.replace("->", ARROW))


#: one colour per knockout, the same in the legend and in every panel (plotly's default
#: qualitative palette, then Dark24's, then grey levels: never a colour twice within 34)
PALETTE = ("#636efa", "#EF553B", "#00cc96", "#ab63fa", "#FFA15A", "#19d3f3", "#FF6692",
           "#B6E880", "#FF97FF", "#FECB52", "#2E91E5", "#E15F99", "#1CA71C", "#FB0D0D",
           "#DA16E3", "#222A2A", "#B68100", "#750D86", "#EB663B", "#511CFB", "#00A08B",
           "#FB00D1", "#FC0080", "#B2828D", "#6C7C32", "#778AAE", "#862A16", "#A777F1",
           "#620042", "#1616A7", "#DA60CA", "#6C4516", "#0D2A63", "#AF0038")


def colour(i: int) -> str:
    """The colour of the i-th knockout (`PALETTE`, then distinct greys)."""
    if i < len(PALETTE):
        return PALETTE[i]
    g = 40 + (i - len(PALETTE)) * 37 % 170
    return f"rgb({g}, {g}, {g})"


def route_figure(summary: pd.DataFrame):
    """Effect (target damage - control damage) per measure with its 95% interval, one trace
    per knockout and panel; loss measures on the left, accuracies (points) on the right.
    Each knockout has one colour (`colour`), set on every trace of it (markers and error
    bars), so a panel's points are the legend's colour."""
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, column_widths=[0.4, 0.6],
                        subplot_titles=("answer loss (up)", "accuracies (points lost)"))
    loss = summary.measure.str.startswith("loss:") | (summary.measure == "answer_loss")
    for i, (spec, part) in enumerate(summary.groupby("knockout", sort=False)):
        first = True
        for col, sel in ((1, loss[part.index]), (2, ~loss[part.index])):
            p = part[sel]
            if not len(p):
                continue
            scale = 1.0 if col == 1 else 100.0
            fig.add_scatter(x=esc_all(p.measure), y=(p.effect * scale).round(4).tolist(),
                            error_y=dict(type="data", symmetric=False,
                                         array=((p.ci_hi - p.effect) * scale).round(4).tolist(),
                                         arrayminus=((p.effect - p.ci_lo) * scale).round(4)
                                         .tolist(), color=colour(i)),
                            marker=dict(color=colour(i), size=9), mode="markers",
                            name=_label(spec), legendgroup=_label(spec), showlegend=first,
                            row=1, col=col)
            first = False
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


LEGEND = ("effect = damage of the knockout - mean damage of the equal-mass controls (loss "
          "up, accuracies down), lo/hi its 95% interval; rows: the main measures, the query "
          "field's loss and every measure with lo above 0 and p <= 0.05 (all measures: "
          "routes.csv); mass_t/mass_c = clean attention cut per affected row by the target / "
          "the controls")


def findings(res) -> list[str]:
    """The verdict sentences, first on the terminal and on the page: how many knockouts the
    equal-mass controls confirm, then per knockout its verdict with the answer loss effect
    [95% CI], p, and the masses cut; with reads, the value path patch's verdict per knockout."""
    from interp.viz.termtable import interval

    s = res.summary
    n_controls = int(res.meta.get("controls", 0))
    per = []
    words = []
    for spec, part in s.groupby("knockout", sort=False):
        r = part.set_index("measure").loc["answer_loss"]
        word = verdict_text(r.get("verdict"), n_controls)
        words.append(word)
        un = r.get("unmatched", float("nan"))
        why = (f"; {100 * un:.1f}% of control rows outside [0.8, 1.25] of the target's mass: "
               "neither the head's other keys nor the other heads could match there"
               if isinstance(un, float) and un > 0 else "")
        per.append(f"  {spec}: {word} against equal-mass controls (answer loss effect "
                   f"{interval(r.effect, r.ci_lo, r.ci_hi)}, p = {r.p:.3f}; mass "
                   f"{r.target_mass:.2f} target / {r.control_mass:.2f} controls, ratio "
                   f"{r.get('mass_ratio', float('nan')):.2f}, {r.get('control_rule', '?')}"
                   f"{why})")
    lines = [f"route knockout: {words.count('confirmed')} of {len(words)} "
             f"route{'s' * (len(words) != 1)} confirmed against {n_controls} equal-mass "
             "controls (answer loss)"] + per
    rd = getattr(res, "reads", None)
    if rd is not None and len(rd):
        lines.append("reads K (the head's values at K from a same-layout donor, in the "
                     "query rows only; controls resample the equal-mass controls' entries):")
        for spec, part in rd.groupby("knockout", sort=False):
            r = part.set_index("measure").loc["answer_loss"]
            if int(r.donors) == 0:
                lines.append(f"  {spec}: no test (no same-layout donor differs at K: its "
                             "keys hold literals only)")
                continue
            lines.append(f"  {spec}: {verdict_text(r.verdict, n_controls)} (answer loss "
                         f"effect {interval(r.effect, r.ci_lo, r.ci_hi)}, p = {r.p:.3f}, "
                         f"{int(r.donors)} examples with a donor)")
    return lines


def table(res) -> pd.DataFrame:
    """The terminal's rows (`_shown`), most telling columns first (a narrow terminal leaves
    out those on the right): knockout, measure, effect, lo, hi, p, clean, target, control,
    mass_t, mass_c."""
    s = res.summary
    rows = s[[bool(_shown(r)) for r in s.itertuples()]] if len(s) else s
    return pd.DataFrame({"knockout": rows.knockout.astype(str), "measure": rows.measure.astype(str),
                         "effect": rows.effect, "lo": rows.ci_lo, "hi": rows.ci_hi, "p": rows.p,
                         "clean": rows.clean, "target": rows.target, "control": rows.control,
                         "mass_t": rows.target_mass, "mass_c": rows.control_mass}
                        ).reset_index(drop=True)


def format_routes(res, title: str, width: int | None = None, wide: bool = False) -> str:
    """The terminal text: the title, the findings (`findings`), then the table (`table`)
    fitted to the terminal (`interp.viz.termtable.fit`; `wide`: every column), effects with
    significant digits where they are small (`termtable.signed`)."""
    import textwrap

    from interp.viz.termtable import fit, signed, width_now

    w = width if width is not None else width_now()
    lines = [title, "", *findings(res), ""]
    lines += textwrap.wrap(LEGEND, max(w, 40))
    f3 = lambda v: f"{v:.3f}"  # noqa: E731
    f2 = lambda v: f"{v:.2f}"  # noqa: E731
    t = table(res)
    text = fit(t.drop(columns="knockout"), width=w - 2, wide=wide, formats={
        "effect": signed, "lo": signed, "hi": signed, "p": f3, "clean": f3, "target": f3,
        "control": f3, "mass_t": f2, "mass_c": f2}).split("\n")
    lines.append("  " + text[0])                  # the header, then each knockout's rows
    for i, spec in enumerate(t.knockout):         # under its name, whole
        if i == 0 or spec != t.knockout.iloc[i - 1]:
            lines.append(spec)
        lines.append("  " + text[1 + i])
    lines += text[1 + len(t):]                    # the columns left out, if any
    if res.meta.get("note"):
        lines += [""] + textwrap.wrap(res.meta["note"], max(w, 40))
    return "\n".join(lines)


def to_json(res) -> dict:
    """The machine-readable result: meta and summary."""
    out = {"meta": res.meta, "summary": json.loads(res.summary.to_json(orient="records"))}
    rd = getattr(res, "reads", None)
    if rd is not None:
        out["reads"] = json.loads(rd.to_json(orient="records"))
    return out


SECTIONS = ["Effects beyond the controls", "Reads K", "Details"]
METHOD = ("Each knockout cuts, in one head, the attention from the selected queries to the "
          "selected keys and renormalises those rows. Each control cuts the SAME clean "
          "attention mass in the same query rows: other keys of the same head where they hold "
          "it, else entries of the other heads of the layer (control_rule; target_mass and "
          "control_mass are the mean mass cut per row, mass_ratio their ratio). The effect is "
          "the knockout's damage minus the controls' mean damage per example, with a 95% "
          "bootstrap interval over examples; p is the control-rank p-value; verdict is "
          "'untestable' when the controls cannot reach p <= 0.05.")


def build_page(res, title: str) -> Page:
    """The report page: the findings (the terminal's verdict sentences), a table of
    contents, the effects figure (one colour per knockout in every panel) and the terminal's
    rows, the reads-K test, and folded away every measure and how it is measured."""
    page = Page(title)
    page.findings(findings(res))
    rd = getattr(res, "reads", None)
    has_reads = rd is not None and len(rd)
    page.toc([t for t in SECTIONS if has_reads or t != "Reads K"])
    page.section(SECTIONS[0])
    page.paragraph("Each knockout's effect with its 95% interval: the answer loss on the "
                   "left, accuracies (points) on the right; one colour per knockout, the "
                   "legend's, in both panels. The table holds the terminal's rows.")
    page.plotly(route_figure(res.summary))
    page.table(rounded(table(res)))
    if has_reads:
        page.section(SECTIONS[1])
        page.paragraph("In the knockout's head and query rows only, the values at the key "
                       "positions come from a donor example of the same layout whose tokens "
                       "there differ; the controls resample the entries of the equal-mass "
                       "controls. donors: the examples that had one.")
        page.table(rounded(rd[[c for c in COLUMNS + ["donors"] if c in rd.columns]]))
    page.section(SECTIONS[2])
    if res.meta.get("note"):
        page.paragraph(res.meta["note"])
    sub = Page("")
    sub.table(rounded(res.summary[[c for c in COLUMNS if c in res.summary.columns]]))
    page.details(f"Every measure of every knockout ({len(res.summary)} rows, routes.csv)", sub)
    page.details("How it is measured", [Page("").paragraph(METHOD).parts[0]])
    return page
