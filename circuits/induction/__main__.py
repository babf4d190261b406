# Over 400 lines: the command line and its report page live together until issue #12
# moves reports to viz/.
"""python -m circuits.induction [CKPT]: induction heads of a decoder, measured and tested.

    python -m circuits.induction induction-attn2l
    python -m circuits.induction runs/my-lm --n 64 --out induction-my-lm

Prints, and writes to --out (default induction-<name>) as heads.csv, composition.csv,
induction.json and a self-contained report.html:
- every head's induction, prefix-matching, previous-token, duplicate-token, copying and OV
  eigenvalue-positivity scores with their baselines (uniform attention; random W_V, W_O);
- for 2+ layers: the Q/K/V composition of every earlier/later head pair against random heads,
  and the mechanism check (zero- and mean-ablate the best previous-token head of layer 0,
  re-measure the best induction head; the least previous-token-like layer-0 head as control);
- smeared keys / conv: the learned mixing weights, and the induction score of the best head
  with the mixing removed (an intervention);
- any decoder works (the task models too); encoder-decoder models are refused;
- text models: the in-context-learning score on validation windows of the corpus, and the
  training curves (induction score and ICL score over steps) recorded by interp.train_text.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd
import torch

SHOW = ["layer", "head", "induction", "prefix_matching", "previous_token", "duplicate_token",
        "copying", "ov_eigen_positivity"]


def icl_on_corpus(bridge, meta: dict, n_windows: int = 1024, seed: int = 0) -> dict | None:
    """Per-position validation loss and the ICL score on the corpus a text model was trained
    on (rebuilt from this machine's standard library; its fingerprint is compared)."""
    from circuits.induction import icl_positions, icl_score, token_losses
    from interp.tasks import text as T

    if meta.get("task", {}).get("task") != "text":
        return None
    ids = T.validation_ids(bridge.tokenizer)
    n_ctx = int(bridge.cfg.n_ctx)
    g = torch.Generator().manual_seed(seed)
    windows = T.sample_windows(ids, n_windows, n_ctx - 1, g, bridge.tokenizer.bos_token_id)
    losses = token_losses(bridge, windows)
    early, late = icl_positions(n_ctx)
    score, se = icl_score(losses, early, late)
    here = T.corpus_fingerprint(T.stdlib_files())
    trained = meta["task"].get("corpus", {})
    return {"early": early, "late": late, "icl": score, "icl_se": se, "windows": n_windows,
            "val_tokens": len(ids), "per_position_loss": losses.mean(0).tolist(),
            "same_corpus_as_training": here.get("sha256") == trained.get("sha256"),
            "python_here": here.get("python"), "python_trained": trained.get("python")}


def analyse(bridge, meta: dict, n: int = 32, seed: int = 0, icl_windows: int = 1024) -> dict:
    from circuits.induction import (
        composition_table,
        head_scores,
        mechanism_check,
        unmixing_check,
    )
    from interp.models.native import is_native, mixing_weights

    heads = head_scores(bridge, n=n, seed=seed)
    out = {"heads": heads, "composition": None, "mechanism": None, "mixing": {},
           "icl": icl_on_corpus(bridge, meta, icl_windows, seed),
           # interp.train_text's curves (a task model's interp.json has other histories)
           "history": meta.get("history", []) if meta.get("task", {}).get("task") == "text"
           else []}
    if int(bridge.cfg.n_layers) >= 2:
        out["composition"] = composition_table(bridge, seed=seed)
        out["mechanism"] = mechanism_check(bridge, heads, n=n, seed=seed,
                                           composition=out["composition"])
    out["unmixing"] = None
    if is_native(bridge):
        out["mixing"] = mixing_weights(bridge)
        if bridge.native_spec.mixing != "none":
            out["unmixing"] = unmixing_check(bridge, heads, n=n, seed=seed)
    return out


def summary_lines(name: str, res: dict, meta: dict) -> list[str]:
    h = res["heads"]
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
    comp = res["composition"]
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
    m = res["mechanism"]
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
    mix = res["mixing"]
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
    u = res.get("unmixing")
    if u is not None:
        lines.append(f"  intervention: {u['intervention']}: induction of L{u['head'][0]}"
                     f"H{u['head'][1]} {u['induction_score']:.3f} -> "
                     f"{u['induction_unmixed']:.3f} (drop {u['drop']:.3f}, 95% CI "
                     f"[{u['drop_ci'][0]:.3f}, {u['drop_ci'][1]:.3f}], {u['prompts']} prompts)")
    icl = res["icl"]
    if icl is not None:
        lines.append("")
        lines.append(f"in-context learning: loss at token {icl['late']} minus token "
                     f"{icl['early']} = {icl['icl']:+.3f} ± {icl['icl_se']:.3f} (s.e., "
                     f"{icl['windows']} validation windows)" +
                     ("" if icl["same_corpus_as_training"] else
                      f"; NOTE this machine's standard library (Python {icl['python_here']}) "
                      f"differs from the training corpus (Python {icl['python_trained']})"))
    hist = res["history"]
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


def build_page(name: str, res: dict, bridge, seed: int = 0):
    import plotly.graph_objects as go

    from circuits.induction import model_patterns, score_prompts
    from interp.viz.figures import heatmap
    from interp.viz.page import Page

    h = res["heads"]
    page = Page(f"Induction heads of {name}")
    page.paragraph("Scores on repeated random tokens (BOS + n random tokens + the same n "
                   "again; prefix matching on 25 tokens repeated 4 times where the context "
                   "allows). Attention scores are not causal claims; the mechanism section "
                   "ablates heads and re-measures.")
    page.table(h.round(4))
    names = [f"L{int(a)}H{int(b)}" for a, b in zip(h.layer, h["head"])]
    fig = go.Figure()
    for col in SHOW[2:]:
        fig.add_bar(name=col, x=names, y=h[col].round(4).tolist())
    fig.update_layout(barmode="group", title="Scores per head", height=380)
    page.plotly(fig)
    if res["mechanism"] is not None:
        page.heading("Mechanism: ablating the previous-token head")
        page.table(pd.DataFrame([{k: (json.dumps(_round(v)) if isinstance(v, list) else v)
                                  for k, v in res["mechanism"].items()}]).round(4))
    if res.get("unmixing") is not None:
        page.heading("Mechanism: removing the key mixing")
        page.table(pd.DataFrame([{k: (json.dumps(_round(v)) if isinstance(v, list) else v)
                                  for k, v in res["unmixing"].items()}]).round(4))
    hist = res["history"]
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
    comp = res["composition"]
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
    mix = res["mixing"]
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
    icl = res["icl"]
    if icl is not None:
        page.heading("In-context learning on validation text")
        fig = go.Figure(go.Scatter(y=[round(v, 4) for v in icl["per_position_loss"]],
                                   mode="lines"))
        fig.update_layout(title=f"Validation loss per position (ICL score {icl['icl']:+.3f})",
                          xaxis_title="position", yaxis_title="loss", height=350)
        page.plotly(fig)
    ids, half, _, _ = score_prompts(bridge, 1, seed=seed)
    P = model_patterns(bridge, ids)[:, 0]                             # [layer, head, q, k]
    toks = token_texts(bridge, ids[0].tolist())
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


def to_json(res: dict) -> dict:
    return {"heads": json.loads(res["heads"].to_json(orient="records")),
            "composition": (None if res["composition"] is None else
                            json.loads(res["composition"].to_json(orient="records"))),
            "mechanism": res["mechanism"], "unmixing": res.get("unmixing"),
            "mixing": {k: v.tolist() for k, v in res["mixing"].items()},
            "icl": res["icl"], "history": res["history"]}


PATTERN_BUDGET = 1 << 30   # bytes of one [layer, prompt, head, q, k] pattern tensor (float32)
MAX_ICL_WINDOWS = 16_384
OWN_FILES = ("heads.csv", "composition.csv", "induction.json", "report.html")


def _main(argv) -> int:
    from interp.cli.common import Parser, at_most
    from interp.errors import InterpError
    from interp.io import (
        check_replaceable_dir,
        output_lock,
        replace_dir_atomic,
        write_json,
    )
    from interp.models import load_model
    from interp.models.checkpoint import resolve, validate

    p = Parser(prog="python -m circuits.induction", description=__doc__,
               formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", nargs="?", default="induction-attn2l")
    p.add_argument("--n", type=int, default=32, help="random prompts per score (default 32; "
                   f"at most what {PATTERN_BUDGET >> 30} GiB of attention patterns hold)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--icl-windows", type=int, default=1024,
                   help="validation windows for the ICL score (text models; default 1024, at "
                   f"most {MAX_ICL_WINDOWS:,})")
    p.add_argument("--out", help="output folder (default induction-<name>)")
    p.add_argument("--no-report", action="store_true", help="skip report.html")
    p.add_argument("--quiet", action="store_true")
    a = p.parse_args(argv)
    if a.n < 2:
        raise InterpError(f"--n must be at least 2 prompts, got {a.n}")
    if a.icl_windows < 2:
        raise InterpError(f"--icl-windows must be at least 2, got {a.icl_windows}")
    at_most("--icl-windows", a.icl_windows, MAX_ICL_WINDOWS, "one run scores "
            f"({MAX_ICL_WINDOWS:,} windows)")
    name = Path(str(a.checkpoint)).name
    out = check_replaceable_dir(a.out or f"induction-{name}", "induction.json", "--out",
                                own=OWN_FILES)
    path = resolve(a.checkpoint)
    meta = validate(path)
    spec = meta.get("model", {})
    try:
        per_prompt = (int(spec.get("n_layers", 1)) * int(spec.get("n_heads", 1)) *
                      int(spec.get("n_ctx", 1)) ** 2 * 4)
    except (TypeError, ValueError):
        per_prompt = 1
    at_most("--n", a.n, max(2, PATTERN_BUDGET // max(per_prompt, 1)), "the prompts whose "
            f"attention patterns fit in {PATTERN_BUDGET >> 30} GiB for this model")
    bridge, _ = load_model(path)
    with output_lock(out):
        return _run(a, name, out, meta, bridge, write_json, replace_dir_atomic)


def _run(a, name, out, meta, bridge, write_json, replace_dir_atomic) -> int:
    torch.manual_seed(a.seed)
    res = analyse(bridge, meta, n=a.n, seed=a.seed, icl_windows=a.icl_windows)
    print("\n".join(summary_lines(name, res, meta)))
    data = to_json(res)
    data["checkpoint"] = str(a.checkpoint)

    def fill(tmp: Path) -> None:
        res["heads"].to_csv(tmp / "heads.csv", index=False)
        if res["composition"] is not None:
            res["composition"].to_csv(tmp / "composition.csv", index=False)
        write_json(tmp / "induction.json", data)
        if not a.no_report:
            build_page(name, res, bridge, a.seed).write(tmp / "report.html")

    replace_dir_atomic(fill, out)
    if not a.quiet:
        written = ["heads.csv"] + (["composition.csv"] if res["composition"] is not None
                                   else []) + ["induction.json"] + \
            ([] if a.no_report else ["report.html"])
        print(f"wrote {out}/{', '.join(written)}", file=sys.stderr)
    return 0


def main(argv=None) -> int:
    from interp.cli.common import run_cli

    return run_cli(_main, sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
