"""The report of `patch` (`python -m circuits.patch`): its terminal lines, its JSON, its CSV
frames and its page, from the pairs and the results (`circuits.patching.PatchResult`: any
object with its attributes, `.frame()` and `.figure()`). Pure: nothing here runs a model,
prints or writes. Over 400 lines: the site sweep's report and the --slices report share
their helpers (tables, intervals, the page), so both stay in one module.

The findings come first, on the terminal and on the page alike: the run, the clean and
corrupted metric and their gap, and per site the cell of largest share of the gap with its
95% interval over pairs and how well attribution ranks the cells. The page then shows the
top cells (the terminal's table, the same rows and figures), each site's exact and
attribution maps side by side on ONE colour range (symmetric, the largest |share| of either),
and the example pair patched; every cell and the run's settings fold away.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from interp.viz.termtable import fit, signed, width_now

TOP = 8                             # cells in the top-cells table of each site
RESAMPLES = 1000                    # bootstrap resamples of the pairs for a cell's interval
SECTIONS = ["Top cells", "Exact and attribution patching", "The example pair"]


def _decoder(decode):
    """`decode` (token id -> text), or the task models' character codec."""
    from interp.tasks.tokenizer import CharCodec

    return decode or CharCodec().itos.__getitem__


def _first_pair(pairs, decode) -> tuple[str, str]:
    """The first pair's inputs as text: its problems, else its tokens (language models)."""
    if pairs.examples:
        return pairs.examples[0][0].src, pairs.examples[0][1].src
    texts = ("".join(decode(int(i)) for i in ids[pairs.out_side][0])
             for ids in (pairs.clean, pairs.corrupt))
    return tuple(t if len(t) <= 40 else t[:37] + "..." for t in texts)


def header(checkpoint: str, pairs, answer: str, direction: str, metric: str,
           decode=None) -> str:
    """The first line: the model, the pairs (one example), the answer token compared.
    `decode`: token id -> text (default: the task models' character codec)."""
    decode = _decoder(decode)
    clean, bad = _first_pair(pairs, decode)
    return (f"patching {checkpoint}: {pairs.n} pairs, e.g. {clean} -> {bad}; answer "
            f"token {answer} ({decode(int(pairs.clean_token[0]))!r} vs "
            f"{decode(int(pairs.corrupt_token[0]))!r}), {direction}, {metric}")


