"""Edge scores: the change of the metric when one edge takes its reference value.

- `exact`: edge patching, one intervention per edge (the oracle). K edges run as K copies of
  the pairs in one batched pass; an edge into step t starts the pass at t from the clean run's
  outputs (the steps before it cannot change); an edge whose sender's reference equals its
  clean output at the edge's positions changes nothing and is not run (score 0).
- `eap` (Syed et al. 2023): (ref_s - clean_s) . d metric / d x_r at the clean input, for every
  edge from one forward and one backward pass (plus the corrupted run for the reference).
- `eap-ig` (Hanna et al. 2024, "inputs"): the same gradient averaged over `steps` inputs on
  the straight line from the reference embeddings (the corrupted ones; their mean under mean
  ablation) to the clean ones (alpha = k / steps, k = 1 ..
  steps; alpha = 1 is the clean run, which gives the clean outputs the difference needs).
  Cost: `steps` forward and backward passes and one forward pass (the corrupted run).

Every score is in metric units, averaged over the pairs, signed: negative when cutting the
edge lowers the metric (the edge carries the clean answer).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

import interp.distributed as dist
from circuits.patching.pairs import Pairs, metric_values_last
from interp.errors import InterpError

METHODS = ("exact", "eap", "eap-ig")
ABLATIONS = ("resample", "mean")


@dataclass
class Setup:
    """What every score and every faithfulness run shares: the graph, the pairs' inputs,
    the clean and corrupted runs' sender outputs and metrics, and the reference outputs."""

    gm: object
    graph: object
    pairs: Pairs
    metric: object
    inputs: dict            # {"clean"/"corrupt": {side: [b, p, d]}}
    outs: dict              # {"clean"/"corrupt": {side: [b, S, p, d]}}
    ref: dict               # {side: [b or 1, S, p, d]}
    m_clean: torch.Tensor   # [b]
    m_corrupt: torch.Tensor  # [b]
    ablation: str = "resample"
    passes: int = 0         # forward passes run (a backward counts as two)

    def metric_of(self, last: torch.Tensor, K: int = 1) -> torch.Tensor:
        """[K * b] metric values from the answer position's logits [K * b, vocab]."""
        if callable(self.metric):
            b = self.pairs.n
            return torch.cat([self.metric(last[k * b:(k + 1) * b], self.pairs).float().cpu()
                              for k in range(K)])
        return metric_values_last(last, self.pairs, self.metric, repeats=K)


def prepare(gm, graph, pairs: Pairs, metric="logit_diff", ablation: str = "resample"
            ) -> Setup:
    """Run the clean and corrupted inputs once and fix the reference outputs."""
    if ablation not in ABLATIONS:
        raise InterpError(f"unknown ablation {ablation!r}; choose one of {', '.join(ABLATIONS)}")
    inputs = {"clean": gm.embed(pairs.clean), "corrupt": gm.embed(pairs.corrupt)}
    outs, ms = {}, {}
    su = Setup(gm, graph, pairs, metric, inputs, {}, {}, None, None, ablation)
    with torch.no_grad():
        for which in ("clean", "corrupt"):
            last, rec = gm.forward(inputs[which], answer_pos=pairs.answer_pos, record=True)
            outs[which], ms[which] = rec, su.metric_of(last)
    su.passes += 2
    su.outs, su.m_clean, su.m_corrupt = outs, ms["clean"], ms["corrupt"]
    if ablation == "resample":
        su.ref = outs["corrupt"]
    else:   # the mean over the clean and the corrupted inputs, per position
        su.ref = {s: torch.cat([outs["clean"][s], outs["corrupt"][s]]).mean(0, keepdim=True)
                  for s in gm.sides}
    return su


def run_keep(su: Setup, keep: torch.Tensor, start: int = 0) -> torch.Tensor:
    """The metric [K, b] with edges where keep [K, E] is 0 taking their reference."""
    K = keep.shape[0]
    with torch.no_grad():
        last = su.gm.forward(su.inputs["clean"], ref=su.ref, weights=su.graph.weights(keep),
                             K=K, answer_pos=su.pairs.answer_pos, start=start,
                             prefix=su.outs["clean"])
    su.passes += K
    return su.metric_of(last, K).reshape(K, -1)


