"""Train a model on a task, with an answer-only loss, periodic evaluation and exact resume.

    python -m interp.train quadratic --preset small --arch decoder --minutes 20 --out DIR
    python -m interp.train arithmetic --steps 3000 --out DIR
    python -m interp.train --resume DIR            # continue an interrupted run
    python -m interp.train quadratic --protocol seed --steps 3000 --stop-after 30 --out DIR
    python -m interp.train --resume DIR --stop-after 30   # the next 30 minutes of it

`--protocol seed` is the seed's own set-up: the seed preset, 100,000 generated equations
(50/30/20 two/one/no roots), cut 80/20 as generated, so that test equations may repeat
training ones (`python -m interp.evaluate DIR --protocol seed` measures how many). Inputs of
the held-out partition stay out of the rows, so equations never trained on are measured too.
`--stop-after MINUTES` and `--until-step N` pause a run (resume state saved, exit 0): bounded
runs on any machine, each continuing the last.

`DIR` becomes a checkpoint directory holding the best model by exact match on held-out
examples; `DIR/resume/` holds the last weights, the optimiser state and the recipe. Every
batch is a function of (seed, step), so a resumed run reaches the same weights, bit for bit on
the CPU, as one that was never interrupted.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from interp.errors import InterpError
from interp.models.config import ModelConfig
from interp.training.recipe import TrainConfig
from interp.training.task import Trainer, check_new_out, train

def build_parser() -> argparse.ArgumentParser:
    from interp.cli.common import Parser, add_options, seed_value

    p = Parser(prog="python -m interp.train", description=__doc__,
               formatter_class=argparse.RawDescriptionHelpFormatter)
    d = TrainConfig()
    m = ModelConfig()
    p.add_argument("task_pos", nargs="?", metavar="TASK", choices=["quadratic", "arithmetic"],
                   help="quadratic or arithmetic (same as --task)")
    p.add_argument("--task", choices=["quadratic", "arithmetic"])
    p.add_argument("--preset", help="task preset: quadratic seed|small|medium (default small)")
    p.add_argument("--arch", choices=["decoder", "t5"], default=m.arch)
    p.add_argument("--out", help="output checkpoint directory")
    p.add_argument("--resume", metavar="DIR", help="continue the interrupted run in DIR")
    p.add_argument("--reselect", metavar="DIR", help="keep the better of DIR's best and last "
                   "weights (exact match, then character accuracy)")
    p.add_argument("--steps", type=int)
    p.add_argument("--minutes", type=float)
    p.add_argument("--epochs", type=float, help="passes over the training set (--data fixed)")
    p.add_argument("--seed", type=seed_value, default=d.seed, help="0 to 2**63-1")
    p.add_argument("--layers", type=int, default=m.n_layers)
    p.add_argument("--d-model", type=int, default=m.d_model)
    p.add_argument("--heads", type=int, default=m.n_heads)
    p.add_argument("--d-ff", type=int, default=None, help="default 4 * d_model")
    p.add_argument("--n-ctx", type=int, default=None,
                   help="context length (default: 128, or 192 for the seed preset)")
    p.add_argument("--dropout", type=float, default=m.dropout)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--weight-decay", type=float, default=d.weight_decay)
    p.add_argument("--warmup", type=int, default=d.warmup)
    p.add_argument("--schedule", default=d.schedule, help="cosine | plateau | constant")
    p.add_argument("--clip", type=float, default=d.clip)
    p.add_argument("--scheduled-sampling", type=float, default=d.scheduled_sampling,
                   help="final share of answer inputs replaced by the model's predictions")
    p.add_argument("--protocol", choices=["seed"], help="seed: the seed's preset, 100,000 "
                   "rows and 80/20 split without removing repeats (sets --preset seed "
                   "--data fixed --split seed)")
    p.add_argument("--split", choices=["distinct", "seed"], default=None,
                   help="--data fixed: distinct (no input in train and test, the default) or "
                   "seed (cut as generated)")
    p.add_argument("--stop-after", type=float, metavar="MINUTES",
                   help="pause after this many wall minutes of this call's training loop "
                   "(set-up not counted; the step in flight and a due evaluation finish)")
    p.add_argument("--until-step", type=int, metavar="N",
                   help="pause after step N of the schedule (resume later)")
    p.add_argument("--data", default=None, help="fresh (new samples every step) or fixed "
                   "(the seed protocol: --rows examples, 80/20 split, epochs)")
    p.add_argument("--rows", type=int, default=d.rows)
    p.add_argument("--no-holdout", action="store_true",
                   help="also train on the held-out input partition")
    p.add_argument("--eval-every", type=int, default=d.eval_every)
    p.add_argument("--eval-n", type=int, default=d.eval_n)
    p.add_argument("--save-every", type=int, default=d.save_every)
    p.add_argument("--threads", type=int)
    p.add_argument("--init-from", metavar="CKPT",
                   help="start from this checkpoint's weights (same size flags) with a fresh "
                        "optimiser and schedule, e.g. to continue a finished run")
    add_options(p, quiet=False, device=True, device_map=False)
    p.add_argument("--quiet", action="store_true")
    return p


def _main(argv) -> int:
    from interp.cli.common import check_device
    from interp.io import check_replaceable_dir, output_lock, probe_writable

    args = build_parser().parse_args(argv)
    from interp.distributed import one_process_only

    one_process_only("python -m interp.train")
    if sum(bool(x) for x in (args.resume, args.reselect, args.out)) > 1:
        raise InterpError("give one of --out DIR (a new run), --resume DIR or --reselect DIR")
    if not (args.resume or args.reselect or args.out):
        raise InterpError("give --out DIR for the checkpoint (or --resume DIR)")
    target = Path(args.reselect or args.resume or args.out)
    if args.reselect or args.resume:
        if not target.is_dir():
            raise InterpError(f"no run folder {target}; give the --out folder of an earlier run")
        probe_writable(target, f"--resume {target}")
    else:
        check_new_out(target)
        check_replaceable_dir(target, "interp.json", "--out",   # its parent is writable
                              replaced=False)
    check_pause(args)
    if not (args.resume or args.reselect):
        protocol(args, args.task or args.task_pos or "quadratic")   # checked before any write
    if (args.resume or args.reselect) and (args.protocol or args.split):
        raise InterpError("--protocol and --split belong to a new run; --resume and --reselect "
                          "keep the recipe stored in the run")
    check_device(args)
    # the lock removes our own debris of a killed run: beside the folder and inside it
    # (`.resume.interp-tmp-*`, `.interp.json.interp-tmp-*`)
    with output_lock(target, "--resume" if args.resume or args.reselect else "--out"):
        return _train(args)


def _train(args) -> int:
    if args.reselect:
        trainer = Trainer.resume(Path(args.reselect), args.quiet, None, args.device, args.dtype)
        meta = trainer.reselect()
        args.resume = args.reselect
    elif args.resume:
        trainer = Trainer.resume(Path(args.resume), args.quiet, None, args.device, args.dtype)
        if args.threads is not None:
            trainer.cfg.threads = args.threads
            trainer.cfg.validate()      # --threads is checked here, as for a new run
        meta = trainer.run(pause_at=args.until_step, pause_after=args.stop_after)
    else:
        task = args.task or args.task_pos or "quadratic"
        if not args.out:
            raise InterpError("give --out DIR for the checkpoint (or --resume DIR)")
        data, split = protocol(args, task)
        preset = args.preset or ("small" if task == "quadratic" else "default")
        n_ctx = args.n_ctx if args.n_ctx is not None else (192 if preset == "seed" else 128)
        mcfg = ModelConfig(arch=args.arch, n_layers=args.layers, d_model=args.d_model,
                           n_heads=args.heads, d_ff=args.d_ff or 4 * args.d_model, n_ctx=n_ctx,
                           dropout=args.dropout)
        cfg = TrainConfig(task=task, preset=preset, seed=args.seed, steps=args.steps,
                          minutes=args.minutes, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                          weight_decay=args.weight_decay, warmup=args.warmup,
                          schedule=args.schedule, clip=args.clip,
                          scheduled_sampling=args.scheduled_sampling, data=data,
                          split=split, rows=args.rows, holdout=not args.no_holdout,
                          eval_every=args.eval_every, eval_n=args.eval_n,
                          save_every=args.save_every, threads=args.threads,
                          init_from=args.init_from, model=mcfg)
        meta = train(cfg, args.out, args.quiet, args.device, args.dtype,
                     pause_at=args.until_step, pause_after=args.stop_after)
    tr = meta["training"]
    if tr.get("paused"):
        where = args.resume or args.out
        best = (f"; best so far {meta['metrics']['exact_match']:.1%} exact at step {tr['step']}"
                if meta.get("metrics") else "")
        total = tr["total_steps"] or "a length not yet timed"
        print(f"paused at step {tr['paused_at_step']} of {total}{best}; "
              f"{tr['wall_minutes']} wall minutes in all; continue with python -m interp.train "
              f"--resume {where}")
        return 0
    print(f"best exact match {meta['metrics']['exact_match']:.1%} at step {tr['step']} of "
          f"{tr['total_steps']}; {tr['wall_minutes']} wall minutes; saved to "
          f"{args.resume or args.out}")
    return 0


def protocol(args, task: str) -> tuple[str, str]:
    """(data, split) from --protocol / --data / --split; --protocol seed fixes the preset."""
    if args.protocol == "seed":
        if task != "quadratic":
            raise InterpError(f"--protocol seed is the quadratic task's; {task} has no seed "
                              "protocol (drop --protocol)")
        if (args.preset or "seed") != "seed":
            raise InterpError("--protocol seed is the quadratic task's seed preset; drop "
                              "--preset or give --preset seed")
        if (args.data or "fixed") != "fixed" or (args.split or "seed") != "seed":
            raise InterpError("--protocol seed trains on a fixed set cut as generated; drop "
                              "--data and --split")
        args.preset = "seed"
        return "fixed", "seed"
    data = args.data or "fresh"
    if args.split and data != "fixed":
        raise InterpError("--split needs --data fixed (a fixed set of --rows to cut)")
    return data, args.split or "distinct"


def check_pause(args) -> None:
    if args.stop_after is not None and not (0 < args.stop_after < float("inf")):
        raise InterpError(f"--stop-after must be a positive number of minutes, got "
                          f"{args.stop_after}")
    if args.until_step is not None and args.until_step < 1:
        raise InterpError(f"--until-step must be a step of 1 or more, got {args.until_step}")
    if args.reselect and (args.stop_after is not None or args.until_step is not None):
        raise InterpError("--stop-after and --until-step pause training; --reselect does not "
                          "train")


def main(argv=None) -> int:
    from interp.cli.common import run_cli

    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
