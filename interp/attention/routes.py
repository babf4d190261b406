"""What each head reads: query-conditioned key groups, routes and their baselines.

For every head, `HeadStats` keeps the attention that queries of each role pay to keys of each
role (summed over the data), the same sums for the uniform head, and (self attention) how many
keys of each role stand at each offset from the queries of each role. From these, per head and
per pair of groups (`interp.attention.groups`: fields by default):

- `share[q, k]`: the mean attention a query of group q pays to keys of group k (each row sums
  to 1 over the key groups): the head's query-conditioned key distribution;
- `uniform[q, k]`: the same for the uniform head (equal attention over each query's keys);
- `offset_model[q, k]`: the same for the head's offset-only model: a head that attends by
  offset alone, with this head's offset profile (its mean attention at each offset q - k),
  each query group's rows normalised over the keys its queries can see
  (sum_o w[o] n[q, o, k] / sum_o w[o] n[q, o, .], n = key counts by offset; pooled per query
  group, offsets up to `Thresholds.max_offset`; self attention only);
- `weight[q]`: the share of all queries in group q;
- `visible[q, k]`: the mean attention on group k of the group-q queries that can see a key
  of group k, and `head_visible[k]` the same over every query that can (a group is seen when
  its most often seen role is: a field's sign and digits stand together);

A **route** q -> k is a pair of different groups (off the diagonal: a query reading another
field, the seed's "sparse squares") with
    share >= route_key,  share / uniform >= route_lift,  share - offset_model >= route_excess,
    visible[q, k] / head_visible[k] >= route_specific  (the key group is read *because of*
    the query group; a vertical stripe, read alike by every query that can see it, is no
    route),
for a query group holding at least `route_min_weight` of the queries. A head is `routed(Q->K)`
when the routes of one query group Q carry together at least `route_share` of its attention;
the label names the query group whose routes carry the most attention beyond the baselines.

Summary features per head: `route_mi`, the mutual information between query group and key
group under the head's attention, normalised by min(H(query group), H(key group)) (0 for a
head that reads the same keys whatever the query, 1 for a deterministic routing), beside
`route_mi_uniform`, the same for the uniform head (causal masks alone make it positive);
`route_share`, the share of all the head's attention carried by its top routes; and the top
routes themselves with their lifts over the uniform head and the offset-only model.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from interp.attention.groups import group_role, quote_group, read_groups


@dataclass(frozen=True)
class Route:
    """One route of one head: queries of group `query` read keys of group `key`."""

    query: str
    key: str
    share: float          # mean attention of a `query` query on `key` keys
    uniform: float        # the uniform head's
    offset_model: float   # the offset-only model's (nan for cross attention)
    weight: float         # share of all queries in the query group
    visible: float        # mean attention on `key` of the query group's queries that see one
    head_visible: float   # the same over every query that sees a `key` key

    @property
    def lift(self) -> float:
        return self.share / max(self.uniform, 1e-9)

    @property
    def specific(self) -> float:
        """How much more this query group reads `key` than the head's average query that
        can see it."""
        return self.visible / max(self.head_visible, 1e-9)

    @property
    def offset_lift(self) -> float:
        return self.share / max(self.offset_model, 1e-9)

    @property
    def excess(self) -> float:
        """Attention beyond both baselines, weighted by how many queries take this route."""
        base = self.uniform if self.offset_model != self.offset_model else max(
            self.uniform, self.offset_model)
        return self.weight * (self.share - base)


def _groups(names: list[str], grouping: str) -> tuple[list[str], torch.Tensor]:
    """(group names in order of first appearance, [role, group] 0/1 matrix)."""
    groups: list[str] = []
    for r in names:
        g = group_role(r, grouping)
        if g not in groups:
            groups.append(g)
    m = torch.zeros(len(names), len(groups), dtype=torch.float64)
    for i, r in enumerate(names):
        m[i, groups.index(group_role(r, grouping))] = 1.0
    return groups, m


@dataclass
class RouteTables:
    """Group-level tables of one attention kind (see the module docstring).

    share, offset_model : [layer, head, query group, key group] (offset_model None for cross
    attention); uniform : [query group, key group]; weight : [query group];
    visible : [layer, head, query group, key group]; head_visible : [layer, head, key group];
    mi, mi_uniform : [layer, head] and a float.
    """

    query_groups: list[str]
    key_groups: list[str]
    share: torch.Tensor
    uniform: torch.Tensor
    offset_model: torch.Tensor | None
    weight: torch.Tensor
    visible: torch.Tensor
    head_visible: torch.Tensor
    mi: torch.Tensor
    mi_uniform: float


def _normalised_mi(joint: torch.Tensor) -> torch.Tensor:
    """MI / min(H(q), H(k)) of joint distributions `[..., q, k]` (each summing to 1)."""
    pq, pk = joint.sum(-1, keepdim=True), joint.sum(-2, keepdim=True)
    ratio = joint / (pq * pk).clamp_min(1e-30)
    mi = torch.where(joint > 0, joint * ratio.clamp_min(1e-30).log(), torch.zeros(())
                     ).sum((-1, -2))
    hq = -torch.where(pq > 0, pq * pq.clamp_min(1e-30).log(), torch.zeros(())).sum((-1, -2))
    hk = -torch.where(pk > 0, pk * pk.clamp_min(1e-30).log(), torch.zeros(())).sum((-1, -2))
    return mi / torch.minimum(hq, hk).clamp_min(1e-12)


def route_tables(st, grouping: str = "field") -> RouteTables | None:
    """The group-level tables of one `HeadStats` (None when it kept no role map)."""
    if st.role_map is None or st.query_count is None or float(st.query_count.sum()) == 0:
        return None
    qg, Gq = _groups(st.query_names, grouping)
    kg, Gk = _groups(st.key_names, grouping)
    counts = st.query_count @ Gq                                   # [Qg] queries per group
    total = counts.sum()
    mass = torch.einsum("lhqk,qa,kb->lhab", st.role_map, Gq, Gk)   # [L, H, Qg, Kg]
    share = mass / counts.clamp_min(1)[None, None, :, None]
    u_mass = Gq.T @ st.u_role_map @ Gk
    uniform = u_mass / counts.clamp_min(1)[:, None]
    weight = counts / total
    # queries of each group that see a key of each group (the most often seen role of it)
    seen = Gq.T @ st.visible                                                   # [Qg, Kr]
    seen = torch.stack([(seen * Gk[:, b]).amax(-1) for b in range(len(kg))], -1)     # [Qg, Kg]
    visible = mass / seen.clamp_min(1)
    head_visible = mass.sum(-2) / seen.sum(0).clamp_min(1)
    offset_model = None
    if st.offset_roles is not None:
        offs, prof, _ = st.offset_profile()                        # [L, H, offsets]
        sel = torch.tensor(offs, dtype=torch.long) + st.th.max_offset
        n = torch.einsum("qos,qa,sb->aob", st.offset_roles[:, sel], Gq, Gk)   # [Qg, O, Kg]
        num = torch.einsum("lho,aob->lhab", prof.double(), n)
        offset_model = num / num.sum(-1, keepdim=True).clamp_min(1e-30)
    mi = _normalised_mi(mass / total)
    mi_u = float(_normalised_mi(u_mass / total))
    return RouteTables(qg, kg, share.float(), uniform.float(),
                       None if offset_model is None else offset_model.float(),
                       weight.float(), visible.float(), head_visible.float(), mi.float(),
                       mi_u)


def head_routes(t: RouteTables, layer: int, head: int, th, top: int | None = None
                ) -> list[Route]:
    """The routes of one head that pass the thresholds (see the module docstring): query
    groups by the attention their routes carry beyond the baselines, and within a query group
    routes by their own; `top` keeps the first few."""
    out = []
    # plain floats first (indexing tensors element by element is the slow part)
    share, uni = t.share[layer, head].tolist(), t.uniform.tolist()
    off = t.offset_model[layer, head].tolist() if t.offset_model is not None else None
    vis, hv = t.visible[layer, head].tolist(), t.head_visible[layer, head].tolist()
    weight = t.weight.tolist()
    for a, q in enumerate(t.query_groups):
        w = weight[a]
        if w < th.route_min_weight:
            continue
        for b, k in enumerate(t.key_groups):
            if k == q:
                continue
            r = Route(q, k, share[a][b], uni[a][b],
                      off[a][b] if off is not None else float("nan"), w,
                      vis[a][b], hv[b])
            if (r.share >= th.route_key and r.lift >= th.route_lift
                    and (off is None or r.share - r.offset_model >= th.route_excess)
                    and r.specific >= th.route_specific):
                out.append(r)
    by_query: dict[str, float] = {}
    for r in out:
        by_query[r.query] = by_query.get(r.query, 0.0) + r.excess
    out.sort(key=lambda r: (-by_query[r.query], -r.excess))
    return out[:top] if top else out


def label_routes(routes: list[Route], th) -> list[Route]:
    """The routes the `routed` label names: those of the first query group (in the order of
    `head_routes`) whose routes together hold at least `th.route_share` of its attention,
    by share; [] when no group does."""
    by_query: dict[str, list[Route]] = {}
    for r in routes:
        by_query.setdefault(r.query, []).append(r)
    for rs in by_query.values():
        if sum(r.share for r in rs) >= th.route_share:
            return sorted(rs, key=lambda r: -r.share)
    return []


def routed_label(routes: list[Route], th) -> str | None:
    """`routed(Q->K1,K2)` (see `label_routes`), or None."""
    rs = label_routes(routes, th)
    return (f"routed({route_text(rs[0].query, [r.key for r in rs])})" if rs else None)


def route_text(query: str, keys: list[str]) -> str:
    """`Q->K1,K2` with every group that is not a plain name quoted (`quote_group`):
    `'-'->D_value`, `x1->Dexpr_c,')'`."""
    return f"{quote_group(query)}->{','.join(quote_group(k) for k in keys)}"


def split_route(text: str) -> tuple[list[str], list[str]]:
    """(query groups, key groups) of `Q->K1,K2` as `route_text` writes it (the arrow may be
    `->` or `\u2192`; an empty query side gives []). ValueError when there is no arrow."""
    i, n, quoted = 0, len(text), False
    while i < n:
        ch = text[i]
        if quoted and ch == "\\":
            i += 2
            continue
        if ch == "'":
            quoted = not quoted
        elif not quoted and (text.startswith("->", i) or ch == "\u2192"):
            q, k = text[:i], text[i + (2 if ch == "-" else 1):]
            return (read_groups(q) if q.strip() else []), read_groups(k)
        i += 1
    raise ValueError(f"no '->' in route {text!r}")


def route_records(routes: list[Route]) -> list[dict]:
    """Routes as plain records (for JSON): the fields and the derived lifts."""
    return [{"query": r.query, "key": r.key, "share": r.share, "uniform": r.uniform,
             "offset_model": r.offset_model, "lift": r.lift, "offset_lift": r.offset_lift,
             "specific": r.specific, "weight": r.weight} for r in routes]


def reads_text(routes: list[Route], top: int = 3) -> str:
    """`D_value->b 0.41 (x3.2, x2.0 offset); ...` for a table cell ('' when no route): per
    route its share (the mean attention of a query of the group on the key group), then its
    lift over the uniform head (x3.2) and over the head's offset-only model (x2.0 offset;
    left out for cross attention)."""
    parts = []
    for r in routes[:top]:
        off = "" if r.offset_model != r.offset_model else f", x{r.offset_lift:.1f} offset"
        parts.append(f"{route_text(r.query, [r.key])} {r.share:.2f} (x{r.lift:.1f}{off})")
    return "; ".join(parts)


def route_features(t: RouteTables | None, L: int, H: int, th) -> dict:
    """Per-head route features for the taxonomy: `route_mi`, `route_mi_uniform`,
    `route_share` ([layer, head]) and `routes` (nested lists of `Route`, strongest first)."""
    if t is None:
        return {}
    routes = [[head_routes(t, l, h, th) for h in range(H)] for l in range(L)]
    top = th.route_top
    share = torch.tensor([[sum(r.weight * r.share for r in routes[l][h][:top])
                           for h in range(H)] for l in range(L)])
    return {"route_mi": t.mi, "route_mi_uniform": torch.full((L, H), t.mi_uniform),
            "route_share": share, "routes": routes}


__all__ = ["Route", "RouteTables", "route_tables", "head_routes", "label_routes",
           "routed_label", "route_text", "split_route", "route_records", "reads_text",
           "route_features"]
