"""Benchmark: the exact head x position patching sweep of `circuits.patching` against
TransformerLens 4.3's `get_act_patch_attn_head_out_by_pos`, on the same model, pairs and
metric, in one run; and how well attribution patching ranks the same cells.

    python scripts/bench_patching.py [CKPT] [--n 32] [--threads 1] [--device cpu]
        [--dtype float32]

Prints both times, their ratio, the largest difference between the two results, and the
Spearman correlation of attribution patching with the exact result: over every cell, and
over the cells whose activation the patch changes (the others are exactly 0 in both).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main(argv=None) -> int:
    from interp.cli.common import add_options

    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", nargs="?", default="quadratic-small")
    p.add_argument("--n", type=int, default=32, help="pairs (default 32)")
    p.add_argument("--corrupt", default="c")
    p.add_argument("--answer", default="D_value")
    p.add_argument("--threads", type=int, default=1)
    add_options(p, quiet=False)                            # --device, --dtype
    a = p.parse_args(argv)

    import torch
    import transformer_lens.patching as tlp

    from circuits.patching import attribute, corrupt_pairs, metric_values, patch
    from circuits.stats import spearman
    from interp.models import load_checkpoint

    torch.set_num_threads(a.threads)
    ckpt = load_checkpoint(a.checkpoint, a.device, a.dtype)
    bridge = ckpt.bridge()
    pairs = corrupt_pairs(bridge, ckpt.task, n=a.n, field=a.corrupt, answer=a.answer)
    L, H = int(bridge.cfg.n_layers), int(bridge.cfg.n_heads)
    T = pairs.clean["seq"].shape[1]
    print(f"{a.checkpoint}: {pairs.n} pairs of {T} tokens, {L} layers x {H} heads x {T} "
          f"positions = {L * H * T} cells, {a.threads} thread(s)" +
          ("" if (a.device, a.dtype) == ("cpu", "float32") else f", {a.device} {a.dtype}"))

    t0 = time.perf_counter()
    ours = patch(bridge, pairs, "head_pos")
    t_ours = time.perf_counter() - t0

    t0 = time.perf_counter()
    batched = patch(bridge, pairs, "head_pos", fast=False)
    t_batched = time.perf_counter() - t0

    t0 = time.perf_counter()
    _, clean_cache = bridge.run_with_cache(pairs.clean["seq"].to(ckpt.device))
    with contextlib.redirect_stderr(io.StringIO()):  # its progress bar
        ref = tlp.get_act_patch_attn_head_out_by_pos(
            bridge, pairs.corrupt["seq"].to(ckpt.device), clean_cache,
            lambda logits: metric_values(logits, pairs).mean())
    t_tl = time.perf_counter() - t0
    ref = ref.permute(0, 2, 1).to("cpu", torch.float32)

    t0 = time.perf_counter()
    att = attribute(bridge, pairs, "head_pos")
    t_att = time.perf_counter() - t0

    diff = max(float((ours.values - ref).abs().max()), float((batched.values - ref).abs().max()))
    print(f"interp exact sweep          {t_ours:8.2f} s")
    print(f"  (batched start_at_layer path alone: {t_batched:.2f} s, "
          f"{t_tl / t_batched:.1f}x; no-op patches skipped by both)")
    print(f"TransformerLens sweep       {t_tl:8.2f} s")
    print(f"ratio                       {t_tl / t_ours:8.1f}x faster (target >= 5x)")
    print(f"largest |interp - TL|       {diff:8.1e}  (metric range {float(ref.min()):.2f} .. "
          f"{float(ref.max()):.2f})")
    e = ours.values.flatten()
    moved = (ours.values != ours.corrupt).flatten()
    rho_all = spearman(att.values.flatten(), e)
    rho_moved = spearman(att.values.flatten()[moved], e[moved])
    print(f"attribution patching        {t_att:8.2f} s (2 forwards + 1 backward)")
    print(f"Spearman(attribution, exact) {rho_all:.3f} over all {e.numel()} cells "
          f"(target >= 0.8); {rho_moved:.3f} over the {int(moved.sum())} cells a patch changes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
