"""Solve one typed problem with a model and check every step.

    python -m interp.solve [CKPT] "7x^2+3556x+451612=0"
"""

from __future__ import annotations

import argparse
import json
import sys


def solve_one(ckpt, text: str) -> dict:
    """The model's output for a typed problem, the exact solution and the per-step verdict."""
    from interp.models.generate import greedy_decode

    task = ckpt.task
    src = task.parse(text)
    exact = task.solve(src)
    out = greedy_decode(ckpt.model, ckpt.arch, [src], ckpt.config.n_ctx)[0]
    verdict = task.check(src, out)
    return {"input": src, "model": out, "exact": exact, "correct": verdict.ok,
            "steps": verdict.steps, "first_error": verdict.error}


def _main(argv) -> int:
    from interp.models import DEFAULT_MODEL, load_checkpoint

    p = argparse.ArgumentParser(prog="python -m interp.solve", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("args", nargs="+", metavar="[CKPT] PROBLEM",
                   help="optional checkpoint directory or shipped model name, then the problem")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    a = p.parse_args(argv)
    if len(a.args) > 2:
        p.error("give at most a checkpoint and one problem (quote the problem)")
    ckpt_name, text = (a.args if len(a.args) == 2 else (DEFAULT_MODEL, a.args[0]))
    ckpt = load_checkpoint(ckpt_name)
    r = solve_one(ckpt, text)
    if a.json:
        print(json.dumps(r, indent=2))
        return 0
    print(f"input : {r['input']}")
    print(f"model : {r['model']}")
    print(f"exact : {r['exact']}")
    print(f"verdict: {'correct' if r['correct'] else 'wrong'}")
    for step, v in r["steps"].items():
        if v is not None and step != "format":
            print(f"  {step:<9} {'ok' if v else 'WRONG'}")
    if r["first_error"]:
        print(f"first error: {r['first_error']}")
    return 0


def main(argv=None) -> int:
    from interp.cli_util import run_cli

    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
