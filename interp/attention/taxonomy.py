"""Head taxonomy: measured features per head and the labels they support.

Seed 001 saw four phenomena by eye; each becomes a score with a threshold here:

- `sharp_diagonal(d)`: most attention at one fixed offset d = query - key (0 self, 1 previous);
- `blurred_diagonal`: no single offset dominates, but a narrow band around the diagonal holds
  most of the attention (its centre and half-width are reported);
- `vertical(token)`: a few key roles (`=`, `x`, `^`, `<bos>`, `[SEP]` ...) receive most of the
  attention whatever the query, well above their share of positions;
- `sparse_block`: attention stays inside the query's own segment (one number, one statement,
  one sentence) well above what a uniform head gives, without being a sharp diagonal
  (Kovaleva et al.'s in-sentence blocks; not the seed's "sparse squares", which are routes);
- `routed(Q->K)`: the seed's sparse squares, blocks off the diagonal: queries of group Q read
  keys of group(s) K well above the uniform head, above the head's offset-only model and more
  than the head's other queries do (`interp.attention.routes`); the label names the query
  group whose routes carry the most attention beyond those baselines;
- `broad`: entropy within `Thresholds.broad` (0.9) of the uniform head's (Clark et al. 2019's
  broad heads); no shape can hold beside it, a route can;
- `heterogeneous`: none of the above.

Several labels may hold at once (Kovaleva's vertical+diagonal). Thresholds are parameters,
set on one synthetic seed and tested on another (`interp.attention.synthetic`).
Everything here is pure: patterns in, DataFrames out. `head_taxonomy(bridge, task,
examples)` is the whole command's analysis in one streamed pass (`HeadTaxonomy`).
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch

from interp.attention.groups import default_grouping, quote_group, read_groups
from interp.attention.readout import (LABEL_SCORE, MAX_PARTS, RESAMPLES,  # noqa: F401
                                      SCORE_KINDS, legend, stability, with_stability)
from interp.attention.routes import label_routes, reads_text, routed_label, split_route
from interp.attention.stats import (HeadStats, Thresholds, collect_stats, role_index,
                                    segments_from_roles)

LABELS = ("sharp_diagonal", "blurred_diagonal", "vertical", "sparse_block", "routed", "broad",
          "heterogeneous")


def head_features(P: torch.Tensor, mask: torch.Tensor, key_roles: list[list[str]],
                  q_seg: torch.Tensor | None = None, k_seg: torch.Tensor | None = None,
                  causal: bool = True, diagonal: bool = True, th: Thresholds = Thresholds(),
                  ids: torch.Tensor | None = None, query_roles: list[list[str]] | None = None,
                  grouping: str = "field") -> dict[str, torch.Tensor | list]:
    """Features of every head of one pattern tensor: dict of name -> [layer, head].

    P: [layer, batch, head, query, key]; mask: [batch, query, key]; key_roles: per example;
    q_seg/k_seg: [batch, pos] segment ids for the block score (None: no block score);
    diagonal: False for attention between two different sequences (T5 cross attention);
    ids: token ids [batch, pos] for the duplicate-token score; query_roles: per example, the
    roles of the queries (default: the key roles when `diagonal`, else no routes);
    grouping: the role groups routes are named in (`interp.attention.groups`).
    """
    names = sorted({r for row in key_roles for r in row})
    query_roles = query_roles if query_roles is not None else key_roles if diagonal else None
    q_names = sorted({r for row in query_roles for r in row}) if query_roles else None
    st = HeadStats(P.shape[0], P.shape[2], names, q_names, causal=causal, diagonal=diagonal,
                   th=th, grouping=grouping)
    st.update(P, mask, role_index(key_roles, names, P.shape[-1]),
              role_index(query_roles, q_names, P.shape[-2]) if q_names else None,
              q_seg=q_seg, k_seg=k_seg, ids=ids)
    return st.features()


def classify(f: dict, layer: int, head: int, th: Thresholds = Thresholds()) -> list[str]:
    """The labels that hold for one head, from `head_features` output."""
    g = {k: (v[layer][head] if isinstance(v, list) else v[layer, head].item())
         for k, v in f.items()}
    if g["entropy"] >= th.broad * g["entropy_uniform"]:
        # near-uniform rows: no shape can hold, but a few queries may still read by route
        routed = routed_label(g.get("routes") or [], th)
        return ([routed] if routed else []) + ["broad"]   # the checkable label first
    labels = []
    block = False
    if "block_share" in g:
        blift = g["block_share"] / max(g["block_uniform"], 1e-9)
        excess = g["block_share"] - g.get("block_offset_model", 0.0)
        block = (g["block_share"] >= th.block and blift >= th.block_lift
                 and excess >= th.block_excess)
    # a block head's first query in each segment can only see itself (causal), so block,
    # once it beats the offset-only model, takes precedence over the diagonals
    sharp = "sharp_mass" in g and g["sharp_mass"] >= th.sharp and not block
    if sharp:
        labels.append(f"sharp_diagonal({int(g['sharp_offset'])})")
    elif ("band_mass" in g and not block and g["band_mass"] >= th.band
          and g["band_mass"] - g["band_uniform"] >= th.band_excess):
        labels.append("blurred_diagonal")
    # the top roles together, or the top role alone (a frequent second role dilutes the lift)
    lift = g["vertical_share"] / max(g["vertical_uniform"], 1e-9)
    top = g.get("vertical_top_share", 0.0)
    top_lift = top / max(g.get("vertical_top_uniform", 1.0), 1e-9)
    if ((g["vertical_share"] >= th.vertical and lift >= th.vertical_lift)
            or (top >= th.vertical and top_lift >= th.vertical_lift)):
        labels.append(f"vertical({quote_group(g['vertical_roles'][0])})")
    if block:
        labels.append("sparse_block")
    routed = routed_label(g.get("routes") or [], th)
    if routed and not sharp:
        labels.append(routed)
    return labels or ["heterogeneous"]


def base_label(label: str) -> str:
    """`sharp_diagonal(1)` -> `sharp_diagonal`, `vertical('=')` -> `vertical`."""
    return label.split("(", 1)[0]


def parse_label(label: str) -> tuple[str, tuple]:
    """A label read back: (base, arguments). `routed(Q->K1,K2)` -> ("routed", (queries,
    keys)) as lists of groups, unquoted; `vertical('=')` -> ("vertical", ("=",));
    `sharp_diagonal(1)` -> ("sharp_diagonal", (1,)); a label without arguments -> (base, ()).
    ValueError for text that is no label."""
    label = label.strip()
    base, paren, rest = label.partition("(")
    if not base.replace("_", "").isalpha():
        raise ValueError(f"not a head label: {label!r}")
    if not paren:
        return base, ()
    if not rest.endswith(")"):
        raise ValueError(f"not a head label (no closing parenthesis): {label!r}")
    arg = rest[:-1]
    if base == "routed":
        return base, split_route(arg)
    if base == "sharp_diagonal":
        return base, (int(arg),)
    return base, tuple(read_groups(arg))


def features_table(f: dict, kind: str, th: Thresholds = Thresholds()) -> pd.DataFrame:
    """One row per (kind, layer, head): labels, the main score and every feature."""
    L = len(f["vertical_roles"])
    H = len(f["vertical_roles"][0])
    rows = []
    for l in range(L):
        for h in range(H):
            labels = classify(f, l, h, th)
            row = {"kind": kind, "layer": l, "head": h, "label": " + ".join(labels),
                   "labels": labels}
            for k, v in f.items():
                row[k] = v[l][h] if isinstance(v, list) else v[l, h].item()
            rows.append(row)
    return pd.DataFrame(rows)


def stats_table(stats: dict, th: Thresholds = Thresholds()) -> pd.DataFrame:
    """The taxonomy from `collect_stats` output: one row per (kind, layer, head)."""
    return pd.concat([features_table(st.features(), kind, th) for kind, st in stats.items()],
                     ignore_index=True)


def head_table(source, kinds=None, th: Thresholds = Thresholds(), segments: str = "statement",
               grouping: str | None = None, resamples: int = RESAMPLES) -> pd.DataFrame:
    """The taxonomy of every head of an AttentionCache (or stream, or sharded cache).

    grouping : the role groups routes are named in: "field" (digits and sign of a number
        together), "fine" (every role), "class" (token classes); default "class" for raw
        text, else "field" (`interp.attention.groups`)

    Returns
    -------
    DataFrame, one row per (kind, layer, head): `label`, `labels`, `main_score`, `detail`,
    `reads` and every feature with its uniform-head baseline (see `summarise`), and
    `stability` (see `stability`; left out when `resamples` is 0).
    """
    grouping = grouping or default_grouping(source.sides)
    n = next(iter(source.sides.values())).ids.shape[0]
    parts = min(n, MAX_PARTS) if resamples > 0 else 0
    stats = collect_stats(source, kinds, th, segments, grouping=grouping, parts=parts)
    return with_stability(summarise(stats_table(stats, th), th), stats, th, resamples,
                          examples=n)


def summarise(table: pd.DataFrame, th: Thresholds = Thresholds()) -> pd.DataFrame:
    """Add `main_score` (the score behind the first label), `score_kind` (what it measures:
    `SCORE_KINDS`), `detail` (offset, token, routes ...) and `reads` (the head's top routes,
    their share and lifts; '' without routes)."""
    main, detail, kinds = [], [], []
    for _, r in table.iterrows():
        first = base_label(r["labels"][0])
        kinds.append(LABEL_SCORE.get(first, "entropy"))
        if first == "sharp_diagonal":
            main.append(r["sharp_mass"])
            detail.append(f"offset {int(r['sharp_offset'])}")
        elif first == "blurred_diagonal":
            main.append(r["band_mass"])
            detail.append(f"band centre {int(r['band_centre'])} +-{int(r['band_halfwidth'])}")
        elif first == "vertical":
            main.append(r["vertical_share"])
            detail.append("on " + ", ".join(r["vertical_roles"]) +
                          f" (x{r['vertical_share'] / max(r['vertical_uniform'], 1e-9):.1f})")
        elif first == "sparse_block":
            main.append(r["block_share"])
            detail.append(f"in segment (uniform {r['block_uniform']:.2f})")
        elif first == "routed":
            rs = label_routes(r["routes"], th)
            main.append(sum(x.share for x in rs))
            detail.append(reads_text(rs, len(rs)))
        elif first == "broad":
            main.append(r["entropy"] / max(r["entropy_uniform"], 1e-9))
            detail.append(f"entropy {r['entropy']:.2f} (uniform {r['entropy_uniform']:.2f})")
        else:
            main.append(r["entropy"])
            detail.append(f"entropy (uniform {r['entropy_uniform']:.2f})")
    out = table.copy()
    out["score_kind"] = kinds
    out["main_score"] = main
    out["detail"] = detail
    if "routes" in out:
        out["reads"] = [reads_text(_label_first(rs, th), th.route_top)
                        if isinstance(rs, list) else "" for rs in out["routes"]]
    else:
        out["reads"] = ""
    return out


def _label_first(routes: list, th: Thresholds) -> list:
    """The routes the `routed` label names first, then the others in their order."""
    named = label_routes(routes, th)
    return named + [r for r in routes if r not in named]


def label_counts(table: pd.DataFrame) -> pd.DataFrame:
    """Heads of each class per (kind, layer): answers "diagonals early, blocks deeper"."""
    rows = []
    for _, r in table.iterrows():
        for lab in r["labels"]:
            rows.append({"kind": r["kind"], "layer": r["layer"], "class": base_label(lab)})
    df = pd.DataFrame(rows)
    counts = df.groupby(["kind", "layer", "class"]).size().unstack(fill_value=0)
    return counts.reindex(columns=[c for c in LABELS if c in counts.columns] +
                          [c for c in counts.columns if c not in LABELS], fill_value=0)


def operations_table(stats: dict[str, HeadStats], top: int = 3) -> pd.DataFrame:
    """Per (kind, layer): the key roles that receive the most attention (mean over heads and
    queries), with the share a uniform head would give them."""
    rows = []
    for kind, st in stats.items():
        rm, urm = st.role_masses()
        per_layer = rm.mean(1)                                   # [layer, role]
        for l in range(per_layer.shape[0]):
            vals, idx = per_layer[l].topk(min(top, per_layer.shape[1]))
            row = {"kind": kind, "layer": l}
            for r, (v, i) in enumerate(zip(vals.tolist(), idx.tolist()), 1):
                row[f"role {r}"] = st.key_names[i]
                row[f"share {r}"] = round(v, 3)
                row[f"uniform {r}"] = round(float(urm[i]), 3)
            rows.append(row)
    return pd.DataFrame(rows)


def route_maps(stats: dict, kind: str | None = None, grouping: str | None = "fine"
               ) -> pd.DataFrame:
    """The query-conditioned key distributions of `collect_stats` output, long form: one row
    per (kind, layer, head, query, key) group pair with `share`, the mean attention a query
    of that group pays to keys of that group (each query group's shares sum to 1), `uniform`
    (the uniform head's) and `offset_model` (the head's offset-only model's; NaN for cross
    attention). grouping: "fine" (every role, the default), "field" or "class"
    (`interp.attention.groups`); None: the grouping the stats were collected with. Kinds
    without role maps are skipped."""
    from interp.attention.routes import route_tables

    frames = []
    for k, st in stats.items():
        t = None if (kind is not None and k != kind) else route_tables(st, grouping
                                                                        or st.grouping)
        if t is None:
            continue
        L, H, Q, K = t.share.shape
        idx = pd.MultiIndex.from_product([[k], range(L), range(H), t.query_groups,
                                          t.key_groups],
                                         names=["kind", "layer", "head", "query", "key"])
        off = (t.offset_model if t.offset_model is not None
               else torch.full((L, H, Q, K), float("nan")))
        frames.append(pd.DataFrame({
            "share": t.share.reshape(-1).double().numpy(),
            "uniform": t.uniform.expand(L, H, Q, K).reshape(-1).double().numpy(),
            "offset_model": off.reshape(-1).double().numpy()}, index=idx))
    return pd.concat(frames).reset_index() if frames else pd.DataFrame(
        columns=["kind", "layer", "head", "query", "key", "share", "uniform", "offset_model"])


@dataclass
class HeadTaxonomy:
    """What `head_taxonomy` measured.

    table : one row per (kind, layer, head) (labels, main score, every feature + baseline)
    stats : {kind: HeadStats}, the running sums (role masses, maps, offset profiles)
    examples : the patterns of the first `keep` examples (an `interp.cache.AttentionCache`,
        `patterns[kind]: [layer, batch, head, query, key]`), or None
    """

    table: pd.DataFrame
    stats: dict[str, HeadStats]
    examples: object = None

    def frame(self) -> pd.DataFrame:
        """The head table (a DataFrame)."""
        return self.table

    def counts(self) -> pd.DataFrame:
        """Heads of each class per (kind, layer)."""
        return label_counts(self.table)

    def operations(self) -> pd.DataFrame:
        """The key roles that receive the most attention per (kind, layer)."""
        return operations_table(self.stats)

    def maps(self, kind: str | None = None, grouping: str | None = "fine") -> pd.DataFrame:
        """The query-conditioned key distributions, long form (see `route_maps`)."""
        return route_maps(self.stats, kind, grouping)

    def figure(self):
        """Stacked bars of the classes per layer (plotly), as in the report."""
        from interp.viz.figures import label_counts_figure

        return label_counts_figure(self.counts())


def head_taxonomy(bridge, task, examples, kinds=None, batch_size: int = 64,
                   segments: str = "statement", through=None, keep: int = 0,
                   progress: bool = False, grouping: str | None = None,
                   th: Thresholds = Thresholds(), resamples: int = RESAMPLES) -> HeadTaxonomy:
    """Classify every head of a model in one pass over the data.

    Patterns are computed batch by batch and folded into running sums, so memory does not
    grow with the number of examples. Decoder-only models also get TransformerLens's
    head-detector induction score on repeated random tokens (`induction_detector`).

    Parameters
    ----------
    bridge : TransformerBridge (any device and dtype)
    task : the task of `examples`, or None for raw text prompts
    examples : task Examples (teacher-forced) or strings
    kinds : attention kinds to read (default all of the model's)
    batch_size : examples whose patterns are held at once
    segments : "statement" or "number", the segments of the block score
    through : a function the stream of patterns passes through on its way to the statistics
        (it takes and returns a pattern source), e.g. `lambda s: save_shards(s, folder)` to keep
        the patterns on disk as well; this function itself writes nothing
    keep : also keep the patterns of the first `keep` examples (`.examples`)
    progress : a progress bar on stderr
    grouping : role groups of the routes: "field", "fine" or "class" (default: "class" for raw
        text, else "field"; `interp.attention.groups`)
    th : the decision thresholds
    resamples : bootstrap resamples of the examples behind the `stability` column (the
        statistics are kept per group of examples, at most `MAX_PARTS` groups, and added up
        per resample: the model does not run again); 0 leaves the column out

    Returns
    -------
    HeadTaxonomy (`.frame()` the head table, `.figure()` the classes per layer)
    """
    from interp.attention.detect import induction_scores
    from interp.cache import keep_first, stream_attention

    stream = stream_attention(bridge, task, examples, kinds, batch_size, progress)
    source = kept = keep_first(stream, keep) if keep else stream
    if through is not None:
        source = through(source)
    induction = ({"self": induction_scores(bridge)} if stream.arch == "decoder"
                 and "self" in stream.kinds else None)
    grouping = grouping or default_grouping(stream.sides)
    parts = min(len(examples), MAX_PARTS) if resamples > 0 else 0
    stats = collect_stats(source, th=th, segments=segments, induction=induction,
                          grouping=grouping, parts=parts)
    table = with_stability(summarise(stats_table(stats, th), th), stats, th, resamples,
                           examples=len(examples))
    return HeadTaxonomy(table, stats, kept.kept if keep else None)


__all__ = ["LABELS", "SCORE_KINDS", "LABEL_SCORE", "RESAMPLES", "MAX_PARTS", "legend",
           "stability", "with_stability", "parse_label", "Thresholds", "head_features",
           "classify", "base_label",
           "features_table", "segments_from_roles", "head_table", "stats_table", "summarise",
           "label_counts", "operations_table", "route_maps", "HeadTaxonomy",
           "head_taxonomy"]
