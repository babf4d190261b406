"""Evaluate a checkpoint: exact match, character accuracy, per class and per checker step.

    python -m interp.evaluate [CKPT] [--n 1000] [--preset P] [--seed S] [--json FILE]
"""

from __future__ import annotations

import argparse
import sys

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


def build_parser() -> argparse.ArgumentParser:
    from interp.cli.common import Parser, add_options

    p = Parser(prog="python -m interp.evaluate", description=__doc__,
               formatter_class=argparse.RawDescriptionHelpFormatter)
    add_options(p, checkpoint="checkpoint directory or shipped model name (default {default})",
                n=(1000, f"number of test equations (default 1000, at most {MAX_EVAL_N:,})"),
                seed=(12345, "seed of the test sample"),
                json="also write the metrics as JSON", quiet=True, device=True)
    p.add_argument("--preset", help="task preset to test on (default: the model's own)")
    p.add_argument("--all-inputs", action="store_true",
                   help="sample from every input, not only the held-out partition never trained on")
    p.add_argument("--batch-size", type=int, default=256)
    return p


def _main(argv: list[str] | None) -> int:
    from interp.cli.common import check_device, check_json, load, positive
    from interp.io import write_json
    from interp.metrics import eval_examples, evaluate

    args = build_parser().parse_args(argv)
    positive("--n", args.n, MAX_EVAL_N, f"one evaluation decodes ({MAX_EVAL_N:,} examples)")
    positive("--batch-size", args.batch_size, MAX_BATCH, "one decoding batch holds "
             f"({MAX_BATCH:,} sequences)")
    check_device(args)
    if args.json:
        check_json(args, "evaluate")
    ckpt = load(args)
    task = preset_task(ckpt, args.checkpoint, args.preset) if args.preset else ckpt.task
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


def preset_task(ckpt, name: str, preset: str):
    """The checkpoint's task on another preset; a warning when its inputs reach beyond the
    ranges the model was trained on."""
    from interp.errors import warn
    from interp.models.checkpoint import range_note, shipped_tasks
    from interp.tasks import get_task

    task = get_task(ckpt.task.name, preset)
    if not ckpt.task.covers_task(task):
        covering = [n for n, t in shipped_tasks().items() if t.covers_task(task)]
        warn(f"preset {task.preset} ({task.ranges_text()}) lies " +
             range_note(str(name), ckpt.task, "its inputs reach beyond them", covering))
    return task


def main(argv: list[str] | None = None) -> int:
    from interp.cli.common import run_cli

    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
