"""The report of `classify_heads`: the terminal text, the CSV/JSON tables and the HTML page
(taxonomy, class counts, operations, summary and role maps, and every head of every layer for
a few examples, with attention rollout)."""

from __future__ import annotations

import json

import pandas as pd

from interp.attention.taxonomy import label_counts, operations_table

SHOW = ["kind", "layer", "head", "label", "main_score", "reads"]
VERIFY = ["check", "verify_effect", "verify_ci_lo", "verify_ci_hi", "verify_p"]
#: the verification as a person reads it (the table and the page): verdict, effect [CI] with
#: significant digits, p, the masses cut by target and controls, the rule, the reads-K test
VERIFY_SHOWN = ["check", "verify_effect", "verify_p", "mass t/c", "ratio", "control",
                "reads K", "reads_p"]
SIDE_NAMES = {"seq": "sequence", "src": "encoder input", "tgt": "decoder input"}


def flat_table(table: pd.DataFrame) -> pd.DataFrame:
    """The table as heads.csv holds it: lists of labels and roles joined with `;`."""
    flat = table.copy()
    flat["labels"] = flat["labels"].map(";".join)
    flat["vertical_roles"] = flat["vertical_roles"].map(";".join)
    return flat.drop(columns=["routes"], errors="ignore")


def records(table: pd.DataFrame) -> list[dict]:
    """The table as heads.json holds it: one record per head (routes as records)."""
    from interp.attention.routes import route_records

    out = table.copy()
    if "routes" in out:
        out["routes"] = out["routes"].map(lambda rs: route_records(rs[:10]))
    return json.loads(out.to_json(orient="records"))


def _controls(table: pd.DataFrame):
    return table.attrs.get("verify", {}).get("controls", "too few")


def check_column(table: pd.DataFrame) -> pd.Series:
    """`yes` where the intervention confirms the first label, `NOT CONFIRMED` where it does
    not, `untestable at N controls` where N controls cannot reach p <= 0.05, `-` where the
    label has no check."""
    n = _controls(table)
    word = table["verify_verdict"] if "verify_verdict" in table else \
        table["verified"].map(lambda v: None if v is None else
                              "confirmed" if v else "not confirmed")
    return word.map(lambda w: "-" if not isinstance(w, str) else "yes" if w == "confirmed"
                    else f"untestable at {n} controls" if w == "untestable"
                    else "NOT CONFIRMED")


def _reads_column(table: pd.DataFrame, n) -> pd.Series:
    from .routes import effect_text, verdict_text

    return table.apply(lambda r: "-" if not isinstance(r.get("verify_reads_verdict"), str)
                       else f"{verdict_text(r['verify_reads_verdict'], n)} "
                            f"{effect_text(r['verify_reads_effect'], r['verify_reads_ci_lo'], r['verify_reads_ci_hi'])}",  # noqa: E501
                       axis=1)


def shown(table: pd.DataFrame, digits: int | None = 3) -> pd.DataFrame:
    """The columns a person reads (with the verification's when there is one), rounded to
    `digits` (None: full precision and numbers only, as heads.csv holds them; else the
    effect as text with significant digits, the masses and the reads-K test)."""
    from .routes import effect_text

    cols = list(SHOW)
    if "verified" not in table:
        return table[cols] if digits is None else table[cols].round(digits)
    n = _controls(table)
    table = table.assign(check=check_column(table))
    if digits is None:
        extra = [c for c in table.columns if c.startswith("verify_") and c not in VERIFY]
        return table[cols + VERIFY + extra]
    t = table.copy()
    t["verify_effect"] = [effect_text(e, lo, hi) for e, lo, hi in
                          zip(t.verify_effect, t.verify_ci_lo, t.verify_ci_hi)]
    t["verify_p"] = t["verify_p"].round(3)
    if "verify_target_mass" in t:
        t["mass t/c"] = [("-" if pd.isna(a) else f"{a:.2f}/{b:.2f}") for a, b in
                         zip(t.verify_target_mass, t.verify_control_mass)]
    if "verify_mass_ratio" in t:
        t["ratio"] = t["verify_mass_ratio"].round(2)
        t["control"] = t["verify_control_rule"].map(lambda x: x if isinstance(x, str) else "-")
    if "verify_reads_verdict" in t:
        t["reads K"] = _reads_column(t, n)
        t["reads_p"] = t["verify_reads_p"].round(3)
    t["main_score"] = t["main_score"].round(digits)
    return t[cols + [c for c in VERIFY_SHOWN if c in t]]


