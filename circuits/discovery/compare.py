"""How well approximate edge scores (EAP, EAP-IG) agree with exact edge patching, per
component type (REFERENCE §11: report accuracy per component type, and top-k recall, since a
good overall correlation can hide large false negatives).

    agreement(exact_scores, approx_scores, graph) -> DataFrame
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from circuits.stats import spearman


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) < 2 or a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def recall(exact: np.ndarray, approx: np.ndarray, k: int) -> float:
    """Share of the exact top-k (by |score|) found in the approximate top-k."""
    k = min(k, len(exact))
    if k == 0:
        return float("nan")
    top_e = set(np.argsort(-np.abs(exact), kind="stable")[:k].tolist())
    top_a = set(np.argsort(-np.abs(approx), kind="stable")[:k].tolist())
    return len(top_e & top_a) / k


def component_types(graph) -> list[str]:
    """Each edge's component type: the receiver's (q, k, v, mlp, logits), and `input` for
    an edge from the embeddings."""
    return ["input" if s.endswith("input") else r for s, r in zip(graph.senders, graph.rtypes)]


def agreement(exact: torch.Tensor, approx: torch.Tensor, graph) -> pd.DataFrame:
    """One row per component type and `all`: edges, Spearman and Pearson of the scores,
    top-10 and top-20 recall of the exact top edges by |score|, the worst underestimate
    among the exact top-10 (the exact share of the total |exact| and the attributed share of
    the total |approx| of that edge), the worst rank the approximate scores give any edge
    of the exact top-10, and `spearman_large`: Spearman over the edges whose exact |score| is
    at least 1% of the largest (`large` of them; the full Spearman is dominated by the many
    edges that change the metric by almost nothing)."""
    ex, ap = exact.numpy(), approx.numpy()
    types = np.array(component_types(graph))
    rows = []
    for name in ["all", *sorted(set(types))]:
        m = np.ones(len(ex), bool) if name == "all" else types == name
        e, a = ex[m], ap[m]
        top = np.argsort(-np.abs(e), kind="stable")[:10]
        rank_a = np.empty(len(a), int)
        rank_a[np.argsort(-np.abs(a), kind="stable")] = np.arange(1, len(a) + 1)
        se, sa = np.abs(e).sum() or 1.0, np.abs(a).sum() or 1.0
        big = np.abs(e) >= 0.01 * np.abs(ex).max()
        worst = max(top, key=lambda i: np.abs(e[i]) / se - np.abs(a[i]) / sa) if len(top) \
            else None
        rows.append({"component": name, "edges": int(m.sum()),
                     "spearman": spearman(a, e) if len(e) > 2 else float("nan"),
                     "pearson": _pearson(a, e), "recall10": recall(e, a, 10),
                     "recall20": recall(e, a, 20),
                     "worst_exact_share": float(np.abs(e[worst]) / se) if worst is not None
                     else float("nan"),
                     "worst_attributed_share": float(np.abs(a[worst]) / sa)
                     if worst is not None else float("nan"),
                     "worst_rank_of_top10": int(rank_a[top].max()) if len(top) else 0,
                     "large": int(big.sum()),
                     "spearman_large": spearman(a[big], e[big]) if big.sum() > 2
                     else float("nan")})
    return pd.DataFrame(rows)


SIZE_BINS = (0.0, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, float("inf"))


def agreement_by_size(exact: torch.Tensor, approx: dict[str, torch.Tensor], gap: float,
                      bins=SIZE_BINS) -> pd.DataFrame:
    """How far each approximate score is from the exact one, by the size of the exact
    effect: one row per bin of |exact| / |gap| (edges whose exact effect is 0 left out),
    with the edge count and, per method, the median relative error |approx - exact| / |exact|
    and the share of edges whose sign agrees. A gradient at the clean run (EAP) is the
    first-order term of a single-edge patch, so it is close for small effects; integrated
    gradients average over inputs far from the clean run, which pays off for large effects."""
    ex = exact.detach().double().cpu().numpy()
    size = np.abs(ex) / (abs(gap) or 1.0)
    rows = []
    for lo, hi in zip(bins, bins[1:]):
        m = (ex != 0) & (size >= lo) & (size < hi)
        row = {"from": lo, "to": hi, "edges": int(m.sum())}
        for name, v in approx.items():
            a = v.detach().double().cpu().numpy()[m]
            e = ex[m]
            row[f"{name}_rel_err"] = float(np.median(np.abs(a - e) / np.abs(e))) if m.any() \
                else float("nan")
            row[f"{name}_sign"] = float(np.mean(np.sign(a) == np.sign(e))) if m.any() \
                else float("nan")
        rows.append(row)
    return pd.DataFrame(rows)
