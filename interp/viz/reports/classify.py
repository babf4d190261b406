"""The report of `classify_heads`: the terminal text, the CSV/JSON tables and the HTML page.
Over 400 lines: the terminal text, the files and the page of one report share its tables and
are kept in one module.

The page leads with its findings (the label counts per attention kind and, with --verify, the
labels confirmed and not confirmed with effect and interval), then a table of contents, the
head table, the verification table, a legend of `main_score` and of the reads notation, class
counts, operations, the summary maps, and folded away each head's query group x key group
map, the role-averaged maps and the examples (circuitsvis for self attention, drawn when its
section opens; a plotly grid for cross attention, which circuitsvis does not draw). Groups and
roles are drawn in the order they occur in the equation, not alphabetically."""

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


# -- the page ---------------------------------------------------------------------------
#: a role or group whose name reads as a missing value: the task writes "nan" for a root that
#: does not exist (`x=nan;`, no real root), and its characters take the role `nan`
RENAME = {"nan": "nan (no root)"}
#: what `main_score` means for each first label, while the table has no `score_kind` column
SCORE_BY_LABEL = {
    "sharp_diagonal": "share of attention at the one offset named in detail (0-1)",
    "blurred_diagonal": "share of attention in the band around the diagonal (0-1)",
    "vertical": "share of attention on the vertical key roles (0-1)",
    "sparse_block": "share of attention inside the query's own segment (0-1)",
    "routed": "summed share of the routes the label names (0-1, per query of the group)",
    "broad": "entropy as a fraction of the uniform head's entropy (near 1)",
    "heterogeneous": "entropy of the attention in nats (not a share; compare with the "
                     "uniform head's entropy in detail)"}
NOTATION = ("Reads: `Q->K 0.42 (x4.6, x5.0 offset)` says that queries of group Q pay 0.42 of "
            "their attention, on average, to keys of group K; that is 4.6 times what the "
            "uniform head gives them (attention spread evenly over the keys each query can "
            "see) and 5.0 times what the head's offset-only model gives (a head that attends "
            "by query-key distance alone, with this head's own distance profile). A route "
            "needs both lifts: it reads K because of what K is, not where it stands. Cross "
            "attention has no offset-only model (no offset factor).")
SECTIONS = ["Heads", "Verification", "Score legend", "Classes per layer", "Operations",
            "What each head reads", "Summary maps", "Role-averaged maps", "Examples"]


def shown_name(name: str, rename: bool = True) -> str:
    """A group or role as a figure labels it (`nan` -> `nan (no root)`)."""
    return RENAME.get(name, name) if rename else name


def equation_order(sequences, names=()) -> list[str]:
    """Names in the order they occur: the first sequence's order of first occurrence; a name
    first met in a later sequence goes right after the latest-placed name met before it in
    that sequence (so `x1` of a two-root solution lands after `;` of the D statement); then
    `names` that no sequence holds, in their own order."""
    order: list[str] = []
    for seq in sequences:
        at = -1
        for g in seq:
            if g in order:
                at = max(at, order.index(g))
            else:
                order.insert(at + 1, g)
                at += 1
    return order + [n for n in dict.fromkeys(names) if n not in order]


def _side_sequences(ac, side: str, grouping: str | None, task=None) -> list[list[str]]:
    """The role (grouping None) or group sequences of one side of the cached examples, then
    (with `task`) those of 64 generated examples (every class of the task's mix)."""
    from interp.attention.groups import group_role

    g = (lambda r: r) if grouping is None else (lambda r: group_role(r, grouping))
    seqs = []
    if ac is not None and side in getattr(ac, "sides", {}):
        s = ac.sides[side]
        seqs = [[g(r) for r in roles[:int(n)]] for roles, n in zip(s.roles, s.lengths)]
    if task is not None:
        for e in task.generate(64, seed=0, unique=True):
            src, tgt = task.roles(e.src, e.tgt)
            seqs.append([g(r) for r in (src if side == "src" else tgt if side == "tgt"
                                        else [*src, *tgt])])
    return seqs


