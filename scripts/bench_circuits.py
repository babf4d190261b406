"""Benchmark: EAP-IG against exact edge patching over every edge of a model's graph.

    python scripts/bench_circuits.py [--model quadratic-small] [--positions field] [--n 32]
        [--steps 5] [--json FILE]

Prints, for the same pairs and the same edges:
- the wall time of `eap-ig` (and of `eap`) and of `exact` (one intervention per edge, the
  baseline, measured in the same run), and the ratio;
- the passes each ran (a forward pass per batch of pairs; `exact` batches K edges as K copies
  of the pairs, so its passes are counted per edge), and the peak resident memory after each;
- how well each approximate method agrees with exact: Spearman, Pearson, top-10 and top-20
  recall per component type (`circuits.discovery.agreement`);
- with --autocircuit FILE (scores written by scripts/autocircuit_eap.py, positions none): the
  same agreement for auto-circuit's EAP, and its time as that script measured it.

Targets (issue #24): eap-ig at most steps + 1 forward and backward passes per batch, >= 50x
faster than exact, Spearman >= 0.8 and top-20 recall >= 0.8 against exact.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Counter:
    """Counts the graph's forward passes and the backward passes taken through them."""

    def __init__(self, gm):
        self.forward = self.backward = 0
        inner = gm.forward

        def counted(*args, **kw):
            self.forward += 1
            out = inner(*args, **kw)
            logits = out[0] if isinstance(out, tuple) else out
            if logits.requires_grad:
                logits.register_hook(self._back)
            return out
        gm.forward = counted

    def _back(self, grad):
        self.backward += 1
        return grad


def main(argv=None) -> int:
    import torch

    import interp
    from circuits.discovery import EdgeGraph, GraphModel, agreement, agreement_by_size
    from circuits.discovery import scores as S
    from circuits.patching import corrupt_pairs

    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="quadratic-small")
    p.add_argument("--positions", default="field", choices=("none", "field"))
    p.add_argument("--n", type=int, default=32)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--sweep-steps", default="1,2,10,20",
                   help="eap-ig also at these step counts (comma-separated; '' for none): "
                   "the Spearman against exact for each, over every edge and the large ones")
    p.add_argument("--autocircuit", help="auto-circuit's EAP scores (CSV: edge, score, "
                   "seconds) on the same pairs at positions none")
    p.add_argument("--json")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    bridge, task = interp.load_model(a.model)
    pairs = corrupt_pairs(bridge, task, n=a.n, seed=0)
    gm = GraphModel(bridge, {s: v.shape[1] for s, v in pairs.clean.items()})
    graph = EdgeGraph(gm, pairs.roles, a.positions, pairs.answer_pos)
    count = Counter(gm)
    t0 = time.perf_counter()
    su = S.prepare(gm, graph, pairs)
    t_prep = time.perf_counter() - t0
    prep_passes = count.forward
    print(f"{a.model}: {graph.n_edges} edges (positions {a.positions}), {pairs.n} pairs, "
          f"gap m(clean) - m(corrupt) = {float(su.m_clean.mean() - su.m_corrupt.mean()):.2f}"
          f"; the clean and corrupted runs: {t_prep:.2f} s, {prep_passes} forward passes")
    res = {"model": a.model, "positions": a.positions, "pairs": pairs.n,
           "edges": graph.n_edges, "steps": a.steps, "threads": a.threads}
    scores = {}
    for method in ("eap-ig", "eap", "exact"):
        f0, b0 = count.forward, count.backward
        t0 = time.perf_counter()
        scores[method] = S.score(su, method, a.steps)
        dt = time.perf_counter() - t0
        fw, bw = count.forward - f0, count.backward - b0
        res[method] = {"seconds": dt, "forward": fw, "backward": bw, "peak_mb": _peak_mb()}
        extra = ""
        if method == "exact":
            skipped = int(S._noop_edges(su).sum())
            res[method]["run_edges"] = graph.n_edges - skipped
            extra = (f", {graph.n_edges - skipped} edges run ({skipped} whose sender's "
                     "reference equals its clean output skipped)")
        print(f"  {method:<7} {dt:8.2f} s  {fw} forward / {bw} backward passes over the "
              f"batch (plus the 2 shared forward passes)  peak RSS {_peak_mb():.0f} MB{extra}")
    for method in ("eap-ig", "eap"):
        ratio = res["exact"]["seconds"] / res[method]["seconds"]
        res[method]["speedup"] = ratio
        print(f"  {method} is {ratio:.0f}x faster than exact")
    for method in ("eap-ig", "eap"):
        df = agreement(scores["exact"], scores[method], graph)
        res[method]["agreement"] = df.to_dict(orient="records")
        print(f"\n  {method} against exact, per component type:")
        print(df.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    gap = float(su.m_clean.mean() - su.m_corrupt.mean())
    by_size = agreement_by_size(scores["exact"], {m: scores[m] for m in ("eap", "eap-ig")}, gap)
    res["by_size"] = by_size.to_dict(orient="records")
    print("\n  distance from exact by the size of the exact effect (|exact| / gap; median "
          "relative error, share of signs that agree):")
    print(by_size.to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    sweep = [int(s) for s in a.sweep_steps.split(",") if s.strip()]
    if sweep:
        res["steps_sweep"] = []
        print("\n  eap-ig's steps against exact (steps = 1 is the gradient at the clean run, "
              "i.e. eap):")
        for st in sorted(set(sweep) | {a.steps}):
            vec = scores["eap-ig"] if st == a.steps else S.score(su, "eap-ig", st)
            row = agreement(scores["exact"], vec, graph).iloc[0]
            res["steps_sweep"].append({"steps": st, "spearman": float(row.spearman),
                                       "spearman_large": float(row.spearman_large),
                                       "recall20": float(row.recall20)})
            print(f"    steps {st:>3}: spearman {row.spearman:.3f}, over the {row.large} large "
                  f"edges {row.spearman_large:.3f}, top-20 recall {row.recall20:.2f}")
    if a.autocircuit:
        import pandas as pd

        ac = pd.read_csv(a.autocircuit)
        if a.positions != "none":
            print("\n  auto-circuit: its scores are at positions none; rerun with "
                  "--positions none to compare")
        else:
            by = dict(zip(ac["edge"], ac["score"]))
            missing = [n for n in graph.names if n not in by]
            vec = torch.tensor([float(by.get(n, 0.0)) for n in graph.names])
            for method in ("exact", "eap"):
                df = agreement(scores[method], vec, graph)
                print(f"\n  auto-circuit's EAP against our {method} ({len(missing)} of our "
                      f"edges missing from its graph, counted as 0):")
                print(df.head(1).to_string(index=False, float_format=lambda v: f"{v:.3f}"))
                res[f"autocircuit_vs_{method}"] = df.to_dict(orient="records")
            if "seconds" in ac:
                res["autocircuit_seconds"] = float(ac["seconds"].iloc[0])
                print(f"  auto-circuit EAP time (its own script): {ac['seconds'].iloc[0]:.2f} s"
                      f" against our eap {res['eap']['seconds']:.2f} s")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=2, default=float)
    return 0


if __name__ == "__main__":
    sys.exit(main())
