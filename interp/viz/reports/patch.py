"""The report of `patch` (`python -m circuits.patch`): its terminal lines, its JSON, its CSV
frames and its page, from the pairs and the results (`circuits.patching.PatchResult`: any
object with its attributes, `.frame()` and `.figure()`). Pure: nothing here runs a model,
prints or writes.
"""

from __future__ import annotations


def header(checkpoint: str, pairs, answer: str, direction: str, metric: str) -> str:
    """The first line: the model, the pairs (one example), the answer token compared."""
    from interp.tasks.tokenizer import CharCodec

    clean, bad = pairs.examples[0]
    itos = CharCodec().itos
    return (f"patching {checkpoint}: {pairs.n} pairs, e.g. {clean.src} -> {bad.src}; answer "
            f"token {answer} ({itos[int(pairs.clean_token[0])]!r} vs "
            f"{itos[int(pairs.corrupt_token[0])]!r}), {direction}, {metric}")


def describe(res, top: int = 8) -> list[str]:
    """The `top` cells of largest share of the gap, one line each."""
    df = res.frame()
    df = df.reindex(df.normalised.abs().sort_values(ascending=False).index).head(top)
    lines = []
    for _, r in df.iterrows():
        cell = " ".join(f"{a} {int(r[a])}" for a in res.axes)
        role = f"  ({r.role})" if "role" in r else ""
        lines.append(f"    {cell:<24}{r.normalised:+8.1%}   {res.metric} {r.value:+.3f}{role}")
    return lines


def site_lines(res, rho: float | None, first: bool) -> list[str]:
    """The terminal lines of one site: the unpatched metrics (before the first site), the
    rank agreement of attribution (`rho`, None without it) and the largest cells."""
    lines = [f"  clean {res.metric} {res.clean:+.3f}, corrupted {res.corrupt:+.3f}"] \
        if first else []
    lines.append(f"  {res.site}: largest shares of the gap" +
                 (f" (attribution vs exact: Spearman {rho:.3f})" if rho is not None else ""))
    return lines + describe(res)


def summary(checkpoint: str, pairs, corrupt: str, answer: str, direction: str,
            metric: str) -> dict:
    """The JSON of a run before its sites (`site_entry` fills "sites")."""
    return {"checkpoint": str(checkpoint), "n": pairs.n, "corrupt": corrupt, "answer": answer,
            "direction": direction, "metric": metric, "sites": {}}


def site_entry(res, att, rho: float | None) -> dict:
    """The JSON of one site: exact values (nested lists shaped by `axes`), their shares of
    the gap, the labels and, with attribution `att`, its estimates and Spearman `rho`."""
    entry = {"axes": list(res.axes), "clean": res.clean, "corrupt": res.corrupt,
             "values": res.values.tolist(), "normalised": res.normalised().tolist(),
             "labels": res.labels}
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


def page(data: dict, results: dict):
    """The HTML page: per site (`results`: site -> (exact, attribution or None)) the heatmap
    of exact patching and, with attribution, its own heatmap. `data`: the run's JSON."""
    from interp.viz.page import Page

    first = next(iter(results.values()))[0]
    out = Page(f"Patching {data['checkpoint']}: {data['n']} pairs, corrupt {data['corrupt']}, "
               f"answer {data['answer']}, {data['direction']}")
    out.paragraph(f"Clean {data['metric']} {first.clean:+.3f}, corrupted {first.corrupt:+.3f}. "
                  "Each cell: the share of the clean-corrupt gap that patching it restores "
                  "(denoise) or removes (noise).")
    for s, (res, att) in results.items():
        out.heading(s)
        out.plotly(res.figure(f"{s}: exact patching"))
        if att is not None:
            out.plotly(att.figure(f"{s}: attribution patching (Spearman "
                                  f"{data['sites'][s]['attribution_spearman']:.3f})"))
    return out


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


def slice_page(data: dict, res):
    """The HTML page of `--slices`: the pooled shares by layer (bars with intervals)."""
    from interp.viz.page import Page

    out = Page(f"Patching {data['checkpoint']} over every layout group: {data['pairs']} "
               f"pairs, {data['distinct']} distinct equations, {data['groups']} groups, "
               f"answer {data['answer']} ({data['answer_token']} token)")
    out.paragraph("Share of the clean-corrupt gap restored by patching the residual stream "
                  "entering each layer at each target position, at all of them jointly, and "
                  "(mean) at equal-size sets of other input positions; 95% intervals "
                  "resample equations. Per group: slices.csv.")
    out.plotly(res.figure())
    return out