def orders(stats: dict, ac, task=None) -> dict:
    """{kind: {"groups": (query groups, key groups), "roles": (query roles, key roles)}} in
    equation order (`equation_order` over the cached examples and, with `task`, its
    generated ones)."""
    from interp.attention.routes import route_tables
    from interp.hooks import KINDS

    out = {}
    for kind, st in stats.items():
        q_side, k_side = KINDS[kind].query_side, KINDS[kind].key_side
        roles = (equation_order(_side_sequences(ac, q_side, None, task), st.query_names or ()),
                 equation_order(_side_sequences(ac, k_side, None, task), st.key_names))
        t = route_tables(st, st.grouping) if st.role_map is not None else None
        groups = ((), ()) if t is None else (
            equation_order(_side_sequences(ac, q_side, st.grouping, task), t.query_groups),
            equation_order(_side_sequences(ac, k_side, st.grouping, task), t.key_groups))
        out[kind] = {"groups": groups, "roles": roles}
    return out


def _reordered(names: list[str], order) -> list[int]:
    """The indices of `names` in `order` (names `order` misses last)."""
    pos = {n: i for i, n in enumerate(order)}
    return sorted(range(len(names)), key=lambda i: (pos.get(names[i], len(pos)), i))


def _maps(page, stats: dict, role_maps: bool, order: dict) -> None:
    """Per kind: the layers x input roles summary map (shown) and the query role x key role
    maps (folded), roles in equation order."""
    from interp.hooks import KINDS
    from interp.viz.figures import heatmap, kind_name, role_map_figure
    from interp.viz.page import Page

    page.section(SECTIONS[6])
    page.paragraph("Attention each key role receives per query, mean over the heads of a "
                   "layer; roles in the order they occur in the sequence.")
    folded = []
    for kind, st in stats.items():
        rename = st.grouping != "class"
        name = kind_name(kind)
        if KINDS[kind].key_side in ("seq", "src"):
            sm = st.summary_map()
            idx = [i for i in _reordered(st.key_names, order[kind]["roles"][1])
                   if float(sm[:, i].sum()) > 0]
            page.plotly(heatmap(sm[:, idx], [shown_name(st.key_names[i], rename) for i in idx],
                                [f"L{l}" for l in range(sm.shape[0])],
                                f"{name} attention: attention received per input role, mean "
                                "over heads", x_title="key role", y_title="layer",
                                all_ticks=True))
        if role_maps and st.role_map is not None:
            rm = st.query_role_map()
            qi = _reordered(st.query_names, order[kind]["roles"][0])
            ki = _reordered(st.key_names, order[kind]["roles"][1])
            rm = rm[:, :, qi][:, :, :, ki]
            sub = Page("")
            for l in range(rm.shape[0]):
                sub.plotly(role_map_figure(rm[l], [shown_name(st.query_names[i], rename)
                                                   for i in qi],
                                           [shown_name(st.key_names[i], rename) for i in ki],
                                           f"{name} attention, layer {l}: query role x key "
                                           "role"))
            folded.append((f"{name} attention: query role x key role, every layer "
                           f"({rm.shape[0]} figures)", sub))
    if folded:
        page.section(SECTIONS[7])
        for summary, sub in folded:
            page.details(summary, sub)


def head_titles(table: pd.DataFrame) -> dict:
    """{(kind, layer, head): "cross L2H0: label | reads ... | verified +0.41 [0.30, 0.52]
    p=0.05"}: each head named with its attention kind."""
    from interp.viz.figures import kind_name
    from interp.viz.termtable import interval

    out = {}
    for _, r in table.iterrows():
        lines = [f"{kind_name(r['kind'])} L{r['layer']}H{r['head']}: {r['label']}"]
        if r.get("reads"):
            lines.append(str(r["reads"]).split("; ")[0])
        if "verified" in r and isinstance(r.get("verify_knockout"), str):
            from .routes import verdict_text

            word = verdict_text(r.get("verify_verdict", "confirmed" if r["verified"] else
                                      "not confirmed"), _controls(table))
            lines.append(f"{word} {interval(r['verify_effect'], r['verify_ci_lo'], r['verify_ci_hi'])}"  # noqa: E501
                         f" p={r['verify_p']:.3f}")
        out[(r["kind"], int(r["layer"]), int(r["head"]))] = " | ".join(lines)
    return out