def pct(v) -> str:
    """A share of the gap in percent, signed; a small one keeps two significant digits."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return signed(100 * float(v) + 0.0, 1) + "%"            # + 0.0: no "-0.0%"


def _num(v) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else signed(v, 3)


def ci(lo, hi) -> str:
    return "-" if lo is None or hi is None or any(
        isinstance(v, float) and math.isnan(v) for v in (lo, hi)) else f"[{pct(lo)}, {pct(hi)}]"


def cell_name(res, r) -> str:
    """A cell as `L1 H3 p12` (layer, head, position: the axes it has)."""
    short = {"layer": "L{}", "head": "H{}", "pos": "p{}"}
    return " ".join(short.get(a, a + " {}").format(int(r[a])) for a in res.axes)


def shares_per_pair(res, baseline) -> np.ndarray:
    """Every cell's metric per pair with the pairs' clean and corrupted metrics, as arrays
    [cells, pairs], [pairs], [pairs] (float64)."""
    per = res.per_example.reshape(-1, res.per_example.shape[-1]).double().numpy()
    clean, bad = (np.asarray(b, dtype=float) for b in baseline)
    return per, clean, bad


def _share(v, clean, bad, direction: str):
    gap = clean - bad
    with np.errstate(divide="ignore", invalid="ignore"):
        out = (v - bad) / gap if direction == "denoise" else (clean - v) / gap
    return np.where(gap == 0, np.nan, out)


def top_cells(res, att=None, top: int = TOP, seed: int = 0, baseline=None) -> pd.DataFrame:
    """The `top` cells of largest |share of the gap|, one row each: cell, role (position-wise
    sites), share and its 95% interval, the mean metric, and with `att` attribution's
    estimate of the share. `baseline`: the clean and corrupted metric of each pair
    ([pairs] each); the interval is a percentile bootstrap over pairs (RESAMPLES
    resamples), each resample's share its own mean cell over its own mean gap. Without
    `baseline` there is no interval (NaN)."""
    df = res.frame()
    order = df.normalised.abs().sort_values(ascending=False, na_position="last").index[:top]
    boots = {}
    if baseline is not None:
        per, clean, bad = shares_per_pair(res, baseline)
        n = per.shape[1]
        idx = np.random.default_rng(seed).integers(0, n, size=(RESAMPLES, n))
        cm, bm = clean[idx].mean(1), bad[idx].mean(1)
        for i in order:
            boots[i] = _share(per[i][idx].mean(1), cm, bm, res.direction)
    rows = []
    for i in order:
        r = df.loc[i]
        b = boots.get(i)
        lo, hi = (np.nanpercentile(b, [2.5, 97.5]).tolist()
                  if b is not None and np.isfinite(b).any() else (float("nan"),) * 2)
        row = {"cell": cell_name(res, r)}
        if "role" in df:
            row["role"] = str(r.role)
        row.update({"share": float(r.normalised), "ci_lo": float(lo), "ci_hi": float(hi),
                    res.metric: float(r.value)})
        if att is not None:
            row["attribution"] = float(att.normalised().flatten()[i])
        rows.append(row)
    return pd.DataFrame(rows)


def shown(top: pd.DataFrame) -> pd.DataFrame:
    """The top-cells table as the terminal and the page both write it (strings)."""
    out = pd.DataFrame({"cell": top["cell"]})
    if "role" in top:
        out["role"] = top["role"]
    out["share"] = top["share"].map(pct)
    out["95% CI"] = [ci(a, b) for a, b in zip(top.ci_lo, top.ci_hi)]
    for c in top.columns:
        if c not in ("cell", "role", "share", "ci_lo", "ci_hi"):
            out[c] = \
                top[c].map(pct if c == "attribution" else _num)
    return out


def gap_line(res) -> str:
    return (f"  clean {res.metric} {signed(res.clean)}, corrupted {signed(res.corrupt)} "
            f"(gap {signed(res.clean - res.corrupt)})")


def verdict(site: str, top: list[dict]) -> str:
    """The line that sums up a site: its cell of largest |share| with the interval."""
    if not top or top[0]["share"] is None or math.isnan(top[0]["share"]):
        return f"  {site}: no share of the gap (the clean and corrupted metrics are equal)"
    t = top[0]
    role = f" ({t['role']})" if t.get("role") else ""
    return (f"  {site}: largest share {pct(t['share'])} {ci(t['ci_lo'], t['ci_hi'])} at "
            f"{t['cell']}{role}")


def title_line(site: str, rho: float | None, line: str | None = None) -> str:
    """With attribution: its Spearman `rho`, or `line` (`circuits.patching.compare`)."""
    return (f"  {site}: largest shares of the gap" + (f" ({line})" if line else
            f" (attribution vs exact: Spearman {rho:.3f})" if rho is not None else ""))


def findings(data: dict) -> list[str]:
    """The verdicts, first on the page; every line is one the terminal prints."""
    lines = [data["header"], data["gap_line"]]
    for s, e in data["sites"].items():
        lines += [verdict(s, e["top"]), title_line(s, e.get("attribution_spearman"),
                                                   e.get("attribution_line"))]
    return lines


def site_lines(res, rho: float | None, first: bool, top: pd.DataFrame | None = None,
               width: int | None = None, wide: bool = False, line=None) -> list[str]:
    """The terminal lines of one site: the unpatched metrics (before the first site), the
    site's verdict, the rank agreement of attribution (`rho`, None without it; `line`: see
    `title_line`) and the table of its largest cells (`top`, `top_cells(res)` by default),
    fitted to the terminal."""
    top = top_cells(res) if top is None else top
    lines = [gap_line(res)] if first else []
    lines.append(verdict(res.site, top.to_dict(orient="records")))
    lines.append(title_line(res.site, rho, line))
    table = fit(shown(top), width=(width or width_now()) - 4, wide=wide)
    return lines + ["    " + line for line in table.splitlines()]


def describe(res, top: int = TOP) -> list[str]:
    """The `top` cells of largest share of the gap as table lines (`site_lines`)."""
    return fit(shown(top_cells(res, top=top))).splitlines()


def summary(checkpoint: str, pairs, corrupt: str, answer: str, direction: str,
            metric: str, decode=None) -> dict:
    """The JSON of a run before its sites (`site_entry` fills "sites"): the settings, the
    header line and the example pair (`example`)."""
    return {"checkpoint": str(checkpoint), "n": pairs.n, "corrupt": corrupt, "answer": answer,
            "direction": direction, "metric": metric,
            "header": header(checkpoint, pairs, answer, direction, metric, decode),
            "example": example(pairs, decode), "sites": {}}


def example(pairs, decode=None) -> dict:
    """The first pair as the page shows it: per side the clean and corrupted tokens, the
    position whose logits are read and the two answer tokens."""
    decode = _decoder(decode)
    clean, bad = _first_pair(pairs, decode)
    sides = {}
    for s, toks in pairs.tokens.items():
        ids = pairs.corrupt[s][0].tolist()
        toks = toks if pairs.examples else [decode(int(i)) for i in pairs.clean[s][0]]
        sides[s] = {"roles": list(pairs.roles[s]), "clean": list(toks),
                    "corrupt": [t if t == "<start>" else decode(i) for t, i in zip(toks, ids)]}
    return {"clean": clean, "corrupt": bad, "answer_side": pairs.out_side,
            "answer_pos": int(pairs.answer_pos),
            "clean_answer": decode(int(pairs.clean_token[0])),
            "corrupt_answer": decode(int(pairs.corrupt_token[0])), "sides": sides}


def site_entry(res, att, rho: float | None, top: pd.DataFrame | None = None) -> dict:
    """The JSON of one site: exact values (nested lists shaped by `axes`), their shares of
    the gap, the labels, the top cells and, with attribution `att`, its estimates and
    Spearman `rho`."""
    top = top_cells(res, att) if top is None else top
    entry = {"axes": list(res.axes), "clean": res.clean, "corrupt": res.corrupt,
             "values": res.values.tolist(), "normalised": res.normalised().tolist(),
             "labels": res.labels,
             "top": [{k: (None if isinstance(v, float) and math.isnan(v) else v)
                      for k, v in r.items()} for r in top.to_dict(orient="records")]}
    if att is not None:
        entry["attribution"] = att.values.tolist()
        entry["attribution_spearman"] = rho
    return entry


def site_frame(res, att):
    """The CSV of one site: `res.frame()` with an `attribution` column when `att` is given."""
    df = res.frame()
    if att is not None:
        df["attribution"] = att.frame().value
    return df


def colour_range(results: dict) -> float:
    """The one colour range of every map on the page: the largest |share of the gap| over
    every site's exact and attribution cells (1 when no share is finite)."""
    vals = []
    for res, att in results.values():
        for r in (res, att):
            if r is not None:
                v = r.normalised().double().numpy()
                vals.append(np.abs(v[np.isfinite(v)]))
    v = np.concatenate(vals) if vals else np.array([])
    return float(v.max()) if v.size and v.max() > 0 else 1.0


