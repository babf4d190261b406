"""The report of `python -m circuits.induction`: the terminal summary, the JSON and the
self-contained HTML page of an induction result (`circuits.induction.InductionResult`: heads,
composition, mechanism, unmixing, mixing, icl, history, example). Pure: a result in, text /
dict / Page out; nothing here runs a model. Over 400 lines: the terminal summary and the page
are made from the same sentences and tables (the findings, the heads table, the composition,
the training record), kept in one module so that they cannot drift apart.

Findings come first, on the terminal and on the page alike: the best induction head, the
mechanism check (ablating the previous-token head, with its control), the un-mixing
intervention, the ICL score and the training run. Heads are named `L0H3`; the baselines,
the same for every head, are one line above the heads table (not a column each); each score
has its own panel and axis (copying near -1 does not set the scale of the others); tokens
are shown as text, a byte that is not a whole UTF-8 character as `<0xEF>`.
"""

from __future__ import annotations

import codecs
import json

import pandas as pd
import torch

from interp.viz.termtable import fit, interval, signed

SHOW = ["layer", "head", "induction", "prefix_matching", "previous_token", "duplicate_token",
        "copying", "ov_eigen_positivity"]
#: the heads table's column names as the terminal and the page write them
SHORT = {"induction": "induction", "prefix_matching": "prefix", "previous_token": "prev_tok",
         "duplicate_token": "dup_tok", "copying": "copying", "ov_eigen_positivity": "ov_eig_pos"}
#: each score's baseline column (dashed in its panel)
BASELINE = {"induction": "induction_uniform", "prefix_matching": "prefix_matching_uniform",
            "previous_token": "previous_token_uniform",
            "duplicate_token": "duplicate_token_uniform", "copying": "copying_random",
            "ov_eigen_positivity": "ov_eigen_positivity_random"}
COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b"]


def head_name(layer, head) -> str:
    return f"L{int(layer)}H{int(head)}"


def heads_table(heads: pd.DataFrame) -> pd.DataFrame:
    """The heads table as shown: `head` (L0H3) and the scores of `SHOW` under their `SHORT`
    names, plus any baseline column that is not the same on every row (normally none: the
    baselines are one line, `baseline_line`)."""
    out = pd.DataFrame({"head": [head_name(a, b) for a, b in zip(heads.layer, heads["head"])]})
    for c in SHOW[2:]:
        out[SHORT[c]] = heads[c].astype(float).round(3).values
    for c in heads.columns:
        if c not in SHOW and heads[c].nunique(dropna=False) > 1:
            out[c] = heads[c].astype(float).round(3).values
    return out


def baseline_line(heads: pd.DataFrame) -> str:
    """The baselines, one line: they are the same for every head."""
    r = heads.iloc[0]
    return (f"baselines (every head): uniform attention scores induction "
            f"{r.induction_uniform:.3f}, prefix {r.prefix_matching_uniform:.3f}, prev_tok "
            f"{r.previous_token_uniform:.3f}, dup_tok {r.duplicate_token_uniform:.3f}; random "
            f"heads (W_V, W_O): copying {r.copying_random:+.3f}\u00a0±\u00a0"
            f"{_sd(r.copying_random_sd)}, ov_eig_pos {r.ov_eigen_positivity_random:+.3f}"
            f"\u00a0±\u00a0{_sd(r.ov_eigen_positivity_random_sd)}")


def _sd(v: float) -> str:
    """A spread with three decimals, or two significant digits when smaller (not 0.000)."""
    return f"{v:.3f}" if v == 0 or abs(v) >= 0.001 else f"{v:.2g}"


def scores_figure(heads: pd.DataFrame):
    """One panel per score of `SHOW`, each with its own y axis (copying, near -1, does not
    set the others' scale): a bar per head from the score's baseline (dashed: uniform
    attention, or random heads' mean) to the head's score (a plotly figure)."""
    from plotly.subplots import make_subplots

    names = [head_name(a, b) for a, b in zip(heads.layer, heads["head"])]
    cols = SHOW[2:]
    fig = make_subplots(rows=2, cols=3, subplot_titles=[SHORT[c] for c in cols],
                        vertical_spacing=0.22, horizontal_spacing=0.07)
    for i, c in enumerate(cols):
        row, col = i // 3 + 1, i % 3 + 1
        vals = heads[c].astype(float).round(4)
        base = BASELINE.get(c)
        b = round(float(heads[base].iloc[0]), 4) if base in heads else 0.0
        fig.add_bar(x=names, y=(vals - b).round(4).tolist(), base=b, name=SHORT[c],
                    customdata=vals.tolist(), marker_color=COLOURS[i], showlegend=False,
                    row=row, col=col, hovertemplate="%{x}: %{customdata:.3f}<extra>" +
                    SHORT[c] + "</extra>")
        if base in heads:
            fig.add_hline(y=b, line_dash="dash", line_color="black", line_width=1, row=row,
                          col=col)
        own = [*vals.tolist(), b]                     # the axis: this score and its baseline
        pad = 0.08 * max(max(own) - min(own), 1e-3)
        fig.update_yaxes(range=[min(own) - pad, max(own) + pad], row=row, col=col)
        fig.update_xaxes(type="category", row=row, col=col)
    fig.update_layout(title="Scores per head: one panel and axis per score; bars start at "
                      "the baseline (dashed: uniform attention, or random heads' mean)",
                      height=560,
                      bargap=0.3)
    return fig


