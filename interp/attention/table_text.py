"""The head table as the terminal shows it, and as --format csv / json print it.

`text(table)` fits the heads to the terminal's width (`interp.viz.termtable.fit`: `reads` is
cut first, then columns are left out from the right and named; `wide=True` prints full rows),
then the class counts per layer and a legend of the numbers (`interp.attention.readout
.legend`). Under --verify the table gains check, effect, ci_lo, ci_hi and p (effects printed
with `interp.viz.termtable.signed`, so a small effect keeps its significant digits) and
unchecked heads show '-'.
"""

from __future__ import annotations


def _check_word(verdict) -> str:
    return ("-" if not isinstance(verdict, str) else "yes" if verdict == "confirmed"
            else "untestable" if verdict == "untestable" else "no")


def terminal_frame(table):
    """The columns the terminal shows: [kind], head, label, [check, effect, ci_lo, ci_hi,
    p], score, stability, reads, [reads K, mass t/c, control]. Effects stay numbers (printed
    with `interp.viz.termtable.signed`: small ones keep their significant digits), unchecked
    heads show '-'."""
    import pandas as pd

    t = pd.DataFrame(index=table.index)
    if table["kind"].nunique() > 1:
        t["kind"] = table["kind"]
    t["head"] = [f"L{int(l)}H{int(h)}" for l, h in zip(table["layer"], table["head"])]
    t["label"] = table["label"]
    verify = "verify_effect" in table
    if verify:
        verdict = table["verify_verdict"] if "verify_verdict" in table else table[
            "verified"].map(lambda v: None if v is None else "confirmed" if v else "no")
        t["check"] = verdict.map(_check_word)
        for c in ("effect", "ci_lo", "ci_hi", "p"):
            t[c] = table[f"verify_{c}"].astype(float)
    t["score"] = table["main_score"].astype(float)
    if "stability" in table:
        t["stability"] = table["stability"].astype(float)
    t["reads"] = table["reads"].fillna("")
    if verify and "verify_reads_verdict" in table:
        t["reads K"] = table["verify_reads_verdict"].map(_check_word)
    if "verify_target_mass" in table:
        t["mass t/c"] = ["-" if pd.isna(a) else f"{a:.2f}/{b:.2f}" for a, b in
                         zip(table["verify_target_mass"], table["verify_control_mass"])]
    if "verify_control_rule" in table:
        t["control"] = table["verify_control_rule"].map(lambda x: x if isinstance(x, str)
                                                        else "-")
    return t.reset_index(drop=True)


def text(table, fmt: str = "table", wide: bool = False, width: int | None = None) -> str:
    """What the command prints. "table": the heads fitted to the terminal's width
    (`interp.viz.termtable.fit`: `reads` cut first, then columns left out from the right and
    named; `wide`: full rows), the class counts and a legend of the numbers; "csv" / "json":
    every column the report's tables hold plus `score_kind` and `stability`, in full."""
    import json
    import textwrap

    from interp.attention.taxonomy import label_counts, legend
    from interp.viz.reports import classify as report
    from interp.viz.termtable import fit, signed, width_now

    if fmt != "table":
        view = report.shown(table, None).copy()
        for c, after in (("score_kind", 0), ("stability", 1)):
            if c in table and c not in view:
                at = list(view.columns).index("main_score") + after if "main_score" in view \
                    else len(view.columns)
                view.insert(at, c, table[c].values)
        if fmt == "csv":
            return view.to_csv(index=False)
        view = view.assign(labels=table["labels"].values)
        return json.dumps(json.loads(view.to_json(orient="records")), indent=1) + "\n"
    limit = None if wide else (width or width_now())

    def wrap(line: str) -> list[str]:
        return textwrap.wrap(line, limit, subsequent_indent="  ") if limit else [line]

    lines = []
    v = table.attrs.get("verify")
    if v:
        lines += wrap(f"verification: {v['n']} held-out examples ({v['distinct']} distinct "
                      f"equations), {v['controls']} equal-mass controls per head")
        if v.get("note"):
            lines += wrap(v["note"])
    frame = terminal_frame(table)
    # labels are cut last: text columns are cut down to the longest label (at most half the
    # width) before columns are left out
    keep = max([12, *map(len, frame["label"])])
    keep = min(keep, max(12, (limit or keep) // 2))
    effect = lambda x: signed(x, 3)  # noqa: E731
    lines.append(fit(frame, width=limit, wide=wide, min_text=keep,
                     formats={"score": ".3f", "stability": ".2f", "p": ".3f",
                              "effect": effect, "ci_lo": effect, "ci_hi": effect}))
    lines.append("")
    lines.append(fit(label_counts(table).reset_index(), width=limit, wide=wide))
    lines.append("")
    notes = legend(table)
    if "stability" not in table.attrs:
        notes = [n for n in notes if not n.startswith("stability")]
    if v:
        notes.append("check: the first label's knockout against equal-mass random knockouts "
                     "(yes: ci_lo > 0 and p <= 0.05; '-': no check for this label); effect "
                     "and its 95% interval ci_lo..ci_hi in the measure's units")
    for n in notes:
        lines += wrap(n)
    return "\n".join(lines) + "\n"


__all__ = ["terminal_frame", "text"]