def text(table: pd.DataFrame, fmt: str = "table") -> str:
    """What the command prints: the shown columns as a table (and the class counts), as CSV
    or as JSON."""
    if fmt == "table":
        v = table.attrs.get("verify")
        head = ""
        if v:
            head = (f"verification: {v['n']} held-out examples ({v['distinct']} distinct "
                    f"equations), {v['controls']} equal-mass controls per head\n")
            if v.get("note"):
                head += v["note"] + "\n"
        with pd.option_context("display.max_rows", 500, "display.width", 250,
                               "display.max_colwidth", 60):
            return (f"{head}{shown(table).to_string(index=False)}\n\n"
                    f"{label_counts(table).to_string()}\n")
    if fmt == "csv":
        return shown(table, None).to_csv(index=False)
    view = shown(table, None).assign(labels=table["labels"])
    return json.dumps(json.loads(view.to_json(orient="records")), indent=1) + "\n"


def _maps(page, stats: dict, role_maps: bool) -> None:
    """Per kind: the layers x input roles summary map and the query role x key role maps."""
    from interp.hooks import KINDS
    from interp.viz.figures import heatmap, role_map_figure

    for kind, st in stats.items():
        if KINDS[kind].key_side in ("seq", "src"):
            sm = st.summary_map()
            keep = [i for i in range(sm.shape[1]) if float(sm[:, i].sum()) > 0]
            page.heading(f"Summary map ({kind}): layers x input roles")
            page.plotly(heatmap(sm[:, keep], [st.key_names[i] for i in keep],
                                [f"L{l}" for l in range(sm.shape[0])],
                                f"{kind}: attention received per input role, mean over heads"))
        if role_maps and st.role_map is not None:
            rm = st.query_role_map()
            page.heading(f"Role-averaged maps ({kind}): query role x key role")
            for l in range(rm.shape[0]):
                page.plotly(role_map_figure(rm[l], st.query_names, st.key_names,
                                            f"{kind} layer {l}: query role x key role"))


def head_titles(table: pd.DataFrame) -> dict:
    """{(kind, layer, head): "L2H0: label | reads ... | verified +0.41 [0.30, 0.52] p=0.05"}."""
    out = {}
    for _, r in table.iterrows():
        lines = [f"L{r['layer']}H{r['head']}: {r['label']}"]
        if r.get("reads"):
            lines.append(str(r["reads"]).split("; ")[0])
        if "verified" in r and isinstance(r.get("verify_knockout"), str):
            from .routes import effect_text, verdict_text

            word = verdict_text(r.get("verify_verdict", "confirmed" if r["verified"] else
                                      "not confirmed"), _controls(table))
            lines.append(f"{word} {effect_text(r['verify_effect'], r['verify_ci_lo'], r['verify_ci_hi'])}"  # noqa: E501
                         f" p={r['verify_p']:.3f}")
        out[(r["kind"], int(r["layer"]), int(r["head"]))] = " | ".join(lines)
    return out


def _reads(page, table: pd.DataFrame, stats: dict) -> None:
    """Per kind: every head's query group x key group map, titled with its label, its top
    route and (with --verify) the intervention's verdict."""
    from interp.attention.taxonomy import route_maps
    from interp.viz.figures import route_maps_figure

    maps = route_maps(stats, grouping=None)
    if maps.empty:
        return
    titles = head_titles(table)
    page.heading("What each head reads: query group x key group")
    page.paragraph("Each panel is one head: the mean attention a query of each group (row) "
                   "pays to the keys of each group (column); rows sum to 1. A route is a "
                   "bright cell off the diagonal that the uniform head and the head's "
                   "offset-only model do not explain (see the reads column).")
    for kind, part in maps.groupby("kind", sort=False):
        heads = [h for h in titles if h[0] == kind]
        for i in range(0, len(heads), 16):
            page.plotly(route_maps_figure(part, heads[i:i + 16], titles))


def _flow_rows(roles: list[str], n: int = 6) -> list[int]:
    """The output positions whose attention flow the page shows: a solution's first field
    (e.g. D's digits) when there is one, else the last n positions."""
    picked = [i for i, r in enumerate(roles) if r.startswith("D_value")][:n]
    return picked or list(range(max(0, len(roles) - n), len(roles)))