def _drop(d, ci) -> str:
    return f"drop {interval(d, ci[0], ci[1])}, 95% CI"


def head_line(name: str, heads: pd.DataFrame) -> str:
    n_l = int(heads.layer.max()) + 1
    return (f"{name}: {n_l} layer{'s' if n_l > 1 else ''} x {int(heads['head'].max()) + 1} "
            f"heads; scores on repeated random tokens (BOS excluded)")


def best_line(heads: pd.DataFrame) -> str:
    best = heads.loc[heads.induction.idxmax()]
    return (f"best induction head: {head_name(best.layer, best['head'])} {best.induction:.3f} "
            f"(uniform attention {best.induction_uniform:.3f}); layer-0 heads at most "
            f"{heads[heads.layer == 0].induction.max():.3f}")


def mechanism_lines(m: dict | None) -> list[str]:
    if m is None:
        return []
    p, i, c = (head_name(*m[k]) for k in ("previous_token_head", "induction_head",
                                          "control_head"))
    return [f"mechanism: previous-token head {p} ({m['previous_token_score']:.3f}) -> induction "
            f"head {i} ({m['induction_score']:.3f}); K-composition "
            f"{m.get('k_composition', float('nan')):.3f} "
            f"(z = {m.get('k_composition_z', float('nan')):.1f})",
            f"  zero-ablating {p}: induction of {i} {m['induction_score']:.3f} -> "
            f"{m['induction_after_ablation']:.3f} ({_drop(m['drop'], m['drop_ci'])}, "
            f"{m['prompts']} prompts); mean-ablating it: "
            f"{m['induction_after_mean_ablation']:.3f}",
            f"  control, zero-ablating {c} (previous-token "
            f"{m['control_previous_token_score']:.3f}): {m['induction_score']:.3f} -> "
            f"{m['induction_after_control_ablation']:.3f} "
            f"({_drop(m['control_drop'], m['control_drop_ci'])})"]


def unmixing_line(u: dict | None) -> list[str]:
    if u is None:
        return []
    return [f"  intervention: {u['intervention']}: induction of {head_name(*u['head'])} "
            f"{u['induction_score']:.3f} -> {u['induction_unmixed']:.3f} "
            f"({_drop(u['drop'], u['drop_ci'])}, {u['prompts']} prompts)"]


def icl_line(icl: dict | None) -> list[str]:
    if icl is None:
        return []
    return [f"in-context learning: loss at token {icl['late']} minus token {icl['early']} = "
            f"{signed(icl['icl'])} ± {icl['icl_se']:.3f} (s.e., {icl['windows']} validation "
            "windows)" + ("" if icl["same_corpus_as_training"] else
                          f"; NOTE this machine's standard library (Python "
                          f"{icl['python_here']}) differs from the training corpus (Python "
                          f"{icl['python_trained']})")]


def training_line(hist: list, meta: dict) -> list[str]:
    if not hist:
        return []
    cpu = meta.get("cpu_minutes", {})
    first = next((r["step"] for r in hist if r.get("induction_max", 0) >= 0.5), None)
    return [f"training: {hist[-1]['step']} steps, {cpu.get('training', '?')} CPU-min "
            f"({cpu.get('threads', '?')} thread) + {cpu.get('setup', '?')} setup; best "
            f"induction score first >= 0.5 at step {'never' if first is None else first}"]


def findings(name: str, res, meta: dict) -> list[str]:
    """The conclusions, first on the page; each is a line the terminal prints."""
    return [head_line(name, res.heads), best_line(res.heads), *mechanism_lines(res.mechanism),
            *unmixing_line(res.unmixing), *icl_line(res.icl),
            *training_line(res.history, meta)]


