"""Circuit discovery from the command line.

    python -m circuits.discover [CKPT] [--answer D_value] [--answer-token first|digit|differ]
        [--corrupt c] [--method exact|eap|eap-ig] [--steps 5] [--positions none|field]
        [--edges K | --target-faithfulness 0.8] [--ablation resample|mean]
        [--metric logit_diff|logprob] [--compare] [--no-labels] [--n 32] [--seed 0]
        [--out DIR] [--json FILE] [--device cpu] [--dtype float32]

(also `interp discover ...`). Pairs as in `circuits.patch`: one digit of --corrupt changed,
cut before the answer token; `--answer class` reads the class decision (pairs of different
classes, at D's first token). Every edge of the model's graph (embeddings, heads with their
query, key and value inputs, MLPs, logits; T5's encoder, decoder and cross-attention) is
scored by --method; the circuit is the top --edges edges, or the smallest reaching
--target-faithfulness (default 0.8), with nodes that no longer reach the logits pruned. The
faithfulness curve (0.1 ... 100% of the edges, measured by running each circuit) gives CPR
and CMD. --compare also runs exact edge patching and reports the method's agreement with it
per component type. --out writes edges.csv, faithfulness.csv, discover.json and report.html.
See docs/circuits.md.

In a notebook, `circuits.discover(bridge, task, pairs, ...)` is the function
`circuits.discovery.discover`. Importing this command module would otherwise hide it behind the
module of the same name, so the module itself calls through to the function.
"""

from __future__ import annotations

import argparse
import sys
import types
from pathlib import Path


