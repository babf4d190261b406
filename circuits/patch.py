"""Activation and attribution patching from the command line.

    python -m circuits.patch [CKPT] [--sites resid_pre,attn_out,mlp_out,head,head_pos]
        [--n 32] [--corrupt c] [--answer D_value] [--direction denoise|noise]
        [--metric logit_diff|logprob] [--attribution atp|atp+qkv|atp*|...|none]
        [--out DIR] [--json FILE]
        [--device cpu] [--dtype float32]
        [--answer-token first|digit|differ]
    python -m circuits.patch [CKPT] --slices [--targets "x,^,=,0,<sep>"] [--controls 20]
        [--classes two,one,none] [--per-class 200] [--answer D|sqrt|x1|FIELD] ...

(also `interp patch ...`). Pairs: one digit of coefficient --corrupt changed (the corrupted
equation is one the task accepts), cut before the first token of --answer where the two
solutions differ. Prints, per site, the cells that restore (denoise) or remove (noise) the
largest share of the clean-corrupt gap, and how well attribution patching (--attribution)
ranks the cells against the exact result: Spearman, top-10 recall, the lowest rank it
gives an exact top-10 cell and its largest underestimate (`circuits.patching.compare`).
--out writes one CSV per site, patching.json and report.html (heatmaps); see
`circuits.patching`.

A native language model (`induction-attn2l`, ...) has no task: it is patched on induction
pairs (`circuits.discovery.induction.induction_pairs`: --n of them, --seed; the earlier copy
of the query token replaced), on the sites it has (no mlp_out in an attention-only model);
--corrupt, --answer, --answer-token, --classes and --slices choose a task's pairs and are
refused. Compiled RASP programs are refused (their pairs: circuits.discovery.known).

--slices: every layout group of pairs from unique held-out problems of every class (not one
layout), the residual stream entering each layer patched at each target position alone, at
all of them jointly, and at --controls sets of as many other input positions jointly;
prints the pooled shares of the gap with intervals over equations and the joint patch's
verdict against its controls; --out writes slices.csv (pooled and per group),
patching.json and report.html. See `circuits.patching.slices` and docs/patching.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

#: --attribution: the methods of `circuits.patching.attribute`, or none
ATTRIBUTIONS = ("atp", "atp+qk", "atp+qkv", "atp+graddrop", "atp*", "none")
#: the default on an HF GPT-2 decoder (docs/patching.md: the measurements behind it)
DEFAULT_ATTRIBUTION = "atp+qkv"
DEFAULT_SITES = {"decoder": "resid_pre,attn_out,mlp_out,head,head_pos",
                 "t5": "enc.resid_pre,dec.resid_pre,enc.head_pos,cross.head_pos,dec.head_pos"}


def main(argv=None) -> int:
    from interp.cli.common import run_cli

    return run_cli(_main, argv)


def _own_files() -> tuple[str, ...]:
    """The files an earlier --out holds: patching.json, report.html and one CSV per site it
    knows (`<site>.csv`); any other CSV there is someone else's."""
    from circuits.patching import DECODER_SITES, T5_SITES

    return ("patching.json", "report.html", "slices.csv") + tuple(f"{s}.csv" for s in
                                                    dict.fromkeys(DECODER_SITES + T5_SITES))


def OWN_FILES(name: str) -> bool:
    return name in _own_files()