def pair_figure(res, att, lim: float, rho: float | None = None):
    """Exact (left) and attribution (right) patching of one site side by side, one colour
    range [-lim, lim] and one colour bar: the share of the clean-corrupt gap."""
    from plotly.subplots import make_subplots

    from interp.viz.figures import esc

    panels = [(res, "exact patching")]
    if att is not None:
        panels.append((att, "attribution patching" +
                       (f" (Spearman {rho:.3f} with exact)" if rho is not None else "")))
    first = res.figure().to_dict()
    fig = make_subplots(rows=1, cols=len(panels), shared_yaxes=True,
                        horizontal_spacing=0.06, subplot_titles=[esc(t) for _, t in panels])
    for i, (r, _) in enumerate(panels):
        trace = r.figure().data[0]
        trace.update(zmin=-lim, zmax=lim, zmid=None, zauto=False, showscale=i == 0,
                     hovertemplate=f"{esc(r.method)}: " + trace.hovertemplate)
        if i == 0:
            trace.colorbar.title.text = "share<br>both maps"
        fig.add_trace(trace, row=1, col=i + 1)
        fig.update_xaxes(type="category", row=1, col=i + 1)
        fig.update_yaxes(type="category", autorange="reversed", row=1, col=i + 1)
    fig.update_layout(title=esc(f"{res.site}: share of the clean-corrupt gap, one colour range "
                                f"(±{100 * lim:.1f}%)"),
                      height=first["layout"]["height"], margin=dict(l=80, r=20, t=80, b=140))
    return fig


