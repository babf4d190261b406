"""Benchmark: full head classification vs a bare forward and vs TransformerLens detect_head.

    python scripts/bench_classify.py [CKPT] [--n 512] [--batch-size 64] [--threads T]
                                     [--no-memory] [--device cpu] [--dtype float32]

Prints, from one run on the same prompts:
  (a) classification time / bare batched forward time over the same batches   (target <= 2x)
  (b) TransformerLens detect_head time for its three head types on the same prompts / our
      time for the whole classification, which includes those three scores on the same
      prompts (and an induction score on repeated random tokens)   (target >= 10x)
  and checks that the scores agree with detect_head.
Then (unless --no-memory) the peak resident memory of the classification of N and 4N prompts,
each in a fresh process (glibc's mmap threshold fixed at 64 KiB, so freed batches go back to
the system), streamed (the default) and with every pattern held in memory.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _status_mib(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise SystemExit(f"no {field} in /proc/self/status (the memory lines need Linux)")


def memory_child(checkpoint: str, n: int, batch_size: int, mode: str) -> None:
    """Classify n prompts in this process; print (one JSON line) its resident memory once the
    model and prompts are loaded, and the peak during the classification (MiB)."""
    import torch

    from interp.attention.taxonomy import head_taxonomy, head_table
    from interp.cache import cache_attention
    from interp.models import load_checkpoint

    ckpt = load_checkpoint(checkpoint)
    bridge = ckpt.bridge()
    examples = ckpt.task.generate(n, seed=0)
    Path("/proc/self/clear_refs").write_text("5")   # restart the peak (VmHWM) from here
    base = _status_mib("VmRSS")
    with torch.no_grad():
        if mode == "stream":
            head_taxonomy(bridge, ckpt.task, examples, batch_size=batch_size, resamples=0)
        else:
            head_table(cache_attention(bridge, ckpt.task, examples, batch_size=batch_size),
                       resamples=0)
    print(json.dumps({"before": base, "peak": _status_mib("VmHWM")}))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", nargs="?", default="quadratic-small")
    p.add_argument("--n", type=int, default=512)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--no-memory", action="store_true")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N or auto")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
    p.add_argument("--memory-child", choices=["stream", "memory"], help=argparse.SUPPRESS)
    a = p.parse_args()

    import torch

    if a.threads:
        torch.set_num_threads(a.threads)
    if a.memory_child:
        memory_child(a.checkpoint, a.n, a.batch_size, a.memory_child)
        return 0

    from transformer_lens.head_detector import detect_head

    from interp.attention.taxonomy import head_taxonomy
    from interp.hooks import run
    from interp.models import load_checkpoint
    from interp.tokens import build_sides, length_batches, repeated_random_tokens

    ckpt = load_checkpoint(a.checkpoint, a.device, a.dtype)
    sync = torch.cuda.synchronize if ckpt.device.type == "cuda" else (lambda: None)
    if ckpt.arch != "decoder":
        raise SystemExit("detect_head needs a decoder-only model; give a decoder checkpoint")
    bridge = ckpt.bridge()
    examples = ckpt.task.generate(a.n, seed=0)
    head_taxonomy(bridge, ckpt.task, examples[:4])  # warm-up (first calls are slower)

    # (a) bare forward over exactly the batches the classification runs (sorted by length)
    seq = build_sides("decoder", ckpt.task, examples)["seq"]
    t0 = time.perf_counter()
    for index in length_batches(seq.lengths, a.batch_size):
        w = int(seq.lengths[index].max())
        run(bridge, seq.ids[index, :w], attention_mask=seq.valid[index, :w].long())
    sync()
    t_bare = time.perf_counter() - t0

    # ours: every score, the uniform baselines, maps' sums and the taxonomy, streamed (the
    # stability column's bootstrap left out: detect_head has nothing like it)
    t0 = time.perf_counter()
    result = head_taxonomy(bridge, ckpt.task, examples, batch_size=a.batch_size, resamples=0)
    table, stats = result.table, result.stats
    t_ours = time.perf_counter() - t0

    # (b) TransformerLens detect_head, one prompt at a time, on the same token sequences
    texts = ["".join(toks[1:]) for toks in seq.tokens]  # to_tokens adds <bos> itself
    names = {"previous_token_head": "previous_token", "duplicate_token_head": "duplicate_token",
             "induction_head": "induction_on_data"}
    t0 = time.perf_counter()
    theirs = {name: detect_head(bridge, texts, name) for name in names}
    t_tl = time.perf_counter() - t0
    f = stats["self"].features()
    worst = max(float((f[ours] - theirs[name].float()).abs().max())
                for name, ours in names.items())

    # not timed: our induction score on repeated random tokens against detect_head on the
    # same sequences given as text
    rep = [bridge.tokenizer.decode(row[1:].tolist())   # induction_scores' default sequences
           for row in repeated_random_tokens(bridge)]
    worst_rep = float((f["induction_detector"] - detect_head(bridge, rep, "induction_head").float()
                       ).abs().max())
    print(f"model {a.checkpoint}, {a.n} prompts, batch {a.batch_size}, "
          f"{torch.get_num_threads()} threads, {len(table)} heads, {ckpt.device} {a.dtype}")
    print(f"bare batched forward             {t_bare:8.2f} s")
    print(f"interp classification (all)      {t_ours:8.2f} s")
    print(f"TransformerLens detect_head (3)  {t_tl:8.2f} s")
    print(f"(a) classification / bare forward = {t_ours / t_bare:.2f}x   (target <= 2x)")
    print(f"(b) detect_head / classification  = {t_tl / t_ours:.1f}x faster   (target >= 10x)")
    print(f"largest difference from detect_head: {worst:.2e} (same prompts), {worst_rep:.2e} "
          "(induction on repeated random tokens)")

    if not a.no_memory:
        for mode in ("stream", "memory"):
            peaks = []
            for n in (a.n, 4 * a.n):
                cmd = [sys.executable, __file__, a.checkpoint, "--n", str(n), "--batch-size",
                       str(a.batch_size), "--memory-child", mode]
                if a.threads:
                    cmd += ["--threads", str(a.threads)]
                # a fixed mmap threshold: glibc's adaptive one keeps freed batch buffers in the
                # heap, and the peak then tracks fragmentation rather than what is held
                env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
                out = subprocess.run(cmd, check=True, capture_output=True, text=True,
                                     env=env).stdout
                peaks.append(json.loads(out.strip().splitlines()[-1]))
            label = "streamed (default)" if mode == "stream" else "all patterns held  "
            print(f"peak memory, {label}: {a.n} prompts {peaks[0]['peak']:.0f} MiB "
                  f"(+{peaks[0]['peak'] - peaks[0]['before']:.0f} over the loaded model), "
                  f"{4 * a.n} prompts {peaks[1]['peak']:.0f} MiB "
                  f"(+{peaks[1]['peak'] - peaks[1]['before']:.0f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