def composition_z(comp: pd.DataFrame, mode: str) -> pd.DataFrame:
    """The `mode` composition z-scores as a table: rows the earlier head, columns the later."""
    c = comp[comp["mode"] == mode]
    piv = c.pivot_table(index=["layer_from", "head_from"], columns=["layer_to", "head_to"],
                        values="z")
    out = pd.DataFrame({"from": [head_name(a, b) for a, b in piv.index]})
    for (a, b), col in zip(piv.columns, piv.values.T):
        out[head_name(a, b)] = col.round(1)
    return out


def history_table(hist: list) -> pd.DataFrame:
    every = max(1, (len(hist) - 1) // 10)
    shown = hist[::every] + ([] if (len(hist) - 1) % every == 0 else hist[-1:])
    return pd.DataFrame([{"step": r["step"], "cpu_s": r.get("cpu_seconds"),
                          "val_loss": round(r["val_loss"], 3), "icl": round(r["icl"], 3),
                          "best_induction": round(r["induction_max"], 3)} for r in shown])


def summary_lines(name: str, res, meta: dict, width: int | None = None,
                  wide: bool = False) -> list[str]:
    """The terminal summary of an induction result, line by line; tables fitted to `width`
    (the terminal's by default) unless `wide`."""
    import textwrap

    from interp.viz.termtable import width_now

    h = res.heads
    w = width or width_now()
    lines = [head_line(name, h), ""]
    lines += textwrap.wrap(baseline_line(h), max(w, 40), subsequent_indent="  ")
    lines += fit(heads_table(h), width=w, wide=wide).splitlines()
    lines.append(best_line(h))
    comp = res.composition
    if comp is not None:
        k = comp[comp["mode"] == "K"]
        lines.append("")
        lines.append(f"K-composition z-scores against random heads (mean "
                     f"{k.random_mean.iloc[0]:.3f}, sd {k.random_sd.iloc[0]:.3f}); rows = "
                     "earlier head, columns = later head:")
        lines += fit(composition_z(comp, "K"), width=w, wide=wide,
                     formats={c: ".1f" for c in composition_z(comp, "K").columns[1:]}
                     ).splitlines()
    if res.mechanism is not None:
        lines += [""] + mechanism_lines(res.mechanism)
    mix = res.mixing
    if "smear" in mix:
        lines.append("")
        for layer, row in enumerate(mix["smear"].tolist()):
            lines.append(f"smeared keys, layer {layer}: weight on the current key sigmoid(alpha) "
                         f"per head = {', '.join(f'{v:.3f}' for v in row)}")
    if "conv" in mix:
        k = mix["conv"]
        lines.append("")
        lines.append(f"causal conv kernel ({k.shape[1]} taps, oldest first), mean |weight| per "
                     f"tap over {k.shape[0]} channels: "
                     f"{', '.join(f'{v:.3f}' for v in k.abs().mean(0).tolist())}")
    lines += unmixing_line(res.unmixing)
    if res.icl is not None:
        lines += [""] + icl_line(res.icl)
    if res.history:
        lines += [""] + training_line(res.history, meta)
        lines += fit(history_table(res.history), width=w, wide=wide).splitlines()
    return lines


def _shown_dict(d: dict) -> pd.DataFrame:
    """A mechanism / un-mixing dict as a two-column table: heads as L0H3, intervals as
    'est [lo, hi]'-style pairs, numbers with 4 decimals (small ones significant digits)."""
    rows = []
    for k, v in d.items():
        if isinstance(v, list) and len(v) == 2 and (k.endswith("_head") or k == "head"):
            v = head_name(*v)
        elif isinstance(v, list) and len(v) == 2 and k.endswith("_ci"):
            v = f"[{signed(v[0], 4)}, {signed(v[1], 4)}]"
        elif isinstance(v, float):
            v = signed(v, 4)
        elif isinstance(v, list):
            v = json.dumps(v)
        rows.append({"quantity": k, "value": str(v)})
    return pd.DataFrame(rows)


def _sub(fill):
    from interp.viz.page import Page

    p = Page("")
    fill(p)
    return p


def build_page(name: str, res, tokenizer_owner=None, meta: dict | None = None):
    """The self-contained report page: the findings (the terminal's sentences), a table of
    contents, the heads (baselines one line, then the table and one panel per score), the
    composition, the mixing, the training curves, the ICL curve and the attention on one
    repeated sequence; the full tables fold away. `tokenizer_owner`: anything with a
    `.tokenizer` (the bridge) to show the example's tokens as text; ids (`#174`) without one.
    `meta`: the checkpoint's metadata (the training line's CPU minutes)."""
    import plotly.graph_objects as go

    from interp.viz.figures import heatmap
    from interp.viz.page import Page

    h = res.heads
    hist, comp, mix, icl = res.history, res.composition, res.mixing, res.icl
    sections = ["Scores per head"]
    if comp is not None:
        sections.append("Composition against random heads")
    if res.mechanism is not None or res.unmixing is not None:
        sections.append("Mechanism checks")
    if "smear" in mix or "conv" in mix:
        sections.append("Key mixing weights")
    if hist:
        sections.append("Training curves")
    if icl is not None:
        sections.append("In-context learning on validation text")
    sections.append("Attention on one repeated random sequence")
    page = Page(f"Induction heads of {name}")
    page.findings(findings(name, res, meta or {}))
    page.toc(sections)

    page.section("Scores per head")
    page.paragraph("Scores on repeated random tokens (BOS + n random tokens + the same n "
                   "again; prefix matching on 25 tokens repeated 4 times where the context "
                   "allows). Attention scores are not causal claims; the mechanism section "
                   "ablates heads and re-measures. Columns: prefix = prefix_matching, prev_tok "
                   "= previous_token, dup_tok = duplicate_token, ov_eig_pos = OV eigenvalue "
                   "positivity.")
    page.paragraph(baseline_line(h))
    page.table(heads_table(h))
    page.plotly(scores_figure(h))
    page.details("Every column of heads.csv", _sub(lambda p: p.table(h.round(4))))
    if comp is not None:
        page.section("Composition against random heads")
        for mode in ("K", "Q", "V"):
            c = comp[comp["mode"] == mode]
            z = composition_z(comp, mode)
            vals = z.iloc[:, 1:].values
            lim = max(3.0, float(abs(vals).max()))
            fig = go.Figure(go.Heatmap(z=vals.round(2).tolist(), x=list(z.columns[1:]),
                                       y=list(z["from"]), colorscale="RdBu", reversescale=True,
                                       zmid=0, zmin=-lim, zmax=lim))
            fig.update_layout(title=f"{mode}-composition z-score against random heads "
                              f"(mean {c.random_mean.iloc[0]:.3f}, sd "
                              f"{c.random_sd.iloc[0]:.3f}); red = above chance",
                              height=max(260, 30 * len(z) + 120), yaxis_autorange="reversed",
                              xaxis_title="later head", yaxis_title="earlier head")
            if mode == "K":
                page.plotly(fig)
            else:
                page.details(f"{mode}-composition", _sub(lambda p, fig=fig: p.plotly(fig)))
        page.details("Every composition score", _sub(lambda p: p.table(comp.round(4))))
    if res.mechanism is not None or res.unmixing is not None:
        page.section("Mechanism checks")
        for line in mechanism_lines(res.mechanism) + unmixing_line(res.unmixing):
            page.paragraph(line.strip())
        if res.mechanism is not None:
            page.details("Ablating the previous-token head: every figure",
                         _sub(lambda p: p.table(_shown_dict(res.mechanism))))
        if res.unmixing is not None:
            page.details("Removing the key mixing: every figure",
                         _sub(lambda p: p.table(_shown_dict(res.unmixing))))
    if "smear" in mix or "conv" in mix:
        page.section("Key mixing weights")
    if "smear" in mix:
        s = mix["smear"]
        page.plotly(heatmap(s, [f"H{i}" for i in range(s.shape[1])],
                            [f"L{i}" for i in range(s.shape[0])],
                            "Smeared keys: sigmoid(alpha) per head (1 = plain key, 0 = previous "
                            "key)", zmin=0, zmax=1))
    if "conv" in mix:
        k = mix["conv"]
        order = torch.argsort(k[:, -2])
        page.plotly(heatmap(k[order].T, [str(i) for i in order.tolist()],
                            [f"t-{k.shape[1] - 1 - i}" for i in range(k.shape[1])],
                            "Causal convolution kernel weight per channel (sorted by its "
                            "previous-token tap) and tap", zmin=None))
    if hist:
        page.section("Training curves")
        steps = [r["step"] for r in hist]
        fig = go.Figure()
        per = torch.tensor([r["induction"] for r in hist])           # [step, layer, head]
        for layer in range(per.shape[1]):
            for head in range(per.shape[2]):
                fig.add_scatter(x=steps, y=per[:, layer, head].round(decimals=4).tolist(),
                                name=head_name(layer, head), mode="lines")
        fig.update_layout(title="Induction score per head over training", xaxis_title="step",
                          yaxis_title="induction score", height=380)
        page.plotly(fig)
        fig = go.Figure()
        fig.add_scatter(x=steps, y=[round(r["icl"], 4) for r in hist], name="ICL score",
                        line=dict(color=COLOURS[0]))
        fig.add_scatter(x=steps, y=[round(r["val_loss"], 4) for r in hist],
                        name="validation loss", yaxis="y2", line=dict(color=COLOURS[1]))
        fig.update_layout(title="In-context-learning score and validation loss over training",
                          xaxis_title="step", yaxis=dict(title="ICL score"),
                          yaxis2=dict(title="loss", overlaying="y", side="right"), height=380)
        page.plotly(fig)
        page.details("Training record", _sub(lambda p: p.table(history_table(hist))))
    if icl is not None:
        page.section("In-context learning on validation text")
        fig = go.Figure(go.Scatter(y=[round(v, 4) for v in icl["per_position_loss"]],
                                   mode="lines"))
        fig.update_layout(title=f"Validation loss per position (ICL score {icl['icl']:+.3f})",
                          xaxis_title="position", yaxis_title="loss", height=350)
        page.plotly(fig)
    ex = res.example
    half, P = ex["half"], ex["pattern"]                               # [layer, head, q, k]
    toks = token_texts(tokenizer_owner, ex["ids"])
    page.section("Attention on one repeated random sequence")
    page.paragraph(f"BOS, then {half} random tokens, then the same {half} again: an "
                   "induction head attends from each token of the second half to the token "
                   "after its first copy. Tokens as text; a byte that is not a whole UTF-8 "
                   "character is written <0xEF>, a token of spaces ␣. Tokens: " +
                   " ".join(f"{i}:{t}" for i, t in enumerate(toks)))
    page.details("The two copies side by side", _sub(lambda p: p.table(repeat_table(toks,
                                                                                 half))))
    for layer in range(P.shape[0]):
        page.circuitsvis("AttentionHeads", tokens=toks, attention=P[layer].round(decimals=3),
                         attentionHeadNames=[head_name(layer, i) for i in range(P.shape[1])],
                         label=f"layer {layer}, heads 0-{P.shape[1] - 1}")
    return page


def repeat_table(toks: list[str], half: int) -> pd.DataFrame:
    """The two copies of the repeated sequence side by side, one row per token k: its
    position and text in the first copy (1..half) and in the second (half+1..2 half)."""
    rows = []
    for k in range(half):
        i, j = 1 + k, 1 + half + k
        a = toks[i] if i < len(toks) else ""
        b = toks[j] if j < len(toks) else ""
        rows.append({"k": k + 1, "first copy": f"{i}:{a}", "second copy": f"{j}:{b}",
                     "same": "yes" if a == b else "no"})
    return pd.DataFrame(rows)


def _hex_marks(err):
    """Codec error handler: each byte that is not part of a whole UTF-8 character as <0xEF>."""
    return "".join(f"<0x{b:02X}>" for b in err.object[err.start:err.end]), err.end


codecs.register_error("interp-hexmark", _hex_marks)


def token_texts(bridge, ids: list[int]) -> list[str]:
    """Each token as the text it stands for: the tokenizer's decoding, with newlines, tabs and
    other unprintable characters as escapes (\\n, \\t, \\x0c) and a token of spaces as ␣.
    A byte-level BPE token is decoded from its bytes: whole UTF-8 characters as text, a byte
    that is only part of a character (the token holds the character's first or last bytes)
    as <0xE2>; `#174`, the id, where there is no tokenizer. circuitsvis adds the position."""
    tok = getattr(bridge, "tokenizer", None)
    if tok is None:
        return [f"#{t}" for t in ids]
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    chars = {c: b for b, c in bytes_to_unicode().items()}  # byte-level BPE alphabet, inverted
    out = []
    for t in ids:
        text = tok.decode([t])
        raw = tok.convert_ids_to_tokens(t) or ""
        if "\ufffd" in text and raw and all(c in chars for c in raw):
            text = bytes(chars[c] for c in raw).decode("utf-8", errors="interp-hexmark")
        text = text or raw or f"#{t}"
        if not text.strip(" "):
            text = text.replace(" ", "\u2423")
        out.append("".join(c if c.isprintable() else c.encode("unicode_escape").decode()
                           for c in text))          # \\n, \\t, \\x0c ... as escapes
    return out


def to_json(res) -> dict:
    """The JSON of an induction result (induction.json without its `checkpoint`)."""
    return {"heads": json.loads(res.heads.to_json(orient="records")),
            "composition": (None if res.composition is None else
                            json.loads(res.composition.to_json(orient="records"))),
            "mechanism": res.mechanism, "unmixing": res.unmixing,
            "mixing": {k: v.tolist() for k, v in res.mixing.items()},
            "icl": res.icl, "history": res.history}