def _sub(fill):
    from interp.viz.page import Page

    p = Page("")
    fill(p)
    return p


def page(data: dict, results: dict):
    """The HTML page: the findings (the terminal's verdict lines), a table of contents, the
    top cells of every site (the terminal's table), per site the exact and attribution maps
    side by side on one colour range, the example pair; every cell and the settings folded.
    `results`: site -> (exact, attribution or None); `data`: the run's JSON."""
    from interp.viz.page import Page

    ex = data["example"]
    out = Page(f"Patching {data['checkpoint']}: {data['n']} pairs, corrupt {data['corrupt']}, "
               f"answer {data['answer']}, {data['direction']}")
    out.findings(findings(data))
    out.toc(SECTIONS)
    out.section(SECTIONS[0])
    out.paragraph("Per site, the cells whose patch restores (denoise) or removes (noise) the "
                  "largest share of the clean-corrupt gap; 95% interval: percentile bootstrap "
                  f"over the {data['n']} pairs ({RESAMPLES} resamples; each resample's share "
                  "is its mean patched metric against its own clean and corrupted means). "
                  "attribution: attribution patching's estimate of the same cell; "
                  "cell: L layer, H head, p position.")
    for s, e in data["sites"].items():
        out.paragraph(title_line(s, e.get("attribution_spearman"),
                                 e.get("attribution_line")).strip())
        out.table(shown(pd.DataFrame(e["top"])))
    lim = colour_range(results)
    out.section(SECTIONS[1])
    out.paragraph(f"Colour: the share of the clean-corrupt gap a cell's patch restores "
                  f"(denoise) or removes (noise); blue positive, red negative. Every map on "
                  f"this page uses one range, ±{100 * lim:.1f}% (the largest |share| of any "
                  f"map), so exact and attribution read on the same scale.")
    for s, (res, att) in results.items():
        out.plotly(pair_figure(res, att, lim, data["sites"][s].get("attribution_spearman")))
    out.section(SECTIONS[2])
    side = ex["answer_side"]
    out.paragraph(f"Pair 1 of {data['n']}: clean {ex['clean']} -> corrupted {ex['corrupt']} "
                  f"({data.get('change') or 'one digit of ' + data['corrupt'] + ' changed'}). The logits at {side} position "
                  f"{ex['answer_pos']} predict the answer token ({data['answer']}): clean "
                  f"{ex['clean_answer']!r}, corrupted {ex['corrupt_answer']!r}.")
    for s, toks in ex["sides"].items():
        cols = {"": ["clean", "corrupted", "differs"]}
        for i, (a, b) in enumerate(zip(toks["clean"], toks["corrupt"])):
            mark = "answer read" if s == side and i == ex["answer_pos"] else ""
            cols[str(i)] = [a, b, "yes" if a != b else mark]
        if s == side:
            cols["answer"] = [ex["clean_answer"], ex["corrupt_answer"], ""]
        out.paragraph(f"{s}: tokens by position")
        out.table(pd.DataFrame(cols))
    for s, (res, att) in results.items():
        out.details(f"{s}: every cell ({res.values.numel()})", _sub(
            lambda p, res=res, att=att: p.table(_rounded(site_frame(res, att)), max_rows=5000)))
    settings = {k: v for k, v in data.items() if k not in ("sites", "example", "header")}
    out.details("Run settings", _sub(lambda p: p.table(pd.DataFrame(
        {"setting": list(settings), "value": [str(v) for v in settings.values()]}))))
    return out


