"""Classify every attention head of a model, with a table, CSV/JSON and an HTML report.

    python -m interp.classify_heads [CKPT] [--n 256] [--out DIR] [--format table|csv|json]
                                    [--kinds self|encoder,decoder_self,cross] [--seed S]
                                    [--roles field|fine] [--resamples 50] [--wide]
                                    [--verify [--verify-n 70] [--controls 20]]

CKPT defaults to the shipped `quadratic-small`. Each head gets its labels (shapes, `broad`,
`routed(Q->K)`; groups that are no plain name quoted: `routed('-'->D_value)`), its score and
what kind of number it is (`score_kind`), how often its labels hold over bootstrap resamples
of the examples (`stability`), and what it reads (its top routes, their share and lifts over
the uniform head and the offset-only model). The table fits the terminal (`--wide`: full
rows), with a legend of the numbers under it. --verify checks each head's first label by an
intervention (`circuits.verify_heads`: the route, stripe or diagonal knocked out in that
head, against random knockouts of the same attention mass in the same rows; and whether the
head reads K's content, its values at K resampled from a same-layout donor) on held-out,
distinct equations, and adds verdict, effect, interval, p, mass and reads columns (under
torchrun or accelerate launch, --verify shares the heads out over the processes; without it the
command refuses a launch). Writes
heads.csv, heads.json and report.html to --out (default: classify-<model name>). CKPT may
also be a text model (the shipped native ones, or any HF checkpoint directory the
TransformerBridge can boot: GPT-2, BERT ...): its heads are read on --prompts FILE (one text
a line), on windows of its validation source, or on a few built-in English sentences, and
roles are the tokens' classes (word, subword, digit, punctuation, whitespace, special).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


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

MAX_N = 20_000       # examples one run averages over (time; memory stays bounded)
MAX_EXAMPLES = 16    # examples drawn head by head in the report (page size)
MAX_BATCH = 1_024    # examples whose attention patterns are held at once
OWN_FILES = ("heads.csv", "heads.json", "report.html")
MAX_VERIFY_N = 5_000  # examples of --verify (each control reruns them)
MAX_CONTROLS = 200    # random knockouts per head in --verify
MAX_RESAMPLES = 2_000  # bootstrap resamples of the stability column


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
    arch = arch_of(bridge)
    for i, t in enumerate(texts, 1):
        # tokenized as interp.tokens.build_sides does; a very long line first in part: if
        # its head is already too long, so is the whole line
        cut = len(t) > 50 * n_ctx
        n_tok = len(prompt_ids(arch, tok, t[:50 * n_ctx]))
        if cut and n_tok <= n_ctx:
            cut, n_tok = False, len(prompt_ids(arch, tok, t))
        if n_tok > n_ctx:
            size = f"over {n_tok:,}" if cut else f"{n_tok:,}"
            raise InterpError(f"--prompts {source}: prompt {i} ({shorten(t)!r}) is "
                              f"{size} tokens, longer than the model's context of {n_ctx}; "
                              "shorten or split it")


def parser():
    from interp.cli.common import Parser, add_options, nonempty, path_value

    p = Parser(prog="python -m interp.classify_heads", description=__doc__,
               formatter_class=argparse.RawDescriptionHelpFormatter)
    add_options(p, checkpoint="", n=(256, "examples to average over (default 256, at most "
                                          f"{MAX_N:,})"), seed=(0, None),
                out="output folder (default classify-<name>)", report=True, nproc=True)
    p.add_argument("--format", choices=["table", "csv", "json"], default="table")
    p.add_argument("--wide", action="store_true", help="print the table's full rows (default: "
                   "fit the terminal's width, cutting `reads` and naming columns left out)")
    p.add_argument("--resamples", type=int, default=None, help="bootstrap resamples of the "
                   "examples behind the stability column (default 50; 0 leaves it out)")
    p.add_argument("--kinds", type=nonempty, help="comma-separated attention kinds (default: all)")
    p.add_argument("--segments", choices=["statement", "number"], default="statement")
    p.add_argument("--prompts", type=path_value, help="text file, one prompt a line (HF checkpoints without "
                   "interp.json; default: built-in sentences)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--examples", type=int, default=3, help="examples drawn head by head in "
                   f"the report (default 3, at most {MAX_EXAMPLES})")
    p.add_argument("--save-cache", metavar="DIR", type=path_value, help="also save the attention patterns "
                   "there as safetensors shards (interp.cache.ShardedCache reads them)")
    p.add_argument("--no-report", action="store_true", help="skip report.html")
    p.add_argument("--roles", choices=["field", "fine"], default=None,
                   help="role groups routes are named in: field (a number's sign and digits "
                        "together; the default for task models) or fine (every role); text "
                        "models use token classes")
    p.add_argument("--verify", action="store_true", help="check every head's first label by "
                   "knocking out what it reads, against random knockouts of the same "
                   "attention mass, and whether it reads K (value path patch; task models)")
    p.add_argument("--verify-n", type=int, default=70, help="held-out, distinct equations "
                   "of the verification (default 70: the small quadratic preset holds 21 "
                   "held-out one-root inputs, 30%% of its mix; at most "
                   f"{MAX_VERIFY_N:,})")
    p.add_argument("--controls", type=int, default=20, help="random knockouts per head in "
                   f"--verify (default 20; below 19 p <= 0.05 cannot be reached and every "
                   f"verdict is 'untestable'; at most {MAX_CONTROLS})")
    return p


def _folders(a):
    """Check the option values and the output folders before any work: (out, save_cache)."""
    from interp.cli.common import check_device, outside_checkpoint, positive
    from interp.errors import InterpError
    from interp.io import check_replaceable_dir, same_or_inside

    positive("--n", a.n, MAX_N, f"one run averages over ({MAX_N:,} examples)")
    positive("--examples", a.examples, MAX_EXAMPLES, "a report draws head by head "
             f"({MAX_EXAMPLES} examples)")
    positive("--batch-size", a.batch_size, MAX_BATCH, "one batch of attention patterns holds "
             f"({MAX_BATCH} examples)")
    if a.resamples is not None and not 0 <= a.resamples <= MAX_RESAMPLES:
        raise InterpError(f"--resamples must lie between 0 and {MAX_RESAMPLES} (bootstrap "
                          f"resamples of the stability column), got {a.resamples}")
    check_device(a)
    if a.verify:
        positive("--verify-n", a.verify_n, MAX_VERIFY_N, "one verification runs "
                 f"({MAX_VERIFY_N:,} examples)")
        positive("--controls", a.controls, MAX_CONTROLS, "--verify draws per head "
                 f"({MAX_CONTROLS})")
    out = a.out or f"classify-{Path(str(a.checkpoint)).name}"
    outside_checkpoint(a, out, "--out")
    from interp.cli.common import REPORT_FILES

    out = check_replaceable_dir(out, "heads.json", "--out", own=OWN_FILES + REPORT_FILES)
    if a.save_cache:
        outside_checkpoint(a, a.save_cache, "--save-cache")
        if same_or_inside(a.save_cache, out) or same_or_inside(out, a.save_cache):
            raise InterpError(f"--save-cache {a.save_cache} and --out {out} overlap (each "
                              "folder is replaced whole); give two separate folders")
        check_replaceable_dir(a.save_cache, "cache.json", "--save-cache", own=CACHE_FILES)
    return out


#: the most a --prompts file may hold (read in one bounded call: /dev/zero or a pipe ends there)
PROMPTS_MAX_BYTES = 16 * 2**20


def read_prompts(path: str) -> list[str]:
    """The non-empty lines of a --prompts file: UTF-8, at most PROMPTS_MAX_BYTES (checked
    while reading, so an endless file or device is refused without being read whole)."""
    from interp.errors import InterpError

    try:
        with open(path, "rb") as f:
            data = f.read(PROMPTS_MAX_BYTES + 1)
    except OSError as e:
        raise InterpError(f"cannot read --prompts {path}: {e.strerror}") from None
    if len(data) > PROMPTS_MAX_BYTES:
        raise InterpError(f"--prompts {path} holds more than {PROMPTS_MAX_BYTES // 2**20} MiB; "
                          "give a text file of prompts, one a line (only --n of them are used)")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InterpError(f"--prompts {path} is not UTF-8 text (byte {e.start}: "
                          f"{data[e.start:e.start + 1]!r}); save it as UTF-8") from None
    return [t for t in text.splitlines() if t.strip()]


def _inputs(a, ckpt):
    """(bridge, task, examples): a task model's generated examples, or a text model's prompts
    (--prompts, windows of the validation source, or the built-in sentences)."""
    from interp.errors import InterpError

    if ckpt.arch not in ("native", "hf"):
        if a.prompts:
            raise InterpError(f"--prompts is for text models and HF checkpoints; "
                              f"{a.checkpoint} is a task model whose examples its task "
                              "generates (choose them with --n and --seed)")
        return ckpt.bridge(), ckpt.task, ckpt.task.generate(a.n, seed=a.seed, unique=True)
    bridge = ckpt.bridge()
    if a.prompts:
        texts = read_prompts(a.prompts)
    elif ckpt.arch == "native":   # the model reads Python source: windows of the validation files
        from interp.tasks.text import validation_snippets

        texts = validation_snippets(bridge.tokenizer, a.n, int(bridge.cfg.n_ctx) - 8,
                                    seed=a.seed)
    else:
        texts = DEFAULT_SENTENCES
    if not texts:
        raise InterpError(f"--prompts {a.prompts} holds no text; give one prompt a line")
    texts = texts[:a.n]
    if a.prompts:
        _check_prompt_lengths(bridge, texts, a.prompts)
    return bridge, None, texts


def _main(argv) -> int:
    from interp.attention.taxonomy import head_taxonomy
    from interp.cache import save_shards
    from interp.cli.common import load, write_page
    from interp.errors import InterpError
    from interp.io import output_lock, replace_dir_atomic, write_json
    from interp.viz.reports import classify as report

    a = parser().parse_args(argv)
    from contextlib import nullcontext

    from interp import distributed

    if not a.verify:                    # the taxonomy alone is not shared out
        distributed.one_process_only("python -m interp.classify_heads")
        if a.nproc > 1:
            raise InterpError("--nproc shares out --verify's knockouts; the taxonomy alone runs "
                              "as one process (add --verify, or leave --nproc out)")
    out = _folders(a)
    from interp.launch import relaunch

    if (rc := relaunch(a, argv, "interp.classify_heads",              # --nproc N
                       outputs=[("--out", str(out)), ("--save-cache", a.save_cache)])
            ) is not None:
        return rc
    # launched with --verify: every process computes the (cheap) taxonomy, the verification
    # shares its knockouts out (`circuits.verify_heads`); only the main process writes
    writer = distributed.is_main()
    if not writer:
        a.quiet = True
    kinds = [k.strip() for k in a.kinds.split(",")] if a.kinds else None
    ckpt = load(a)
    if a.verify and ckpt.arch in ("native", "hf"):
        raise InterpError(f"--verify measures the damage to a task's answers; {a.checkpoint} "
                          "is a text model without one (run --verify on a task checkpoint)")
    bridge, task, examples = _inputs(a, ckpt)
    lock = output_lock if writer else (lambda *_a: nullcontext())
    with lock(out), lock(a.save_cache, "--save-cache"):
        keep_shards = (lambda source: save_shards(source, a.save_cache)) \
            if a.save_cache and writer else None
        extra = {} if a.resamples is None else {"resamples": a.resamples}
        result = head_taxonomy(bridge, task, examples, kinds, a.batch_size, a.segments,
                               keep_shards, keep=0 if a.no_report else a.examples,
                               progress=not a.quiet, grouping=a.roles, **extra)
        table = result.table
        if a.verify:
            table = _verify(a, bridge, task, table, result.stats)

        def fill(tmp: Path) -> None:
            report.flat_table(table).to_csv(tmp / "heads.csv", index=False)
            write_json(tmp / "heads.json", report.records(table))
            if not a.no_report:
                write_page(report.build_report(
                    f"Heads of {a.checkpoint} ({len(examples)} examples)", table,
                    result.stats, result.examples, role_maps=task is not None, task=task),
                    tmp / "report.html", a)

        if writer:
            replace_dir_atomic(fill, out)
    print(text(table, a.format, wide=a.wide), end="")
    note = table.attrs.get("verify", {}).get("note")
    if note and a.format != "table" and writer:
        print(note, file=sys.stderr)
    if not a.quiet:
        print(f"wrote {out / 'heads.csv'}, heads.json" +
              ("" if a.no_report else ", report.html"), file=sys.stderr)
    return 0


def _verify(a, bridge, task, table, stats):
    """The head table with the verification's columns (`verify_*`, `verified`)."""
    import importlib
    import time

    # the one place the command reaches circuits: named as a string, imported on use, so
    # that the library `interp` stays free of circuits (the umbrella `interp` command does
    # the same)
    verify_heads = importlib.import_module("circuits.ablation").verify_heads
    stats_mod = importlib.import_module("circuits.stats")
    # held-out inputs, each at most once: a repeated equation is no independent observation
    examples = task.generate(a.verify_n, seed=a.seed + 1, heldout=True, unique=True)
    distinct = len({e.src for e in examples})
    t0 = time.perf_counter()
    grouping = next(iter(stats.values())).grouping if stats else "field"
    v = verify_heads(bridge, task, examples, table, n_controls=a.controls, seed=a.seed,
                     grouping=grouping, batch_size=a.batch_size, quiet=a.quiet)
    if not a.quiet:
        print(f"verified {int(v.knockout.notna().sum())} labels on {len(examples)} held-out "
              f"examples ({distinct} distinct equations) x {a.controls} equal-mass controls "
              f"in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    out = merge_verification(table, v)
    out.attrs["verify"] = {"n": len(examples), "distinct": distinct, "controls": a.controls,
                           "note": "" if stats_mod.testable(a.controls)
                           else stats_mod.untestable_note(a.controls)}
    return out


def text(table, fmt: str = "table", wide: bool = False, width: int | None = None) -> str:
    """What the command prints (`interp.attention.table_text.text`)."""
    from interp.attention.table_text import text as _text

    return _text(table, fmt, wide, width)


def merge_verification(table, v):
    """`table` with `verify_knockout`, `verify_measure`, `verify_effect`, `verify_ci_lo`,
    `verify_ci_hi`, `verify_p`, `verify_verdict` ("confirmed", "not confirmed",
    "untestable"), `verify_answer_loss`, `verify_target_mass`, `verify_control_mass` (the
    clean attention the knockout and its equal-mass controls remove per affected row),
    `verify_mass_ratio`, `verify_control_rule` (same-head / other-heads / mixed),
    `verify_other_heads`, `verify_unmatched`, the reads-K test's `verify_reads_effect`,
    `verify_reads_ci_lo`, `verify_reads_ci_hi`, `verify_reads_p`, `verify_reads_verdict`,
    `verify_reads_n`, and `verified` (True: damage above the controls, interval above 0 and
    p <= 0.05; False: not; None: the label has no check, or the controls cannot reach p <=
    0.05) from `circuits.verify_heads` output `v` (one row per head)."""
    cols = {"knockout": "verify_knockout", "measure": "verify_measure", "effect": "verify_effect",
            "ci_lo": "verify_ci_lo", "ci_hi": "verify_ci_hi", "p": "verify_p",
            "verdict": "verify_verdict", "answer_loss_effect": "verify_answer_loss",
            "target_mass": "verify_target_mass", "control_mass": "verify_control_mass",
            "mass_ratio": "verify_mass_ratio", "control_rule": "verify_control_rule",
            "other_heads": "verify_other_heads", "unmatched": "verify_unmatched",
            "ratio_min": "verify_ratio_min",
            "reads_effect": "verify_reads_effect", "reads_ci_lo": "verify_reads_ci_lo",
            "reads_ci_hi": "verify_reads_ci_hi", "reads_p": "verify_reads_p",
            "reads_verdict": "verify_reads_verdict", "reads_n": "verify_reads_n",
            "supported": "verified"}
    cols = {k: c for k, c in cols.items() if k in v.columns}
    keep = v[["kind", "layer", "head", *cols]].rename(columns=cols)
    out = table.merge(keep, on=["kind", "layer", "head"], how="left")
    out.attrs = dict(table.attrs)
    out["verified"] = out["verified"].astype(object).where(out["verified"].notna(), None)
    return out


def main(argv=None) -> int:
    from interp.cli.common import run_cli

    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
