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

A cell is *reliable* when its test split holds at least `MIN_TEST` distinct equations
(`n_eq_test`: examples, not rows). Cells under it (a sign or a third digit that few
equations have) score wildly; they are masked on every map (grey, their count written in),
never set a colour range, and are never the "most selective" or best cell; the probe
command's causal check skips them too (`probes.scores.reliable_rows`). R^2 is drawn clipped
to `R2_RANGE` (the hover gives the value). Score maps mark the baseline: the colour bar's
tick labelled "baseline" is the most common majority-class (accuracy) or mean (R^2) baseline
of the reliable cells, and each cell's text is its score minus its own baseline.
"""

from __future__ import annotations

import json

import pandas as pd

from interp.viz.page import Page
from interp.viz.reports.probe_maps import MAPS, MIN_TEST, R2_RANGE, grid_figure, reliable

ACCURATE = 0.05    # score - baseline at least this: the probe reads something
SELECTIVE = 0.05   # selectivity below this: not more than the control task reads
COLUMNS = ["target", "site", "stack", "layer", "position", "metric", "n_test", "n_eq_test",
           "score", "score_lo", "score_hi", "baseline", "control", "selectivity", "positional",
           "within_r2", "class_r2", "within_r2_by_class", "flag", "class_only", "reliable"]


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
    """`frame` with a `flag` column (see `flag`), `class_only` (see `class_only`) and
    `reliable` (see `reliable`)."""
    out = frame.copy()
    out["flag"] = [flag(s, b, v) for s, b, v in
                   zip(out.score, out.baseline, out.selectivity)]
    within = out["within_r2"] if "within_r2" in out else [float("nan")] * len(out)
    out["class_only"] = [class_only(w) for w in within]
    out["reliable"] = reliable(out)
    return out


def _stack(v) -> str:
    return "" if v is None or pd.isna(v) else str(v)


def _groups(f: pd.DataFrame):
    """(target, site, stack, where, rows) per grid of the frame, in its order."""
    for (target, site, stack), g in f.groupby(["target", "site", "stack"], sort=False,
                                              dropna=False):
        yield target, site, stack, f"{site}{' (' + _stack(stack) + ')' if _stack(stack) else ''}", g


def best_cells(g: pd.DataFrame) -> tuple:
    """(most selective, highest over its baseline) among the reliable rows of one grid;
    None where there is none (no reliable row, or no control task at any of them)."""
    ok = g[reliable(g)]
    sel = ok.dropna(subset=["selectivity"])
    most = sel.loc[sel.selectivity.idxmax()] if len(sel) else None
    over = (ok.score - ok.baseline).dropna()
    top = ok.loc[over.idxmax()] if len(over) else None
    return most, top


def _cell(r) -> str:
    return f"L{int(r.layer)} {r.position}"


def _score(r) -> str:
    ci = "" if pd.isna(r.score_lo) else f" [{r.score_lo:.3f}, {r.score_hi:.3f}]"
    return f"{r.score:.3f}{ci}"


def findings(frame: pd.DataFrame, causal_results=()) -> list[str]:
    """The findings, first on the terminal and on the page: the cells left out (under
    `MIN_TEST` distinct test equations), per target and site the most selective reliable
    cell and the reliable cell highest over its baseline, then each causal check's verdict
    with its answer-loss difference [95% CI] and p."""
    from interp.viz.termtable import interval

    f = with_flags(frame)
    few = int((~f.reliable).sum())
    out = [f"probes: {few} of {len(f)} cells have fewer than {MIN_TEST} distinct test "
           "equations: masked on the maps, never chosen as best, never checked causally"]
    for target, _site, _stack, where, g in _groups(f):
        most, top = best_cells(g)
        head = f"{target} at {where} ({g.metric.iloc[0]})"
        if most is None:
            out.append(f"{head}: most selective reliable cell: none (no reliable cell has a "
                       "control task: every example has one token there)")
        else:
            out.append(f"{head}: most selective reliable cell {_cell(most)}: score "
                       f"{_score(most)}, selectivity {most.selectivity:+.3f} (control "
                       f"{most.control:.3f}), {int(most.n_eq_test)} test equations")
        if top is not None:
            pos = "" if pd.isna(top.positional) else f", positional {top.positional:.3f}"
            out.append(f"  highest over its baseline: {_cell(top)}: {_score(top)} against "
                       f"baseline {top.baseline:.3f}{pos}, {int(top.n_eq_test)} test equations")
    for r in causal_results:
        m = r.meta
        row = r.summary[r.summary.metric == "answer_loss"]
        eff = ""
        if len(row) and "difference" in row and row.difference.iloc[0] == row.difference.iloc[0]:
            x = row.iloc[0]
            eff = (f": answer loss difference {interval(x.difference, x.ci_low, x.ci_high)}, "
                   f"p = {x.p_value:.3f}")
        test = "erasure" if m.get("reached", True) else "interchange"
        out.append(f"causal check {m.get('target', '')} L{m['layer']} "
                   f"{' '.join(m['positions'])} ({test}): {m['verdict']}"
                   + ("" if m["conclusion"] == m["verdict"] else f" ({m['conclusion']})") + eff)
    return out


def _marks(r) -> str:
    """'*' selective, '!' accurate but not selective, 'c' the class alone, 'few' under
    `MIN_TEST` distinct test equations."""
    marks = [{"accurate, not selective": "!", "selective": "*"}.get(r.flag, ""),
             "c" if r.class_only else "", "" if r.reliable else "few"]
    return " ".join(m for m in marks if m)


def grid_table(g: pd.DataFrame) -> pd.DataFrame:
    """One grid's terminal rows, most telling columns first (a narrow terminal leaves out
    those on the right)."""
    reg = g.metric.iloc[0] == "r2"
    t = pd.DataFrame({"layer": [f"L{int(x)}" for x in g.layer], "position": g.position.astype(str),
                      "score": g.score, "lo": g.score_lo, "hi": g.score_hi,
                      "baseline": g.baseline, "select.": g.selectivity,
                      "mark": [_marks(r) for r in g.itertuples()],
                      "eq": g.n_eq_test.astype(int), "control": g.control,
                      "position.": g.positional, "n_test": g.n_test.astype(int)})
    if reg:
        t["within"] = g.within_r2.to_numpy()
        t["class"] = g.class_r2.to_numpy()
    return t.reset_index(drop=True)


LEGEND = ("score: accuracy (classes) or R^2 (regression) on the test split, lo/hi its 95% "
          "interval resampling equations; eq: distinct test equations (a cell under {m} is "
          "marked 'few' and never chosen); control: the control task's score (a random label "
          "per token and role, floored at its baseline; '-' where every example has one token "
          "there); select. = score - control; position.: the same probe on the layer-0 "
          "token+position embedding; mark: '*' selective, '!' accurate (>= {a:+.2f} over the "
          "baseline) but not selective (< {s:.2f}), 'c' explained by the class")


def format_table(frame: pd.DataFrame, causal: pd.DataFrame | None, title: str,
                 notes=(), causal_results=(), width: int | None = None,
                 wide: bool = False) -> str:
    """The terminal text: the title and `notes`, the findings (`findings`, with the causal
    checks' verdicts), then per target and site one row per (layer, position) fitted to the
    terminal (`interp.viz.termtable.fit`; `wide`: every column); then one line per causal
    check of `causal` (a frame of `CausalResult.frame()` rows)."""
    import textwrap

    from interp.viz.termtable import fit, width_now

    w = width if width is not None else width_now()
    f = with_flags(frame)
    lines = [title, *notes, "", *findings(frame, causal_results), ""]
    lines += textwrap.wrap(LEGEND.format(m=MIN_TEST, a=ACCURATE, s=SELECTIVE), max(w, 40))
    longest = max([len(str(p)) for p in f.position] + [12])
    for target, _site, _stack, where, g in _groups(f):
        reg = g.metric.iloc[0] == "r2"
        lines += ["", f"{target} at {where} ({g.metric.iloc[0]}):"]
        fmt = {c: ".3f" for c in ("score", "lo", "hi", "baseline", "control", "position.",
                                  "class")}
        fmt.update({"select.": "+.3f", "within": "+.3f"})
        lines.append(fit(grid_table(g), width=w, wide=wide, formats=fmt,
                         min_text=min(longest, 22)))
        if reg and g.class_only.any():
            lines += textwrap.wrap(
                f"c: explained by the class: {int(g.class_only.sum())} of {len(g)} rows read "
                f"less than {ACCURATE:.2f} of R^2 within classes (within); predicting each "
                f"row by its class's training mean gives class R^2 up to "
                f"{g.class_r2.max():.3f}", max(w, 40))
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


def format_causal(power: pd.DataFrame, results: list, width: int | None = None,
                  wide: bool = False) -> str:
    """The erasure checks (`probes.causal.ErasureResult`s) for the terminal: the power check
    first (a fresh probe after erasure, at the erased positions and one step on), then per
    check the effect against random erasures and what it supports; tables fitted to the
    terminal (`interp.viz.termtable.fit`; `wide`: every column)."""
    import textwrap

    from interp.viz.termtable import fit, signed, width_now

    w = width if width is not None else width_now()

    def wrap(text: str, indent: str = "") -> list[str]:
        return textwrap.wrap(text, max(w, 40), initial_indent=indent,
                             subsequent_indent=indent)

    def table(df: pd.DataFrame, fmt: dict) -> list[str]:
        return ["  " + x for x in fit(df, width=w - 2, wide=wide, formats=fmt).split("\n")]

    lines = [""] + wrap("erasure, power check first: a fresh probe on the erased activations "
                        "of held-out equations (score vs its baseline; 'ok' within the "
                        "margin), at the erased positions and one step on with the erasure in "
                        "the forward pass; 'clean' the same probe without erasure")
    for r in results:
        m = r.meta
        ranks = sorted(set(m["rank"].values()))
        lines += [""] + wrap(f"{m['target']} at {m['site']} L{m['layer']} "
                             f"{' '.join(m['positions'])}: {m['method']}, rank "
                             f"{'/'.join(map(str, ranks))} per position, margin {m['margin']}")
        p = r.power
        clean = {row.position: row.score for row in p[p["where"] == "next, clean"].itertuples()}
        rows = p[p["where"] != "next, clean"]
        lines += table(pd.DataFrame({
            "where": rows["where"].astype(str).to_numpy(),
            "position": rows.position.astype(str).to_numpy(), "score": rows.score.to_numpy(),
            "baseline": rows.baseline.to_numpy(),
            "clean": [clean.get(x.position, float("nan")) if x.where == "next" else float("nan")
                      for x in rows.itertuples()],
            "": ["ok" if x else "LEFT" for x in rows.at_baseline],
            "n_test": rows.n_test.astype(int).to_numpy(),
            "equations": rows.distinct_test.astype(int).to_numpy(),
            "at": rows["at"].astype(str).to_numpy()}),
            {c: ".3f" for c in ("score", "baseline", "clean")})
        test = "erasure" if m["reached"] else "interchange (same-layout donor)"
        lines += wrap(f"{test} vs {m['controls']} random subspaces of the same rank on "
                      f"{m['n']} test examples ({m['distinct']} equations); mean displacement "
                      f"{m['moved_target']:.3f} vs controls {m['moved_controls']:.3f}"
                      + (f"; {m['dropped']} without a donor" if m["dropped"] else "")
                      + "; accuracies in points", "  ")
        shown = r.summary[r.summary.metric.isin(["answer_loss", "exact_match",
                                                 "field:D_value", "loss:D_value"])]
        k = [100.0 if x in ("exact_match", "field:D_value") else 1.0 for x in shown.metric]

        def col(name):
            v = shown[name] if name in shown else pd.Series([float("nan")] * len(shown))
            return v.to_numpy(dtype=float) * k

        lines += table(pd.DataFrame({
            "metric": shown.metric.str.replace("field:", "field ", regex=False).to_numpy(),
            "damage": col("target_damage"), "controls": col("control_damage_mean"),
            "difference": col("difference"), "lo": col("ci_low"), "hi": col("ci_high"),
            "p": shown["p_value"].to_numpy(dtype=float) if "p_value" in shown else
            [float("nan")] * len(shown)}),
            {"damage": signed, "controls": signed, "difference": signed, "lo": signed,
             "hi": signed, "p": ".3f"})
        label = "verdict" if m.get("reached", True) else "interchange verdict"
        lines += wrap(f"{label}: {m['verdict']}"
                      + ("" if m["conclusion"] == m["verdict"] else f" ({m['conclusion']})")
                      + f": {m['note']}", "  ")
    return "\n".join(lines)


def to_json(frame: pd.DataFrame, causal: pd.DataFrame | None, meta: dict) -> dict:
    """The machine-readable result: meta, the probe grid (with flags), the causal checks."""
    out = {"meta": meta,
           "probes": json.loads(with_flags(frame).to_json(orient="records"))}
    out["causal"] = json.loads(causal.to_json(orient="records")) if causal is not None else []
    return out


SECTIONS_AFTER = ["Causal check: erasing the target", "Every probe", "How it is measured"]
METHOD = (
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
CAUSAL = (
    "At each checked layer the target is erased at the positions that hold it (LEACE, "
    "Belrose et al. 2023, or INLP iterated to baseline). Power check first: a fresh "
    "probe on the erased activations of held-out equations, at the erased positions "
    "and one step on with the erasure in the forward pass; a verdict is given only "
    "where both are within the margin of the baseline. Then teacher-forced loss and "
    "accuracies against random erasures of the same rank at the same positions "
    "(interval resampled by equation, control-rank p-value). Where the erasure "
    "fails, the erased subspace is swapped for a same-layout donor's instead "
    "(interchange intervention), against random subspaces of the same rank.")


def _sub(fill) -> Page:
    p = Page("")
    fill(p)
    return p


def build_page(frame: pd.DataFrame, causal_results: list, title: str, notes=()) -> Page:
    """The report page: the findings (the terminal's), a table of contents, per target and
    site the layer x position maps of score, selectivity, control and the positional
    baseline, each causal check (verdict, note, figure; its tables folded), every probe
    (folded) and how it is measured (folded)."""
    page = Page(title)
    page.findings(findings(frame, causal_results))
    f = with_flags(frame)
    grids = list(_groups(f))
    heads = [f"{target} at {where}" for target, _s, _t, where, _g in grids]
    page.toc(heads + SECTIONS_AFTER[0 if causal_results else 1:])
    for note in notes:
        page.paragraph(note)
    for head, (target, _site, _stack, where, g) in zip(heads, grids):
        page.section(head)
        page.paragraph(MAPS.format(m=MIN_TEST, r0=R2_RANGE[0], r1=R2_RANGE[1]))
        for column in ("score", "selectivity", "control", "positional"):
            name = g.metric.iloc[0] if column == "score" else column
            if g[column].isna().all():        # no control where every example has one token
                page.paragraph(f"{target}: no {name} at these positions (every example has the "
                               "same token at each, so a control task has nothing to vary).")
                continue
            page.plotly(grid_figure(g, column, f"{target}: {name} at {where}"))
    if causal_results:
        page.section(SECTIONS_AFTER[0])
        page.paragraph(CAUSAL)
        for res in causal_results:
            m = res.meta
            page.heading(f"{m.get('target', '')}: {m['site']} L{m['layer']} "
                         f"{' '.join(m['positions'])}: {m['verdict']} ({m['conclusion']})",
                         level=3)
            page.paragraph(m["note"])
            page.plotly(res.figure())
            page.details("Its power check and every measure",
                         _sub(lambda p, res=res: p.table(res.power.round(4))
                              .table(res.summary.round(4))))
    page.section(SECTIONS_AFTER[1])
    page.details(f"Every probe ({len(f)} cells, probes.csv)", _sub(
        lambda p: p.table(f[[c for c in COLUMNS if c in f.columns]].round(4), max_rows=2000)))
    page.section(SECTIONS_AFTER[2])
    page.details("The probes, the control task, the baselines", _sub(
        lambda p: p.paragraph(METHOD)))
    return page
