"""Benchmark: full head classification vs a bare forward and vs TransformerLens detect_head.

    python scripts/bench_classify.py [CKPT] [--n 512] [--batch-size 64]

Prints, from one run on the same prompts:
  (a) classification time / bare batched forward time   (target <= 2x)
  (b) TransformerLens detect_head time (previous-token, duplicate-token, induction, one
      prompt at a time) / our time for the same three scores plus the whole taxonomy
      (target >= 10x faster)
and checks that the three scores agree with detect_head.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> int:
    import torch
    from transformer_lens.head_detector import detect_head

    from interp.attention import scores as S
    from interp.attention.taxonomy import head_table
    from interp.cache import cache_attention
    from interp.models import load_checkpoint, to_bridge

    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", nargs="?", default="quadratic-small")
    p.add_argument("--n", type=int, default=512)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--threads", type=int, default=None)
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    ckpt = load_checkpoint(a.checkpoint)
    if ckpt.arch != "decoder":
        raise SystemExit("detect_head needs a decoder-only model; give a decoder checkpoint")
    bridge = to_bridge(ckpt)
    examples = ckpt.task.generate(a.n, seed=0)

    # (a) bare batched forward over the same padded batches
    from interp.cache import build_sides

    cache_attention(bridge, ckpt.task, examples[:2])  # warm-up (first calls are slower)

    seq = build_sides("decoder", ckpt.task, examples)["seq"]
    t0 = time.perf_counter()
    with torch.no_grad():
        for s in range(0, a.n, a.batch_size):
            w = int(seq.lengths[s:s + a.batch_size].max())
            bridge(seq.ids[s:s + a.batch_size, :w],
                   attention_mask=seq.valid[s:s + a.batch_size, :w].long())
    t_bare = time.perf_counter() - t0

    # ours: cache + every score + taxonomy
    t0 = time.perf_counter()
    ac = cache_attention(bridge, ckpt.task, examples, batch_size=a.batch_size)
    table = head_table(ac)
    P, M, ids = ac.patterns["self"], ac.mask("self"), ac.query("self").ids
    ours = {"previous_token_head": S.detection_score(P, M, S.previous_token_pattern(ids) * M),
            "duplicate_token_head": S.detection_score(P, M, S.duplicate_token_pattern(ids) * M),
            "induction_head": S.detection_score(P, M, S.induction_pattern(ids) * M)}
    t_ours = time.perf_counter() - t0

    # (b) TransformerLens detect_head on the same token sequences, one prompt at a time
    texts = ["".join(toks[1:]) for toks in seq.tokens]  # to_tokens adds <bos> itself
    t0 = time.perf_counter()
    theirs = {name: detect_head(bridge, texts, name) for name in ours}
    t_tl = time.perf_counter() - t0
    worst = max(float((ours[k] - theirs[k].float()).abs().max()) for k in ours)
    print(f"model {a.checkpoint}, {a.n} prompts, batch {a.batch_size}, "
          f"{torch.get_num_threads()} threads, {len(table)} heads")
    print(f"bare batched forward             {t_bare:8.2f} s")
    print(f"interp classification (all)      {t_ours:8.2f} s")
    print(f"TransformerLens detect_head (3)  {t_tl:8.2f} s")
    print(f"(a) classification / bare forward = {t_ours / t_bare:.2f}x   (target <= 2x)")
    print(f"(b) detect_head / classification  = {t_tl / t_ours:.1f}x faster   (target >= 10x)")
    print(f"largest difference from detect_head: {worst:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
