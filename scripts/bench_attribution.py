"""Benchmark: attribution patching (AtP) and AtP* (the QK fix and GradDrop) against exact
patching, per component type, on the same model and pairs.

    python scripts/bench_attribution.py [CKPT] [--n 32] [--sites resid_pre,attn_out,...]
        [--methods atp,atp+qk,atp+qkv,atp+graddrop,atp*,atp*+qkv] [--missed 10]
        [--threads 1]
        [--device cpu] [--dtype float32]

For every site: the time of exact patching (`patch`, its fast path where it applies) and of
each attribution method, and the method's agreement with exact (`circuits.patching.compare.
agreement`): Spearman and Pearson over every cell, top-10 and top-20 recall (by |share| of
the gap), the lowest attributed rank of an exact top-10 cell and the largest underestimate
(exact share next to attributed share). With --missed K, per site and method the exact
top-K cells that the method ranks lowest (`compare.missed`), to see where it fails.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

METHODS = {"atp": {}, "atp+qk": {"method": "atp+qk"}, "atp+qkv": {"method": "atp+qkv"},
           "atp+graddrop": {"method": "atp+graddrop"}, "atp*": {"method": "atp*"},
           "atp*+qkv": {"method": "atp*", "qk_fix": "qkv"}}


def main(argv=None) -> int:
    from interp.cli.common import add_options

    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", nargs="?", default="quadratic-small")
    p.add_argument("--n", type=int, default=32, help="pairs (default 32)")
    p.add_argument("--corrupt", default="c")
    p.add_argument("--answer", default="D_value")
    p.add_argument("--sites", default="resid_pre,attn_out,mlp_out,head,head_pos")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--missed", type=int, default=0, help="show the exact top-K cells each "
                   "method ranks lowest (default 0: none)")
    p.add_argument("--threads", type=int, default=1)
    add_options(p, quiet=False, device_map=False)          # --device, --dtype
    a = p.parse_args(argv)
    methods = [m.strip() for m in a.methods.split(",") if m.strip()]
    for m in methods:
        if m not in METHODS:
            p.error(f"--methods {m!r}: choose among {', '.join(METHODS)}")

    import pandas as pd
    import torch

    from circuits.patching import attribute, corrupt_pairs, patch
    from circuits.patching.compare import agreement, missed
    from interp.models import load_checkpoint

    torch.set_num_threads(a.threads)
    ckpt = load_checkpoint(a.checkpoint, a.device, a.dtype)
    bridge = ckpt.bridge()
    pairs = corrupt_pairs(bridge, ckpt.task, n=a.n, field=a.corrupt, answer=a.answer)
    print(f"{a.checkpoint}: {pairs.n} pairs of {pairs.clean['seq'].shape[1]} tokens, "
          f"{a.threads} thread(s), {a.device} {a.dtype}")
    rows, misses = [], []
    for s in [x.strip() for x in a.sites.split(",") if x.strip()]:
        t0 = time.perf_counter()
        exact = patch(bridge, pairs, s)
        t_exact = time.perf_counter() - t0
        rows.append({"site": s, "method": "exact", "cells": exact.values.numel(),
                     "seconds": t_exact, "x exact": 1.0})
        for m in methods:
            t0 = time.perf_counter()
            att = attribute(bridge, pairs, s, **METHODS[m])
            t = time.perf_counter() - t0
            row = agreement(exact, att).iloc[0].to_dict()
            row.update(method=m, seconds=t, **{"x exact": t / t_exact})
            rows.append(row)
            if a.missed:
                df = missed(exact, att, a.missed)
                df.insert(0, "method", m)
                df.insert(0, "site", s)
                misses.append(df)
    df = pd.DataFrame(rows)
    cols = ["site", "method", "cells", "seconds", "x exact", "spearman", "pearson",
            "top10_recall", "top20_recall", "worst_top10_rank", "under_cell", "under_exact",
            "under_attributed"]
    with pd.option_context("display.width", 250, "display.max_columns", 30,
                           "display.float_format", "{:.3f}".format):
        print(df[[c for c in cols if c in df]].to_string(index=False))
        for d in misses:
            print()
            print(d.to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
