"""Re-measure the erasure check (issue #22) on unique examples: per model, target and layer,
the power of the old check (a fresh probe after removing the probe's direction, rank 1 or
K - 1, as `--causal` did before) beside the new one (LEACE at the same positions, then the
model run with it), the effect against random erasures and the verdict.

    python scripts/erasure_measure.py quadratic-small --n 600 --targets D_value,class

Examples: `task.generate(n, seed, heldout=..., unique=True)` (the small preset holds about
200 one-root inputs, 21 of them held out: unique held-out examples at its mix stop at ~70,
so for it `--all-inputs` with n <= 660; the seed model's preset has thousands).
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint")
    p.add_argument("--targets", default="D_value,class")
    p.add_argument("--positions", default="x,^,=")
    p.add_argument("--n", type=int, default=600)
    p.add_argument("--all-inputs", action="store_true")
    p.add_argument("--data-seed", type=int, default=12345)
    p.add_argument("--controls", type=int, default=19)
    p.add_argument("--causal-n", type=int, default=400)
    p.add_argument("--layers", default=None)
    p.add_argument("--method", default="leace")
    a = p.parse_args(argv)

    import interp
    import probes
    from interp.tasks import distinct_count
    from interp.viz.reports.probe import format_causal
    from probes.causal import erasure_check
    from probes.erasure import fresh_probe, orthogonal

    bridge, task = interp.load_model(a.checkpoint)
    ex = task.generate(a.n, seed=a.data_seed, heldout=None if a.all_inputs else True,
                       unique=True)
    t0 = time.perf_counter()
    acts = probes.collect(bridge, task, ex, sites=("resid_pre",), positions=a.positions)
    print(f"{a.checkpoint}: {len(ex)} examples, {distinct_count(ex)} distinct, "
          f"{'all inputs' if a.all_inputs else 'held-out'}, keys {acts.keys}", flush=True)
    for t in a.targets.split(","):
        res = probes.fit(acts, t, control=False)
        y, kind, _, classes = probes.resolve_labels(acts, t)
        K = len(classes) or None
        parts = np.asarray(res.parts)
        shared: dict = {}
        for st in acts.stacks:
            layers = acts.layers[st] if a.layers is None else [
                int(x) for x in a.layers.split(",")]
            for layer in layers:
                keys = [k for k, s in zip(acts.keys, acts.key_stack) if s == st]
                X = acts.get("resid_pre", layer, st)
                old = []
                for k in keys:       # the old check's power: its probe direction removed
                    c = acts.position_index(k)
                    has = acts.present[:, c].numpy() & ~np.isnan(y)
                    V = res.direction("resid_pre", layer, k, st)
                    er = orthogonal(V, X[has & (parts == 0), c].double().mean(0), "old")
                    clean = fresh_probe(X[has, c], y[has], kind, parts[has], K)
                    after = fresh_probe(er.apply(X[has, c]), y[has], kind, parts[has], K)
                    old.append(f"{k} {clean['score']:.3f}->{after['score']:.3f} "
                               f"(baseline {after['baseline']:.3f})")
                print(f"\n{t} L{layer} old removal (rank {len(V)}), fresh probe clean->after: "
                      + "; ".join(old), flush=True)
                t1 = time.perf_counter()
                r = erasure_check(bridge, task, acts, t, "resid_pre", layer, keys, stack=st,
                                  method=a.method, n_controls=a.controls,
                                  n_test=a.causal_n, parts=res.parts, shared=shared)
                print(format_causal(r.power, [r]), flush=True)
                print(f"  ({time.perf_counter() - t1:.1f} s)", flush=True)
    print(f"\ntotal {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
