"""What the head table's numbers mean, and how far its labels hold.

- `SCORE_KINDS`: what `main_score` measures for each label (the column `score_kind`), its
  range and which direction is stronger; `legend(table)` the short lines printed under the
  terminal table (the score kinds present, the `reads` notation `(x4.6, x5.0 offset)`, and
  how `stability` was measured).
- `stability`: per head, the share of bootstrap resamples of the examples in which the head
  gets the same labels as on all of them. The statistics are kept per disjoint group of
  examples (`collect_stats(parts=G)`: one example a group up to G examples, `MAX_PARTS`
  groups beyond); a resample draws G groups with replacement and adds their running sums
  (`HeadStats.combine`), so the model never runs again: the cost is one `features()` and one
  classification per resample.
"""

from __future__ import annotations

import pandas as pd

from interp.attention.stats import HeadStats, Thresholds

#: what `main_score` measures, by the column `score_kind` (the first label decides it)
SCORE_KINDS: dict[str, str] = {
    "offset_share": "share of the head's attention at its best single offset query-key "
                    "(0-1, higher: sharper diagonal)",
    "band_share": "share of attention inside the best narrow band around the diagonal "
                  "(0-1, higher: tighter band)",
    "stripe_share": "share of attention on the 2 key roles that receive the most "
                    "(0-1, higher: stronger stripe)",
    "segment_share": "share of attention inside the query's own segment "
                     "(0-1, higher: stronger block)",
    "route_share": "attention the named routes carry: a query of group Q's mean share on "
                   "the key groups named, summed (0-1, higher: stronger route)",
    "entropy_ratio": "entropy of the rows over the uniform head's (0.9-1 for broad heads; "
                     "higher: broader, 1 = uniform)",
    "entropy": "entropy of the rows in nats (0 to log of the keys; lower: more focused)",
}
#: the score kind of each label (base name)
LABEL_SCORE = {"sharp_diagonal": "offset_share", "blurred_diagonal": "band_share",
               "vertical": "stripe_share", "sparse_block": "segment_share",
               "routed": "route_share", "broad": "entropy_ratio", "heterogeneous": "entropy"}
#: bootstrap resamples behind the `stability` column, and the most groups of examples drawn
RESAMPLES = 50
MAX_PARTS = 32


def legend(table: pd.DataFrame) -> list[str]:
    """Short lines that explain the head table's numbers: each score kind present, the
    notation of `reads` and `detail`, and how `stability` was measured."""
    lines = []
    if "score_kind" in table:
        kinds = [k for k in SCORE_KINDS if k in set(table["score_kind"])]
        for k in kinds:
            labels = [b for b, kk in LABEL_SCORE.items() if kk == k]
            lines.append(f"score of {'/'.join(labels)} heads (main_score, {k}): "
                         f"{SCORE_KINDS[k]}")
    lines.append("reads Q->K 0.41 (x4.6, x5.0 offset): queries of group Q pay 41% of their "
                 "attention to keys of group K, 4.6x the uniform head's share and 5.0x the "
                 "head's offset-only model's (no offset model for cross attention); groups "
                 "that are no plain name are quoted: '-'")
    st = table.attrs.get("stability")
    if "stability" in table and st:
        by = ("example by example" if st["parts"] >= st["examples"] else
              f"by example, in {st['parts']} fixed groups of about "
              f"{st['examples'] / max(st['parts'], 1):.0f}")
        lines.append(f"stability: share of {st['resamples']} bootstrap resamples of the "
                     f"{st['examples']} examples (drawn with replacement, {by}) in which the "
                     "head gets the same labels as on all of them (a route's keys in any "
                     "order); 1 = always")
    return lines


def stability(stats: dict[str, HeadStats], table: pd.DataFrame, th: Thresholds = Thresholds(),
              resamples: int = RESAMPLES, seed: int = 0) -> pd.Series:
    """Per head (aligned with `table`), the share of bootstrap resamples of the examples in
    which the head gets the same labels as on all of them (a route's keys compared as a set:
    `_claim`; NaN for a kind without parts).

    Resampled by example: each kind's statistics were kept per disjoint group of examples
    (`collect_stats(parts=G)`; one example a group when there are at most G); a resample
    draws G groups with replacement and adds their statistics (`HeadStats.combine`), so the
    model never runs again."""
    import numpy as np

    from interp.attention.taxonomy import classify

    out = pd.Series(np.nan, index=table.index, dtype=float)
    rng = np.random.default_rng(seed)
    for kind, st in stats.items():
        parts = [p for p in st.parts if p.n_queries > 0]
        rows = table.index[table["kind"] == kind]
        if not parts or not len(rows) or resamples <= 0:
            continue
        agree = np.zeros(len(rows))
        want = [_claim(lab) for lab in table.loc[rows, "labels"]]
        where = list(zip(table.loc[rows, "layer"], table.loc[rows, "head"]))
        for _ in range(resamples):
            counts = rng.multinomial(len(parts), [1 / len(parts)] * len(parts))
            f = HeadStats.combine(parts, counts).features()
            agree += [_claim(classify(f, int(l), int(h), th)) == w
                      for (l, h), w in zip(where, want)]
        out.loc[rows] = agree / resamples
    return out


def _claim(labels: list[str]) -> tuple:
    """What a head's labels claim, for comparing two samples: the labels in order, a route's
    key groups as a set (`routed(x1->Dexpr_c,')')` and `routed(x1->')',Dexpr_c)`, whose keys
    only swapped places by share, make one claim)."""
    from interp.attention.taxonomy import parse_label

    out = []
    for lab in labels:
        base, args = parse_label(lab)
        out.append((base, tuple(args[0]), frozenset(args[1])) if base == "routed"
                   else (base, args))
    return tuple(out)


def with_stability(table: pd.DataFrame, stats: dict, th: Thresholds = Thresholds(),
                   resamples: int = RESAMPLES, seed: int = 0, examples: int = 0
                   ) -> pd.DataFrame:
    """`table` with the `stability` column (see `stability`) and its method in
    `.attrs["stability"]`; unchanged when no kind kept parts or `resamples` is 0."""
    n_parts = max((len([p for p in st.parts if p.n_queries]) for st in stats.values()),
                  default=0)
    if not n_parts or resamples <= 0:
        return table
    out = table.copy()
    col = stability(stats, table, th, resamples, seed)
    at = list(out.columns).index("main_score") + 1 if "main_score" in out else len(out.columns)
    out.insert(at, "stability", col)
    out.attrs["stability"] = {"resamples": resamples, "parts": n_parts,
                              "examples": examples or n_parts}
    return out


__all__ = ["SCORE_KINDS", "LABEL_SCORE", "RESAMPLES", "MAX_PARTS", "legend", "stability",
           "with_stability"]
