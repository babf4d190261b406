"""Classify every attention head of a model, with a table, CSV/JSON and an HTML report.

    python -m interp.classify_heads [CKPT] [--n 256] [--out DIR] [--format table|csv|json]
                                    [--kinds self|encoder,decoder_self,cross] [--seed S]

CKPT defaults to the shipped `quadratic-small`. Writes heads.csv, heads.json and report.html
to --out (default: classify-<model name>). CKPT may also be any HF checkpoint directory the
TransformerBridge can boot (GPT-2, BERT ...): its heads are read on --prompts FILE (one text a
line) or on a few built-in English sentences, and roles are the token strings.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

from interp.attention.stats import Thresholds
from interp.attention.taxonomy import LABELS, base_label

SHOW = ["kind", "layer", "head", "label", "main_score", "detail"]

# Plain sentences for pretrained text models (written for this package).
DEFAULT_SENTENCES = [
    "The cat sat on the mat because it was warm.",
    "She opened the window, and the cold air came in.",
    "Numbers can be added, subtracted and multiplied by hand.",
    "A small model learns the task after many steps of training.",
    "The river ran past the old mill and into the town.",
    "He wrote the answer on the board and the class checked it.",
    "When the bell rang, the children left the room.",
    "The report lists every head of every layer with its score.",
]


def summarise(table: pd.DataFrame) -> pd.DataFrame:
    """Add `main_score` (the score behind the first label) and `detail` (offset, token...)."""
    main, detail = [], []
    for _, r in table.iterrows():
        first = base_label(r["labels"][0])
        if first == "sharp_diagonal":
            main.append(r["sharp_mass"])
            detail.append(f"offset {int(r['sharp_offset'])}")
        elif first == "blurred_diagonal":
            main.append(r["band_mass"])
            detail.append(f"band centre {int(r['band_centre'])} +-{int(r['band_halfwidth'])}")
        elif first == "vertical":
            main.append(r["vertical_share"])
            detail.append("on " + ", ".join(r["vertical_roles"]) +
                          f" (x{r['vertical_share'] / max(r['vertical_uniform'], 1e-9):.1f})")
        elif first == "sparse_block":
            main.append(r["block_share"])
            detail.append(f"in segment (uniform {r['block_uniform']:.2f})")
        else:
            main.append(r["entropy"])
            detail.append(f"entropy (uniform {r['entropy_uniform']:.2f})")
    out = table.copy()
    out["main_score"] = main
    out["detail"] = detail
    return out


def label_counts(table: pd.DataFrame) -> pd.DataFrame:
    """Heads of each class per (kind, layer): answers "diagonals early, blocks deeper"."""
    rows = []
    for _, r in table.iterrows():
        for lab in r["labels"]:
            rows.append({"kind": r["kind"], "layer": r["layer"], "class": base_label(lab)})
    df = pd.DataFrame(rows)
    counts = df.groupby(["kind", "layer", "class"]).size().unstack(fill_value=0)
    return counts.reindex(columns=[c for c in LABELS if c in counts.columns] +
                          [c for c in counts.columns if c not in LABELS], fill_value=0)


def operations_table(stats: dict, top: int = 3) -> pd.DataFrame:
    """Per (kind, layer): the key roles that receive the most attention (mean over heads and
    queries), with the share a uniform head would give them."""
    rows = []
    for kind, st in stats.items():
        rm, urm = st.role_masses()
        per_layer = rm.mean(1)                                   # [layer, role]
        for l in range(per_layer.shape[0]):
            vals, idx = per_layer[l].topk(min(top, per_layer.shape[1]))
            row = {"kind": kind, "layer": l}
            for r, (v, i) in enumerate(zip(vals.tolist(), idx.tolist()), 1):
                row[f"role {r}"] = st.key_names[i]
                row[f"share {r}"] = round(v, 3)
                row[f"uniform {r}"] = round(float(urm[i]), 3)
            rows.append(row)
    return pd.DataFrame(rows)


def analyse(bridge, task, examples, kinds=None, batch_size: int = 64,
            segments: str = "statement", save_cache: str | Path | None = None,
            progress: bool = False):
    """The whole classification in one pass over the data: (table, stats per kind).

    Patterns are computed batch by batch and folded into running sums, so memory does not grow
    with the number of examples. save_cache: also keep them as safetensors shards there.
    Decoder-only models also get an induction score, from repeated random tokens."""
    from interp.attention.detect import induction_scores
    from interp.attention.stats import collect_stats
    from interp.attention.taxonomy import stats_table
    from interp.cache import save_shards, stream_attention

    source = stream_attention(bridge, task, examples, kinds, batch_size, progress)
    if save_cache:
        source = save_shards(source, save_cache)
    induction = ({"self": induction_scores(bridge)} if source.family == "decoder"
                 and "self" in source.kinds else None)
    stats = collect_stats(source, th=Thresholds(), segments=segments, induction=induction)
    return summarise(stats_table(stats)), stats


SIDE_NAMES = {"seq": "sequence", "src": "encoder input", "tgt": "decoder input"}


def shown_tokens(side, b: int) -> list[str]:
    """The tokens of example b as the report shows them: a position whose role is `<start>`
    (T5's decoder start, fed as the <pad> id) reads `<start>`, as in the role maps."""
    return ["<start>" if r == "<start>" else t for t, r in zip(side.tokens[b], side.roles[b])]


def build_report(title: str, table: pd.DataFrame, stats: dict, examples_cache,
                 role_maps: bool = True):
    """The report page: taxonomy, class counts, operations, summary map, role maps, and every
    head of every layer for a few examples (circuitsvis and plotly), with attention rollout."""
    from interp.attention.maps import rollout
    from interp.hooks import KINDS
    from interp.viz.figures import (
        compact,
        head_grid,
        heatmap,
        label_counts_figure,
        role_map_figure,
    )
    from interp.viz.page import Page

    ac = examples_cache
    page = Page(title)
    page.paragraph("Attention maps show where heads look, not what the answer depends on; "
                   "every score is given next to the score a uniform head would get, and "
                   "claims about what a position stores need an intervention (ablation or "
                   "patching), not a map.")
    page.heading("Taxonomy")
    page.table(table[SHOW].round(3))
    counts = label_counts(table)
    page.heading("Classes per layer")
    flat = counts.reset_index()
    flat.columns.name = None
    page.table(flat)
    page.plotly(label_counts_figure(counts))
    page.heading("Operations: the key roles that receive the most attention per layer")
    page.table(operations_table(stats))
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
                    page.circuitsvis("AttentionHeads", attention=compact(pat[l]), tokens=toks,
                                     attentionHeadNames=[f"{kind} L{l} H{h}" for h in range(H)],
                                     label=f"{kind} attention, layer {l}, heads 0-{H - 1} "
                                           f"(example {b})")
            page.plotly(head_grid(pat, toks, kind, q_toks, key_title=f"key ({k_title})",
                                  query_title=f"query ({q_title})"))
            if roll is not None:
                page.plotly(heatmap(roll[b, :qlen, :klen], [f"{i}:{t}" for i, t in
                                                            enumerate(toks)],
                                    [f"{i}:{t}" for i, t in enumerate(toks)],
                                    f"{kind} attention rollout (Abnar & Zuidema), example {b}"))
    return page


MAX_N = 20_000       # examples one run averages over (time; memory stays bounded)
MAX_EXAMPLES = 16    # examples drawn head by head in the report (page size)
MAX_BATCH = 1_024    # examples whose attention patterns are held at once
OWN_FILES = ("heads.csv", "heads.json", "report.html")


def CACHE_FILES(name: str) -> bool:
    """The files of a --save-cache folder (`interp.cache.save_shards`): cache.json and the
    shards shard-00000.safetensors, shard-00001.safetensors, ..."""
    import re

    return name == "cache.json" or re.fullmatch(r"shard-\d{5,}\.safetensors", name) is not None


def _check_prompt_lengths(bridge, texts: list[str], source: str) -> None:
    """Refuse a prompt longer than the model's context, naming its line."""
    from interp.errors import InterpError, shorten
    from interp.hooks import arch_of
    from interp.tokens import prompt_ids

    n_ctx = int(getattr(bridge.cfg, "n_ctx", 0) or 0)
    tok = getattr(bridge, "tokenizer", None)
    if not n_ctx or tok is None:
        return
    family = arch_of(bridge)
    for i, t in enumerate(texts, 1):
        # tokenized as interp.cache.build_sides does; a very long line first in part: if
        # its head is already too long, so is the whole line
        cut = len(t) > 50 * n_ctx
        n_tok = len(prompt_ids(family, tok, t[:50 * n_ctx]))
        if cut and n_tok <= n_ctx:
            cut, n_tok = False, len(prompt_ids(family, tok, t))
        if n_tok > n_ctx:
            size = f"over {n_tok:,}" if cut else f"{n_tok:,}"
            raise InterpError(f"--prompts {source}: prompt {i} ({shorten(t)!r}) is "
                              f"{size} tokens, longer than the model's context of {n_ctx}; "
                              "shorten or split it")


def _main(argv) -> int:
    import contextlib

    from interp.cache import cache_attention
    from interp.cli.common import Parser, at_most
    from interp.errors import InterpError
    from interp.io import (
        check_replaceable_dir,
        output_lock,
        replace_dir_atomic,
        same_or_inside,
        write_json,
    )
    from interp.models import DEFAULT_MODEL, load_checkpoint

    p = Parser(prog="python -m interp.classify_heads", description=__doc__,
               formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", nargs="?", default=DEFAULT_MODEL)
    p.add_argument("--n", type=int, default=256, help="examples to average over (default 256, "
                   f"at most {MAX_N:,})")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="output folder (default classify-<name>)")
    p.add_argument("--format", choices=["table", "csv", "json"], default="table")
    p.add_argument("--kinds", help="comma-separated attention kinds (default: all)")
    p.add_argument("--segments", choices=["statement", "number"], default="statement")
    p.add_argument("--prompts", help="text file, one prompt a line (HF checkpoints without "
                   "interp.json; default: built-in sentences)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--examples", type=int, default=3, help="examples drawn head by head in "
                   f"the report (default 3, at most {MAX_EXAMPLES})")
    p.add_argument("--save-cache", metavar="DIR", help="also save the attention patterns "
                   "there as safetensors shards (interp.cache.ShardedCache reads them)")
    p.add_argument("--no-report", action="store_true", help="skip report.html")
    p.add_argument("--quiet", action="store_true")
    a = p.parse_args(argv)
    if a.n < 1:
        raise InterpError(f"--n must be at least 1, got {a.n}")
    at_most("--n", a.n, MAX_N, f"one run averages over ({MAX_N:,} examples)")
    if a.examples < 1:
        raise InterpError(f"--examples must be at least 1, got {a.examples}")
    at_most("--examples", a.examples, MAX_EXAMPLES, "a report draws head by head "
            f"({MAX_EXAMPLES} examples)")
    if a.batch_size < 1:
        raise InterpError(f"--batch-size must be at least 1, got {a.batch_size}")
    at_most("--batch-size", a.batch_size, MAX_BATCH, "one batch of attention patterns holds "
            f"({MAX_BATCH} examples)")
    out = check_replaceable_dir(a.out or f"classify-{Path(str(a.checkpoint)).name}",
                                "heads.json", "--out", own=OWN_FILES)
    if a.save_cache:
        if same_or_inside(a.save_cache, out) or same_or_inside(out, a.save_cache):
            raise InterpError(f"--save-cache {a.save_cache} and --out {out} overlap (each "
                              "folder is replaced whole); give two separate folders")
        check_replaceable_dir(a.save_cache, "cache.json", "--save-cache", own=CACHE_FILES)
    kinds = [k.strip() for k in a.kinds.split(",")] if a.kinds else None
    ckpt = load_checkpoint(a.checkpoint)
    native = ckpt.arch == "native"
    if ckpt.arch in ("native", "hf"):
        from interp.tasks.text import validation_snippets

        bridge = ckpt.bridge()
        if a.prompts:
            try:
                texts = [t for t in Path(a.prompts).read_text().splitlines() if t.strip()]
            except OSError as e:
                raise InterpError(f"cannot read --prompts {a.prompts}: {e.strerror}") from None
        elif native:   # the model reads Python source: windows of the validation files
            texts = validation_snippets(bridge.tokenizer, a.n, int(bridge.cfg.n_ctx) - 8,
                                        seed=a.seed)
        else:
            texts = DEFAULT_SENTENCES
        if not texts:
            raise InterpError(f"--prompts {a.prompts} holds no text; give one prompt a line")
        texts = texts[:a.n]
        if a.prompts:
            _check_prompt_lengths(bridge, texts, a.prompts)
        task, examples = None, texts
    else:
        if a.prompts:
            raise InterpError(f"--prompts is for text models and HF checkpoints; "
                              f"{a.checkpoint} is a task model whose examples its task "
                              "generates (choose them with --n and --seed)")
        bridge = ckpt.bridge()
        task, examples = ckpt.task, ckpt.task.generate(a.n, seed=a.seed)
    with output_lock(out), (output_lock(a.save_cache, "--save-cache") if a.save_cache
                            else contextlib.nullcontext()):
        table, stats = analyse(bridge, task, examples, kinds, a.batch_size, a.segments,
                               a.save_cache, progress=not a.quiet)
        flat = table.copy()
        flat["labels"] = flat["labels"].map(";".join)
        flat["vertical_roles"] = flat["vertical_roles"].map(";".join)
        shown = None if a.no_report else cache_attention(bridge, task, examples[:a.examples],
                                                         kinds=kinds)

        def fill(tmp: Path) -> None:
            flat.to_csv(tmp / "heads.csv", index=False)
            write_json(tmp / "heads.json", json.loads(table.to_json(orient="records")))
            if shown is not None:
                build_report(f"Heads of {a.checkpoint} ({len(examples)} examples)", table,
                             stats, shown, role_maps=task is not None).write(tmp / "report.html")

        replace_dir_atomic(fill, out)
    if a.format == "table":
        with pd.option_context("display.max_rows", 500, "display.width", 160,
                               "display.max_colwidth", 60):
            print(table[SHOW].round(3).to_string(index=False))
        print()
        print(label_counts(table).to_string())
    elif a.format == "csv":
        print(flat[SHOW].to_csv(index=False), end="")
    else:
        print(json.dumps(json.loads(table[SHOW + ["labels"]].to_json(orient="records")),
                         indent=1))
    if not a.quiet:
        print(f"wrote {out / 'heads.csv'}, heads.json" +
              ("" if a.no_report else ", report.html"), file=sys.stderr)
    return 0


def main(argv=None) -> int:
    from interp.cli.common import run_cli

    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
