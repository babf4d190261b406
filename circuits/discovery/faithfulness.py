"""Circuits from edge scores, and their faithfulness measured by running them.

A circuit C keeps its edges; every other edge takes its reference value (the corrupted run's
output of its sender, or the mean). Faithfulness (MIB, Mueller et al. 2025):

    f(C) = (m(C) - m(empty)) / (m(full) - m(empty))

m = the metric averaged over the pairs; m(full) is the clean run, m(empty) every edge cut
(with resampling: the corrupted run). The curve is f at 0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50
and 100% of the edges (the top-k by |score|, nodes that no longer reach the logits pruned);
its interval resamples pairs (a pair is one equation). The areas, over the fraction of edges
x in [0, 1] by the trapezoid rule through (0, 0), the ten points and (1, 1):
CPR = integral of f (higher is better), CMD = integral of |1 - f| (0 is best).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from circuits.discovery.graph import node_of
from circuits.discovery.scores import Setup, run_keep
from interp.errors import InterpError

PERCENTS = (0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100)


def top_k(scores: torch.Tensor, k: int) -> torch.Tensor:
    """[E] bool: the k edges of largest |score| (ties broken by edge order)."""
    order = np.argsort(-scores.abs().numpy(), kind="stable")
    keep = torch.zeros(len(scores), dtype=torch.bool)
    keep[torch.from_numpy(order[:k].copy())] = True
    return keep


def prune(graph, keep: torch.Tensor) -> torch.Tensor:
    """keep without the edges into nodes whose output reaches the logits through no kept
    edge (they cannot change the answer), repeated until nothing changes."""
    keep = keep.clone()
    recv_node = [node_of(r) for r in graph.receivers]
    while True:
        live = {"logits"} | {graph.senders[e] for e in keep.nonzero()[:, 0].tolist()}
        drop = [e for e in keep.nonzero()[:, 0].tolist() if recv_node[e] not in live]
        if not drop:
            return keep
        keep[drop] = False


def circuit_keep(graph, scores: torch.Tensor, k: int, pruned: bool = True) -> torch.Tensor:
    """[E] bool: the top-k edges, pruned."""
    keep = top_k(scores, k)
    return prune(graph, keep) if pruned else keep


def _ratio(m: torch.Tensor, m_full: torch.Tensor, m_empty: torch.Tensor) -> torch.Tensor:
    gap = m_full.mean(-1) - m_empty.mean(-1)
    return (m.mean(-1) - m_empty.mean(-1)) / gap


def evaluate(su: Setup, keeps: torch.Tensor, n_boot: int = 1000, seed: int = 0,
             chunk: int = 8) -> pd.DataFrame:
    """f of each circuit keeps [C, E] (bool), run, with a 95% interval over pairs.

    Returns columns edges (kept), f, f_lo, f_hi, m_circuit."""
    ms = torch.cat([run_keep(su, keeps[i:i + chunk].float())
                    for i in range(0, len(keeps), chunk)])          # [C, b]
    m_full, m_empty = _ends(su)
    f = _ratio(ms, m_full, m_empty)
    rng = np.random.default_rng(seed)
    b = ms.shape[1]
    idx = torch.from_numpy(rng.integers(0, b, size=(n_boot, b)))
    boot = _ratio(ms[:, idx], m_full[idx], m_empty[idx])             # [C, n_boot]
    lo, hi = np.nanpercentile(boot.numpy(), [2.5, 97.5], axis=1)
    return pd.DataFrame({"edges": keeps.sum(1).numpy().astype(int), "f": f.numpy(),
                         "f_lo": lo, "f_hi": hi, "m_circuit": ms.mean(1).numpy()})


def _ends(su: Setup):
    """m(full) and m(empty) per pair: the clean run, and every edge cut."""
    if su.ablation == "resample":
        return su.m_clean, su.m_corrupt
    if getattr(su, "_m_empty", None) is None:
        su._m_empty = run_keep(su, torch.zeros(1, su.graph.n_edges))[0]
    return su.m_clean, su._m_empty


def curve(su: Setup, scores: torch.Tensor, percents=PERCENTS, seed: int = 0) -> pd.DataFrame:
    """The faithfulness curve: one row per percent of edges (percent, k asked, edges kept
    after pruning, f, f_lo, f_hi, m_circuit)."""
    E = su.graph.n_edges
    ks = [max(1, int(round(p / 100 * E))) for p in percents]
    keeps = torch.stack([circuit_keep(su.graph, scores, k) for k in ks])
    df = evaluate(su, keeps, seed=seed)
    df.insert(0, "k", ks)
    df.insert(0, "percent", list(percents))
    return df


def areas(df: pd.DataFrame) -> tuple[float, float]:
    """(CPR, CMD) of a curve over the fraction of edges, through (0, 0) and (1, 1)."""
    x = np.concatenate([[0.0], df["percent"].to_numpy() / 100, [1.0]])
    f = np.concatenate([[0.0], df["f"].to_numpy(), [1.0]])
    x, keep = np.unique(x, return_index=True)        # 100% is both a point and the end
    f = f[keep]
    return float(np.trapezoid(f, x)), float(np.trapezoid(np.abs(1 - f), x))


def smallest(su: Setup, scores: torch.Tensor, target: float, seed: int = 0,
             measured: pd.DataFrame | None = None):
    """The smallest top-k circuit with f >= target: (k, keep, row) by bisection between the
    curve's points (f need not be monotone in k: the first k found is reported, with its
    measured f); None when even every edge falls short. `measured`: the `curve` of these
    scores (same seed), whose points are not run again."""
    if not 0 < target <= 1:
        raise InterpError(f"--target-faithfulness must be in (0, 1], got {target}")
    E = su.graph.n_edges
    cache = {} if measured is None else {int(r["k"]): (None, r) for _, r in measured.iterrows()}

    def f_of(k):
        if k not in cache:
            keep = circuit_keep(su.graph, scores, k)
            cache[k] = (keep, evaluate(su, keep[None], seed=seed).iloc[0])
        return cache[k][1]["f"]
    grid = sorted({max(1, int(round(p / 100 * E))) for p in PERCENTS})
    hit = next((k for k in grid if f_of(k) >= target), None)
    if hit is None:
        return None
    lo = max([k for k in grid if k < hit], default=0)
    hi = hit
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if f_of(mid) >= target:
            hi = mid
        else:
            lo = mid
    keep, row = cache[hi]
    return hi, circuit_keep(su.graph, scores, hi) if keep is None else keep, row


def knockout(su: Setup, keep: torch.Tensor, target: torch.Tensor, pool: torch.Tensor,
             n_controls: int = 19, n_boot: int = 1000, seed: int = 0) -> dict:
    """Cut a set of a circuit's edges and compare the loss of faithfulness with control sets
    of as many edges drawn from `pool` (an intervention with a matched control).

    keep, target, pool : [E] bool (target and pool are edges of the circuit `keep`)

    Returns {f_circuit, f_without, drop (target's), control_drops (mean), effect (drop minus
    the mean control drop), ci (95% over pairs, resampled with the controls), p (rank
    p-value of the drop among the control drops), n_target, n_controls, controls (the edge
    indices of each control set), verdict}. With a
    pool smaller than the target there is no control: `verdict` is "untestable"."""
    from circuits.stats import rank_p_value, verdict

    k = int(target.sum())
    pool_idx = (pool & keep & ~target).nonzero()[:, 0].numpy()
    n_controls = n_controls if len(pool_idx) >= k > 0 else 0
    rng = np.random.default_rng(seed)
    rows = [keep, keep & ~target]
    controls = []
    for _ in range(n_controls):
        cut = torch.zeros_like(keep)
        pick = rng.choice(pool_idx, k, replace=False)
        cut[torch.from_numpy(pick)] = True
        controls.append(sorted(int(i) for i in pick))
        rows.append(keep & ~cut)
    ms = torch.cat([run_keep(su, torch.stack(rows[i:i + 8]).float())
                    for i in range(0, len(rows), 8)])                 # [2 + n, b]
    m_full, m_empty = _ends(su)

    def drops(idx):
        f = _ratio(ms[:, idx], m_full[idx], m_empty[idx])             # [2 + n]
        return f[0] - f[1], f[0] - f[2:]
    b = ms.shape[1]
    d, dc = drops(torch.arange(b))
    out = {"f_circuit": float(_ratio(ms[:1], m_full, m_empty)[0]),
           "f_without": float(_ratio(ms[1:2], m_full, m_empty)[0]), "drop": float(d),
           "n_target": k, "n_controls": n_controls, "controls": controls}
    if not n_controls:
        return {**out, "control_drops": float("nan"), "effect": float("nan"),
                "ci": (float("nan"), float("nan")), "p": float("nan"),
                "verdict": "untestable"}
    idx = torch.from_numpy(rng.integers(0, b, size=(n_boot, b)))
    boot = [float(x - y.mean()) for x, y in (drops(i) for i in idx)]
    lo, hi = np.percentile(boot, [2.5, 97.5])
    p = rank_p_value(float(d), dc.numpy())
    return {**out, "control_drops": float(dc.mean()), "effect": float(d - dc.mean()),
            "ci": (float(lo), float(hi)), "p": p, "verdict": verdict(float(lo), p, n_controls)}