def _main(argv) -> int:
    from circuits.patching import DIRECTIONS, METRICS, TOKENS
    from interp.cli.common import Parser, add_options, check_device, check_outputs, load, positive
    from interp.errors import InterpError, shorten
    from interp.io import output_lock
    from interp.launch import relaunch

    p = Parser(prog="python -m circuits.patch", description=__doc__,
               formatter_class=argparse.RawDescriptionHelpFormatter)
    add_options(p, checkpoint="checkpoint name or folder (default {default})",
                n=(32, "pairs (default 32)"), seed=(0, "seed of the pairs (default 0)"),
                out="write one CSV per site, patching.json and report.html here",
                json="write the results as one JSON file", nproc=True)
    p.add_argument("--sites", help="comma-separated sites (default: residual, attention and "
                   "MLP outputs, heads, heads by position)")
    p.add_argument("--corrupt", help="number whose digit changes: quadratic a, b or c "
                   "(default c), arithmetic a or b (default b)")
    p.add_argument("--answer", help="solution field read (at the token --answer-token "
                   "names): quadratic D_value or D (default), sqrt (the square root in x1's "
                   "expression), x1, x2, ... or any field; arithmetic result")
    p.add_argument("--answer-token", choices=TOKENS, default="first",
                   help="which token of the answer field the metric reads: its first "
                   "(default), its first digit (after a sign), or the first where the two "
                   "solutions differ (lets no-root pairs, whose D starts with '-' in both, "
                   "be read)")
    p.add_argument("--slices", action="store_true", help="every layout group and position-"
                   "set patches with equal-size controls instead of the site sweeps")
    p.add_argument("--targets", default="x,^,=,0,<sep>", help="--slices: input roles "
                   "patched alone and jointly (default x,^,=,0,<sep>; <sep> is T5's <eos>)")
    p.add_argument("--controls", type=int, default=20, help="--slices: control sets of as "
                   "many other input positions (default 20; 19 or more can reach p <= 0.05)")
    p.add_argument("--classes", help="--slices: classes drawn (default: all of the task's)")
    p.add_argument("--per-class", type=int, default=200, help="--slices: unique problems "
                   "drawn per class (default 200; fewer when the class has fewer)")
    p.add_argument("--direction", choices=DIRECTIONS, default="denoise")
    p.add_argument("--metric", choices=METRICS, default="logit_diff")
    p.add_argument("--attribution", choices=ATTRIBUTIONS, help="the attribution compared "
                   "with exact patching: atp (plain attribution patching); on HF GPT-2 "
                   "decoders also atp+qk (the attention softmax recomputed for the keys and "
                   "queries a cell moves), atp+qkv (the same with the values), atp+graddrop, "
                   "atp* (Kramar et al.'s AtP*: the QK fix and GradDrop); none (default "
                   f"{DEFAULT_ATTRIBUTION} where it applies, else atp)")
    p.add_argument("--no-attribution", action="store_true", help="the same as --attribution "
                   "none")
    p.add_argument("--wide", action="store_true", help="print every column of the tables "
                   "(default: fitted to the terminal's width)")
    a = p.parse_args(argv)
    positive("--n", a.n)
    positive("--controls", a.controls)
    positive("--per-class", a.per_class)
    targets = [t.strip() for t in a.targets.split(",") if t.strip()]
    if not targets:
        raise InterpError("--targets names no role; give e.g. --targets \"x,^,=\"")
    if a.slices and a.nproc > 1:
        raise InterpError("--slices runs as one process (its groups are not shared out); "
                          "leave --nproc out")
    check_device(a)
    out = check_outputs(a, "patching.json", OWN_FILES)
    if (rc := relaunch(a, argv, "circuits.patch")) is not None:     # --nproc N
        return rc
    ckpt = load(a)
    if a.attribution not in (None, "atp", "none") and ckpt.arch in ("t5", "native"):
        raise InterpError(f"--attribution {a.attribution} needs an HF GPT-2 decoder (it "
                          f"recomputes GPT-2 attention); on this {ckpt.arch} model use "
                          "--attribution atp")
    if ckpt.arch == "native" and ckpt.task_or_none is None:
        _check_native(a, ckpt)
        with output_lock(out):
            return _run(a, ckpt, out)
    _check_fields(ckpt.task, a.corrupt, a.answer)
    classes = [c.strip() for c in (a.classes or "").split(",") if c.strip()] or None
    for c in classes or ():
        if c not in ckpt.task.classes:
            raise InterpError(f"--classes {shorten(c)!r}: unknown class of the "
                              f"{ckpt.task.name} task; choose among "
                              f"{', '.join(ckpt.task.classes)}")
    with output_lock(out):
        if a.slices:
            return _run_slices(a, ckpt, out, targets, classes)
        return _run(a, ckpt, out)


