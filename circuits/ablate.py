"""Ablate tokens, or one head's route, and measure what the answer loses, against controls.

    ablate --tokens "x,^,=" [CKPT] [--mode knockout|mean|zero|resample] [--layers 0-3]
           [--scope input|all] [--donors layout|any] [--n 70] [--controls 20]
           [--out DIR] [--json FILE]
    ablate --route "L2H0:D_value->b,c" [--route "L1H2:offset=1;L0H3:token=="] [CKPT]
           [--n 70] [--controls 20] [--decode] [--reads] [--wide] [--out DIR] [--json FILE]

(also `interp ablate ...` and `python -m circuits.ablate ...`). Prints the findings (the
verdict sentences), then a table (--route: fitted to the terminal's width, --wide for every
column); with --tokens --out writes summary.csv, sweep.csv, controls.csv, per_example.csv,
ablation.json and report.html, with --route routes.csv, routes.json and report.html; --json writes the JSON
alone. --tokens draws unique held-out equations and compares the target with as many random
positions and as many role-matched (structural, non-digit) positions, each with its verdict;
`resample` takes donors of the same layout unless --donors any (docs/ablation.md). A route
is `[enc.|dec.|cross.]L<layer>H<head>:` then `Q->K` (query groups -> key
groups; `->K` for every query, `*->K` too unless `*` is a group, such as the
solution's multiplication sign), `offset=d` or `token=t`: in that one head the attention from
Q to K is cut and the rows renormalised, against controls that cut the same clean attention
mass in the same rows (other keys of the same head, else other heads of the layer; see
`circuits.ablation.masscut`); --reads adds the value path patch (the head's values at K
from a same-layout donor, in the rows of Q only). Fewer than 19 controls cannot reach
p <= 0.05: the verdict is then "untestable at N controls". See `circuits.ablation`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

MAX_N = 10_000       # examples of one run (each control and sweep layer reruns them all)
#: --tokens' default --n: unique held-out equations at the training mix 50/30/20; the small
#: preset has only 21 held-out one-root inputs, so 70 (= 21 / 0.3) is the most it allows
TOKENS_N = 70
MAX_CONTROLS = 1_000  # random control position sets
MAX_ROUTES = 64       # routes of one run (each runs its target and every control)
MAX_BATCH = 4_096     # examples run at once
OWN_FILES = ("summary.csv", "sweep.csv", "controls.csv", "per_example.csv", "ablation.json",
             "report.html")
ROUTE_FILES = ("routes.csv", "routes.json", "report.html", "reads.csv")


def main(argv=None) -> int:
    from interp.cli.common import run_cli

    return run_cli(_main, argv)


def parser():
    from circuits.ablation import MODES, SCOPES
    from circuits.ablation.positions import DONORS
    from interp.cli.common import Parser, add_options, nonempty, seed_value

    p = Parser(prog="ablate", description=__doc__,
               formatter_class=argparse.RawDescriptionHelpFormatter)
    add_options(p, checkpoint="checkpoint directory or shipped model (default {default})",
                quiet=False, device=False)
    p.add_argument("--tokens", default=None,
                   help='comma-separated tokens as typed, e.g. "x,^,="')
    p.add_argument("--route", action="append", default=None,
                   help='knock out one head\'s route instead, e.g. "L2H0:D_value->b,c", '
                   '"L1H2:offset=1", "L0H3:token=="; T5: "cross.L1H3:D_value->b" (enc., '
                   'dec., cross.); repeatable or ";"-separated')
    p.add_argument("--mode", choices=MODES, default="knockout")
    p.add_argument("--layers", default=None, type=nonempty,
                   help="e.g. 0-3, 1,3 or 2- (default: all)")
    p.add_argument("--scope", choices=SCOPES, default="input",
                   help="input: the equation's tokens; all: also in the solution")
    add_options(p, n=(None, f"distinct examples (default {TOKENS_N}: held-out equations at the "
                          f"training mix, the most the small preset has; at most {MAX_N:,})"),
                seed=(0, "seed of controls and donors"), quiet=False, device=False)
    p.add_argument("--controls", type=int, default=20, help="random control position sets, "
                   "and as many role-matched ones with --tokens "
                   f"(default 20; 0 for none; at most {MAX_CONTROLS})")
    p.add_argument("--donors", choices=DONORS, default=None,
                   help="--mode resample: layout (default) donors of the same layout, only "
                   "the values differ; any: any other equation (the old rule)")
    p.add_argument("--data-seed", type=seed_value, default=12345,
                   help="seed of the examples (0 to 2**63-1)")
    p.add_argument("--all-inputs", action="store_true",
                   help="draw examples from every input, not only the held-out partition")
    p.add_argument("--no-sweep", action="store_true", help="skip the per-layer sweep")
    p.add_argument("--no-decode", action="store_true", help="skip free-running decoding")
    p.add_argument("--decode", action="store_true", help="with --route: also decode greedily "
                   "under each knockout and its controls, the checker per step (slower)")
    p.add_argument("--reads", action="store_true", help="with --route: also test whether the "
                   "head reads K (its values at K from a same-layout donor, in the rows of Q "
                   "only, against the controls' entries resampled alike)")
    p.add_argument("--wide", action="store_true", help="with --route: print every column of "
                   "the table (by default it fits the terminal's width, the columns left out "
                   "named below it)")
    p.add_argument("--batch-size", type=int, default=128)
    return add_options(p, out="write CSV, JSON and report.html there",
                       json="write the results as JSON", quiet=True, device=True)


def _main(argv) -> int:
    from interp.cli.common import check_device, check_outputs
    from interp.errors import InterpError, shorten
    from interp.io import output_lock

    a = parser().parse_args(argv)
    if a.n is None:
        a.n = TOKENS_N              # --route too: distinct held-out equations
    if (a.tokens is None) == (a.route is None):
        raise InterpError("give either --tokens (ablate token positions) or --route (knock "
                          "out one head's route), e.g. --tokens 'x,^,=' or --route "
                          "'L2H0:D_value->b,c'")
    _check_numbers(a)
    check_device(a)
    if a.route is not None:
        routes = [r.strip() for spec in a.route for r in spec.split(";")]
        if "" in routes:
            raise InterpError(f"--route {shorten(';'.join(a.route))!r} has an empty route; "
                              "separate routes with single semicolons")
        if len(routes) > MAX_ROUTES:
            raise InterpError(f"--route names {len(routes)} routes; one run takes at most "
                              f"{MAX_ROUTES} (each runs its target and every control); split "
                              "them over several runs")
        twice = sorted({r for r in routes if routes.count(r) > 1})
        if twice:
            raise InterpError(f"--route names {shorten(twice[0])!r} more than once; give each "
                              "route once")
        for flag, bad in (("--mode", a.mode != "knockout"), ("--layers", a.layers is not None),
                          ("--scope", a.scope != "input"), ("--no-sweep", a.no_sweep),
                          ("--no-decode", a.no_decode), ("--donors", a.donors is not None)):
            if bad:
                raise InterpError(f"{flag} applies to --tokens; a --route names its own layer "
                                  "and head (decoding: --decode)")
        out = check_outputs(a, "routes.json", ROUTE_FILES)
        with output_lock(out):
            return _run_routes(a, routes, out)
    if a.decode:
        raise InterpError("--decode applies to --route; --tokens decodes unless --no-decode")
    if a.wide:
        raise InterpError("--wide applies to --route (its table fits the terminal unless "
                          "--wide); drop it with --tokens")
    if a.reads:
        raise InterpError("--reads applies to --route (the value path patch of one head's "
                          "route); drop it with --tokens")
    if a.donors is not None and a.mode != "resample":
        raise InterpError(f"--donors applies to --mode resample (here --mode {a.mode}); drop "
                          "it or add --mode resample")
    tokens = [t.strip() for t in a.tokens.split(",")]
    if "" in tokens:
        # a literal comma cannot be named; an empty name is almost always a typo
        raise InterpError(f"--tokens {shorten(a.tokens)!r} has an empty name; separate "
                          "tokens with single commas, e.g. 'x,^,='")
    out = check_outputs(a, "ablation.json", OWN_FILES)
    with output_lock(out):
        return _run(a, tokens, out)


def _check_numbers(a) -> None:
    from interp.cli.common import at_most, positive
    from interp.errors import InterpError

    positive("--n", a.n, MAX_N, f"one ablation run takes ({MAX_N:,} examples; every control "
             "and layer of the sweep runs them all again)")
    if a.tokens is not None and a.mode in ("mean", "resample") and a.n < 2:
        raise InterpError(f"--mode {a.mode} with --n {a.n}: a mean over one example, or a "
                          "donor from it, is the example itself and changes nothing; give "
                          "--n 2 or more")
    if a.controls < 0:
        raise InterpError(f"--controls must be 0 or more, got {a.controls}")
    at_most("--controls", a.controls, MAX_CONTROLS, f"one run draws ({MAX_CONTROLS} control "
            "sets; 20 already give p-values down to 1/21)")
    positive("--batch-size", a.batch_size, MAX_BATCH, f"one batch holds ({MAX_BATCH:,} "
             "examples)")


def _run_routes(a, routes, out) -> int:
    from circuits.ablation import ablate_route
    from interp.cli.common import load
    from interp.io import replace_dir_atomic, write_json
    from interp.viz.reports.routes import build_page, format_routes, to_json

    ckpt = load(a)
    task = ckpt.task
    examples = task.generate(a.n, seed=a.data_seed, heldout=None if a.all_inputs else True,
                             unique=True)
    say = None if a.quiet else (lambda m: print(f"  ... {m}", file=sys.stderr, flush=True))
    res = ablate_route(ckpt.bridge(), task, examples, routes, n_controls=a.controls,
                       seed=a.seed, decode=a.decode, batch_size=a.batch_size, progress=say,
                       reads=a.reads)
    res.meta["checkpoint"] = str(a.checkpoint)
    title = (f"route knockout on {a.checkpoint}: {res.meta['n']} "
             f"{'' if a.all_inputs else 'held-out '}examples ({res.meta['distinct']} distinct "
             f"equations), {a.controls} equal-mass controls per route")
    print(format_routes(res, title, wide=a.wide))
    data = to_json(res)
    if a.json:
        write_json(a.json, data)
    if out is None:
        return 0

    def fill(tmp: Path) -> None:
        res.summary.to_csv(tmp / "routes.csv", index=False)
        if res.reads is not None:
            res.reads.to_csv(tmp / "reads.csv", index=False)
        write_json(tmp / "routes.json", data)
        build_page(res, title).write(tmp / "report.html")

    replace_dir_atomic(fill, out)
    if not a.quiet:
        print(f"wrote {out}/routes.csv, routes.json, report.html"
              f"{', reads.csv' if res.reads is not None else ''}", file=sys.stderr)
    return 0


def _run(a, tokens, out) -> int:
    from circuits.ablation import ablate_tokens
    from interp.cli.common import load
    from interp.io import replace_dir_atomic, write_json
    from interp.viz.reports.ablate import build_page, controls_frame, format_summary, to_json

    ckpt = load(a)
    task = ckpt.task
    examples = task.generate(a.n, seed=a.data_seed, heldout=None if a.all_inputs else True,
                             unique=True)
    say = None if a.quiet else (lambda m: print(f"  ... {m}", file=sys.stderr, flush=True))
    res = ablate_tokens(ckpt.bridge(), task, examples, tokens, mode=a.mode, layers=a.layers,
                        scope=a.scope, n_controls=a.controls, seed=a.seed,
                        sweep=not a.no_sweep, decode=not a.no_decode,
                        batch_size=a.batch_size, progress=say, donors=a.donors or "layout")
    res.meta["checkpoint"] = str(a.checkpoint)
    layers = res.meta["layers"]
    title = (f"ablate {','.join(tokens)} ({a.mode}, layers {layers[0]}-{layers[-1]}"
             f"{'' if len(layers) == layers[-1] - layers[0] + 1 else ' ' + str(layers)}, "
             f"scope {a.scope}) on {a.checkpoint}: {res.meta['n']} "
             f"{'' if a.all_inputs else 'held-out '}equations ({res.meta['distinct']} "
             f"distinct), {res.meta['target_positions_per_example']:.2f} target positions "
             f"each, {a.controls} random and {res.meta['role']['drawn']} role-matched controls")
    print(format_summary(res, title))
    data = to_json(res)
    if a.json:
        write_json(a.json, data)
    if out is None:
        return 0

    def fill(tmp: Path) -> None:
        res.summary.to_csv(tmp / "summary.csv", index=False)
        res.sweep.to_csv(tmp / "sweep.csv", index=False)
        controls_frame(res).to_csv(tmp / "controls.csv", index=False)
        res.per_example.to_csv(tmp / "per_example.csv", index=False)
        write_json(tmp / "ablation.json", data)
        build_page(res, title).write(tmp / "report.html")

    replace_dir_atomic(fill, out)
    if not a.quiet:
        print(f"wrote {out}/summary.csv, sweep.csv, controls.csv, per_example.csv, "
              "ablation.json, report.html", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
