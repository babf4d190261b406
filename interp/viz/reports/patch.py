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
