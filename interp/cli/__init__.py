"""The `interp` command: one entry point with subcommands.

    interp train ...      = python -m interp.train ...
    interp evaluate ...   = python -m interp.evaluate ...
    interp solve ...      = python -m interp.solve ...
    interp classify-heads = python -m interp.classify_heads ...
    interp ablate ...     = ablate ... (python -m circuits.ablate)
    interp patch ...      = python -m circuits.patch ...
    interp discover ...   = python -m circuits.discover ...
    interp train-text ... = python -m interp.train_text ...
    interp induction ...  = python -m circuits.induction ...
    interp probe ...      = python -m probes ...
    interp models         list the shipped models
"""

from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "train": "interp.train",
    "evaluate": "interp.evaluate",
    "solve": "interp.solve",
    "classify-heads": "interp.classify_heads",
    "ablate": "circuits.ablate",
    "patch": "circuits.patch",
    "discover": "circuits.discover",
    "train-text": "interp.train_text",
    "induction": "circuits.induction.__main__",
    "probe": "probes.__main__",
}


def _models(argv) -> int:
    import json

    from interp.models.checkpoint import SHIPPED_DIR, shipped_models
    from interp.tasks import task_from_description

    if argv in (["-h"], ["--help"]):
        print("usage: interp models\n\nList the shipped models: architecture, task and "
              "preset, parameters, held-out exact match, training CPU-minutes and the "
              "input ranges each was trained on. Takes no arguments.")
        return 0
    if argv:
        print(f"error: interp models takes no arguments, got {' '.join(argv)[:60]!r}; run "
              "`interp models`", file=sys.stderr)
        return 2
    for name in shipped_models():
        meta = json.loads((SHIPPED_DIR / name / "interp.json").read_text())
        if meta["model"]["arch"] == "native":
            last = (meta.get("history") or [{}])[-1]
            print(f"{name:<20} {'native':<8} text/{meta['model']['mixing']:<8} "
                  f"{meta['model']['n_layers']} layer(s)  best induction score "
                  f"{last.get('induction_max', float('nan')):.2f}  ICL (64 windows) "
                  f"{last.get('icl', float('nan')):+.2f}  trained "
                  f"{meta.get('cpu_minutes', {}).get('training', '?')} CPU-min")
            continue
        # prefer the evaluation on 1,000 fresh held-out examples made at install time
        m = meta.get("evaluation") or meta.get("metrics", {})
        tr = meta.get("training", {})
        print(f"{name:<20} {meta['model']['arch']:<8} {meta['task']['task']}/"
              f"{meta['task']['preset']:<8} params {meta.get('params', 0):>9,}  "
              f"exact {m.get('exact_match', float('nan')):6.1%} (n={m.get('n', '?')})  "
              f"trained {tr.get('cpu_minutes_all_stages', tr.get('cpu_minutes', '?'))} "
              f"CPU-min  ranges: {task_from_description(meta['task']).ranges_text()}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        print("\ncommands: " + ", ".join(list(COMMANDS) + ["models"]))
        return 0
    if not argv:
        print(f"error: give a command: {', '.join(list(COMMANDS) + ['models'])} (see interp "
              "--help)", file=sys.stderr)
        return 2
    cmd, rest = argv[0], argv[1:]
    if cmd == "models":
        return _models(rest)
    if cmd not in COMMANDS:
        from interp.errors import shorten

        print(f"error: unknown command {shorten(cmd)!r}; choose one of "
              f"{', '.join(list(COMMANDS) + ['models'])}", file=sys.stderr)
        return 2
    return importlib.import_module(COMMANDS[cmd]).main(rest)


if __name__ == "__main__":
    sys.exit(main())