def _examples(page, ac) -> None:
    """Every head of every layer for each example of the cache `ac`: circuitsvis (self
    attention), a plotly grid, and attention rollout."""
    from interp.attention.maps import attention_flow, rollout
    from interp.hooks import KINDS
    from interp.viz.figures import flow_figure, head_grid
    from interp.viz.views import heads_props, shown_tokens

    for kind in ac.kinds:
        P, keys, queries = ac.patterns[kind], ac.key(kind), ac.query(kind)
        same = KINDS[kind].query_side == KINDS[kind].key_side
        roll = rollout(P, ac.mask(kind)) if same else None
        q_title = SIDE_NAMES.get(KINDS[kind].query_side, KINDS[kind].query_side)
        k_title = SIDE_NAMES.get(KINDS[kind].key_side, KINDS[kind].key_side)
        for b in range(P.shape[1]):
            qlen, klen = int(queries.lengths[b]), int(keys.lengths[b])
            toks, q_toks = shown_tokens(keys, b), shown_tokens(queries, b)
            page.heading(f"Example {b} ({kind})", level=3)
            pat = P[:, b, :, :qlen, :klen]
            H = pat.shape[1]
            if same:
                for l in range(pat.shape[0]):
                    page.circuitsvis("AttentionHeads", **heads_props(pat[l], toks, kind, l),
                                     label=f"{kind} attention, layer {l}, heads 0-{H - 1} "
                                           f"(example {b})")
            page.plotly(head_grid(pat, toks, kind, q_toks, key_title=f"key ({k_title})",
                                  query_title=f"query ({q_title})"))
            if roll is not None and b == 0:
                # max-flow costs ~1 s per output position: a few rows, first example only
                rows = _flow_rows(keys.roles[b][:klen])
                flow = attention_flow(P[:, b:b + 1, :, :qlen, :klen],
                                      ac.mask(kind)[b:b + 1, :qlen, :klen], positions=rows)
                page.paragraph(f"Attention rollout and attention flow (Abnar & Zuidema 2020), "
                               f"{kind}, example {b}: flow (max-flow, a capacity up to 1) is "
                               f"computed for output positions {rows} only.")
                page.plotly(flow_figure(flow[0], roll[b, :qlen, :klen], toks,
                                        f"{kind}: attention rollout and attention flow, "
                                        f"example {b}"))
            elif roll is not None:
                from interp.viz.figures import heatmap

                labels = [f"{i}:{t}" for i, t in enumerate(toks)]
                page.plotly(heatmap(roll[b, :qlen, :klen], labels, labels,
                                    f"{kind} attention rollout (Abnar & Zuidema), example {b}"))


def build_report(title: str, table: pd.DataFrame, stats: dict, examples_cache,
                 role_maps: bool = True):
    """The report page (`interp.viz.page.Page`) of a head taxonomy: table, stats per kind
    (`HeadStats`) and the cached patterns of the examples drawn head by head."""
    from interp.viz.figures import label_counts_figure
    from interp.viz.page import Page

    page = Page(title)
    page.paragraph("Attention maps show where heads look, not what the answer depends on; "
                   "every score is given next to the score a uniform head would get, and "
                   "claims about what a position stores need an intervention (ablation or "
                   "patching), not a map.")
    page.heading("Taxonomy")
    v = table.attrs.get("verify")
    if v:
        page.paragraph(f"Verification (--verify): {v['n']} held-out examples ({v['distinct']} "
                       f"distinct equations), {v['controls']} controls per head that cut the "
                       "same clean attention mass in the same query rows (other keys of the "
                       "same head, else other heads of the layer: the control column; mass "
                       "t/c = mean mass cut per affected row by target / controls). reads K: "
                       "the head's values at K resampled from a same-layout donor, in the "
                       "query rows only, against the controls' entries resampled alike."
                       + (" " + v["note"] if v.get("note") else ""))
    page.table(shown(table))
    counts = label_counts(table)
    page.heading("Classes per layer")
    flat = counts.reset_index()
    flat.columns.name = None
    page.table(flat)
    page.plotly(label_counts_figure(counts))
    page.heading("Operations: the key roles that receive the most attention per layer")
    page.table(operations_table(stats))
    if role_maps:
        _reads(page, table, stats)
    _maps(page, stats, role_maps)
    _examples(page, examples_cache)
    return page
