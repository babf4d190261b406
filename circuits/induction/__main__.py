"""python -m circuits.induction [CKPT]: induction heads of a decoder, measured and tested.

    python -m circuits.induction induction-attn2l
    python -m circuits.induction runs/my-lm --n 64 --out induction-my-lm
    python -m circuits.induction induction-attn2l --device cuda --dtype bfloat16

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
import sys
from pathlib import Path


PATTERN_BUDGET = 1 << 30   # bytes of one [layer, prompt, head, q, k] pattern tensor (float32)
MAX_ICL_WINDOWS = 16_384
OWN_FILES = ("heads.csv", "composition.csv", "induction.json", "report.html")


def build_parser():
    from interp.cli.common import Parser, add_options

    p = Parser(prog="python -m circuits.induction", description=__doc__,
               formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", nargs="?", default="induction-attn2l")
    add_options(p, n=(32, "random prompts per score (default 32; at most what "
                          f"{PATTERN_BUDGET >> 30} GiB of attention patterns hold)"),
                seed=(0, "the seed of the prompts (default 0)"),
                out="output folder (default induction-<name>)")
    p.add_argument("--icl-windows", type=int, default=1024,
                   help="validation windows for the ICL score (text models; default 1024, at "
                   f"most {MAX_ICL_WINDOWS:,})")
    p.add_argument("--no-report", action="store_true", help="skip report.html")
    p.add_argument("--wide", action="store_true", help="print every column of the tables "
                   "(default: fitted to the terminal's width)")
    return p


def _check_n(a, meta: dict) -> None:
    """--n prompts' attention patterns must fit PATTERN_BUDGET (from the checkpoint's sizes)."""
    from interp.cli.common import at_most

    spec = meta.get("model", {})
    try:
        per_prompt = (int(spec.get("n_layers", 1)) * int(spec.get("n_heads", 1)) *
                      int(spec.get("n_ctx", 1)) ** 2 * 4)
    except (TypeError, ValueError):
        per_prompt = 1
    at_most("--n", a.n, max(2, PATTERN_BUDGET // max(per_prompt, 1)), "the prompts whose "
            f"attention patterns fit in {PATTERN_BUDGET >> 30} GiB for this model")


def _main(argv) -> int:
    import torch

    from circuits.induction.analysis import analyse
    from interp.cli.common import at_most, check_outputs, load
    from interp.errors import InterpError
    from interp.io import output_lock, replace_dir_atomic, write_json
    from interp.viz.reports.induction import build_page, summary_lines, to_json

    a = build_parser().parse_args(argv)
    if a.n < 2:
        raise InterpError(f"--n must be at least 2 prompts, got {a.n}")
    if a.icl_windows < 2:
        raise InterpError(f"--icl-windows must be at least 2, got {a.icl_windows}")
    at_most("--icl-windows", a.icl_windows, MAX_ICL_WINDOWS, "one run scores "
            f"({MAX_ICL_WINDOWS:,} windows)")
    name = Path(str(a.checkpoint)).name
    a.out = a.out or f"induction-{name}"
    out = check_outputs(a, "induction.json", OWN_FILES)
    ckpt = load(a)
    _check_n(a, ckpt.meta)
    bridge = ckpt.bridge()
    with output_lock(out):
        torch.manual_seed(a.seed)
        res = analyse(bridge, ckpt.meta, n=a.n, seed=a.seed, icl_windows=a.icl_windows)
        print("\n".join(summary_lines(name, res, ckpt.meta, wide=a.wide)))
        data = {**to_json(res), "checkpoint": str(a.checkpoint)}
        written = ["heads.csv"] + (["composition.csv"] if res.composition is not None
                                   else []) + ["induction.json"] + \
            ([] if a.no_report else ["report.html"])

        def fill(tmp: Path) -> None:
            res.heads.to_csv(tmp / "heads.csv", index=False)
            if res.composition is not None:
                res.composition.to_csv(tmp / "composition.csv", index=False)
            write_json(tmp / "induction.json", data)
            if not a.no_report:
                build_page(name, res, bridge, ckpt.meta).write(tmp / "report.html")

        replace_dir_atomic(fill, out)
    if not a.quiet:
        print(f"wrote {out}/{', '.join(written)}", file=sys.stderr)
    return 0


def main(argv=None) -> int:
    from interp.cli.common import run_cli

    return run_cli(_main, sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