def _check_native(a, ckpt) -> None:
    """A native language model is patched on induction pairs (`induction_pairs`: --n of
    them, --seed): refuse the options that choose a task's pairs, and compiled programs."""
    from interp.errors import InterpError

    if ckpt.meta.get("task", {}).get("task") == "tracr":
        raise InterpError(f"{ckpt.path.name} is a compiled RASP program without a task; patch "
                          "it from Python with circuits.patching.patch and the pairs of "
                          "circuits.discovery.known")
    given = [o for o, v in (("--slices", a.slices), ("--corrupt", a.corrupt),
                            ("--answer", a.answer), ("--classes", a.classes),
                            ("--answer-token", a.answer_token != "first")) if v]
    if given:
        raise InterpError(f"{given[0]} chooses a task's pairs; {ckpt.path.name} is a language "
                          "model, patched on induction pairs (--n, --seed): drop "
                          f"{given[0]}")


def _check_fields(task, corrupt: str | None, answer: str | None) -> None:
    """Refuse an unknown --corrupt or --answer, listing the task's fields."""
    from interp.errors import InterpError, shorten

    from circuits.patching import ANSWER_ALIASES

    if answer in ANSWER_ALIASES and task.name == "quadratic":
        answer = ANSWER_ALIASES[answer]
    src_fields, out_fields = set(), set()
    for ex in task.generate(3 * len(task.classes), seed=0):
        for roles, into in zip(task.roles(ex.src, ex.tgt), (src_fields, out_fields)):
            into.update(r.rsplit("_", 1)[0] for r in roles if r.endswith(("_digit", "_sign")))
    for option, value, fields in (("--corrupt", corrupt, src_fields),
                                  ("--answer", answer, out_fields)):
        if value is not None and value not in fields:
            raise InterpError(f"{option} {shorten(value)!r}: unknown field of the {task.name} "
                              f"task; choose one of {', '.join(sorted(fields))}")


def _run(a, ckpt, out) -> int:
    from circuits.patching import (
        DEFAULT_FIELDS,
        attribute,
        corrupt_pairs,
        metric_values,
        patch,
        site as check_site,
    )
    from circuits.patching.compare import agreement, summary_line
    from circuits.patching.sites import forward
    from circuits.stats import spearman
    from interp.errors import InterpError
    from interp.hooks import arch_of
    from interp.io import replace_dir_atomic, write_json
    from interp.viz.reports import patch as report

    bridge = ckpt.bridge()
    task = ckpt.task_or_none
    default = DEFAULT_SITES.get(arch_of(bridge), "")
    if task is None and getattr(bridge.cfg, "attn_only", False) is True:
        default = default.replace("mlp_out,", "")      # an attention-only language model
    sites = [s.strip() for s in (a.sites or default).split(",") if s.strip()]
    if not sites:
        raise InterpError("--sites names no site; give e.g. --sites resid_pre,head_pos")
    for s in sites:
        check_site(bridge, s)
    method = "none" if a.no_attribution else a.attribution or default_attribution(bridge)
    if method not in ("atp", "none") and default_attribution(bridge) == "atp":
        raise InterpError(f"--attribution {method} needs an HF GPT-2 decoder (it recomputes "
                          "GPT-2 attention); on this model use --attribution atp")
    decode, change = None, None
    if task is None:                    # a native language model: induction pairs
        from circuits.discovery.induction import induction_pairs

        pairs = induction_pairs(bridge, n=a.n, seed=a.seed)
        a.corrupt, a.answer = "prev", "next"
        change = "the earlier copy of the query token replaced by an unused token"
        from interp.viz.reports.induction import token_texts

        decode = lambda i: token_texts(bridge, [i])[0]     # noqa: E731 (bytes shown as <0x..>)
    else:
        a.corrupt = a.corrupt or DEFAULT_FIELDS.get(task.name, ("c",))[0]
        a.answer = a.answer or DEFAULT_FIELDS.get(task.name, ("", "D_value"))[1]
        pairs = corrupt_pairs(bridge, task, n=a.n, field=a.corrupt, answer=a.answer,
                              seed=a.seed, token=a.answer_token)
    say = None if a.quiet else (lambda m: print(f"  ... {m}", file=sys.stderr, flush=True))
    print(report.header(a.checkpoint, pairs, a.answer, a.direction, a.metric, decode))
    results = {}
    baseline = [metric_values(forward(bridge, ids), pairs, a.metric).double().numpy()
                for ids in (pairs.clean, pairs.corrupt)]        # per pair, for the intervals
    data = report.summary(a.checkpoint, pairs, a.corrupt, a.answer, a.direction, a.metric,
                          decode)
    if change:
        data["change"] = change
    for s in sites:
        res = patch(bridge, pairs, s, a.direction, a.metric, progress=say)
        att = None if method == "none" or s.endswith("pattern") else \
            attribute(bridge, pairs, s, a.direction, a.metric, method=method)
        rho = spearman(att.values.flatten(), res.values.flatten()) if att is not None else None
        agree = None if att is None else agreement(res, att).iloc[0].to_dict()
        line = None if agree is None else summary_line(agree)
        results[s] = (res, att)
        top = report.top_cells(res, att, seed=a.seed, baseline=baseline)
        print("\n".join(report.site_lines(res, rho, first=s == sites[0], top=top,
                                            wide=a.wide, line=line)))
        data["sites"][s] = report.site_entry(res, att, rho, top)
        if att is not None:
            data["sites"][s].update(attribution_method=att.method, attribution_line=line,
                                    attribution_agreement=agree)
    data["gap_line"] = report.gap_line(next(iter(results.values()))[0])
    if a.json:
        write_json(a.json, data)
    if out is not None:
        def fill(tmp: Path) -> None:
            for s, (res, att) in results.items():
                report.site_frame(res, att).to_csv(tmp / f"{s}.csv", index=False)
            write_json(tmp / "patching.json", data)
            report.page(data, results).write(tmp / "report.html")

        replace_dir_atomic(fill, out)
        if not a.quiet:
            print(f"wrote {out}/<site>.csv, patching.json, report.html", file=sys.stderr)
    return 0


