"""Activation and attribution patching from the command line.

    python -m circuits.patch [CKPT] [--sites resid_pre,attn_out,mlp_out,head,head_pos]
        [--n 32] [--corrupt c] [--answer D_value] [--direction denoise|noise]
        [--metric logit_diff|logprob] [--no-attribution] [--out DIR] [--json FILE]

(also `interp patch ...`). Pairs: one digit of coefficient --corrupt changed (the corrupted
equation is one the task accepts), cut before the first token of --answer where the two
solutions differ. Prints, per site, the cells that restore (denoise) or remove (noise) the
largest share of the clean-corrupt gap, and how well attribution patching ranks the cells
(Spearman against the exact result). --out writes one CSV per site, patching.json and
report.html (heatmaps); see `circuits.patching`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

DEFAULT_SITES = {"decoder": "resid_pre,attn_out,mlp_out,head,head_pos",
                 "t5": "enc.resid_pre,dec.resid_pre,enc.head_pos,cross.head_pos,dec.head_pos"}


def describe(res, top: int = 8) -> list[str]:
    df = res.frame()
    df = df.reindex(df.normalised.abs().sort_values(ascending=False).index).head(top)
    lines = []
    for _, r in df.iterrows():
        cell = " ".join(f"{a} {int(r[a])}" for a in res.axes)
        role = f"  ({r.role})" if "role" in r else ""
        lines.append(f"    {cell:<24}{r.normalised:+8.1%}   {res.metric} {r.value:+.3f}{role}")
    return lines


def main(argv=None) -> int:
    from interp.cli.common import run_cli

    return run_cli(_main, argv)


def _own_files() -> tuple[str, ...]:
    """The files an earlier --out holds: patching.json, report.html and one CSV per site it
    knows (`<site>.csv`); any other CSV there is someone else's."""
    from circuits.patching import DECODER_SITES, T5_SITES

    return ("patching.json", "report.html") + tuple(f"{s}.csv" for s in
                                                    dict.fromkeys(DECODER_SITES + T5_SITES))


def OWN_FILES(name: str) -> bool:
    return name in _own_files()