class _CallableModule(types.ModuleType):
    def __call__(self, *args, **kwargs):
        """`circuits.discovery.discover(*args, **kwargs)`: the notebook function, reached
        through the command module of the same name."""
        from circuits.discovery import discover

        return discover(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule

OWN = ("edges.csv", "faithfulness.csv", "discover.json", "report.html", "compare.csv")


def main(argv=None) -> int:
    from interp.cli.common import run_cli

    return run_cli(_main, argv)


def _target(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 < v <= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {text}")
    return v


def _main(argv) -> int:
    from circuits.discovery import ABLATIONS, METHODS, POSITIONS
    from circuits.patching import METRICS, TOKENS
    from interp.cli.common import Parser, add_options, check_device, check_outputs, load, positive
    from interp.errors import InterpError
    from interp.io import output_lock

    p = Parser(prog="python -m circuits.discover", description=__doc__,
               formatter_class=argparse.RawDescriptionHelpFormatter)
    add_options(p, checkpoint="checkpoint name or folder (default {default})",
                n=(32, "pairs (default 32)"), seed=(0, "seed of the pairs (default 0)"),
                out="write edges.csv, faithfulness.csv, discover.json and report.html here",
                json="write the summary as one JSON file", nproc=True)
    p.add_argument("--answer", help="solution field read: quadratic D_value or D (default), "
                   "x1, sqrt, ..., or class (the class decision); arithmetic result")
    p.add_argument("--answer-token", choices=TOKENS, default="first",
                   help="which token of the answer field: first (default), digit, differ")
    p.add_argument("--corrupt", help="the number whose digit changes (quadratic a, b or c; "
                   "default c)")
    p.add_argument("--method", default="eap-ig", choices=METHODS,
                   help="edge scores: exact (edge patching), eap, eap-ig (default)")
    p.add_argument("--steps", type=int, default=5, help="eap-ig's integration steps (default 5)")
    p.add_argument("--positions", default="none", choices=POSITIONS,
                   help="none: edges summed over positions (default); field: one edge per "
                   "field group (b, Dexpr_c, = ...)")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--edges", type=int, help="the circuit is the top K edges (pruned)")
    size.add_argument("--target-faithfulness", type=_target, help="the circuit is the "
                      "smallest top-k reaching this faithfulness, in (0, 1] (default 0.8)")
    p.add_argument("--ablation", default="resample", choices=ABLATIONS,
                   help="edges outside the circuit take the corrupted run (resample, default) "
                   "or the mean over the pairs' clean and corrupted runs (mean)")
    p.add_argument("--metric", default="logit_diff", choices=METRICS)
    p.add_argument("--compare", action="store_true", help="also run exact edge patching and "
                   "report the agreement per component type")
    p.add_argument("--no-labels", action="store_true", help="skip the head taxonomy labels")
    a = p.parse_args(argv)
    positive("--n", a.n)
    if a.n < 2:
        raise InterpError("--n must be at least 2: faithfulness intervals resample pairs, "
                          "and one pair has none")
    positive("--steps", a.steps, 64, "one run affords (64 forward and backward passes)")
    if a.answer == "class" and a.answer_token != "first":
        raise InterpError("--answer class reads D's first token; drop --answer-token "
                          f"{a.answer_token} (or ask for --answer D --answer-token "
                          f"{a.answer_token})")
    if a.edges is not None:
        positive("--edges", a.edges)
    check_device(a)
    out = check_outputs(a, "discover.json", lambda name: name in OWN)
    from interp.launch import relaunch

    if (rc := relaunch(a, argv, "circuits.discover")) is not None:   # --nproc N: exact scores
        return rc
    ckpt = load(a)
    _check_answer(ckpt.task, a.corrupt, a.answer)
    with output_lock(out):
        return _run(a, ckpt, out)


def _check_answer(task, corrupt, answer) -> None:
    from circuits.patch import _check_fields
    from interp.errors import InterpError

    if task is None or getattr(task, "name", "") not in ("quadratic", "arithmetic"):
        name = getattr(task, "name", "text")
        raise InterpError(f"this model's task ({name}) has no corrupted pairs; circuit "
                          "discovery on the command line needs a quadratic or arithmetic "
                          "model (in a notebook, pass your own circuits.patching.Pairs)")
    if answer == "class":
        if task.name != "quadratic":
            raise InterpError("--answer class is the quadratic task's class decision; this "
                              f"model's task is {task.name}")
        answer = None
    _check_fields(task, corrupt, answer)


def _labels(a, ckpt, bridge) -> dict:
    if a.no_labels:
        return {}
    import interp
    from circuits.discovery import labels_from_table

    examples = ckpt.task.generate(200, seed=a.seed, heldout=True)
    return labels_from_table(interp.head_taxonomy(bridge, ckpt.task, examples).frame())


def _run(a, ckpt, out) -> int:
    from circuits.discovery import agreement, discover
    from circuits.patching import DEFAULT_FIELDS, corrupt_pairs
    from interp.io import replace_dir_atomic, write_json
    from interp.viz.reports import discover as report

    bridge = ckpt.bridge()
    corrupt = a.corrupt or DEFAULT_FIELDS[ckpt.task.name][0]
    answer = a.answer or DEFAULT_FIELDS[ckpt.task.name][1]
    say = None if a.quiet else (lambda m: print(f"  ... {m}", file=sys.stderr, flush=True))
    pairs = corrupt_pairs(bridge, ckpt.task, n=a.n, field=corrupt, answer=answer,
                          seed=a.seed, token=a.answer_token)
    labels = _labels(a, ckpt, bridge)
    res = discover(bridge, ckpt.task, pairs, method=a.method, positions=a.positions,
                   metric=a.metric, ablation=a.ablation, steps=a.steps, edges=a.edges,
                   target=a.target_faithfulness, labels=labels, seed=a.seed, progress=say)
    if a.compare:
        from circuits.discovery.scores import exact

        res.compare = agreement(res.scores if a.method == "exact" else
                                exact(res.setup, progress=say), res.scores, res.graph)
    data = report.summary(res, a.checkpoint, extra={"answer": answer, "corrupt": corrupt,
                                                    "answer_token": a.answer_token})
    print("\n".join(report.lines(data)))
    if a.json:
        write_json(a.json, data)
    if out is not None:
        def fill(tmp: Path) -> None:
            res.frame().to_csv(tmp / "edges.csv", index=False)
            res.faithfulness().to_csv(tmp / "faithfulness.csv", index=False)
            if res.compare is not None:
                res.compare.to_csv(tmp / "compare.csv", index=False)
            write_json(tmp / "discover.json", data)
            report.page(data, res).write(tmp / "report.html")

        replace_dir_atomic(fill, out)
        if not a.quiet:
            print(f"wrote {out}/edges.csv, faithfulness.csv, discover.json, report.html",
                  file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