def _reads(page, table: pd.DataFrame, stats: dict, order: dict) -> None:
    """Per kind, folded: every head's query group x key group map, titled with its kind,
    label, top route and (with --verify) the intervention's verdict."""
    from interp.attention.taxonomy import route_maps
    from interp.viz.figures import kind_name, route_maps_figure
    from interp.viz.page import Page

    maps = route_maps(stats, grouping=None)
    titles = head_titles(table)
    page.section(SECTIONS[5])
    if maps.empty:
        page.paragraph("No attention kind of this model kept query x key maps.")
        return
    page.paragraph("Each panel is one head: the mean attention a query of each group (row) "
                   "pays to the keys of each group (column); rows sum to 1. Groups stand in "
                   "the order they occur in the sequence (input, then solution). A route is a "
                   "bright cell off the diagonal that the uniform head and the head's "
                   "offset-only model do not explain (see the reads column).")
    for kind, part in maps.groupby("kind", sort=False):
        rename = stats[kind].grouping != "class"
        part = part.assign(query=part["query"].map(lambda g: shown_name(g, rename)),
                           key=part["key"].map(lambda g: shown_name(g, rename)))
        qs, ks = order[kind]["groups"]
        want = {kind: ([shown_name(g, rename) for g in qs], [shown_name(g, rename) for g in ks])}
        heads = [h for h in titles if h[0] == kind]
        sub = Page("")
        for i in range(0, len(heads), 16):
            sub.plotly(route_maps_figure(part, heads[i:i + 16], titles, order=want))
        page.details(f"{kind_name(kind)} attention: what each of its {len(heads)} heads reads",
                     sub)


def _flow_rows(roles: list[str], n: int = 6) -> list[int]:
    """The output positions whose attention flow the page shows: a solution's first field
    (e.g. D's digits) when there is one, else the last n positions."""
    picked = [i for i, r in enumerate(roles) if r.startswith("D_value")][:n]
    return picked or list(range(max(0, len(roles) - n), len(roles)))


def _examples(page, ac) -> None:
    """Each example of the cache `ac`, folded: self attention as circuitsvis (every head of
    each layer, interactive; drawn when the section opens), cross attention as a plotly grid
    of every head of every layer (circuitsvis draws self attention only), and attention
    rollout (with attention flow for the first example)."""
    from interp.attention.maps import attention_flow, rollout
    from interp.hooks import KINDS
    from interp.viz.figures import flow_figure, head_grid, heatmap, kind_name
    from interp.viz.page import Page
    from interp.viz.views import heads_props, shown_tokens

    page.section(SECTIONS[8])
    page.paragraph("One drawing per example and attention kind: self attention in circuitsvis "
                   "(hover a head to enlarge it, a token to see what it reads), cross "
                   "attention as a grid of every head. Each is drawn when its section opens.")
    for kind in ac.kinds:
        P, keys, queries = ac.patterns[kind], ac.key(kind), ac.query(kind)
        same = KINDS[kind].query_side == KINDS[kind].key_side
        roll = rollout(P, ac.mask(kind)) if same else None
        q_title = SIDE_NAMES.get(KINDS[kind].query_side, KINDS[kind].query_side)
        k_title = SIDE_NAMES.get(KINDS[kind].key_side, KINDS[kind].key_side)
        for b in range(P.shape[1]):
            qlen, klen = int(queries.lengths[b]), int(keys.lengths[b])
            toks, q_toks = shown_tokens(keys, b), shown_tokens(queries, b)
            pat = P[:, b, :, :qlen, :klen]
            H = pat.shape[1]
            sub = Page("")
            if same:
                for l in range(pat.shape[0]):
                    sub.circuitsvis("AttentionHeads", **heads_props(pat[l], toks, kind, l),
                                    label=f"{kind} attention, layer {l}, heads 0-{H - 1} "
                                          f"(example {b})")
            else:
                sub.plotly(head_grid(pat, toks, kind, q_toks, key_title=f"key ({k_title})",
                                     query_title=f"query ({q_title})"))
            if roll is not None and b == 0:
                # max-flow costs ~1 s per output position: a few rows, first example only
                rows = _flow_rows(keys.roles[b][:klen])
                flow = attention_flow(P[:, b:b + 1, :, :qlen, :klen],
                                      ac.mask(kind)[b:b + 1, :qlen, :klen], positions=rows)
                sub.paragraph(f"Attention rollout and attention flow (Abnar & Zuidema 2020), "
                              f"{kind_name(kind)} attention, example {b}: flow (max-flow, a "
                              f"capacity up to 1) is computed for output positions {rows} "
                              "only.")
                sub.plotly(flow_figure(flow[0], roll[b, :qlen, :klen], toks,
                                       f"{kind}: attention rollout and attention flow, "
                                       f"example {b}"))
            elif roll is not None:
                labels = [f"{i}:{t}" for i, t in enumerate(toks)]
                sub.plotly(heatmap(roll[b, :qlen, :klen], labels, labels,
                                   f"{kind} attention rollout (Abnar & Zuidema), example {b}",
                                   x_title="input (key)", y_title="output (query)"))
            page.details(f"Example {b}, {kind_name(kind)} attention: "
                         + ("every head of every layer" + (", rollout and flow" if b == 0
                                                           else ", rollout")
                            if same else "every head of every layer"), sub)


