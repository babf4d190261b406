"""Ablate tokens and measure what the answer loses, against random-position controls.

    ablate --tokens "x,^,=" [CKPT] [--mode knockout|mean|zero|resample] [--layers 0-3]
           [--scope input|all] [--n 500] [--controls 20] [--out DIR] [--json FILE]

(also `interp ablate ...` and `python -m circuits.ablate ...`). Prints a table; --out writes
summary.csv, sweep.csv, controls.csv, per_example.csv, ablation.json and report.html;
--json writes ablation.json alone. See `circuits.ablation` for the definitions.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _fmt(v, pct: bool) -> str:
    if v != v:  # NaN
        return "-"
    return f"{v:+.1%}" if pct else f"{v:+.3f}"


def format_summary(res, title: str) -> str:
    """The terminal table: one line per metric, then the sweep and the decoded run."""
    s = res.summary
    has_ctl = "difference" in s.columns
    lines = [title, "", "damage = how much worse than the clean run (loss up, accuracy down)"]
    head = f"  {'metric':<22}{'clean':>8}{'ablated':>9}{'damage':>9}"
    if has_ctl:
        head += f"   {'controls: mean [min, max]':<27}{'target - controls [95% CI]':<30}{'p':>6}"
    lines.append(head)
    for _, r in s.iterrows():
        pct = r.metric != "answer_loss"
        c = (lambda v: f"{v:.1%}") if pct else (lambda v: f"{v:.3f}")
        line = (f"  {r.metric.replace('field:', 'field ') :<22}{c(r.clean):>8}{c(r.ablated):>9}"
                f"{_fmt(r.target_damage, pct):>9}")
        if has_ctl:
            ctl = (f"{_fmt(r.control_damage_mean, pct)} [{_fmt(r.control_damage_min, pct)}, "
                   f"{_fmt(r.control_damage_max, pct)}]")
            diff = f"{_fmt(r.difference, pct)} [{_fmt(r.ci_low, pct)}, {_fmt(r.ci_high, pct)}]"
            line += f"   {ctl:<27}{diff:<30}{r.p_value:>6.3f}"
        lines.append(line)
    if has_ctl:
        r = s.set_index("metric").loc["answer_loss"]
        more = r.ci_low > 0 and r.p_value < 0.05
        lines.append("")
        lines.append(f"  answer loss: the target positions matter "
                     f"{'MORE' if more else 'NOT more'} than as many random input positions "
                     f"(difference {r.difference:+.3f}, 95% CI [{r.ci_low:+.3f}, {r.ci_high:+.3f}],"
                     f" p = {r.p_value:.3f}, {res.meta['controls']} controls)")
    if len(res.sweep):
        lines += ["", "sweep: ablate from layer l on (answer loss damage)",
                  f"  {'from':<6}{'target':>9}{'controls mean':>15}{'difference [95% CI]':>32}"
                  f"{'p':>7}"]
        for _, r in res.sweep[res.sweep.metric == "answer_loss"].iterrows():
            ctl = r.get("control_damage_mean", float("nan"))
            diff = (f"{r.difference:+.3f} [{r.ci_low:+.3f}, {r.ci_high:+.3f}]"
                    if "difference" in r else "-")
            p = f"{r.p_value:.3f}" if "p_value" in r else "-"
            lines.append(f"  L{int(r.from_layer):<5}{r.target_damage:>+9.3f}{ctl:>+15.3f}"
                         f"{diff:>32}{p:>7}")
    if res.decoded:
        c, t = res.decoded["clean"], res.decoded["target"]
        lines += ["", "free-running greedy decoding (clean -> target ablated):",
                  f"  exact match {c['exact_match']:.1%} -> {t['exact_match']:.1%}   "
                  f"char accuracy {c['char_accuracy']:.1%} -> {t['char_accuracy']:.1%}",
                  "  checker, share right per step: " + ", ".join(
                      f"{k} {c['per_step'][k]:.0%}->{t['per_step'].get(k, float('nan')):.0%}"
                      for k in c["per_step"])]
    return "\n".join(lines)


def to_json(res) -> dict:
    import json

    out = {"meta": res.meta,
           "summary": json.loads(res.summary.to_json(orient="records")),
           "sweep": json.loads(res.sweep.to_json(orient="records")),
           "controls": json.loads(res.control_damage.to_json(orient="records"))}
    if res.decoded:
        out["decoded"] = {k: v for k, v in res.decoded.items() if k != "outputs"}
    return out


def build_page(res, title: str):
    from interp.viz.figures import ablation_figure, sweep_figure
    from interp.viz.page import Page

    page = Page(title)
    page.paragraph(
        "Damage is how much worse the ablated run is than the clean one (answer loss up, "
        "accuracies down), teacher-forced on the same examples. Each grey dot is one control: "
        "as many positions as the target, drawn at random among the other tokens of the same "
        "region. The difference target - controls has a 95% bootstrap interval over examples; "
        "p is the share of controls that damage at least as much as the target (plus one, "
        "over controls plus one).")
    page.table(res.summary.round(4))
    page.plotly(ablation_figure(res.summary, res.control_damage))
    if len(res.sweep):
        page.heading("Where is the information read? Ablating from layer l on")
        page.plotly(sweep_figure(res.sweep))
        page.table(res.sweep.round(4))
    if res.decoded:
        import pandas as pd

        page.heading("Free-running greedy decoding")
        c, t = res.decoded["clean"], res.decoded["target"]
        rows = [{"measure": "exact_match", "clean": c["exact_match"], "target": t["exact_match"]},
                {"measure": "char_accuracy", "clean": c["char_accuracy"],
                 "target": t["char_accuracy"]}]
        rows += [{"measure": f"step {k}", "clean": v, "target": t["per_step"].get(k)}
                 for k, v in c["per_step"].items()]
        page.table(pd.DataFrame(rows).round(4))
    return page


MAX_N = 10_000       # examples of one run (each control and sweep layer reruns them all)
MAX_CONTROLS = 1_000  # random control position sets
MAX_BATCH = 4_096     # examples run at once
OWN_FILES = ("summary.csv", "sweep.csv", "controls.csv", "per_example.csv", "ablation.json",
             "report.html")


def main(argv=None) -> int:
    from interp.cli.common import run_cli

    return run_cli(_main, argv)


def _main(argv) -> int:
    import contextlib

    from circuits.ablation import MODES, SCOPES
    from interp.cli.common import Parser, at_most
    from interp.errors import InterpError, shorten
    from interp.io import (
        check_file_outside,
        check_replaceable_dir,
        check_writable,
        output_lock,
    )
    from interp.models import DEFAULT_MODEL

    p = Parser(prog="ablate", description=__doc__,
               formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", nargs="?", default=DEFAULT_MODEL,
                   help=f"checkpoint directory or shipped model (default {DEFAULT_MODEL})")
    p.add_argument("--tokens", required=True,
                   help='comma-separated tokens as typed, e.g. "x,^,="')
    p.add_argument("--mode", choices=MODES, default="knockout")
    p.add_argument("--layers", default=None, help="e.g. 0-3, 1,3 or 2- (default: all)")
    p.add_argument("--scope", choices=SCOPES, default="input",
                   help="input: the equation's tokens; all: also in the solution")
    p.add_argument("--n", type=int, default=500, help=f"examples (default 500, at most "
                   f"{MAX_N:,})")
    p.add_argument("--controls", type=int, default=20, help="random control position sets "
                   f"(default 20; 0 for none; at most {MAX_CONTROLS})")
    p.add_argument("--seed", type=int, default=0, help="seed of controls and donors")
    p.add_argument("--data-seed", type=int, default=12345, help="seed of the examples")
    p.add_argument("--all-inputs", action="store_true",
                   help="draw examples from every input, not only the held-out partition")
    p.add_argument("--no-sweep", action="store_true", help="skip the per-layer sweep")
    p.add_argument("--no-decode", action="store_true", help="skip free-running decoding")
    p.add_argument("--out", metavar="DIR", help="write CSV, JSON and report.html there")
    p.add_argument("--json", metavar="FILE", help="write the results as JSON")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--quiet", action="store_true")
    a = p.parse_args(argv)
    tokens = [t.strip() for t in a.tokens.split(",")]
    if "" in tokens:
        # a literal comma cannot be named; an empty name is almost always a typo
        raise InterpError(f"--tokens {shorten(a.tokens)!r} has an empty name; separate "
                          "tokens with single commas, e.g. 'x,^,='")
    if a.n < 1:
        raise InterpError(f"--n must be at least 1, got {a.n}")
    at_most("--n", a.n, MAX_N, f"one ablation run takes ({MAX_N:,} examples; every control "
            "and layer of the sweep runs them all again)")
    if a.controls < 0:
        raise InterpError(f"--controls must be 0 or more, got {a.controls}")
    at_most("--controls", a.controls, MAX_CONTROLS, f"one run draws ({MAX_CONTROLS} control "
            "sets; 20 already give p-values down to 1/21)")
    if a.batch_size < 1:
        raise InterpError(f"--batch-size must be at least 1, got {a.batch_size}")
    at_most("--batch-size", a.batch_size, MAX_BATCH, "one batch holds "
            f"({MAX_BATCH:,} examples)")
    if a.json:
        check_file_outside(a.json, a.out)
        check_writable(a.json)
    out = check_replaceable_dir(a.out, "ablation.json", "--out", own=OWN_FILES) \
        if a.out else None
    with output_lock(out) if out is not None else contextlib.nullcontext():
        return _run(a, tokens, out)


def _run(a, tokens, out) -> int:
    from circuits.ablation import ablate_tokens
    from interp.io import write_json
    from interp.models import load_checkpoint

    ckpt = load_checkpoint(a.checkpoint)
    bridge = ckpt.bridge()
    task = ckpt.task
    examples = task.generate(a.n, seed=a.data_seed, heldout=None if a.all_inputs else True)
    say = None if a.quiet else (lambda m: print(f"  ... {m}", file=sys.stderr, flush=True))
    res = ablate_tokens(bridge, task, examples, tokens, mode=a.mode, layers=a.layers,
                        scope=a.scope, n_controls=a.controls, seed=a.seed,
                        sweep=not a.no_sweep, decode=not a.no_decode,
                        batch_size=a.batch_size, progress=say)
    res.meta["checkpoint"] = str(a.checkpoint)
    layers = res.meta["layers"]
    title = (f"ablate {','.join(tokens)} ({a.mode}, layers {layers[0]}-{layers[-1]}"
             f"{'' if len(layers) == layers[-1] - layers[0] + 1 else ' ' + str(layers)}, "
             f"scope {a.scope}) on {a.checkpoint}: {res.meta['n']} "
             f"{'' if a.all_inputs else 'held-out '}examples, "
             f"{res.meta['target_positions_per_example']:.2f} target positions each, "
             f"{a.controls} controls")
    print(format_summary(res, title))
    data = to_json(res)
    if a.json:
        write_json(a.json, data)
    if out is not None:
        from interp.io import replace_dir_atomic

        def fill(tmp: Path) -> None:
            res.summary.to_csv(tmp / "summary.csv", index=False)
            res.sweep.to_csv(tmp / "sweep.csv", index=False)
            res.control_damage.to_csv(tmp / "controls.csv", index=False)
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
