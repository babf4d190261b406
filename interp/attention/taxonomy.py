"""Head taxonomy: measured features per head and the labels they support.

Seed 001 saw four phenomena by eye; each becomes a score with a threshold here:

- `sharp_diagonal(d)`: most attention at one fixed offset d = query - key (0 self, 1 previous);
- `blurred_diagonal`: no single offset dominates, but a narrow band around the diagonal holds
  most of the attention (its centre and half-width are reported);
- `vertical(token)`: a few key roles (`=`, `x`, `^`, `<bos>`, `[SEP]` ...) receive most of the
  attention whatever the query, well above their share of positions;
- `sparse_block`: attention stays inside the query's own segment (one number, one statement,
  one sentence) well above what a uniform head gives, without being a sharp diagonal;
- `heterogeneous`: none of the above.

Several labels may hold at once (Kovaleva's vertical+diagonal). Thresholds are parameters.
Everything here is pure: patterns in, DataFrames out.
"""

from __future__ import annotations

import pandas as pd
import torch

from interp.attention.stats import (HeadStats, Thresholds, collect_stats, role_index,
                                    segments_from_roles)

LABELS = ("sharp_diagonal", "blurred_diagonal", "vertical", "sparse_block", "heterogeneous")


def head_features(P: torch.Tensor, mask: torch.Tensor, key_roles: list[list[str]],
                  q_seg: torch.Tensor | None = None, k_seg: torch.Tensor | None = None,
                  causal: bool = True, diagonal: bool = True, th: Thresholds = Thresholds(),
                  ids: torch.Tensor | None = None) -> dict[str, torch.Tensor | list]:
    """Features of every head of one pattern tensor: dict of name -> [layer, head].

    P: [layer, batch, head, query, key]; mask: [batch, query, key]; key_roles: per example;
    q_seg/k_seg: [batch, pos] segment ids for the block score (None: no block score);
    diagonal: False for attention between two different sequences (T5 cross attention);
    ids: token ids [batch, pos] for the duplicate-token score.
    """
    names = sorted({r for row in key_roles for r in row})
    st = HeadStats(P.shape[0], P.shape[2], names, causal=causal, diagonal=diagonal, th=th)
    st.update(P, mask, role_index(key_roles, names, P.shape[-1]), q_seg=q_seg, k_seg=k_seg,
              ids=ids)
    return st.features()


def classify(f: dict, layer: int, head: int, th: Thresholds = Thresholds()) -> list[str]:
    """The labels that hold for one head, from `head_features` output."""
    g = {k: (v[layer][head] if isinstance(v, list) else v[layer, head].item())
         for k, v in f.items()}
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
    lift = g["vertical_share"] / max(g["vertical_uniform"], 1e-9)
    if g["vertical_share"] >= th.vertical and lift >= th.vertical_lift:
        labels.append(f"vertical({g['vertical_roles'][0]})")
    if block:
        labels.append("sparse_block")
    return labels or ["heterogeneous"]


def base_label(label: str) -> str:
    """`sharp_diagonal(1)` -> `sharp_diagonal`, `vertical(=)` -> `vertical`."""
    return label.split("(", 1)[0]


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


def head_table(source, kinds=None, th: Thresholds = Thresholds(), segments: str = "statement"
               ) -> pd.DataFrame:
    """The taxonomy of every head of an AttentionCache (or stream, or sharded cache)."""
    return stats_table(collect_stats(source, kinds, th, segments, role_maps=False), th)


__all__ = ["LABELS", "Thresholds", "head_features", "classify", "base_label",
           "features_table", "segments_from_roles", "head_table", "stats_table"]