def _verify_table(table: pd.DataFrame) -> pd.DataFrame:
    """The verification as the page shows it: one row per head, effect [95% CI] with
    significant digits, p, masses, rule and the reads-K test; heads whose label has no
    check say "not checked" (never NaN)."""
    from interp.viz.termtable import interval

    t = shown(table)
    out = t[["kind", "layer", "head", "label"]].copy()
    checked = table["verify_effect"].notna().to_numpy() if "verify_effect" in table else \
        [False] * len(table)
    out["check"] = [c if ok else "not checked" for c, ok in zip(t["check"], checked)]
    out["effect [95% CI]"] = [interval(e, lo, hi) if ok else "-" for e, lo, hi, ok in
                              zip(table["verify_effect"], table["verify_ci_lo"],
                                  table["verify_ci_hi"], checked)]
    out["p"] = [f"{p:.3f}" if ok and p == p else "-" for p, ok in zip(table["verify_p"],
                                                                        checked)]
    for col in ("mass t/c", "ratio", "control", "reads K", "reads_p"):
        if col in t:
            out[col] = [("-" if v is None or (isinstance(v, float) and v != v) else
                         f"{v:.3f}" if isinstance(v, float) else str(v)) for v in t[col]]
    return out


def findings(table: pd.DataFrame) -> list[str]:
    """What the page concludes first: the labels per attention kind, and with --verify the
    labels the intervention confirms and those it does not (effect, interval, p)."""
    from interp.viz.figures import kind_name
    from interp.viz.termtable import interval

    counts = label_counts(table)
    lines = [f"{len(table)} heads; labels per attention kind (a head may hold several):"]
    for kind in dict.fromkeys(table["kind"]):             # the model's order of kinds
        total = counts.loc[[kind]].sum()
        lines.append(f"  {kind_name(kind)}: " + ", ".join(f"{c} {int(n)}" for c, n in
                                                        total.items() if n))
    if "stability" in table:
        unstable = table[table["stability"].map(_unstable)]
        lines.append("Labels that change with the sample (stability): " + (
            ", ".join(f"{kind_name(r.kind)} L{r.layer}H{r.head} ({r.stability})"
                      for r in unstable.itertuples()) if len(unstable) else "none"))
    v = table.attrs.get("verify")
    if v and "verify_effect" in table:
        n = _controls(table)
        checked = table[table["verify_effect"].notna()]
        word = check_column(checked) if len(checked) else pd.Series([], dtype=object)
        lines.append(f"Verification on {v['n']} held-out examples ({v['distinct']} distinct "
                     f"equations), {n} equal-mass controls per head: "
                     f"{int((word == 'yes').sum())} labels confirmed, "
                     f"{int((word == 'NOT CONFIRMED').sum())} not confirmed, "
                     f"{int(word.str.startswith('untestable').sum())} untestable, "
                     f"{len(table) - len(checked)} heads not checked.")
        for title, key in (("confirmed", "yes"), ("not confirmed", "NOT CONFIRMED"),
                           (f"untestable at {n} controls", "untestable")):
            rows = checked[word.str.startswith(key).to_numpy()] if len(checked) else checked
            if len(rows):
                lines.append(f"  {title}:")
                lines += [f"    {kind_name(r.kind)} L{r.layer}H{r.head} {r.label}: effect "
                          f"{interval(r.verify_effect, r.verify_ci_lo, r.verify_ci_hi)}, "
                          f"p={r.verify_p:.3f}" for r in rows.itertuples()]
        if v.get("note"):
            lines.append(v["note"])
    lines.append("Attention maps show where heads look, not what the answer depends on: a "
                 "claim about what a position carries needs an intervention (--verify, "
                 "ablation or patching).")
    return lines