def _noop_edges(su: Setup) -> torch.Tensor:
    """[E] True where the edge's sender has the same reference as clean output at the
    edge's positions in every pair (cutting it changes nothing)."""
    g = su.graph
    same = torch.zeros(g.n_edges, dtype=torch.bool)
    for b in g.blocks:
        diff = (su.ref[b.side][:, :b.n_senders] - su.outs["clean"][b.side][:, :b.n_senders])
        nz = diff.abs().amax(dim=(0, 3)) > 0                      # [S, p]
        G = g.n_groups(b.side)
        onehot = torch.nn.functional.one_hot(g.pos_group[b.side], G).bool()   # [p, G]
        any_g = (nz[:, :, None] & onehot[None]).any(1)             # [S, G]
        if g.positions == "none":
            any_g = nz.any(1, keepdim=True)
        same[b.edges] = ~any_g[b.s, b.gi]
    return same


def exact(su: Setup, chunk: int = 16, progress=None) -> torch.Tensor:
    """[E] m(clean with the edge cut) - m(clean), mean over pairs; one pass per edge.

    Launched over several processes (`interp.distributed`), the batches of `chunk` edges are
    shared out and every process ends with every score, the same as one process computes."""
    g = su.graph
    scores = torch.zeros(g.n_edges)
    skip = _noop_edges(su)
    base = su.m_clean.mean()
    units = []                      # a unit: one batched pass, edges of one block
    for b in g.blocks:
        todo = [int(e) for e in b.edges if not skip[e]]
        units += [(b.step, todo[i:i + chunk]) for i in range(0, len(todo), chunk)]
    mine = dist.shard(units, "batches of edges")
    done = 0
    for k, (step, part) in enumerate(mine):
        keep = torch.ones(len(part), g.n_edges)
        keep[torch.arange(len(part)), torch.tensor(part)] = 0
        m = run_keep(su, keep, start=step)
        scores[torch.tensor(part)] = m.mean(1) - base
        done += len(part)
        if progress is not None and k % 20 == 0:
            progress(f"exact: {done} edges run ({int(skip.sum())} no-op skipped)")
    dist.gather_into(scores, [e for _, part in mine for e in part])
    return scores


def _grad_scores(su: Setup, inputs: dict, delta: dict | None) -> torch.Tensor:
    """[E] -(d mean metric / d w) at w = 1: the first-order change when the edge is cut
    (one forward and one backward pass)."""
    leaves, get = su.graph.params()
    with torch.enable_grad():
        last = su.gm.forward(inputs, ref=su.ref, weights=get, delta=delta,
                             answer_pos=su.pairs.answer_pos)
        m = su.metric_of(last).mean()
        grads = torch.autograd.grad(m, list(leaves.values()), allow_unused=True)
    su.passes += 3
    grads = {k: (gr if gr is not None else torch.zeros_like(leaves[k]))
             for k, gr in zip(leaves, grads)}
    return -su.graph.gather(grads)


def eap(su: Setup) -> torch.Tensor:
    """[E] edge attribution patching: (ref - clean) . grad at the clean input."""
    return _grad_scores(su, su.inputs["clean"], None)


def eap_ig(su: Setup, steps: int = 5) -> torch.Tensor:
    """[E] EAP with the gradient integrated over `steps` inputs from corrupted to clean."""
    if steps < 1:
        raise InterpError(f"--steps must be at least 1, got {steps}")
    delta = {s: su.ref[s] - su.outs["clean"][s] for s in su.gm.sides}
    delta = {s: d.expand(su.pairs.n, *d.shape[1:]) for s, d in delta.items()}
    # the path starts at the input node's reference (the corrupted embeddings under
    # resampling, their mean under mean ablation), so its end points match the difference
    start = {s: su.ref[s][:, 0].expand_as(su.inputs["clean"][s]) for s in su.gm.sides}
    total = torch.zeros(su.graph.n_edges)
    for k in range(1, steps + 1):
        a = k / steps
        inputs = {s: start[s] + a * (su.inputs["clean"][s] - start[s]) for s in su.gm.sides}
        total += _grad_scores(su, inputs, delta)
    return total / steps


def score(su: Setup, method: str, steps: int = 5, progress=None) -> torch.Tensor:
    if method not in METHODS:
        raise InterpError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    if method == "exact":
        return exact(su, progress=progress)
    if method == "eap":
        return eap(su)
    return eap_ig(su, steps)
