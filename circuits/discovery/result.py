"""`discover`: edge scores, a circuit and its measured faithfulness, as one result."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from circuits.discovery.faithfulness import areas, circuit_keep, curve, evaluate, smallest
from circuits.discovery.graph import EdgeGraph, node_of
from circuits.discovery.model import GraphModel
from circuits.discovery.scores import METHODS, Setup, prepare, score
from interp.errors import InterpError

#: taxonomy kinds -> node prefixes
KIND_PREFIX = {"self": "", "encoder": "enc.", "decoder_self": "dec.", "cross": "cross."}


@dataclass
class Circuit:
    """A set of edges with its measured faithfulness."""

    edges: list[str]
    nodes: list[str]
    keep: torch.Tensor
    f: float
    f_lo: float
    f_hi: float

    def __len__(self) -> int:
        return len(self.edges)


@dataclass
class DiscoveryResult:
    """Edge scores of one method, the faithfulness curve, and the chosen circuit.

    `.frame()` edges with scores, `.nodes()`, `.faithfulness()` the curve (with `.cpr`,
    `.cmd`), `.circuit(k)` the top-k circuit (pruned, measured), `.figure()` the circuit as
    a layered graph; `circuit_edges` / `circuit_f` describe the chosen circuit."""

    method: str
    positions: str
    metric: str
    ablation: str
    steps: int
    setup: Setup = field(repr=False)
    scores: torch.Tensor = field(repr=False)
    curve: pd.DataFrame = field(repr=False)
    chosen: Circuit = field(repr=False)
    target: float | None = None
    at_target: Circuit | None = None
    labels: dict = field(default_factory=dict, repr=False)
    compare: pd.DataFrame | None = field(default=None, repr=False)

    @property
    def graph(self) -> EdgeGraph:
        return self.setup.graph

    @property
    def n_pairs(self) -> int:
        return self.setup.pairs.n

    @property
    def m_full(self) -> float:
        return float(self.setup.m_clean.mean())

    @property
    def m_empty(self) -> float:
        from circuits.discovery.faithfulness import _ends

        return float(_ends(self.setup)[1].mean())

    @property
    def cpr(self) -> float:
        return areas(self.curve)[0]

    @property
    def cmd(self) -> float:
        return areas(self.curve)[1]

    @property
    def circuit_edges(self) -> int:
        return len(self.chosen)

    @property
    def circuit_f(self) -> tuple[float, float, float]:
        return self.chosen.f, self.chosen.f_lo, self.chosen.f_hi

    def frame(self) -> pd.DataFrame:
        """One row per edge: edge, sender, receiver, group, score, abs_score, rank,
        in_circuit (the chosen circuit), receiver_type."""
        g = self.graph
        s = self.scores.numpy()
        df = pd.DataFrame({"edge": g.names, "sender": g.senders, "receiver": g.receivers,
                           "group": g.edge_groups, "score": s, "abs_score": np.abs(s),
                           "in_circuit": self.chosen.keep.numpy(),
                           "receiver_type": g.rtypes})
        df["rank"] = df["abs_score"].rank(ascending=False, method="first").astype(int)
        return df.sort_values("rank").reset_index(drop=True)

    def nodes(self) -> pd.DataFrame:
        """One row per node: node, kind, stack, layer, head, label, in_circuit."""
        gm = self.setup.gm
        inside = set(self.chosen.nodes)
        rows = []
        for st in gm.steps:
            names = st.senders if st.kind != "logits" else ["logits"]
            for i, n in enumerate(names):
                stack, base = (n.split(".", 1) + [""])[:2] if "." in n else ("", n)
                base = base or n
                layer = -1 if st.kind == "input" else (
                    max(_layer(x) for x in _all_nodes(gm)) + 1 if st.kind == "logits"
                    else _layer(n))
                rows.append({"node": n, "kind": st.kind.replace("attn", "head"),
                             "stack": stack, "layer": layer,
                             "head": i if st.kind == "attn" else -1,
                             "label": self.labels.get(n, ""), "in_circuit": n in inside})
        return pd.DataFrame(rows)

    def faithfulness(self) -> pd.DataFrame:
        """The curve: percent, k, edges (kept after pruning), f, f_lo, f_hi, m_circuit."""
        return self.curve.copy()

    def circuit(self, k: int) -> Circuit:
        """The top-k edges by |score|, pruned, with f measured by running it."""
        if k < 1:
            raise InterpError(f"a circuit needs at least 1 edge, got {k}")
        return make_circuit(self.setup, circuit_keep(self.graph, self.scores, k))

    def figure(self, max_edges: int = 60):
        """The chosen circuit as a layered graph (plotly)."""
        from circuits.discovery.figures import circuit_figure

        return circuit_figure(self.frame(), self.nodes(),
                              title=f"{self.method} circuit: {self.circuit_edges} edges, "
                                    f"f = {self.chosen.f:.2f}", max_edges=max_edges)


def _layer(node: str) -> int:
    tail = node.rsplit(".", 1)[-1]
    if tail.startswith("MLP"):
        return int(tail[3:])
    if tail.startswith("L") and "H" in tail:
        return int(tail[1:tail.index("H")])
    return -1


def _all_nodes(gm):
    return [n for st in gm.steps for n in st.senders]


def make_circuit(su: Setup, keep: torch.Tensor, seed: int = 0, row=None) -> Circuit:
    """The circuit of `keep`, measured (or with `row`, its measurement already made:
    f, f_lo, f_hi)."""
    g = su.graph
    row = evaluate(su, keep[None], seed=seed).iloc[0] if row is None else row
    idx = keep.nonzero()[:, 0].tolist()
    nodes = sorted({g.senders[e] for e in idx} | {node_of(g.receivers[e]) for e in idx})
    return Circuit([g.names[e] for e in idx], nodes, keep, float(row["f"]),
                   float(row["f_lo"]), float(row["f_hi"]))


def labels_from_table(table: pd.DataFrame) -> dict:
    """{node: taxonomy label} from `interp.head_taxonomy(...).frame()`."""
    return {f"{KIND_PREFIX.get(r.kind, '')}L{int(r.layer)}H{int(r.head)}": str(r.label)
            for r in table.itertuples()}


def discover(bridge, task=None, pairs=None, method: str = "eap-ig", positions: str = "none",
             metric="logit_diff", ablation: str = "resample", steps: int = 5,
             edges: int | None = None, target: float | None = None, labels=None,
             scores: torch.Tensor | None = None, seed: int = 0,
             progress=None) -> DiscoveryResult:
    """Find the circuit that computes the answer of `pairs`.

    Parameters
    ----------
    bridge : TransformerBridge (decoder-only: GPT-2 or native; or T5)
    task : the model's task (used to draw pairs when `pairs` is None)
    pairs : circuits.patching.Pairs, optional (default: `corrupt_pairs(bridge, task, n=32)`)
    method : "exact" (edge patching, one pass per edge), "eap" or "eap-ig" (default)
    positions : "none" (edges summed over positions) or "field" (one edge per field group)
    metric : "logit_diff", "logprob" or a callable (logits [b, vocab], pairs) -> [b]
    ablation : "resample" (edges outside the circuit take the corrupted run) or "mean"
    steps : EAP-IG's integration steps
    edges, target : the chosen circuit: the top `edges`, or the smallest reaching faithfulness
        `target` (default target 0.8 when neither is given)
    labels : {node: label} or a head-taxonomy table (its `label` column names the heads)
    scores : [E] precomputed scores (then `method` only names them)

    Returns
    -------
    DiscoveryResult
    """
    if method not in METHODS:
        raise InterpError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    if edges is not None and edges < 1:
        raise InterpError(f"--edges must be at least 1, got {edges}")
    if target is not None and not 0 < target <= 1:
        raise InterpError(f"--target-faithfulness must be in (0, 1], got {target}")
    if pairs is None:
        if task is None:
            raise InterpError("give pairs, or the task to draw them from")
        from circuits.patching import corrupt_pairs

        pairs = corrupt_pairs(bridge, task, n=32, seed=seed)
    gm = GraphModel(bridge, {s: v.shape[1] for s, v in pairs.clean.items()})
    graph = EdgeGraph(gm, pairs.roles, positions, pairs.answer_pos)
    su = prepare(gm, graph, pairs, metric, ablation)
    from circuits.discovery.faithfulness import _ends

    full, empty = (float(m.mean()) for m in _ends(su))
    if abs(full - empty) < 1e-9:
        raise InterpError("the full model and the empty circuit give the same metric: there "
                          "is no gap for a circuit to explain; choose other pairs")
    if scores is None:
        scores = score(su, method, steps, progress)
    elif scores.shape != (graph.n_edges,):
        raise InterpError(f"scores has shape {tuple(scores.shape)}; this graph has "
                          f"{graph.n_edges} edges (give one score per edge, in graph order)")
    cur = curve(su, scores, seed=seed)
    if edges is None and target is None:
        target = 0.8
    at = None
    if target is not None:
        found = smallest(su, scores, target, seed=seed, measured=cur)
        at = make_circuit(su, found[1], seed, row=found[2]) if found is not None else None
    if edges is not None:
        chosen = make_circuit(su, circuit_keep(graph, scores, min(edges, graph.n_edges)), seed)
    elif at is not None:
        chosen = at
    else:                                # the target is out of reach: the best point
        best = int(cur["f"].to_numpy().argmax())
        chosen = make_circuit(su, circuit_keep(graph, scores, int(cur["k"].iloc[best])), seed)
    if isinstance(labels, pd.DataFrame):
        labels = labels_from_table(labels)
    return DiscoveryResult(method, positions, metric if isinstance(metric, str) else
                           getattr(metric, "__name__", "custom"), ablation, steps, su, scores,
                           cur, chosen, target, at, dict(labels or {}))
