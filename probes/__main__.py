"""Linear probes at every layer and aligned position, with control tasks and a causal check.

    python -m probes [CKPT] --target D_sign [--site resid_pre] [--positions input|all|ROLE,...]
                     [--layers 0-3] [--n 2000] [--causal] [--causal-at x,^,=] [--out DIR]
    interp probe quadratic-t5-small --target D_sign,D_value,class --causal-at "x,^,="

Prints per target one line per (layer, position): the probe's test score (accuracy, or R^2
for regression targets) with its 95% interval (resampling equations), the distinct test
equations, the majority / mean baseline, the control task's score (a random label per token
and role; '-' where every example has one token there), the selectivity (score - control),
the positional baseline (the same probe on the layer-0 token+position embedding) and, for
regression targets, the R^2 within classes and the class-mean oracle's R^2; '!' marks a
probe that is accurate but not selective, 'c' one that the class alone explains.

Examples are distinct equations (`task.generate(..., unique=True)`), drawn from every input
(--heldout: only the held-out partition) at the task's class mix, split 60/20/20 by
equation. Targets that coincide on the examples (D_sign and class: the same three-way split)
are fitted and reported once, with a line saying so.

--causal removes, at each layer, the direction of the most selective probe of that layer
(--causal-at ROLES: each probe's own direction at every position of those roles, jointly)
during the forward pass of --causal-n held-out examples (the probe's test split), against
--controls random directions of the same rank there: the change in teacher-forced answer
loss and accuracies, with a bootstrap interval and a control-rank p-value. The component is
projected to 0 (amnesic probing), or with --causal-center to its mean over the training
split (the activation stays near the data; the controls are centred the same way).
Cost: per target and layer 1 + --controls teacher-forced runs of --causal-n examples
(quadratic-small, 300 examples: about 3 s a run on a busy 2-core machine; 10 controls at 4
layers for 3 targets took 7 minutes, the probe grid of 3 targets on 2,000 examples 2.5).

--out writes probes.csv, probes.json, causal.csv and a self-contained report.html; --json
writes probes.json alone. See `probes` and `probes.causal` for the definitions.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

MAX_N = 10_000        # examples probed (activations: n x positions x d_model x layers floats)
DEFAULT_N = 600       # distinct equations: the small preset has 200 one-root inputs (30%)
MAX_CONTROLS = 1_000
MAX_BATCH = 4_096
OWN_FILES = ("probes.csv", "probes.json", "causal.csv", "report.html")


def main(argv=None) -> int:
    from interp.cli.common import run_cli

    return run_cli(_main, argv)


def parser():
    from interp.cli.common import Parser, add_options
    from probes import SITES

    p = Parser(prog="python -m probes", description=__doc__,
               formatter_class=argparse.RawDescriptionHelpFormatter)
    add_options(p, checkpoint="checkpoint directory or shipped model (default {default})",
                quiet=False, device=False)
    p.add_argument("--target", required=True,
                   help="probe target(s) of the task, comma-separated, e.g. D_sign,D_value,class")
    p.add_argument("--site", default="resid_pre", choices=SITES,
                   help="where in each block (default resid_pre)")
    p.add_argument("--positions", default="input",
                   help="input (default), all, or roles/keys, e.g. 'x,^,=,a,b,c' or 'out:=#1'")
    p.add_argument("--layers", default=None, help="e.g. 0-3, 1,3 or 2- (default: all)")
    add_options(p, n=(DEFAULT_N, (f"distinct equations (default {DEFAULT_N}: the small preset "
                                  f"has 200 one-root inputs, 30 percent of the mix; at most "
                                  f"{MAX_N:,})")),
                seed=(0, "seed of the split, the control task and the random directions"),
                quiet=False, device=False)
    p.add_argument("--data-seed", type=int, default=12345, help="seed of the examples")
    p.add_argument("--heldout", action="store_true",
                   help="draw only held-out inputs (the small preset has 21 one-root ones: "
                        "n <= 70 at its mix)")
    p.add_argument("--all-inputs", action="store_true",
                   help="every input (the default; kept for older command lines)")
    p.add_argument("--causal", action="store_true",
                   help="remove the most selective probe's direction at each layer")
    p.add_argument("--causal-at", metavar="ROLES", default=None,
                   help="remove each probe's direction at these roles/keys jointly, per layer "
                        "(implies --causal), e.g. 'x,^,='")
    p.add_argument("--causal-layers", default=None,
                   help="layers of the causal check, e.g. 0-1 (default: every probed layer)")
    p.add_argument("--causal-center", action="store_true",
                   help="move the removed component to its dataset mean instead of to 0")
    p.add_argument("--causal-n", type=int, default=400,
                   help="test-split examples the causal check runs (default 400)")
    p.add_argument("--controls", type=int, default=20,
                   help=f"random directions per causal check (default 20, at most {MAX_CONTROLS})")
    p.add_argument("--batch-size", type=int, default=64)
    return add_options(p, out="write probes.csv, probes.json, causal.csv and report.html there",
                       json="write the results as JSON", quiet=True, device=True)


def _main(argv) -> int:
    from interp.cli.common import at_most, check_device, check_outputs, positive
    from interp.errors import InterpError, shorten
    from interp.io import output_lock

    a = parser().parse_args(argv)
    targets = [t.strip() for t in a.target.split(",")]
    if "" in targets:
        raise InterpError(f"--target {shorten(a.target)!r} has an empty name; separate "
                          "targets with single commas, e.g. D_sign,D_value")
    positive("--n", a.n, MAX_N, f"one probe run holds ({MAX_N:,} examples)")
    positive("--causal-n", a.causal_n, MAX_N, f"one causal check runs ({MAX_N:,} examples)")
    positive("--batch-size", a.batch_size, MAX_BATCH, f"one batch holds ({MAX_BATCH:,})")
    if a.controls < 0:
        raise InterpError(f"--controls must be 0 or more, got {a.controls}")
    at_most("--controls", a.controls, MAX_CONTROLS, f"one check draws ({MAX_CONTROLS} "
            "random directions; 20 give p-values down to 1/21)")
    check_device(a)
    out = check_outputs(a, "probes.json", OWN_FILES)
    with output_lock(out):
        return _run(a, targets, out)


def _check_inputs(bridge, task, examples, a, targets) -> None:
    """Everything a user can get wrong, before the activations are collected."""
    from types import SimpleNamespace

    from probes.activations import _groups, plan
    from probes.controls import split_groups
    from probes.fitting import resolve_labels

    info = task.probe_target_info()
    bad = [t for t in targets if t not in info]
    if bad:
        from interp.errors import InterpError, shorten

        raise InterpError(f"unknown target {shorten(bad[0])!r}; the targets of this task are "
                          f"{_listing(list(info))}")
    plan(bridge, task, examples, a.positions)
    split_groups(_groups(examples), seed=a.seed)
    for t in targets:
        resolve_labels(SimpleNamespace(task=task, examples=examples, n=len(examples)), t)
    if a.causal_at:
        plan(bridge, task, examples[:50], a.causal_at)


def _listing(names: list[str]) -> str:
    """Target names, numbered families folded: `x1_digit_0..2` for x1_digit_0, _1, _2."""
    import re

    out: dict[str, list[int]] = {}
    for name in names:
        m = re.fullmatch(r"(.*_)(\d+)", name)
        out.setdefault(m.group(1) if m else name, []).append(int(m.group(2)) if m else -1)
    return ", ".join(f"{k}{min(v)}..{max(v)}" if v != [-1] and len(v) > 1 else
                     (f"{k}{v[0]}" if v != [-1] else k) for k, v in out.items())


def _run(a, targets, out) -> int:
    import pandas as pd

    from circuits.ablation.positions import parse_layers
    from interp.cli.common import load
    from interp.hooks import arch_of, n_layers
    from interp.io import replace_dir_atomic, write_json
    from interp.tasks.base import distinct_count
    from interp.viz.reports.probe import build_page, format_table, to_json
    from probes import collect, fit
    from probes.positions import STACKS
    from probes.scores import coinciding

    ckpt = load(a)
    task = ckpt.task
    bridge = ckpt.bridge()
    if a.heldout and a.all_inputs:
        from interp.errors import InterpError

        raise InterpError("--heldout and --all-inputs contradict each other; give one")
    examples = task.generate(a.n, seed=a.data_seed, heldout=True if a.heldout else None,
                             unique=True)
    _check_inputs(bridge, task, examples, a, targets)
    same = coinciding(task, examples, targets)
    say = (lambda m: None) if a.quiet else (
        lambda m: print(f"  ... {m}", file=sys.stderr, flush=True))
    first = next(iter(STACKS[arch_of(bridge)].values()))[0]
    total = n_layers(bridge, first)
    layers = None if a.layers is None else parse_layers(a.layers, total)
    a.causal_layers = None if a.causal_layers is None else parse_layers(a.causal_layers, total)
    timing = {}
    t0 = time.perf_counter()
    say(f"activations of {len(examples)} examples at {a.site}")
    acts = collect(bridge, task, examples, sites=(a.site,), layers=layers,
                   positions=a.positions, batch_size=a.batch_size, progress=not a.quiet)
    timing["collect_s"] = round(time.perf_counter() - t0, 2)
    results = {}
    t0 = time.perf_counter()
    for t in targets:
        if t in same:
            continue
        say(f"probes for {t}")
        results[t] = fit(acts, t, seed=a.seed)
    timing["fit_s"] = round(time.perf_counter() - t0, 2)
    frame = pd.concat([r.frame() for r in results.values()], ignore_index=True)
    causal_results = []
    if a.causal or a.causal_at:
        t0 = time.perf_counter()
        causal_results = _causal(bridge, task, acts, results, a, say)
        timing["causal_s"] = round(time.perf_counter() - t0, 2)
    causal = (pd.concat([_causal_frame(r) for r in causal_results], ignore_index=True)
              if causal_results else None)
    distinct = distinct_count(examples)
    title = (f"probe {','.join(targets)} at {a.site} ({a.positions}) on {a.checkpoint}: "
             f"{acts.n} {'held-out ' if a.heldout else ''}examples ({distinct} distinct "
             f"equations, split by equation), {len(acts.keys)} positions" + (f", causal check on {causal_results[0].meta['n']} test-split "
                             f"examples, {a.controls} controls" if causal_results else ""))
    notes = [f"{t} coincides with {u} on these {distinct} equations (each value of one goes "
             f"with exactly one of the other): one finding, reported once as {u}"
             for t, u in same.items()]
    print(format_table(frame, causal, title, notes))
    meta = {"checkpoint": str(a.checkpoint), "targets": targets, "site": a.site,
            "positions": a.positions, "keys": acts.keys, "n": acts.n, "seed": a.seed,
            "data_seed": a.data_seed, "heldout": a.heldout, "distinct_equations": distinct,
            "coincide": same, "layers": acts.layers, "controls": a.controls,
            "causal_at": a.causal_at, "timing_s": timing}
    data = to_json(frame, causal, meta)
    if a.json:
        write_json(a.json, data)
    if out is None:
        return 0

    def fill(tmp: Path) -> None:
        frame.to_csv(tmp / "probes.csv", index=False)
        (causal if causal is not None else pd.DataFrame(columns=CAUSAL_COLUMNS)).to_csv(
            tmp / "causal.csv", index=False)
        write_json(tmp / "probes.json", data)
        build_page(frame, causal_results, title, notes).write(tmp / "report.html")

    replace_dir_atomic(fill, out)
    if not a.quiet:
        print(f"wrote {out}/probes.csv, probes.json, causal.csv, report.html", file=sys.stderr)
    return 0


CAUSAL_COLUMNS = ["target", "site", "stack", "layer", "positions", "rank", "mode", "centered",
                  "metric", "clean", "ablated", "target_damage", "control_damage_mean",
                  "control_damage_sd", "control_damage_min", "control_damage_max",
                  "difference", "ci_low", "ci_high", "p_value"]


def _causal_frame(res):
    f = res.frame()
    f.insert(0, "target", res.meta["target"])
    return f.reindex(columns=CAUSAL_COLUMNS)


def most_selective(g):
    """The index of the most selective row of a probe frame; where no row has a control
    (every example has one token at those positions), the row furthest above its baseline."""
    sel = g.selectivity
    return (sel if sel.notna().any() else g.score - g.baseline).idxmax()


def _causal(bridge, task, acts, results, a, say) -> list:
    """One causal check per target, stack and layer: the most selective cell of the layer,
    or (--causal-at) every position of those roles, each with its own probe's direction."""
    from circuits.ablation.positions import prepare
    from probes.causal import remove_direction, teacher_forced
    from probes.positions import select

    res0 = next(iter(results.values()))
    test = [i for i in range(acts.n) if int(res0.parts[i]) == 2][: a.causal_n]
    examples = [acts.examples[i] for i in test]
    prep = prepare(bridge, task, examples)
    say(f"causal check: clean run of {len(examples)} test-split examples")
    clean = teacher_forced(bridge, prep, None, a.batch_size)
    chosen = select(acts.keys, a.causal_at, True) if a.causal_at else None
    out = []
    for t, res in results.items():
        f = res.frame()
        for st in acts.stacks:
            for layer in acts.layers[st]:
                if a.causal_layers is not None and layer not in a.causal_layers:
                    continue
                g = f[(f["stack"] == st) & (f["layer"] == layer)].dropna(subset=["score"])
                if chosen is not None:
                    keys = [k for k in acts.keys if k in chosen and k in set(g.position)]
                elif len(g):
                    keys = [g.loc[most_selective(g), "position"]]
                else:
                    keys = []
                if not keys:
                    continue
                dirs = {k: res.direction(a.site, layer, k, st) for k in keys}
                centers = None
                if a.causal_center:          # the mean activation at each key (train part)
                    X = acts.get(a.site, layer, st)
                    centers = {}
                    for k in keys:
                        c = acts.position_index(k)
                        rows = acts.present[:, c] & (res0.parts == 0)
                        centers[k] = X[rows, c].mean(0)
                say(f"causal check {t}: {st} L{layer} {' '.join(keys)}")
                r = remove_direction(bridge, task, examples, a.site, layer, keys, dirs,
                                     stack=st, n_controls=a.controls, seed=a.seed,
                                     batch_size=a.batch_size, prep=prep, clean=clean,
                                     center=centers)
                r.meta["target"] = t
                out.append(r)
    return out


if __name__ == "__main__":
    sys.exit(main())
