"""Per-head statistics summed batch by batch, so a dataset never has to sit in memory at once.
Over 400 lines: the running sums of every score live in one class, so that adding a batch
(`update`), adding parts (`combine`) and finishing the scores (`features`) stay side by side.

Every score of the taxonomy is a sum over (prompt, query, key) of the pattern times something
that depends only on positions, tokens or roles, divided by a count; the exceptions (entropy
and the per-prompt detector ratios) are sums of per-query or per-prompt terms. So `HeadStats`
keeps running sums, `update` adds one batch of patterns `[layer, batch, head, query, key]`
(any width: batches of short and long prompts need not be padded to one size), and
`features` finishes the scores. Feeding the whole dataset as one batch and feeding it in
pieces give the same numbers; tests check both against the plain functions in
`interp.attention.scores`, which stay the readable definitions.

The uniform head (equal attention over each query's valid keys) is handled in closed form from
the masks, so every score comes with its baseline at no extra pass over the patterns.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from interp.attention.routes import route_features, route_tables
from interp.attention.groups import (BOUNDARIES, input_keys, onehot, role_index,  # noqa: F401
                                     role_name, segments_from_roles, token_classes)


def analysis_roles(roles: list[list[str]], grouping: str = "field") -> list[list[str]]:
    """The roles the statistics are kept by: under the "class" grouping (raw text) each
    token's class (`token_classes`, read in context), else the task's roles (`role_name`:
    `nan` -> `no_root`)."""
    if grouping == "class":
        return [token_classes(row) for row in roles]
    return [[role_name(r) for r in row] for row in roles]


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
    broad: float = 0.9          # entropy at least this fraction of the uniform head's
    # routes (interp.attention.routes): per pair of groups q -> k, k != q
    route_key: float = 0.15     # mean attention of a q query on k keys
    route_lift: float = 2.0     # ... at least this multiple of the uniform head's
    route_excess: float = 0.1   # ... and this much above the offset-only model (self attention)
    route_specific: float = 1.5  # ... and this multiple of the head's mean attention to k
    route_min_weight: float = 0.02  # share of all queries the query group must hold
    route_share: float = 0.4    # a query group's routes together: `routed(Q->K)`
    route_top: int = 3          # routes counted in `route_share` and shown in `reads`


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


def _rel_index(Q: int, K: int, D: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat (query, key) cells whose offset q - k lies in [-D, D], and that offset + D."""
    rel = (torch.arange(Q)[:, None] - torch.arange(K)[None, :]).reshape(-1)
    keep = rel.abs() <= D
    return keep.nonzero().squeeze(-1), rel[keep] + D


