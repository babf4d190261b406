"""Solve one typed problem with a model and check every step.

    python -m interp.solve [CKPT] "7x^2+3556x+451612=0"
    python -m interp.solve quadratic-t5-small "-4x^2+3x-11=0"   # a leading minus is fine
"""

from __future__ import annotations

import argparse
import json
import sys


def warn_if_outside(model: str, task, src: str) -> str | None:
    """A warning (stderr, one line from the command line) when `src` lies outside the
    ranges the model was trained on, naming the shipped models whose ranges cover it."""
    from interp.errors import warn
    from interp.models.checkpoint import range_note, shipped_tasks

    why = task.coverage(src)
    if why is None:
        return None
    covering = [n for n, t in shipped_tasks().items()
                if t.name == task.name and t.coverage(src) is None]
    note = f"{src} lies " + range_note(str(model), task, why, covering)
    warn(note)
    return note


VALUED = ("--device", "--dtype", "--device-map")   # options followed by their value


def _problems_are_positional(argv: list[str]) -> list[str]:
    """argparse reads "-4x^2+3x-11=0" as an unknown option; an argument that starts with a
    minus followed by a digit or `x` is a problem, so it goes after "--" (order kept). The
    value after --device or --dtype stays with its option."""
    if "--" in argv:
        return argv
    is_problem = [len(x) > 1 and x[0] == "-" and (x[1].isdigit() or x[1] == "x") for x in argv]
    if not any(is_problem):
        return argv
    is_value = [i > 0 and argv[i - 1] in VALUED for i in range(len(argv))]
    is_opt = [(x.startswith("-") and not p) or v for x, p, v in zip(argv, is_problem, is_value)]
    return [x for x, o in zip(argv, is_opt) if o] + ["--"] + \
        [x for x, o in zip(argv, is_opt) if not o]


def _main(argv) -> int:
    from interp.cli.common import Parser, add_options, check_device, load
    from interp.metrics import solve_one
    from interp.models import DEFAULT_MODEL

    p = Parser(prog="python -m interp.solve", description=__doc__,
               formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("args", nargs="+", metavar="[CKPT] PROBLEM",
                   help="optional checkpoint directory or shipped model name, then the problem")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    add_options(p, quiet=False, device=True)
    a = p.parse_args(_problems_are_positional(list(sys.argv[1:] if argv is None else argv)))
    if len(a.args) > 2:
        p.error("give at most a checkpoint and one problem (quote the problem)")
    ckpt_name, text = (a.args if len(a.args) == 2 else (DEFAULT_MODEL, a.args[0]))
    check_device(a)
    a.checkpoint = ckpt_name
    ckpt = load(a)
    r = solve_one(ckpt, text)
    warn_if_outside(ckpt_name, ckpt.task, r["input"])
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
    from interp.cli.common import run_cli

    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
