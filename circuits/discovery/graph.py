"""The edges of a `GraphModel` (every sender -> receiver path through the residual stream),
with or without position groups, and the edge weights a forward pass reads.

    g = EdgeGraph(gm, roles={"seq": [...]}, positions="field", answer_pos=30)
    g.names[:3]            # ['input->L0H0.q@a', ...]
    w = g.weights(keep)    # keep: [K, E] in {0, 1} -> callable for GraphModel.forward

Positions (`positions`):
- "none": one edge per sender -> receiver, its weight shared by every position (group `*`).
- "field": one edge per sender -> receiver per position group of the side the receiver
  reads (`interp.attention.groups.group_role(role, "field")`: `b_digit`, `b_sign` -> `b`; any
  other role is its own group). The solution's groups are marked `sol:` (`sol:=` is the
  solution's '=', `=` the input's), so the input's `x ^ =` are never mixed with the
  solution's. The residual stream is position-wise, so an edge lives at one
  group; attention carries information across groups inside a head. The logits read one
  position, so their edges exist only at the answer's group.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from interp.attention.groups import group_role
from interp.errors import InterpError

POSITIONS = ("none", "field")


@dataclass
class _Block:
    """The edges of one receiver group of one step: edge e is (sender s, receiver r, group
    gi); its weight lands at W[:, s, r, gi]."""

    step: int
    group: int
    side: str
    n_senders: int
    n_receivers: int
    edges: np.ndarray       # [E_block] global edge indices
    s: np.ndarray
    r: np.ndarray
    gi: np.ndarray


class EdgeGraph:
    """Every edge of a `GraphModel`, named `SENDER->RECEIVER` (`@GROUP` with positions).

    Parameters
    ----------
    gm : GraphModel
    roles : {side: list of str}
        The role of each position of each side (`Pairs.roles`); used for `positions="field"`.
    positions : {"none", "field"}
    answer_pos : int
        The output side's position the logits are read at.
    """

    def __init__(self, gm, roles: dict, positions: str = "none", answer_pos: int = -1):
        if positions not in POSITIONS:
            raise InterpError(f"unknown positions {positions!r}; choose one of "
                              f"{', '.join(POSITIONS)}")
        self.gm, self.positions = gm, positions
        self.pos_group: dict[str, torch.Tensor] = {}
        self.groups: dict[str, list[str]] = {}
        for side in gm.sides:
            if positions == "none":
                self.groups[side] = ["*"]
                self.pos_group[side] = torch.zeros(len(roles[side]), dtype=torch.long)
                continue
            labels = position_labels(roles[side], side)
            order = list(dict.fromkeys(labels))
            self.groups[side] = order
            self.pos_group[side] = torch.tensor([order.index(x) for x in labels])
        out_side = gm.sides[-1]
        ans_group = int(self.pos_group[out_side][answer_pos])
        names, senders, receivers, groups, rtypes, blocks = [], [], [], [], [], []
        made = {s: 0 for s in gm.sides}
        for t, st in enumerate(gm.steps):
            if st.kind != "input":
                for gidx, (side, rnames, _norm) in enumerate(st.groups):
                    S = made[side]
                    gs = [ans_group] if st.kind == "logits" else range(len(self.groups[side]))
                    e0 = len(names)
                    ss, rr, gg = [], [], []
                    for r, rname in enumerate(rnames):
                        for s in range(S):
                            for gi in gs:
                                sname = gm.senders[side][s]
                                glab = self.groups[side][gi]
                                names.append(f"{sname}->{rname}" +
                                             ("" if positions == "none" else f"@{glab}"))
                                senders.append(sname)
                                receivers.append(rname)
                                groups.append(glab)
                                rtypes.append(_rtype(rname))
                                ss.append(s)
                                rr.append(r)
                                gg.append(gi)
                    blocks.append(_Block(t, gidx, side, S, len(rnames),
                                         np.arange(e0, len(names)), np.array(ss, dtype=int),
                                         np.array(rr, dtype=int), np.array(gg, dtype=int)))
            if st.kind != "logits":
                made[st.side] += len(st.senders)
        self.names, self.senders, self.receivers = names, senders, receivers
        self.edge_groups, self.rtypes, self.blocks = groups, rtypes, blocks
        self._by_key = {(b.step, b.group): b for b in blocks}
        self.index = {n: i for i, n in enumerate(names)}

    @property
    def n_edges(self) -> int:
        return len(self.names)

    def n_groups(self, side: str) -> int:
        return len(self.groups[side])

    def weights(self, keep: torch.Tensor):
        """A `GraphModel.forward` weights callable for keep [K, E] (1 kept, 0 cut); a receiver
        group with nothing cut gets None (its receivers read the plain residual)."""
        keep = keep.to(torch.float32)
        cache = {}
        for b in self.blocks:
            if bool((keep[:, b.edges] == 1).all()):
                continue                      # nothing cut here: the plain residual
            G = self.n_groups(b.side)
            W = torch.ones(keep.shape[0], b.n_senders, b.n_receivers, G)
            W[:, b.s, b.r, b.gi] = keep[:, b.edges]
            cache[(b.step, b.group)] = self.expand(W, b.side)

        def get(t, g):
            return cache.get((t, g))
        return get

    def expand(self, W: torch.Tensor, side: str) -> torch.Tensor:
        """[K, S, R, G] group weights -> [K, S, R, p] position weights (G = 1: as is)."""
        if W.shape[-1] == 1:
            return W
        return W[..., self.pos_group[side]]

    def params(self):
        """Leaf weights (all 1, requiring grad) per receiver group, for attribution: returns
        ({(step, group): [1, S, R, G]}, the forward's weights callable)."""
        leaves = {(b.step, b.group): torch.ones(1, b.n_senders, b.n_receivers,
                                                self.n_groups(b.side), requires_grad=True)
                  for b in self.blocks}

        def get(t, g):
            w = leaves.get((t, g))
            if w is None:
                return None
            side = self._by_key[(t, g)].side
            return self.expand(w, side)
        return leaves, get

    def gather(self, grads: dict) -> torch.Tensor:
        """Per-edge values [E] from per-block tensors [1, S, R, G] (e.g. gradients)."""
        out = torch.zeros(self.n_edges)
        for b in self.blocks:
            g = grads[(b.step, b.group)][0]
            out[b.edges] = g[b.s, b.r, b.gi].float()
        return out

    def block_of(self, t: int, g: int) -> _Block:
        return self._by_key[(t, g)]


#: the prefix of the solution's position groups (`sol:=` is the solution's '=', `=` the input's)
SOLUTION = "sol:"


def position_labels(roles: list[str], side: str) -> list[str]:
    """The field group of each position, the solution's marked `sol:`: T5's decoder side,
    and on a decoder-only prompt every position after the input's `<sep>`."""
    labels = [group_role(r, "field") for r in roles]
    if side == "tgt":
        return [SOLUTION + x for x in labels]
    if side == "seq" and "<sep>" in roles:
        cut = roles.index("<sep>") + 1
        return labels[:cut] + [SOLUTION + x for x in labels[cut:]]
    return labels


def _rtype(receiver: str) -> str:
    """The component type of a receiver: q, k, v, mlp or logits."""
    if receiver == "logits":
        return "logits"
    tail = receiver.rsplit(".", 1)[-1]
    return tail if tail in ("q", "k", "v") else "mlp"


def node_of(receiver: str) -> str:
    """The node a receiver belongs to: `L1H2.k` -> `L1H2`, `MLP0` -> `MLP0`."""
    tail = receiver.rsplit(".", 1)
    return tail[0] if len(tail) == 2 and tail[1] in ("q", "k", "v") else receiver