def _rounded(df):
    from interp.viz.reports import rounded

    return rounded(df)


# ---------------------------------------------------------------------------------------
# --slices: every layout group, position-set patches against equal-size controls
def _counts(groups) -> str:
    cls = ", ".join(f"{c} {k}" for c, k in sorted(groups.classes().items()))
    drawn = ", ".join(f"{c} {k}" for c, k in groups.drawn.items())
    return (f"{groups.n} pairs ({groups.distinct()} distinct clean equations; {cls}) in "
            f"{len(groups.groups)} layout groups"
            + (f" (+{groups.dropped} pairs in groups of 1, not patched)" if groups.dropped
               else "") + f"; unique held-out problems drawn: {drawn}")


def slice_lines(checkpoint: str, groups, res, df, corrupt: str, answer: str,
                token: str) -> list[str]:
    """The terminal lines of `--slices`: the counts, then per layer the pooled share of the
    gap at each target alone and jointly (95% intervals over equations), the joint patch's
    equal-size controls, the effect over them and its verdict."""
    pooled = df[df.scope == "pooled"]
    first = pooled.iloc[0]
    lines = [f"patching {checkpoint} --slices: {_counts(groups)}",
             f"  corrupt {corrupt}, answer {answer} ({token} token), {res.direction}, "
             f"{res.metric}; clean {first.clean:+.3f}, corrupted {first.corrupt:+.3f} (pooled)"]
    for layer, d in pooled.groupby("layer"):
        cells = "  ".join(f"{r.cell} {r.restored:+.3f}" for r in d.itertuples()
                          if r.cell != "joint")
        j = d[d.cell == "joint"].iloc[0]
        lines.append(f"  layer {layer}: {cells}")
        lines.append(f"    joint ({j['size']} positions) {j.restored:+.3f} "
                     f"[{j.lo:+.3f}, {j.hi:+.3f}]; controls {j.control:+.3f}; effect "
                     f"{j.effect:+.3f} [{j.effect_lo:+.3f}, {j.effect_hi:+.3f}], "
                     f"p {j.p:.3f}: {j.verdict.upper()}")
        if j.verdict == "untestable":
            lines.append("      " + j.note)
    return lines


def slice_summary(checkpoint: str, groups, res, df, corrupt: str, answer: str,
                  token: str) -> dict:
    """The JSON of `--slices`: the counts and every row of the frame."""
    return {"checkpoint": str(checkpoint), "mode": "slices", "corrupt": corrupt,
            "answer": answer, "answer_token": token, "direction": res.direction,
            "metric": res.metric, "targets": list(res.targets), "pairs": groups.n,
            "distinct": groups.distinct(), "classes": groups.classes(),
            "drawn": groups.drawn, "groups": len(groups.groups), "dropped": groups.dropped,
            "rows": df.to_dict(orient="records")}


def slice_page(data: dict, res, lines: list[str] | None = None):
    """The HTML page of `--slices`: the findings (`lines`, the terminal's: the counts and
    per layer the shares and the joint patch's verdict), then the pooled shares by layer
    (bars with intervals)."""
    from interp.viz.page import Page

    out = Page(f"Patching {data['checkpoint']} over every layout group: {data['pairs']} "
               f"pairs, {data['distinct']} distinct equations, {data['groups']} groups, "
               f"answer {data['answer']} ({data['answer_token']} token)")
    if lines:
        out.findings(lines)
    out.paragraph("Share of the clean-corrupt gap restored by patching the residual stream "
                  "entering each layer at each target position, at all of them jointly, and "
                  "(mean) at equal-size sets of other input positions; 95% intervals "
                  "resample equations. Per group: slices.csv.")
    out.plotly(res.figure())
    return out
