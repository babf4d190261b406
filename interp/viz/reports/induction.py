"""The report of `python -m circuits.induction`: the terminal summary, the JSON and the
self-contained HTML page of an induction result (`circuits.induction.InductionResult`: heads,
composition, mechanism, unmixing, mixing, icl, history, example). Pure: a result in, text /
dict / Page out; nothing here runs a model.
"""

from __future__ import annotations

import json

import pandas as pd
import torch

SHOW = ["layer", "head", "induction", "prefix_matching", "previous_token", "duplicate_token",
        "copying", "ov_eigen_positivity"]


def scores_figure(heads: pd.DataFrame):
    """Grouped bars: every score of `SHOW` per head (a plotly figure)."""
    import plotly.graph_objects as go

    names = [f"L{int(a)}H{int(b)}" for a, b in zip(heads.layer, heads["head"])]
    fig = go.Figure()
    for col in SHOW[2:]:
        fig.add_bar(name=col, x=names, y=heads[col].round(4).tolist())
    fig.update_layout(barmode="group", title="Scores per head", height=380)
    return fig


def summary_lines(name: str, res, meta: dict) -> list[str]:
    """The terminal summary of an induction result, line by line."""
    h = res.heads
    n_l = int(h.layer.max()) + 1
    lines = [f"{name}: {n_l} layer{'s' if n_l > 1 else ''} x {int(h['head'].max()) + 1} heads; "
             f"scores on repeated random tokens (BOS excluded)", ""]
    with pd.option_context("display.width", 160):
        lines.append(h[SHOW].round(3).to_string(index=False))
    r = h.iloc[0]
    lines.append(f"baselines: uniform attention scores induction {r.induction_uniform:.3f}, "
                 f"prefix matching {r.prefix_matching_uniform:.3f}, previous token "
                 f"{r.previous_token_uniform:.3f}, duplicate token "
                 f"{r.duplicate_token_uniform:.3f}; random heads (W_V, W_O): copying "
                 f"{r.copying_random:+.3f} ± {r.copying_random_sd:.3f}, OV eigenvalue "
                 f"positivity {r.ov_eigen_positivity_random:+.3f} ± "
                 f"{r.ov_eigen_positivity_random_sd:.3f}")
    best = h.loc[h.induction.idxmax()]
    lines.append(f"best induction head: L{int(best.layer)}H{int(best['head'])} "
                 f"{best.induction:.3f}; layer-0 heads at most "
                 f"{h[h.layer == 0].induction.max():.3f}")
    comp = res.composition
    if comp is not None:
        k = comp[comp["mode"] == "K"]
        lines.append("")
        lines.append(f"K-composition z-scores against random heads (mean "
                     f"{k.random_mean.iloc[0]:.3f}, sd {k.random_sd.iloc[0]:.3f}); rows = "
                     "earlier head, columns = later head:")
        piv = k.pivot_table(index=["layer_from", "head_from"], columns=["layer_to", "head_to"],
                            values="z")
        piv.index = [f"L{a}H{b}" for a, b in piv.index]
        piv.columns = [f"L{a}H{b}" for a, b in piv.columns]
        lines.append(piv.round(1).to_string())
    m = res.mechanism
    if m is not None:
        lines.append("")
        p, i, c = m["previous_token_head"], m["induction_head"], m["control_head"]
        lines.append(f"mechanism: previous-token head L{p[0]}H{p[1]} "
                     f"({m['previous_token_score']:.3f}) -> induction head L{i[0]}H{i[1]} "
                     f"({m['induction_score']:.3f}); K-composition "
                     f"{m.get('k_composition', float('nan')):.3f} "
                     f"(z = {m.get('k_composition_z', float('nan')):.1f})")
        lines.append(f"  zero-ablating L{p[0]}H{p[1]}: induction of L{i[0]}H{i[1]} "
                     f"{m['induction_score']:.3f} -> {m['induction_after_ablation']:.3f} "
                     f"(drop {m['drop']:.3f}, 95% CI [{m['drop_ci'][0]:.3f}, "
                     f"{m['drop_ci'][1]:.3f}], {m['prompts']} prompts); mean-ablating it: "
                     f"{m['induction_after_mean_ablation']:.3f}")
        lines.append(f"  control, zero-ablating L{c[0]}H{c[1]} (previous-token "
                     f"{m['control_previous_token_score']:.3f}): "
                     f"{m['induction_score']:.3f} -> {m['induction_after_control_ablation']:.3f}"
                     f" (drop {m['control_drop']:.3f}, 95% CI [{m['control_drop_ci'][0]:.3f}, "
                     f"{m['control_drop_ci'][1]:.3f}])")
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
    u = res.unmixing
    if u is not None:
        lines.append(f"  intervention: {u['intervention']}: induction of L{u['head'][0]}"
                     f"H{u['head'][1]} {u['induction_score']:.3f} -> "
                     f"{u['induction_unmixed']:.3f} (drop {u['drop']:.3f}, 95% CI "
                     f"[{u['drop_ci'][0]:.3f}, {u['drop_ci'][1]:.3f}], {u['prompts']} prompts)")
    icl = res.icl
    if icl is not None:
        lines.append("")
        lines.append(f"in-context learning: loss at token {icl['late']} minus token "
                     f"{icl['early']} = {icl['icl']:+.3f} ± {icl['icl_se']:.3f} (s.e., "
                     f"{icl['windows']} validation windows)" +
                     ("" if icl["same_corpus_as_training"] else
                      f"; NOTE this machine's standard library (Python {icl['python_here']}) "
                      f"differs from the training corpus (Python {icl['python_trained']})"))
    hist = res.history
    if hist:
        cpu = meta.get("cpu_minutes", {})
        first = next((r["step"] for r in hist if r.get("induction_max", 0) >= 0.5), None)
        lines.append("")
        lines.append(f"training: {hist[-1]['step']} steps, {cpu.get('training', '?')} CPU-min "
                     f"({cpu.get('threads', '?')} thread) + {cpu.get('setup', '?')} setup; best "
                     f"induction score first >= 0.5 at step "
                     f"{'never' if first is None else first}")
        every = max(1, (len(hist) - 1) // 10)
        shown = hist[::every] + ([] if (len(hist) - 1) % every == 0 else hist[-1:])
        lines.append(pd.DataFrame(
            [{"step": r["step"], "cpu_s": r.get("cpu_seconds"),
              "val_loss": round(r["val_loss"], 3), "icl": round(r["icl"], 3),
              "best_induction": round(r["induction_max"], 3)} for r in shown]
        ).to_string(index=False))
    return lines


def _round(v):
    return [_round(x) for x in v] if isinstance(v, list) else \
        (round(v, 4) if isinstance(v, float) else v)


def build_page(name: str, res, tokenizer_owner=None):
    """The self-contained report page. `tokenizer_owner`: anything with a `.tokenizer` (the
    bridge) to show the example's tokens as text; ids (`#174`) without one."""
    import plotly.graph_objects as go

    from interp.viz.figures import heatmap
    from interp.viz.page import Page

    h = res.heads
    page = Page(f"Induction heads of {name}")
    page.paragraph("Scores on repeated random tokens (BOS + n random tokens + the same n "
                   "again; prefix matching on 25 tokens repeated 4 times where the context "
                   "allows). Attention scores are not causal claims; the mechanism section "
                   "ablates heads and re-measures.")
    page.table(h.round(4))
    page.plotly(scores_figure(h))
    if res.mechanism is not None:
        page.heading("Mechanism: ablating the previous-token head")
        page.table(pd.DataFrame([{k: (json.dumps(_round(v)) if isinstance(v, list) else v)
                                  for k, v in res.mechanism.items()}]).round(4))
    if res.unmixing is not None:
        page.heading("Mechanism: removing the key mixing")
        page.table(pd.DataFrame([{k: (json.dumps(_round(v)) if isinstance(v, list) else v)
                                  for k, v in res.unmixing.items()}]).round(4))
    hist = res.history
    if hist:
        page.heading("Training curves")
        steps = [r["step"] for r in hist]
        fig = go.Figure()
        per = torch.tensor([r["induction"] for r in hist])           # [step, layer, head]
        for layer in range(per.shape[1]):
            for head in range(per.shape[2]):
                fig.add_scatter(x=steps, y=per[:, layer, head].round(decimals=4).tolist(),
                                name=f"L{layer}H{head}", mode="lines")
        fig.update_layout(title="Induction score per head over training", xaxis_title="step",
                          height=380)
        page.plotly(fig)
        fig = go.Figure()
        fig.add_scatter(x=steps, y=[round(r["icl"], 4) for r in hist], name="ICL score")
        fig.add_scatter(x=steps, y=[round(r["val_loss"], 4) for r in hist],
                        name="validation loss", yaxis="y2")
        fig.update_layout(title="In-context-learning score and validation loss over training",
                          xaxis_title="step", yaxis=dict(title="ICL score"),
                          yaxis2=dict(title="loss", overlaying="y", side="right"), height=380)
        page.plotly(fig)
    comp = res.composition
    if comp is not None:
        page.heading("Composition against random heads")
        for mode in ("K", "Q", "V"):
            c = comp[comp["mode"] == mode]
            piv = c.pivot_table(index=["layer_from", "head_from"],
                                columns=["layer_to", "head_to"], values="z")
            z = piv.values.round(2).tolist()
            lim = max(3.0, float(abs(piv.values).max()))
            fig = go.Figure(go.Heatmap(z=z, x=[f"L{a}H{b}" for a, b in piv.columns],
                                       y=[f"L{a}H{b}" for a, b in piv.index],
                                       colorscale="RdBu", reversescale=True, zmid=0,
                                       zmin=-lim, zmax=lim))
            fig.update_layout(title=f"{mode}-composition z-score against random heads "
                              f"(mean {c.random_mean.iloc[0]:.3f}, sd "
                              f"{c.random_sd.iloc[0]:.3f}); red = above chance",
                              height=max(260, 30 * len(piv) + 120),
                              yaxis_autorange="reversed")
            page.plotly(fig)
        page.table(comp.round(4))
    mix = res.mixing
    if "smear" in mix:
        page.heading("Smeared keys: sigmoid(alpha), the weight on the current key")
        s = mix["smear"]
        page.plotly(heatmap(s, [f"H{i}" for i in range(s.shape[1])],
                            [f"L{i}" for i in range(s.shape[0])],
                            "sigmoid(alpha) per head (1 = plain key, 0 = previous key)",
                            zmin=0, zmax=1))
    if "conv" in mix:
        page.heading("Causal convolution kernel (channels sorted by their previous-token tap)")
        k = mix["conv"]
        order = torch.argsort(k[:, -2])
        page.plotly(heatmap(k[order].T, [str(i) for i in order.tolist()],
                            [f"t-{k.shape[1] - 1 - i}" for i in range(k.shape[1])],
                            "kernel weight per channel and tap", zmin=None))
    icl = res.icl
    if icl is not None:
        page.heading("In-context learning on validation text")
        fig = go.Figure(go.Scatter(y=[round(v, 4) for v in icl["per_position_loss"]],
                                   mode="lines"))
        fig.update_layout(title=f"Validation loss per position (ICL score {icl['icl']:+.3f})",
                          xaxis_title="position", yaxis_title="loss", height=350)
        page.plotly(fig)
    ex = res.example
    half, P = ex["half"], ex["pattern"]                               # [layer, head, q, k]
    toks = token_texts(tokenizer_owner, ex["ids"])
    page.heading("Attention on one repeated random sequence")
    page.paragraph(f"BOS, then {half} random tokens, then the same {half} again: an "
                   "induction head attends from each token of the second half to the token "
                   "after its first copy. Tokens: " +
                   " ".join(f"{i}:{t}" for i, t in enumerate(toks)))
    for layer in range(P.shape[0]):
        page.circuitsvis("AttentionHeads", tokens=toks, attention=P[layer].round(decimals=3),
                         attentionHeadNames=[f"L{layer}H{i}" for i in range(P.shape[1])],
                         label=f"layer {layer}, heads 0-{P.shape[1] - 1}")
    return page


def token_texts(bridge, ids: list[int]) -> list[str]:
    """Each token as the text it stands for: the tokenizer's decoding, with newlines, tabs and
    other unprintable characters as escapes (\\n, \\t, \\x0c) and a token of spaces as ␣.
    A byte-level token that is only part of a UTF-8 character shows its bytes (\\xe2);
    `#174`, the id, where there is no tokenizer. circuitsvis adds the position itself."""
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
            text = bytes(chars[c] for c in raw).decode("utf-8", errors="backslashreplace")
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