def default_attribution(bridge) -> str:
    """DEFAULT_ATTRIBUTION on an HF GPT-2 decoder (where the QK fix applies), plain atp
    elsewhere."""
    from circuits.patching.fast import GPT2Tail
    from interp.hooks import arch_of

    if arch_of(bridge) != "decoder" or getattr(bridge.cfg, "n_devices", 1) > 1:
        return "atp"                    # the QK fix needs GPT-2 attention on one device
    try:
        GPT2Tail(bridge)
    except NotImplementedError:
        return "atp"
    return DEFAULT_ATTRIBUTION


def _run_slices(a, ckpt, out, targets, classes) -> int:
    from circuits.patching import DEFAULT_FIELDS, pair_groups, slice_patch
    from interp.io import replace_dir_atomic, write_json
    from interp.viz.reports import patch as report

    bridge = ckpt.bridge()
    a.corrupt = a.corrupt or DEFAULT_FIELDS.get(ckpt.task.name, ("c",))[0]
    a.answer = a.answer or DEFAULT_FIELDS.get(ckpt.task.name, ("", "D_value"))[1]
    say = None if a.quiet else (lambda m: print(f"  ... {m}", file=sys.stderr, flush=True))
    groups = pair_groups(bridge, ckpt.task, field=a.corrupt, answer=a.answer,
                         token=a.answer_token, seed=a.seed, classes=classes,
                         per_class=a.per_class, min_pairs=1, max_pairs=a.n)
    res = slice_patch(bridge, groups, targets, a.controls, a.direction, a.metric, a.seed,
                      progress=say)
    df = res.frame()
    lines = report.slice_lines(a.checkpoint, groups, res, df, a.corrupt, a.answer,
                               a.answer_token)
    print("\n".join(lines))
    data = report.slice_summary(a.checkpoint, groups, res, df, a.corrupt, a.answer,
                                a.answer_token)
    if a.json:
        write_json(a.json, data)
    if out is not None:
        def fill(tmp: Path) -> None:
            df.to_csv(tmp / "slices.csv", index=False)
            write_json(tmp / "patching.json", data)
            report.slice_page(data, res, lines).write(tmp / "report.html")

        replace_dir_atomic(fill, out)
        if not a.quiet:
            print(f"wrote {out}/slices.csv, patching.json, report.html", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
