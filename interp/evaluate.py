"""Evaluate a checkpoint: exact match, character accuracy, per class and per checker step.

    python -m interp.evaluate [CKPT] [--n 1000] [--preset P] [--seed S] [--json FILE]
    python -m interp.evaluate quadratic-seed --protocol seed [--n ROWS] [--novel-n 1000]

--protocol seed scores a model trained on a fixed split (`interp.train --protocol seed`) as
the seed did: on that split's test rows, repeats of training equations included (default:
every row left after those that chose the checkpoint). It reports the share of test rows that
are also training rows and the scores of both parts, then the same scores on --novel-n
distinct held-out equations never trained on (`interp.protocol`).
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
                n=(None, f"number of test equations (default 1000; with --protocol: every "
                         f"test row left; at most {MAX_EVAL_N:,})"),
                seed=(12345, "seed of the test sample"),
                json="also write the metrics as JSON", quiet=True, device=True)
    p.add_argument("--preset", help="task preset to test on (default: the model's own)")
    p.add_argument("--all-inputs", action="store_true",
                   help="sample from every input, not only the held-out partition never trained on")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--protocol", choices=["seed"],
                   help="seed: score the model's own fixed split, repeats of training rows "
                   "included, and --novel-n equations never trained on")
    p.add_argument("--novel-n", type=int, default=None,
                   help="--protocol: distinct held-out equations scored beside the split "
                   "(default 1000; 0: none)")
    return p


def _main(argv: list[str] | None) -> int:
    from interp.errors import InterpError
    from interp.cli.common import check_device, check_json, load, positive
    from interp.io import write_json
    from interp.metrics import eval_examples, evaluate

    args = build_parser().parse_args(argv)
    if args.n is not None or not args.protocol:
        args.n = 1000 if args.n is None else args.n
        positive("--n", args.n, MAX_EVAL_N, f"one evaluation decodes ({MAX_EVAL_N:,} "
                 "examples)")
    positive("--batch-size", args.batch_size, MAX_BATCH, "one decoding batch holds "
             f"({MAX_BATCH:,} sequences)")
    check_device(args)
    if args.json:
        check_json(args, "evaluate")
    if args.protocol:
        if args.preset or args.all_inputs:
            raise InterpError("--protocol seed scores the model's own split; drop --preset "
                              "and --all-inputs")
        args.novel_n = 1000 if args.novel_n is None else args.novel_n
        if not 0 <= args.novel_n <= MAX_EVAL_N:
            raise InterpError(f"--novel-n must be 0 to {MAX_EVAL_N:,}, got {args.novel_n}")
    elif args.novel_n is not None:
        raise InterpError("--novel-n belongs to --protocol seed; add --protocol seed or drop "
                          "--novel-n")
    ckpt = load(args)
    if args.protocol:
        return _protocol(args, ckpt)
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


def _protocol(args, ckpt) -> int:
    from interp.io import write_json
    from interp.protocol import format_protocol, seed_protocol

    res = seed_protocol(ckpt, args.n, args.novel_n, args.seed, args.batch_size,
                        progress=not args.quiet)
    res["checkpoint"] = str(args.checkpoint)
    res["task"] = ckpt.task.describe()
    print(format_protocol(res, str(args.checkpoint)))
    if args.json:
        write_json(args.json, res)
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
