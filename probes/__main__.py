"""Linear probes at every layer and aligned position, with control tasks and a causal check.

    python -m probes [CKPT] --target D_sign [--site resid_pre] [--positions input|all|ROLE,...]
                     [--layers 0-3] [--n 600] [--heldout] [--causal] [--causal-at x,^,=] [--out DIR]
    interp probe quadratic-t5-small --target D_sign,D_value,class --causal-at "x,^,="

Prints the findings first (per target the most selective reliable cell and the reliable
cell highest over its baseline, the causal checks' verdicts), then per target one line per
(layer, position), fitted to the terminal's width (--wide: every column): the probe's test
score (accuracy, or R^2 for regression targets) with its 95% interval (resampling
equations), the majority / mean baseline, the selectivity (score - control), the distinct
test equations, the control task's score (a random label per token and role; '-' where
every example has one token there), the positional baseline (the same probe on the layer-0
token+position embedding) and, for regression targets, the R^2 within classes and the
class-mean oracle's R^2; '!' marks a probe that is accurate but not selective, 'c' one that
the class alone explains, 'few' a cell with fewer than 20 distinct test equations: such a
cell is masked on the maps, never chosen as the best, and never checked causally.

Examples are distinct equations (`task.generate(..., unique=True)`), drawn from every input
(--heldout: only the held-out partition) at the task's class mix, split 60/20/20 by
equation. Targets that coincide on the examples (D_sign and class: the same three-way split)
are fitted and reported once, with a line saying so.

--causal erases the target at each layer, at every position that holds it (its probe beats
the baseline by 0.05; --causal-at ROLES: at those roles/keys instead), with LEACE (the
least-squares closed form after which no linear predictor of the target beats a constant;
--causal-method inlp: INLP iterated until a fresh probe is at baseline, at most 32
dimensions or half of d_model). The power check is printed first: a fresh probe on the
erased activations of held-out equations, at the erased positions and one step on (the
erasure applied during the forward pass). Only where both are within --causal-margin (0.02)
of the baseline does the erasure get a verdict: the change in teacher-forced loss and
accuracies of --causal-n test-split examples against --controls random erasures of the same
rank at the same positions (interval resampled by equation, control-rank p-value;
"untestable" below 19 controls). Where the erasure fails it says so and runs an interchange
intervention instead: the erased subspace's component replaced by that of a same-layout
donor with another target value, against random subspaces of the same rank. See
`probes.erasure`.
Cost: per target and layer 2 forward passes of --n examples (the power check one step on)
and 1 + --controls teacher-forced runs of --causal-n examples.

--out writes probes.csv, probes.json, causal.csv, causal_power.csv and a self-contained
report.html; --json writes probes.json alone. See `probes`, `probes.causal` and
`probes.erasure` for the definitions.
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
OWN_FILES = ("probes.csv", "probes.json", "causal.csv", "causal_power.csv", "report.html")


def main(argv=None) -> int:
    from interp.cli.common import run_cli

    return run_cli(_main, argv)


def parser():
    from interp.cli.common import Parser, add_options, nonempty, seed_value
    from probes import SITES

    p = Parser(prog="python -m probes", description=__doc__,
               formatter_class=argparse.RawDescriptionHelpFormatter)
    add_options(p, checkpoint="checkpoint directory or shipped model (default {default})",
                quiet=False, device=False)
    p.add_argument("--target", required=True,
                   help="probe target(s) of the task, comma-separated, e.g. D_sign,D_value,class")
    p.add_argument("--site", default="resid_pre", choices=SITES,
                   help="where in each block (default resid_pre)")
    p.add_argument("--positions", default="input", type=nonempty,
                   help="input (default), all, or roles/keys, e.g. 'x,^,=,a,b,c' or 'out:=#1'")
    p.add_argument("--layers", default=None, type=nonempty,
                   help="e.g. 0-3, 1,3 or 2- (default: all)")
    add_options(p, n=(DEFAULT_N, (f"distinct equations (default {DEFAULT_N}: the small preset "
                                  f"has 200 one-root inputs, 30 percent of the mix; at most "
                                  f"{MAX_N:,})")),
                seed=(0, "seed of the split, the control task and the random directions"),
                quiet=False, device=False)
    p.add_argument("--data-seed", type=seed_value, default=12345,
                   help="seed of the examples (0 to 2**63-1)")
    p.add_argument("--heldout", action="store_true",
                   help="draw only held-out inputs (the small preset has 21 one-root ones: "
                        "n <= 70 at its mix)")
    p.add_argument("--all-inputs", action="store_true",
                   help="every input (the default; kept for older command lines)")
    p.add_argument("--causal", action="store_true",
                   help="erase the target at each layer where its probe reads it, then test "
                        "whether the answer needs it")
    p.add_argument("--causal-at", metavar="ROLES", default=None, type=nonempty,
                   help="erase at these roles/keys jointly, per layer (implies --causal), "
                        "e.g. 'x,^,='")
    p.add_argument("--causal-method", default="leace", choices=("leace", "inlp"),
                   help="LEACE (default) or INLP iterated to baseline")
    p.add_argument("--causal-margin", type=float, default=0.02,
                   help="a fresh probe within this of its baseline (accuracy or R^2) counts "
                        "as erased (default 0.02)")
    p.add_argument("--causal-layers", default=None, type=nonempty,
                   help="layers of the causal check, e.g. 0-1 (default: every probed layer)")
    p.add_argument("--causal-center", action="store_true",
                   help="kept for old scripts: every erasure now moves the component to its "
                        "training mean")
    p.add_argument("--causal-n", type=int, default=400,
                   help="test-split examples the causal check runs (default 400)")
    p.add_argument("--controls", type=int, default=20,
                   help=f"random directions per causal check (default 20, at most {MAX_CONTROLS})")
    p.add_argument("--wide", action="store_true", help="print every column of the tables (by "
                   "default they fit the terminal's width, the columns left out named)")
    p.add_argument("--batch-size", type=int, default=64)
    return add_options(p, out="write probes.csv, probes.json, causal.csv, causal_power.csv and report.html there",
                       json="write the results as JSON", quiet=True, device=True, nproc=True)


def _main(argv) -> int:
    from interp.cli.common import at_most, check_device, check_outputs, positive
    from interp.errors import InterpError, shorten
    from interp.io import output_lock

    a = parser().parse_args(argv)
    targets = [t.strip() for t in a.target.split(",")]
    if "" in targets:
        raise InterpError(f"--target {shorten(a.target)!r} has an empty name; separate "
                          "targets with single commas, e.g. D_sign,D_value")
    twice = sorted({t for t in targets if targets.count(t) > 1})
    if twice:
        raise InterpError(f"--target names {shorten(twice[0])!r} more than once; give each "
                          "target once")
    positive("--n", a.n, MAX_N, f"one probe run holds ({MAX_N:,} examples)")
    positive("--causal-n", a.causal_n, MAX_N, f"one causal check runs ({MAX_N:,} examples)")
    positive("--batch-size", a.batch_size, MAX_BATCH, f"one batch holds ({MAX_BATCH:,})")
    if not 0 < a.causal_margin < 1:
        raise InterpError(f"--causal-margin must lie between 0 and 1 (accuracy points or "
                          f"R^2), got {a.causal_margin}")
    if a.controls < 0:
        raise InterpError(f"--controls must be 0 or more, got {a.controls}")
    at_most("--controls", a.controls, MAX_CONTROLS, f"one check draws ({MAX_CONTROLS} "
            "random directions; 20 give p-values down to 1/21)")
    check_device(a)
    out = check_outputs(a, "probes.json", OWN_FILES)
    from interp.launch import relaunch

    if (rc := relaunch(a, argv, "probes")) is not None:     # --nproc N
        return rc
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
        from interp.errors import InterpError
        from probes.positions import select

        probed = plan(bridge, task, examples[:50], a.positions)[2]
        at = plan(bridge, task, examples[:50], a.causal_at)[2]   # names real positions
        for item in (p.strip() for p in a.causal_at.split(",") if p.strip()):
            try:
                select(probed, item, True)
            except InterpError:
                raise InterpError(f"--causal-at {item!r} names positions that are not among "
                                  f"the probed ones (--positions {a.positions!r}); add them "
                                  "to --positions, e.g. --positions input") from None
        del at


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
    import json

    from interp.tasks.base import distinct_count
    from interp.viz.reports.probe import build_page, format_causal, format_table, to_json
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
    if a.causal_layers is not None and layers is not None and \
            not set(a.causal_layers) <= set(layers):
        from interp.errors import InterpError

        raise InterpError(f"--causal-layers {sorted(set(a.causal_layers) - set(layers))} are "
                          f"not among the probed --layers {sorted(layers)}; a causal check "
                          "needs that layer's probes: add it to --layers")
    if a.causal_layers is not None and not (a.causal or a.causal_at):
        from interp.errors import InterpError

        raise InterpError("--causal-layers applies to the causal check; add --causal or "
                          "--causal-at")
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
    power = (pd.concat([_power_frame(r) for r in causal_results], ignore_index=True)
             if causal_results else pd.DataFrame(columns=POWER_COLUMNS))
    title = (f"probe {','.join(targets)} at {a.site} ({a.positions}) on {a.checkpoint}: "
             f"{acts.n} {'held-out ' if a.heldout else ''}examples ({distinct} distinct "
             f"equations, split by equation), {len(acts.keys)} positions" + (f", causal check on {causal_results[0].meta['n']} test-split "
                             f"examples, {a.controls} controls" if causal_results else ""))
    notes = [f"{t} coincides with {u} on these {distinct} equations (each value of one goes "
             f"with exactly one of the other): one finding, reported once as {u}"
             for t, u in same.items()]
    print(format_table(frame, None, title, notes, causal_results, wide=a.wide))
    if causal_results:
        print(format_causal(power, causal_results, wide=a.wide))
    meta = {"checkpoint": str(a.checkpoint), "targets": targets, "site": a.site,
            "positions": a.positions, "keys": acts.keys, "n": acts.n, "seed": a.seed,
            "data_seed": a.data_seed, "heldout": a.heldout, "distinct_equations": distinct,
            "coincide": same, "layers": acts.layers, "controls": a.controls,
            "causal_at": a.causal_at, "timing_s": timing}
    data = to_json(frame, causal, meta)
    data["causal_power"] = json.loads(power.to_json(orient="records"))
    data["causal_verdicts"] = [{k: r.meta[k] for k in ("target", "layer", "positions",
                                                       "method", "reached", "verdict",
                                                       "conclusion", "note")}
                               for r in causal_results]
    if a.json:
        write_json(a.json, data)
    if out is None:
        return 0

    def fill(tmp: Path) -> None:
        frame.to_csv(tmp / "probes.csv", index=False)
        (causal if causal is not None else pd.DataFrame(columns=CAUSAL_COLUMNS)).to_csv(
            tmp / "causal.csv", index=False)
        power.to_csv(tmp / "causal_power.csv", index=False)
        write_json(tmp / "probes.json", data)
        build_page(frame, causal_results, title, notes).write(tmp / "report.html")

    replace_dir_atomic(fill, out)
    if not a.quiet:
        print(f"wrote {out}/probes.csv, probes.json, causal.csv, causal_power.csv, "
              "report.html", file=sys.stderr)
    return 0


CAUSAL_COLUMNS = ["target", "site", "stack", "layer", "positions", "method", "rank",
                  "reached", "verdict", "test", "metric", "clean", "ablated", "target_damage",
                  "control_damage_mean", "control_damage_sd", "difference", "ci_low",
                  "ci_high", "p_value"]
POWER_COLUMNS = ["target", "layer", "positions", "where", "at", "position", "method", "rank",
                 "score", "baseline", "excess", "at_baseline", "n_train", "n_test",
                 "distinct_test"]


def _causal_frame(res):
    return res.frame().reindex(columns=CAUSAL_COLUMNS)


def _power_frame(res):
    f = res.power.copy()
    f.insert(0, "positions", " ".join(res.meta["positions"]))
    f.insert(0, "layer", res.meta["layer"])
    f.insert(0, "target", res.meta["target"])
    return f.reindex(columns=POWER_COLUMNS)


def _causal(bridge, task, acts, results, a, say) -> list:
    """One erasure check per target, stack and layer (`probes.causal.erasure_check`): at the
    positions whose probe beats its baseline by `probes.erasure.HOLDS`, or (--causal-at)
    at every position of those roles; only at reliable cells (`probes.scores.reliable_rows`:
    at least MIN_TEST distinct test equations). Launched (`interp.distributed`), the checks
    are shared out over the processes, one check a unit, and gathered in order."""
    from interp.viz.reports.probe_maps import MIN_TEST
    from probes.causal import erasure_check
    from probes.erasure import holding_positions
    from probes.positions import select
    from probes.scores import reliable_rows

    from interp import distributed

    chosen = select(acts.keys, a.causal_at, True) if a.causal_at else None
    cells = []                              # (target, stack, layer, keys): one check each
    for t, res in results.items():
        full = res.frame()
        f = reliable_rows(full)             # cells under the minimum are never checked
        for st in acts.stacks:
            for layer in acts.layers[st]:
                if a.causal_layers is not None and layer not in a.causal_layers:
                    continue
                own = [k for k, s in zip(acts.keys, acts.key_stack) if s == st]
                if chosen is not None:
                    here = f[(f["layer"] == layer) & (f["stack"] == st)]
                    ok = set(here.position.astype(str))
                    keys = [k for k in own if k in chosen and k in ok]
                    few = [k for k in own if k in chosen and k not in ok]
                    if few:
                        say(f"causal check {t}: {st} L{layer}: {' '.join(few)} left out "
                            f"(under {MIN_TEST} distinct test equations)")
                else:
                    hold = set(holding_positions(f, layer, st))
                    keys = [k for k in own if k in hold]
                if not keys:
                    say(f"causal check {t}: {st} L{layer}: no position holds it; skipped")
                    continue
                cells.append((t, st, layer, keys))
    # launched: each process checks its share of the cells; every check is whole in itself
    # (its erasers, controls and bootstrap seeded by --seed alone), so the gathered list is
    # the one process's, check for check
    shared: dict = {}
    out = []
    for t, st, layer, keys in distributed.shard(cells, "causal checks"):
        say(f"causal check {t}: {st} L{layer} {' '.join(keys)}")
        out.append(erasure_check(bridge, task, acts, t, a.site, layer, keys, stack=st,
                                 method=a.causal_method, n_controls=a.controls, seed=a.seed,
                                 n_test=a.causal_n, batch_size=a.batch_size,
                                 margin=a.causal_margin, parts=results[t].parts,
                                 progress=say, shared=shared))
    return distributed.gather(out)


if __name__ == "__main__":
    sys.exit(main())