def _main(argv) -> int:
    import contextlib

    from circuits.patching import DIRECTIONS, METRICS
    from interp.cli.common import Parser
    from interp.errors import InterpError
    from interp.io import (
        check_file_outside,
        check_replaceable_dir,
        check_writable,
        output_lock,
    )
    from interp.models import DEFAULT_MODEL, load_checkpoint

    p = Parser(prog="python -m circuits.patch", description=__doc__,
               formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", nargs="?", default=DEFAULT_MODEL)
    p.add_argument("--sites", help="comma-separated sites (default: residual, attention and "
                   "MLP outputs, heads, heads by position)")
    p.add_argument("--n", type=int, default=32, help="pairs (default 32)")
    p.add_argument("--corrupt", help="number whose digit changes: quadratic a, b or c "
                   "(default c), arithmetic a or b (default b)")
    p.add_argument("--answer", help="solution field read at its first differing token: "
                   "quadratic D_value (default), x1, x2, ...; arithmetic result")
    p.add_argument("--direction", choices=DIRECTIONS, default="denoise")
    p.add_argument("--metric", choices=METRICS, default="logit_diff")
    p.add_argument("--no-attribution", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", metavar="DIR")
    p.add_argument("--json", metavar="FILE")
    p.add_argument("--quiet", action="store_true")
    a = p.parse_args(argv)
    if a.n < 1:
        raise InterpError(f"--n must be at least 1, got {a.n}")
    if a.json:
        check_file_outside(a.json, a.out)
        check_writable(a.json)
    out = check_replaceable_dir(a.out, "patching.json", "--out", own=OWN_FILES) \
        if a.out else None
    ckpt = load_checkpoint(a.checkpoint)
    _check_fields(ckpt.task, a.corrupt, a.answer)
    with output_lock(out) if out is not None else contextlib.nullcontext():
        return _run(a, ckpt, out)


def _check_fields(task, corrupt: str | None, answer: str | None) -> None:
    """Refuse an unknown --corrupt or --answer, listing the task's fields."""
    from interp.errors import InterpError, shorten

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
        patch,
        site as check_site,
    )
    from circuits.stats import spearman
    from interp.errors import InterpError
    from interp.hooks import arch_of
    from interp.io import write_json
    from interp.tasks.tokenizer import CharCodec

    bridge = ckpt.bridge()
    sites = [s.strip() for s in (a.sites or DEFAULT_SITES.get(arch_of(bridge), "")
                                 ).split(",") if s.strip()]
    if not sites:
        raise InterpError("--sites names no site; give e.g. --sites resid_pre,head_pos")
    for s in sites:
        check_site(bridge, s)
    a.corrupt = a.corrupt or DEFAULT_FIELDS.get(ckpt.task.name, ("c",))[0]
    a.answer = a.answer or DEFAULT_FIELDS.get(ckpt.task.name, ("", "D_value"))[1]
    pairs = corrupt_pairs(bridge, ckpt.task, n=a.n, field=a.corrupt, answer=a.answer,
                          seed=a.seed)
    say = None if a.quiet else (lambda m: print(f"  ... {m}", file=sys.stderr, flush=True))
    clean, bad = pairs.examples[0]
    itos = CharCodec().itos
    print(f"patching {a.checkpoint}: {pairs.n} pairs, e.g. {clean.src} -> {bad.src}; answer "
          f"token {a.answer} ({itos[int(pairs.clean_token[0])]!r} vs "
          f"{itos[int(pairs.corrupt_token[0])]!r}), {a.direction}, {a.metric}")
    results, data = {}, {"checkpoint": str(a.checkpoint), "n": pairs.n, "corrupt": a.corrupt,
                         "answer": a.answer, "direction": a.direction, "metric": a.metric,
                         "sites": {}}
    for s in sites:
        res = patch(bridge, pairs, s, a.direction, a.metric, progress=say)
        att = None if a.no_attribution or s.endswith("pattern") else \
            attribute(bridge, pairs, s, a.direction, a.metric)
        results[s] = (res, att)
        rho = spearman(att.values.flatten(), res.values.flatten()) if att is not None else None
        if s == sites[0]:
            print(f"  clean {res.metric} {res.clean:+.3f}, corrupted {res.corrupt:+.3f}")
        print(f"  {s}: largest shares of the gap" +
              (f" (attribution vs exact: Spearman {rho:.3f})" if rho is not None else ""))
        for line in describe(res):
            print(line)
        entry = {"axes": list(res.axes), "clean": res.clean, "corrupt": res.corrupt,
                 "values": res.values.tolist(), "normalised": res.normalised().tolist(),
                 "labels": res.labels}
        if att is not None:
            entry["attribution"] = att.values.tolist()
            entry["attribution_spearman"] = rho
        data["sites"][s] = entry
    if a.json:
        write_json(a.json, data)
    if out is not None:
        from interp.io import replace_dir_atomic
        from interp.viz.figures import patch_heatmap
        from interp.viz.page import Page

        def fill(tmp: Path) -> None:
            page = Page(f"Patching {a.checkpoint}: {pairs.n} pairs, corrupt {a.corrupt}, "
                        f"answer {a.answer}, {a.direction}")
            page.paragraph(f"Clean {a.metric} {next(iter(results.values()))[0].clean:+.3f}, "
                           f"corrupted {next(iter(results.values()))[0].corrupt:+.3f}. Each "
                           "cell: the share of the clean-corrupt gap that patching it "
                           "restores (denoise) or removes (noise).")
            for s, (res, att) in results.items():
                df = res.frame()
                if att is not None:
                    df["attribution"] = att.frame().value
                df.to_csv(tmp / f"{s}.csv", index=False)
                page.heading(s)
                page.plotly(patch_heatmap(res.normalised(), res.axes, res.labels,
                                          f"{s}: exact patching"))
                if att is not None:
                    page.plotly(patch_heatmap(att.normalised(), att.axes, att.labels,
                                              f"{s}: attribution patching (Spearman "
                                              f"{data['sites'][s]['attribution_spearman']:.3f})"))
            write_json(tmp / "patching.json", data)
            page.write(tmp / "report.html")

        replace_dir_atomic(fill, out)
        if not a.quiet:
            print(f"wrote {out}/<site>.csv, patching.json, report.html", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
