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

from dataclasses import dataclass

import pandas as pd
import torch

from interp.attention import scores as S

LABELS = ("sharp_diagonal", "blurred_diagonal", "vertical", "sparse_block", "heterogeneous")


@dataclass(frozen=True)
class Thresholds:
    """Decision thresholds (documented defaults, validated on synthetic patterns)."""

    sharp: float = 0.4          # share of attention at the best single offset
    band: float = 0.6           # share inside the best band of half-width <= band_halfwidth
    band_halfwidth: int = 3
    band_excess: float = 0.2    # ... and this much above the uniform head's best band
    vertical: float = 0.4       # share of attention on the top `vertical_top` key roles
    vertical_top: int = 2
    vertical_lift: float = 2.0  # ... and at least this multiple of the uniform head's share
    block: float = 0.7          # share of attention inside the query's own segment
    block_lift: float = 1.5     # ... and at least this multiple of the uniform head's share
    block_excess: float = 0.1   # ... and this much above a head driven by offsets alone
    max_offset: int = 64        # offsets considered for diagonals


def _band(profile: torch.Tensor, offsets: list[int], halfwidth: int):
    """Best band per head: (mass, centre, halfwidth) tensors of shape [layer, head]."""
    best_mass = torch.full(profile.shape[:2], -1.0)
    best_c = torch.zeros(profile.shape[:2], dtype=torch.long)
    best_w = torch.zeros(profile.shape[:2], dtype=torch.long)
    for w in range(1, halfwidth + 1):
        if profile.shape[-1] < 2 * w + 1:
            break
        kernel = torch.ones(1, 1, 2 * w + 1)
        flat = profile.reshape(-1, 1, profile.shape[-1])
        mass = torch.nn.functional.conv1d(flat, kernel).reshape(*profile.shape[:2], -1)
        m, i = mass.max(-1)
        better = m > best_mass + 1e-9
        best_mass = torch.where(better, m, best_mass)
        best_c = torch.where(better, i + w, best_c)
        best_w = torch.where(better, torch.full_like(best_w, w), best_w)
    centres = torch.tensor(offsets)[best_c]
    return best_mass, centres, best_w


def head_features(P: torch.Tensor, mask: torch.Tensor, key_roles: list[list[str]],
                  q_seg: torch.Tensor | None = None, k_seg: torch.Tensor | None = None,
                  causal: bool = True, diagonal: bool = True, th: Thresholds = Thresholds()
                  ) -> dict[str, torch.Tensor | list]:
    """Features of every head: dict of name -> [layer, head] tensor (or nested lists).

    P: [layer, batch, head, query, key]; mask: [batch, query, key]; key_roles: per example;
    q_seg/k_seg: [batch, pos] segment ids for the block score (None: no block score);
    diagonal: False for attention between two different sequences (T5 cross attention).
    """
    U = S.uniform_like(mask)
    L, H = P.shape[0], P.shape[2]
    f: dict[str, torch.Tensor | list] = {}
    if diagonal:
        lo = 0 if causal else -min(P.shape[-1] - 1, th.max_offset)
        offsets = list(range(lo, min(P.shape[-2], th.max_offset + 1)))
        prof = S.offset_profile(P, mask, offsets)
        uprof = S.offset_profile(U, mask, offsets)[0, 0]
        mass, idx = prof.max(-1)
        f["sharp_mass"], f["sharp_offset"] = mass, torch.tensor(offsets)[idx]
        f["sharp_uniform"] = uprof[idx]
        bm, bc, bw = _band(prof, offsets, th.band_halfwidth)
        f["band_mass"], f["band_centre"], f["band_halfwidth"] = bm, bc, bw
        ub, _, _ = _band(uprof[None, None], offsets, th.band_halfwidth)
        f["band_uniform"] = ub.expand(L, H)
    roles, rm = S.role_mass(P, mask, key_roles)
    _, urm = S.role_mass(U, mask, key_roles)
    top = rm.topk(min(th.vertical_top, len(roles)), dim=-1)
    f["vertical_share"] = top.values.sum(-1)
    f["vertical_uniform"] = urm[0, 0][top.indices].sum(-1)
    f["vertical_roles"] = [[[roles[i] for i in top.indices[l, h].tolist()] for h in range(H)]
                           for l in range(L)]
    f["vertical_top_share"] = top.values[..., 0]
    if q_seg is not None:
        f["block_share"] = S.segment_share(P, mask, q_seg, k_seg)
        f["block_uniform"] = S.segment_share(U, mask, q_seg, k_seg).expand(L, H)
        if diagonal:
            # what the head's own offset profile alone would keep inside segments: a band
            # head matches it, a block head beats it
            model = S.offset_model(prof, mask, offsets)
            f["block_offset_model"] = S.segment_share(model, mask, q_seg, k_seg)
    f["entropy"] = S.entropy(P, mask)
    f["entropy_uniform"] = S.entropy(U, mask).expand(L, H)
    first = torch.zeros(mask.shape[0], mask.shape[-1], dtype=torch.bool)
    first[:, 0] = True
    f["first_token"] = S.key_mass(P, mask, first)
    f["first_token_uniform"] = S.key_mass(U, mask, first).expand(L, H)
    return f


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




BOUNDARIES = {";", "<sep>", "<bos>", "<eos>", "<start>", "[SEP]", "[CLS]", ".", "<s>", "</s>"}


def segments_from_roles(roles: list[list[str]], width: int, mode: str = "statement"
                        ) -> torch.Tensor:
    """Segment ids [batch, width] (-1 past the end) for the block score.

    mode "statement": a boundary token (`;`, `<sep>`, `<bos>`, `[SEP]`, `.` ...) ends a segment
    (the equation, the D statement, each root statement, a sentence). mode "number": each run
    of one number's sign and digits is a segment, every other token stands alone.
    """
    if mode not in ("statement", "number"):
        from interp.errors import InterpError

        raise InterpError(f"unknown segment mode {mode!r}; choose statement or number")
    out = torch.full((len(roles), width), -1, dtype=torch.long)
    for b, row in enumerate(roles):
        sid, prev_field = 0, None
        for p, r in enumerate(row[:width]):
            if mode == "statement":
                out[b, p] = sid
                if r in BOUNDARIES:
                    sid += 1
            else:
                field = r.rsplit("_", 1)[0] if r.endswith(("_digit", "_sign")) else None
                if field is None or field != prev_field or r.endswith("_sign"):
                    sid += 1
                out[b, p] = sid
                prev_field = field
    return out


def head_table(ac, kinds=None, th: Thresholds = Thresholds(), segments: str = "statement"
               ) -> pd.DataFrame:
    """The taxonomy of every head of an AttentionCache: one row per (kind, layer, head)."""
    from interp.attention.kinds import KINDS

    frames = []
    for kind in kinds or ac.kinds:
        q, k = ac.query(kind), ac.key(kind)
        P, mask = ac.patterns[kind], ac.mask(kind)
        same_side = KINDS[kind].query_side == KINDS[kind].key_side
        q_seg = segments_from_roles(q.roles, P.shape[-2], segments) if same_side else None
        k_seg = segments_from_roles(k.roles, P.shape[-1], segments) if same_side else None
        f = head_features(P, mask, k.roles, q_seg, k_seg, causal=KINDS[kind].causal,
                          diagonal=same_side, th=th)
        frames.append(features_table(f, kind, th))
    return pd.concat(frames, ignore_index=True)


__all__ = ["LABELS", "Thresholds", "head_features", "classify", "base_label",
           "features_table", "segments_from_roles", "head_table"]
