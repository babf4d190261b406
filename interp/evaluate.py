"""Evaluate a checkpoint: exact match, character accuracy, per class and per checker step.

    python -m interp.evaluate [CKPT] [--n 1000] [--preset P] [--seed S] [--json FILE]
"""

from __future__ import annotations

import argparse
import sys
from interp.metrics import eval_examples, evaluate

MAX_EVAL_N = 100_000  # examples one `python -m interp.evaluate` decodes (memory and time)
MAX_BATCH = 4_096     # sequences decoded at once


def format_report(metrics: dict, title: str) -> str:
    lines = [title,
             f"  exact match     {metrics['exact_match']:7.1%}   (n = {metrics['n']})",
             f"  char accuracy   {metrics['char_accuracy']:7.1%}", "  per class:"]
    for cls, v in metrics["per_class"].items():
        lines.append(f"    {cls:<6} n={v['n']:<5} exact {v['exact_match']:6.1%}   "
                     f"char {v['char_accuracy']:6.1%}")
    lines.append("  per step (share right where the step applies):")
    for step, v in metrics["per_step"].items():
        lines.append(f"    {step:<9} {v:6.1%}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from interp.cli.common import run_cli

    return run_cli(_main, argv)


def _main(argv: list[str] | None) -> int:
    from interp.cli.common import Parser, at_most
    from interp.io import check_writable, write_json
    from interp.models import DEFAULT_MODEL, load_checkpoint
    from interp.tasks import get_task

    p = Parser(prog="python -m interp.evaluate", description=__doc__,
               formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", nargs="?", default=DEFAULT_MODEL,
                   help=f"checkpoint directory or shipped model name (default {DEFAULT_MODEL})")
    p.add_argument("--n", type=int, default=1000, help="number of test equations (default "
                   f"1000, at most {MAX_EVAL_N:,})")
    p.add_argument("--preset", help="task preset to test on (default: the model's own)")
    p.add_argument("--seed", type=int, default=12345, help="seed of the test sample")
    p.add_argument("--all-inputs", action="store_true",
                   help="sample from every input, not only the held-out partition never trained on")
    p.add_argument("--json", metavar="FILE", help="also write the metrics as JSON")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    from interp.errors import InterpError

    if args.n < 1:
        raise InterpError(f"--n must be at least 1, got {args.n}")
    at_most("--n", args.n, MAX_EVAL_N, f"one evaluation decodes ({MAX_EVAL_N:,} examples)")
    if args.batch_size < 1:
        raise InterpError(f"--batch-size must be at least 1, got {args.batch_size}")
    at_most("--batch-size", args.batch_size, MAX_BATCH, "one decoding batch holds "
            f"({MAX_BATCH:,} sequences)")
    if args.json:
        check_writable(args.json)
    ckpt = load_checkpoint(args.checkpoint)
    task = ckpt.task
    if args.preset:
        task = get_task(task.name, args.preset)
        if not ckpt.task.covers_task(task):
            from interp.errors import warn
            from interp.models.checkpoint import range_note, shipped_tasks

            covering = [n for n, t in shipped_tasks().items() if t.covers_task(task)]
            warn(f"preset {task.preset} ({task.ranges_text()}) lies " +
                 range_note(str(args.checkpoint), ckpt.task, "its inputs reach beyond them",
                            covering))
    examples = eval_examples(task, args.n, args.seed, holdout=not args.all_inputs)
    metrics, _ = evaluate(ckpt.model, ckpt.arch, task, examples, ckpt.config.n_ctx,
                          batch_size=args.batch_size, progress=not args.quiet)
    metrics["checkpoint"] = str(args.checkpoint)
    metrics["task"] = task.describe()
    metrics["sample"] = {"seed": args.seed, "heldout": not args.all_inputs}
    print(format_report(metrics, f"{args.checkpoint} on {task.name}/{task.preset}, "
                                 f"{args.n} fresh {'held-out ' if not args.all_inputs else ''}"
                                 f"examples (seed {args.seed})"))
    if args.json:
        write_json(args.json, metrics)
    return 0


if __name__ == "__main__":
    sys.exit(main())