def _unstable(v) -> bool:
    if isinstance(v, str):
        return v.strip().lower() not in ("stable", "yes", "1", "1.0", "")
    try:
        return float(v) < 1.0
    except (TypeError, ValueError):
        return False


def legend(table: pd.DataFrame) -> list[str]:
    """What `main_score` means for each kind of score in the table (the taxonomy's
    `SCORE_KINDS` with a `score_kind` column; else by first label), then the reads notation."""
    from interp.attention import taxonomy

    kinds = getattr(taxonomy, "SCORE_KINDS", {}) or {}
    if "score_kind" in table and kinds:
        lines = [f"{k}: {kinds.get(k, '(no description)')}"
                 for k in dict.fromkeys(table["score_kind"].astype(str))]
        head = "main_score is measured in the unit its score_kind column names:"
    else:
        firsts = dict.fromkeys(taxonomy.base_label(ls[0]) for ls in table["labels"])
        lines = [f"{f}: {SCORE_BY_LABEL.get(f, '(no description)')}" for f in firsts]
        head = "main_score is the score behind each head's first label; its unit depends on it:"
    return [head, *lines, NOTATION]


def _head_table(table: pd.DataFrame) -> pd.DataFrame:
    cols = ["kind", "layer", "head", "label"] + [c for c in ("score_kind",) if c in table] + \
        ["main_score"] + [c for c in ("stability",) if c in table] + ["reads"]
    return table[cols].assign(main_score=table["main_score"].round(3))


def build_report(title: str, table: pd.DataFrame, stats: dict, examples_cache,
                 role_maps: bool = True, task=None):
    """The report page (`interp.viz.page.Page`) of a head taxonomy: table, stats per kind
    (`HeadStats`) and the cached patterns of the examples drawn head by head. task: the
    task of the examples (task models), which orders the groups the cached examples do not
    show; without it, such groups come after the others."""
    from interp.viz.figures import label_counts_figure
    from interp.viz.page import Page

    page = Page(title)
    page.findings(findings(table))
    v = table.attrs.get("verify")
    order = orders(stats, examples_cache, task)
    sections = [s for s in SECTIONS if (v or s != "Verification") and (role_maps or s not in (
        "What each head reads", "Role-averaged maps")) and (examples_cache is not None
                                                           or s != "Examples")]
    page.toc(sections)
    page.section(SECTIONS[0])
    page.paragraph("Every head, its labels (several may hold at once), main_score (see the "
                   "score legend) and what it reads (its top routes).")
    page.table(_head_table(table))
    if v:
        page.section(SECTIONS[1])
        page.paragraph(f"Verification (--verify): {v['n']} held-out examples ({v['distinct']} "
                       f"distinct equations), {v['controls']} controls per head that cut the "
                       "same clean attention mass in the same query rows (other keys of the "
                       "same head, else other heads of the layer: the control column; mass "
                       "t/c = mean mass cut per affected row by target / controls). reads K: "
                       "the head's values at K resampled from a same-layout donor, in the "
                       "query rows only, against the controls' entries resampled alike."
                       + (" " + v["note"] if v.get("note") else ""))
        page.table(_verify_table(table))
    page.section(SECTIONS[2])
    for line in legend(table):
        page.paragraph(line)
    counts = label_counts(table)
    page.section(SECTIONS[3])
    flat = counts.reset_index()
    flat.columns.name = None
    page.table(flat)
    page.plotly(label_counts_figure(counts))
    page.section(SECTIONS[4])
    page.paragraph("The key roles that receive the most attention per layer, beside the share "
                   "a uniform head would give them.")
    page.table(operations_table(stats))
    if role_maps:
        _reads(page, table, stats, order)
    _maps(page, stats, role_maps, order)
    if examples_cache is not None:
        _examples(page, examples_cache)
    return page