class HeadStats:
    """Running sums for the per-head features of one attention kind.

    key_names / query_names: every role that may occur on the key / query side (query_names
    only for the query role x key role map). diagonal: queries and keys are the same sequence
    (self attention); False for cross attention. detectors: also the previous-token,
    duplicate-token and induction scores of TransformerLens's head detector on the same
    prompts (per prompt, then averaged; self attention only).
    """

    def __init__(self, n_layers: int, n_heads: int, key_names: list[str],
                 query_names: list[str] | None = None, causal: bool = True,
                 diagonal: bool = True, detectors: bool = True, th: Thresholds = Thresholds(),
                 grouping: str = "field"):
        self.L, self.H, self.th, self.grouping = n_layers, n_heads, th, grouping
        self.key_names, self.query_names = list(key_names), query_names and list(query_names)
        self.causal, self.diagonal, self.detectors = causal, diagonal, detectors and diagonal
        L, H, R, D = n_layers, n_heads, len(key_names), th.max_offset
        z = lambda *s: torch.zeros(*s, dtype=torch.float64)  # noqa: E731
        self.n_queries = 0
        self.q_width = self.k_width = 0
        self.offsets, self.u_offsets = z(L, H, 2 * D + 1), z(2 * D + 1)
        self.role_mass, self.u_role_mass = z(L, H, R), z(R)
        self.summary = z(L, R)
        self.role_map = z(L, H, len(query_names), R) if query_names else None
        self.query_count = z(len(query_names)) if query_names else None
        # the uniform head's query role x key role sums, and (self attention) how many valid
        # keys of each role stand at each offset from the queries of each role: the
        # offset-only model of a route is finished from these (`interp.attention.routes`)
        self.u_role_map = z(len(query_names), R) if query_names else None
        self.visible = z(len(query_names), R) if query_names else None   # queries seeing a key
        self.offset_roles = (z(len(query_names), 2 * D + 1, R) if query_names and diagonal
                             else None)
        self.entropy, self.u_entropy = z(L, H), 0.0
        self.first, self.u_first = z(L, H), 0.0
        self.block, self.u_block, self.has_segments = z(L, H), 0.0, False
        # distinct per-query rows [same segment, valid key] by offset, and how often each came
        # (packed bits, one row of bytes each; numpy's unique on bytes is ~8x torch's unique_dim)
        self.seg_rows = np.zeros((0, (2 * (2 * th.max_offset + 1) + 7) // 8), dtype=np.uint8)
        self.seg_weights = np.zeros(0, dtype=np.float64)
        names = ("previous_token", "duplicate_token", "induction_on_data")
        self.det: dict[str, list[torch.Tensor]] = {n: [] for n in names}
        self.u_det: dict[str, list[torch.Tensor]] = {n: [] for n in names}
        self.induction: torch.Tensor | None = None
        self.u_induction: float | None = None
        self.parts: list[HeadStats] = []     # disjoint groups of examples (collect_stats)

    # -- one batch ------------------------------------------------------------------------
    @torch.no_grad()
    def update(self, P: torch.Tensor, mask: torch.Tensor, key_roles: torch.Tensor,
               query_roles: torch.Tensor | None = None, q_seg: torch.Tensor | None = None,
               k_seg: torch.Tensor | None = None, ids: torch.Tensor | None = None,
               key_select: torch.Tensor | None = None) -> None:
        """Add one batch. P: [layer, batch, head, query, key] (zero on padding); mask:
        [batch, query, key] bool; key_roles / query_roles: [batch, key] / [batch, query]
        indices into key_names / query_names (-1 for none); q_seg, k_seg: segment ids for the
        block score; ids: [batch, pos] token ids for the duplicate-token score; key_select:
        [batch, key] bool, the keys the summary map counts (default all)."""
        L, B, H, Q, K = P.shape
        P = P.float().contiguous()
        D = self.th.max_offset
        qvalid = mask.any(-1)                                     # [B, Q]
        nk = mask.sum(-1).clamp_min(1).float()                    # valid keys per query
        U = mask.float() / nk[..., None]                          # uniform head [B, Q, K]
        self.n_queries += int(qvalid.sum())
        if qvalid.any():
            self.q_width = max(self.q_width, int(qvalid.any(0).nonzero().max()) + 1)
            self.k_width = max(self.k_width, int(mask.any(1).any(0).nonzero().max()) + 1)
        # each block below reads P once; products with position masks go through one matmul
        to_keys = P.sum(-2)                                       # [L, B, H, K] received
        u_keys = U.sum(-2)                                        # [B, K]
        kh = onehot(key_roles[:, :K], len(self.key_names))        # [B, K, R]
        self.role_mass += torch.einsum("lbhk,bkr->lhr", to_keys, kh).double()
        self.u_role_mass += torch.einsum("bk,bkr->r", u_keys, kh).double()
        ks = kh if key_select is None else kh * key_select[:, :K, None].float()
        self.summary += torch.einsum("lbhk,bkr->lr", to_keys, ks).double()
        self.first += to_keys[..., 0].sum(1).double()
        self.u_first += float(u_keys[:, 0].sum())
        # entropy: -sum p log p (zeros clamped first: log of exact zeros is a slow path)
        logp = P.clamp_min(1e-30).log_()
        self.entropy -= torch.matmul(P.reshape(-1, 1, K), logp.reshape(-1, K, 1)
                                     ).reshape(L, B, H, Q).sum((1, 3)).double()
        del logp
        self.u_entropy += float((nk.log() * qvalid).sum())
        if self.role_map is not None and query_roles is not None:
            qh = onehot(query_roles[:, :Q], len(self.query_names)) * qvalid[..., None]
            toward = torch.matmul(P.reshape(L, B, H * Q, K), kh[None])   # [L, B, H*Q, R]
            toward = toward.reshape(L, B, H, Q, -1)
            self.role_map += torch.einsum("lbhqs,bqr->lhrs", toward, qh).double()
            self.query_count += qh.sum((0, 1)).double()
            self.u_role_map += torch.einsum("bqs,bqk,bkr->sr", qh, U, kh).double()
            seen = (torch.matmul(mask.float(), kh) > 0).float()          # [B, Q, R]
            self.visible += torch.einsum("bqs,bqr->sr", qh, seen).double()
        if self.diagonal:
            cells, slot = _rel_index(Q, K, D)      # (query, key) cells by offset, |offset| <= D
            summed = P.sum(1).reshape(L * H, Q * K)[:, cells]
            self.offsets += torch.zeros(L * H, 2 * D + 1).index_add_(1, slot, summed
                                                                     ).reshape(L, H, -1).double()
            self.u_offsets += torch.zeros(2 * D + 1).index_add_(
                0, slot, U.sum(0).reshape(-1)[cells]).double()
            if self.offset_roles is not None and query_roles is not None:
                self._count_offset_roles(mask, query_roles[:, :Q], key_roles[:, :K], cells, slot)
        # position masks [B, Q, K] whose product with P is summed per prompt
        masks: dict[str, torch.Tensor] = {}
        if q_seg is not None and k_seg is not None:
            self.has_segments = True
            same = (q_seg[:, :Q, None] == k_seg[:, None, :K]) & (q_seg[:, :Q, None] >= 0) & mask
            masks["block"] = same
            self.u_block += float((same.float().sum(-1) / nk * qvalid).sum())
            if self.diagonal:
                # per valid query, which offsets are valid keys and which of those lie in
                # its segment: the offset-only model of each head is scored from these
                both = torch.stack([same, mask], 1).reshape(B, 2, Q * K)[:, :, cells]
                by_off = torch.zeros(B, 2, Q, 2 * D + 1, dtype=torch.uint8)
                qi = torch.arange(Q)[:, None].expand(Q, K).reshape(-1)[cells]
                by_off[:, :, qi, slot] = both.to(torch.uint8)
                rows = by_off.permute(0, 2, 1, 3).reshape(B * Q, -1)[qvalid.reshape(-1)]
                self._add_seg_rows(np.packbits(rows.numpy(), axis=1))
        if self.detectors:
            previous = torch.ones(Q, K, dtype=torch.bool).tril(-1).triu(-1)   # k == q - 1
            masks["previous_token"] = previous.expand(B, Q, K) & mask
            if ids is not None:
                dup = torch.tril(ids[:, :Q, None] == ids[:, None, :K], -1)
                ind = torch.zeros_like(dup)
                ind[:, :, 1:] = dup[:, :, :-1]
                masks["duplicate_token"] = dup & mask
                masks["induction_on_data"] = torch.tril(ind) & mask
        if masks:
            names = list(masks)
            M = torch.stack([masks[n] for n in names], -1).reshape(B, Q * K, len(names)).float()
            per_prompt = torch.matmul(P.reshape(L, B, H, Q * K), M[None])     # [L, B, H, n]
            u_per_prompt = torch.matmul(U.reshape(B, 1, Q * K), M)[:, 0]      # [B, n]
            den = to_keys.sum(-1).clamp_min(1e-30)                             # [L, B, H]
            uden = u_keys.sum(-1).clamp_min(1e-30)
            for i, name in enumerate(names):
                if name == "block":
                    self.block += per_prompt[..., i].sum(1).double()
                else:
                    self.det[name].append(per_prompt[..., i] / den)
                    self.u_det[name].append(u_per_prompt[:, i] / uden)

    def _add_seg_rows(self, packed: np.ndarray) -> None:
        """Fold packed rows into the distinct rows seen so far and their counts."""
        rows = np.concatenate([self.seg_rows, packed])
        weights = np.concatenate([self.seg_weights, np.ones(len(packed))])
        view = np.ascontiguousarray(rows).view(f"V{rows.shape[1]}").ravel()
        _, first, inverse = np.unique(view, return_index=True, return_inverse=True)
        self.seg_rows = rows[first]
        self.seg_weights = np.bincount(inverse.ravel(), weights, minlength=len(first))

    def _count_offset_roles(self, mask, q_roles, k_roles, cells, slot) -> None:
        """Add, per (query role, offset, key role), the valid (query, key) cells."""
        Q, K = q_roles.shape[1], k_roles.shape[1]
        S, R = self.offset_roles.shape[1:]
        qi = torch.arange(Q)[:, None].expand(Q, K).reshape(-1)[cells]
        ki = torch.arange(K)[None, :].expand(Q, K).reshape(-1)[cells]
        qr, kr = q_roles[:, qi], k_roles[:, ki]                      # [B, cells]
        ok = mask.reshape(mask.shape[0], -1)[:, cells] & (qr >= 0) & (kr >= 0)
        flat = (qr * S + slot[None]) * R + kr
        self.offset_roles += torch.bincount(flat[ok], minlength=self.offset_roles.numel()
                                            ).reshape(self.offset_roles.shape).double()

    @classmethod
    def combine(cls, parts: list["HeadStats"], counts=None) -> "HeadStats":
        """The statistics of several parts taken together, part i `counts[i]` times (default
        once each): the running sums of the parts added with those weights. Parts of disjoint
        examples combined once each give the statistics of all their examples; parts drawn
        with replacement (counts from a multinomial) give a bootstrap resample of them."""
        counts = [1] * len(parts) if counts is None else [int(c) for c in counts]
        used = [(p, c) for p, c in zip(parts, counts) if c > 0]
        p0 = parts[0]
        out = cls(p0.L, p0.H, p0.key_names, p0.query_names, causal=p0.causal,
                  diagonal=p0.diagonal, detectors=p0.detectors, th=p0.th, grouping=p0.grouping)
        for name in ("offsets", "u_offsets", "role_mass", "u_role_mass", "summary", "role_map",
                     "query_count", "u_role_map", "visible", "offset_roles", "entropy", "first",
                     "block"):
            if getattr(out, name) is not None:
                setattr(out, name, sum((getattr(p, name) * c for p, c in used),
                                       getattr(out, name)))
        for name in ("n_queries", "u_entropy", "u_first", "u_block"):
            setattr(out, name, sum(getattr(p, name) * c for p, c in used) + getattr(out, name))
        out.q_width = max([p.q_width for p, _ in used], default=0)
        out.k_width = max([p.k_width for p, _ in used], default=0)
        out.has_segments = any(p.has_segments for p in parts)
        rows = [p.seg_rows for p, _ in used if len(p.seg_rows)]
        if rows:
            out.seg_rows = np.concatenate(rows)
            out.seg_weights = np.concatenate([p.seg_weights * c for p, c in used
                                              if len(p.seg_rows)])
            out._add_seg_rows(out.seg_rows[:0])           # fold equal rows together
        for name in out.det:
            out.det[name] = [t for p, c in used for t in p.det[name] * c]
            out.u_det[name] = [t for p, c in used for t in p.u_det[name] * c]
        out.induction, out.u_induction = p0.induction, p0.u_induction
        return out

    def set_induction(self, score: torch.Tensor, uniform: float) -> None:
        """The induction score ([layer, head]) measured on repeated random tokens."""
        self.induction, self.u_induction = score, uniform

    # -- finished numbers -----------------------------------------------------------------
    def offset_range(self) -> list[int]:
        D = self.th.max_offset
        lo = 0 if self.causal else -min(self.k_width - 1, D)
        return list(range(lo, min(self.q_width, D + 1)))

    def offset_profile(self) -> tuple[list[int], torch.Tensor, torch.Tensor]:
        """(offsets, [layer, head, offsets], uniform [offsets]): share of attention per offset."""
        offs = self.offset_range()
        sel = torch.tensor(offs, dtype=torch.long) + self.th.max_offset
        nq = max(self.n_queries, 1)
        return offs, (self.offsets[..., sel] / nq).float(), (self.u_offsets[sel] / nq).float()

    def role_masses(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean attention per query received by each key role: [layer, head, role], [role]."""
        nq = max(self.n_queries, 1)
        return (self.role_mass / nq).float(), (self.u_role_mass / nq).float()

    def summary_map(self) -> torch.Tensor:
        """[layer, role]: attention each (selected) key role receives per query, mean over heads."""
        return (self.summary / max(self.n_queries, 1) / self.H).float()

    def query_role_map(self) -> torch.Tensor:
        """[layer, head, query role, key role]: rows sum to 1 over key roles."""
        return (self.role_map / self.query_count.clamp_min(1)[None, None, :, None]).float()

    def _offset_model_block(self, offs: list[int], prof: torch.Tensor) -> torch.Tensor:
        width = 2 * (2 * self.th.max_offset + 1)
        bits = np.unpackbits(self.seg_rows, axis=1, count=width)
        counts = torch.from_numpy(bits).reshape(len(bits), 2, -1)
        sel = torch.tensor(offs, dtype=torch.long) + self.th.max_offset
        same = counts[:, 0, sel].float()                        # [rows, offsets]
        every = counts[:, 1, sel].float()
        lut = prof.reshape(self.L * self.H, -1)                 # weight of each offset
        num, den = lut @ same.T, lut @ every.T                  # [L*H, rows]
        share = ((num / den.clamp_min(1e-12)).double() @ torch.from_numpy(self.seg_weights)
                 ) / max(self.n_queries, 1)
        return share.float().reshape(self.L, self.H)

    def features(self) -> dict[str, torch.Tensor | list]:
        """Features of every head: name -> [layer, head] tensor (or nested lists of roles)."""
        L, H, th = self.L, self.H, self.th
        nq = max(self.n_queries, 1)
        f: dict[str, torch.Tensor | list] = {}
        full = lambda v: torch.full((L, H), float(v))  # noqa: E731
        offs = None
        if self.diagonal:
            offs, prof, uprof = self.offset_profile()
            mass, idx = prof.max(-1)
            f["sharp_mass"], f["sharp_offset"] = mass, torch.tensor(offs)[idx]
            f["sharp_uniform"] = uprof[idx]
            bm, bc, bw = _band(prof, offs, th.band_halfwidth)
            f["band_mass"], f["band_centre"], f["band_halfwidth"] = bm, bc, bw
            ub, _, _ = _band(uprof[None, None], offs, th.band_halfwidth)
            f["band_uniform"] = ub.expand(L, H)
        rm, urm = self.role_masses()
        top = rm.topk(min(th.vertical_top, len(self.key_names)), dim=-1)
        f["vertical_share"] = top.values.sum(-1)
        f["vertical_uniform"] = urm[top.indices].sum(-1)
        f["vertical_roles"] = [[[self.key_names[i] for i in top.indices[l, h].tolist()]
                                for h in range(H)] for l in range(L)]
        f["vertical_top_share"] = top.values[..., 0]
        f["vertical_top_uniform"] = urm[top.indices[..., 0]]
        if self.has_segments:
            f["block_share"] = (self.block / nq).float()
            f["block_uniform"] = full(self.u_block / nq)
            if self.diagonal:
                f["block_offset_model"] = self._offset_model_block(offs, prof)
        f["entropy"] = (self.entropy / nq).float()
        f["entropy_uniform"] = full(self.u_entropy / nq)
        f["first_token"] = (self.first / nq).float()
        f["first_token_uniform"] = full(self.u_first / nq)
        if self.detectors:
            for name, parts in self.det.items():
                if parts:
                    f[name] = torch.cat(parts, 1).mean(1).float()
                    f[f"{name}_uniform"] = full(torch.cat(self.u_det[name]).mean())
        if self.induction is not None:   # TransformerLens's detector score, repeated tokens
            f["induction_detector"] = self.induction.float()
            f["induction_detector_uniform"] = full(self.u_induction)
        f.update(route_features(route_tables(self, self.grouping), L, H, th))
        return f


def collect_stats(source, kinds=None, th: Thresholds = Thresholds(),
                  segments: str = "statement", role_maps: bool = True,
                  induction: dict | None = None, grouping: str = "field",
                  parts: int = 0) -> dict[str, HeadStats]:
    """HeadStats of every kind, filled from `source.batches()`: an AttentionCache (in
    memory), an AttentionStream (computed as read) or a ShardedCache (read from disk).

    induction: {kind: (scores [layer, head], uniform score)} measured elsewhere (see
    `interp.attention.detect.induction_scores`); they become the columns
    `induction_detector` and `induction_detector_uniform`.
    parts: also keep the statistics of `parts` disjoint groups of examples (example i in
    group i % parts) as `.parts` of each kind's HeadStats, which is then their sum
    (`HeadStats.combine`): what `interp.attention.taxonomy.stability` resamples."""
    from interp.hooks import KINDS

    kinds = tuple(kinds or source.kinds)
    prep = {}
    for name, side in source.sides.items():
        width = side.ids.shape[1]
        roles = analysis_roles(side.roles, grouping)
        names = sorted({r for row in roles for r in row})
        prep[name] = (names, role_index(roles, names, width),
                      segments_from_roles(side.roles, width, segments),
                      input_keys(side.tokens, width))
    stats: dict[str, HeadStats] = {}
    split: dict[str, list[HeadStats]] = {}
    for index, pats in source.batches():
        for kind in kinds:
            P = pats[kind]
            spec = KINDS[kind]
            qn, qr, qs, _ = prep[spec.query_side]
            kn, kr, ks, sel = prep[spec.key_side]
            same = spec.query_side == spec.key_side
            if kind not in stats:
                new = lambda: HeadStats(P.shape[0], P.shape[2], kn,  # noqa: E731
                                        qn if role_maps else None, causal=spec.causal,
                                        diagonal=same, th=th, grouping=grouping)
                stats[kind] = new()
                split[kind] = [new() for _ in range(parts)]
            q, k = P.shape[-2:]
            mask = source.mask(kind, index, q, k)
            ids = source.query(kind).ids[index, :q] if same else None
            if not parts:
                stats[kind].update(P, mask, kr[index], qr[index], qs[index] if same else None,
                                   ks[index] if same else None, ids=ids,
                                   key_select=sel[index])
                continue
            for g, st in enumerate(split[kind]):
                m = index % parts == g
                if not m.any():
                    continue
                i = index[m]
                st.update(P[:, m], mask[m], kr[i], qr[i], qs[i] if same else None,
                          ks[i] if same else None, ids=None if ids is None else ids[m],
                          key_select=sel[i])
    if parts:
        for kind, ps in split.items():
            stats[kind] = HeadStats.combine(ps)
            stats[kind].parts = ps
    for kind, (score, uniform) in (induction or {}).items():
        if kind in stats:
            stats[kind].set_induction(score, uniform)
            for st in getattr(stats[kind], "parts", []):
                st.set_induction(score, uniform)
    return stats
