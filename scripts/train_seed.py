"""Train `quadratic-seed` on the seed's protocol in bounded runs, on whatever machine is at hand.

    python scripts/train_seed.py runs/seed --minutes 30                 # start, or continue
    python scripts/train_seed.py runs/seed --minutes 30 --runs 3        # three runs in a row
    python scripts/train_seed.py runs/seed --minutes 20 --device cuda --dtype bfloat16

Each run trains for at most --minutes of wall time, then pauses (the resume state is saved)
and the next call continues it with `python -m interp.train --resume DIR`: the same weights as
one uninterrupted run (bit for bit on the CPU at the same thread count). A new DIR starts the
last stage of `quadratic-seed`'s recipe in `scripts/train_shipped.py` (`--protocol seed`) from
--init-from (default: the shipped weights, whose own training rows all lie in the protocol's
training split); --steps changes its length.

After every run the script writes DIR/curve.csv (every evaluation: step, wall and CPU
minutes, exact and character accuracy on the protocol's first --eval-n test rows and on
distinct held-out equations) and DIR/runs.csv (the end of each run), and prints the stop rule
of the campaign: the targets (87% characters, 37% exact) are met, or the last three runs of
the same length have not moved exact match by a point.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

TARGET_EXACT, TARGET_CHAR = 0.37, 0.87
CURVE = ("step", "wall_minutes", "cpu_minutes", "lr", "train_loss", "exact_match",
         "char_accuracy", "novel_exact_match", "novel_char_accuracy")


def new_run_args(init_from: str, steps: int | None) -> list[str]:
    from train_shipped import RECIPES

    args = [init_from if a == "{prev}" else a for a in RECIPES["quadratic-seed"][-1]]
    if "--protocol" not in args:
        raise SystemExit("error: the last stage of quadratic-seed's recipe is not --protocol seed")
    if steps is not None:
        args[args.index("--steps") + 1] = str(steps)
    return args


def history(run: Path) -> tuple[list[dict], dict]:
    state = json.loads((run / "resume" / "state.json").read_text())
    return state["history"], state


def write_curve(run: Path, hist: list[dict]) -> None:
    with open(run / "curve.csv", "w", newline="") as f:
        w = csv.DictWriter(f, CURVE, extrasaction="ignore")
        w.writeheader()
        for rec in hist:
            w.writerow({k: rec.get(k, "") for k in CURVE})


def record_run(run: Path, minutes: float, state: dict) -> list[dict]:
    path = run / "runs.csv"
    rows = list(csv.DictReader(open(path))) if path.exists() else []
    last = state["history"][-1] if state["history"] else {}
    rows.append({"run": len(rows) + 1, "minutes": minutes, "step": state["step"],
                 "total": state["total"], "exact_match": last.get("exact_match", ""),
                 "char_accuracy": last.get("char_accuracy", ""),
                 "novel_exact_match": last.get("novel_exact_match", ""),
                 "eval_step": last.get("step", "")})
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, list(rows[-1]))
        w.writeheader()
        w.writerows(rows)
    return rows


def stop_rule(rows: list[dict]) -> str | None:
    """Why the campaign should stop, or None."""
    last = rows[-1]
    if last["exact_match"] != "" and float(last["exact_match"]) >= TARGET_EXACT \
            and float(last["char_accuracy"]) >= TARGET_CHAR:
        return "the targets are met"
    # runs of the same length that ended on an evaluation of their own (a run shorter than
    # --eval-every steps repeats the previous one's figure, which is no new measurement)
    same, before = [], None
    for r in rows:
        step = r.get("eval_step", "")
        if step != "" and step != before and float(r["minutes"]) == float(last["minutes"]):
            same.append(r)
        before = step
    if len(same) >= 4:
        before = float(same[-4]["exact_match"])
        if all(abs(float(r["exact_match"]) - before) < 0.01 for r in same[-3:]):
            return "three runs of the same length have not moved exact match by a point"
    return None


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", help="the run folder (created on the first call)")
    p.add_argument("--minutes", type=float, default=30, help="wall minutes per run (30)")
    p.add_argument("--runs", type=int, default=1, help="runs in a row (1)")
    p.add_argument("--steps", type=int, help="a new run's length in steps (the recipe's)")
    p.add_argument("--init-from", default="quadratic-seed",
                   help="a new run's starting weights (default: the shipped quadratic-seed)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default=None)
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args()
    if not 0 < args.minutes <= 24 * 60 or args.runs < 1 or (args.threads is not None
                                                             and args.threads < 1):
        print("error: --minutes must be in (0, 1440], --runs and --threads at least 1",
              file=sys.stderr)
        return 2
    run = Path(args.run)
    extra = ["--device", args.device] + (["--dtype", args.dtype] if args.dtype else []) + \
        (["--threads", str(args.threads)] if args.threads else [])
    for _ in range(args.runs):
        if (run / "resume" / "state.json").exists():
            cmd = ["--resume", str(run)]
        else:
            cmd = new_run_args(args.init_from, args.steps) + ["--out", str(run)]
        cmd = [sys.executable, "-m", "interp.train", *cmd, "--stop-after", str(args.minutes),
               *extra]
        print("+", " ".join(cmd), flush=True)
        if subprocess.run(cmd).returncode != 0:
            return 2
        hist, state = history(run)
        write_curve(run, hist)
        rows = record_run(run, args.minutes, state)
        for r in rows:
            print("run {run}: step {step} of {total}, exact {exact_match}, char "
                  "{char_accuracy}, novel exact {novel_exact_match}".format(**r))
        why = stop_rule(rows)
        if state["step"] >= state["total"]:
            print(f"the schedule is finished ({state['total']} steps); evaluate with python -m "
                  f"interp.evaluate {run} --protocol seed")
            break
        if why:
            print(f"stop: {why}")
            break
    return 0


if __name__ == "__main__":
    sys.exit(main())
