"""Benchmark: the exact head x position patching sweep of `circuits.patching` against
TransformerLens 4.3's `get_act_patch_attn_head_out_by_pos`, on the same model, pairs and
metric, in one run; and how well attribution patching ranks the same cells.

    python scripts/bench_patching.py [CKPT] [--n 32] [--threads 1] [--device cpu]
        [--dtype float32] [--sites enc.head_pos,cross.head_pos,dec.head_pos]

Prints both times, their ratio, the largest difference between the two results, and the
Spearman correlation of attribution patching with the exact result: over every cell, and
over the cells whose activation the patch changes (the others are exactly 0 in both).

    python scripts/bench_patching.py induction-attn2l [--n 32]    # a native decoder

A native checkpoint runs `bench_native` instead: head x position and resid_pre on induction
pairs, the fast path against TransformerLens's sweeps and a one-forward-per-patch loop.
A T5 checkpoint (e.g. quadratic-t5-small) runs `bench_t5` instead: TransformerLens's
patching functions do not take a T5's decoder input, so each site's sweep is timed against
one forward per patch written here (a hook that writes the source activation into one cell,
every cell run, as TransformerLens does), and against the batched path (`fast=False`).
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
    p.add_argument("--sites", default="enc.head_pos,cross.head_pos,dec.head_pos",
                   help="T5 only: the sites timed (default enc.head_pos,cross.head_pos,"
                        "dec.head_pos)")
    add_options(p, quiet=False, device_map=False)          # --device, --dtype
    a = p.parse_args(argv)

    import torch
    import transformer_lens.patching as tlp

    from circuits.patching import attribute, corrupt_pairs, metric_values, patch
    from circuits.stats import spearman
    from interp.models import load_checkpoint

    torch.set_num_threads(a.threads)
    ckpt = load_checkpoint(a.checkpoint, a.device, a.dtype)
    if ckpt.arch == "native":
        return bench_native(a, ckpt)
    if ckpt.arch == "t5":
        return bench_t5(a, ckpt)
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


def bench_native(a, ckpt=None) -> int:
    """A causal native decoder (e.g. induction-attn2l) on induction pairs: the exact sweep
    of `patch` (fast path) on head x position and resid_pre against TransformerLens's
    `get_act_patch_attn_head_out_by_pos` / `get_act_patch_resid_pre` (one forward per
    patch, every cell) and against one forward per patch that changes something (a plain
    hooked forward each, written here), in the same run: times, ratios, largest
    difference. Times are this process's CPU seconds (`time.process_time`: with one
    thread, the wall time of an idle machine; fair on a shared one)."""
    import torch
    import transformer_lens.patching as tlp

    from circuits.discovery.induction import induction_pairs
    from circuits.patching import metric_values, patch
    from interp.hooks import layer_hooks
    from interp.models import load_checkpoint

    torch.set_grad_enabled(False)
    ckpt = ckpt or load_checkpoint(a.checkpoint, a.device, a.dtype)
    bridge = ckpt.bridge()
    pairs = induction_pairs(bridge, n=a.n, seed=0)
    clean, bad = (x["seq"].to(ckpt.device) for x in (pairs.clean, pairs.corrupt))
    L, H, T = int(bridge.cfg.n_layers), int(bridge.cfg.n_heads), clean.shape[1]
    print(f"{a.checkpoint}: {pairs.n} induction pairs of {T} tokens, {L} layers x {H} heads, "
          f"{a.threads} thread(s), CPU seconds" + ("" if (a.device, a.dtype) == ("cpu", "float32")
                                       else f", {a.device} {a.dtype}"))
    _, cc = bridge.run_with_cache(clean)                       # warm-up, and the sources
    _, rc = bridge.run_with_cache(bad)

    def mean_metric(logits):
        return metric_values(logits, pairs).mean()

    def loop(hook, heads):
        """One plain hooked forward per cell whose activation the patch changes."""
        out = torch.full((L, H, T) if heads else (L, T), float(mean_metric(bridge(bad))))
        for l, name in enumerate(layer_hooks(bridge, "self", hook)):
            for h in range(H) if heads else [None]:
                for p in range(T):
                    idx = (slice(None), p) + ((h,) if heads else ())
                    if torch.equal(cc[name][idx], rc[name][idx]):
                        continue
                    def put(t, hook, idx=idx, name=name):
                        t = t.clone()
                        t[idx] = cc[name][idx]
                        return t
                    out[(l, h, p) if heads else (l, p)] = float(
                        mean_metric(bridge.run_with_hooks(bad, fwd_hooks=[(name, put)])))
        return out

    worst = 0.0
    for what, tl_fn, hook, heads in (
            ("head_pos", tlp.get_act_patch_attn_head_out_by_pos, "hook_z", True),
            ("resid_pre", tlp.get_act_patch_resid_pre, "hook_resid_pre", False)):
        t0 = time.process_time()
        ours = patch(bridge, pairs, what).values
        t_ours = time.process_time() - t0
        t0 = time.process_time()
        with contextlib.redirect_stderr(io.StringIO()):        # its progress bar
            ref = tl_fn(bridge, bad, cc, mean_metric)
        t_tl = time.process_time() - t0
        ref = (ref.permute(0, 2, 1) if heads else ref).to("cpu", torch.float32)
        t0 = time.process_time()
        own = loop(hook, heads)
        t_loop = time.process_time() - t0
        t0 = time.process_time()
        batched = patch(bridge, pairs, what, fast=False).values
        t_batched = time.process_time() - t0
        diff = max(float((ours - ref).abs().max()), float((ours - own).abs().max()),
                   float((batched - ref).abs().max()))
        worst = max(worst, diff)
        print(f"{what}: {ours.numel()} cells")
        print(f"  interp fast path            {t_ours:8.2f} s")
        print(f"  interp batched path         {t_batched:8.2f} s")
        print(f"  TransformerLens sweep       {t_tl:8.2f} s  -> fast path "
              f"{t_tl / t_ours:.1f}x faster (target >= 5x)")
        print(f"  one forward per changed patch {t_loop:6.2f} s  -> fast path "
              f"{t_loop / t_ours:.1f}x faster (no-op patches skipped by both)")
        print(f"  largest difference (fast, batched, TL, loop) {diff:.1e} (metric range "
              f"{float(ref.min()):.2f} .. {float(ref.max()):.2f}; target <= 1e-4)")
    return 0 if worst <= 1e-4 else 1
def one_forward_per_patch(bridge, pairs, what: str):
    """The reference sweep, written independently of `circuits.patching.patch`: for every
    cell, one forward pass of the receiving (corrupted) input with a hook that writes the
    source (clean) activation into that cell; the mean logit difference at the last
    position. Returns ([layer, head, pos] or [layer, pos] (the axes of `patch`), how many
    cells change the activation of some example, i.e. are not no-ops)."""
    import torch

    from interp.hooks import hook_name, n_layers

    stack, part = what.split(".", 1)
    kind = {"enc": "encoder", "dec": "decoder_self", "cross": "cross"}[stack]
    hook = {"head_pos": "hook_z", "resid_pre": "hook_resid_pre", "attn_out": "hook_attn_out",
            "mlp_out": "hook_mlp_out", "cross_attn_out": "hook_cross_attn_out"}[part]
    dev = next(bridge.parameters()).device
    clean = {k: v.to(dev) for k, v in pairs.clean.items()}
    bad = {k: v.to(dev) for k, v in pairs.corrupt.items()}
    good, wrong = pairs.clean_token.to(dev), pairs.corrupt_token.to(dev)
    rows = torch.arange(pairs.n, device=dev)
    L = n_layers(bridge, kind)
    names = [hook_name(bridge, kind, l, hook) for l in range(L)]
    _, cache = bridge.run_with_cache(clean["src"], decoder_input=clean["tgt"],
                                     names_filter=lambda n: n in names)
    _, own = bridge.run_with_cache(bad["src"], decoder_input=bad["tgt"],
                                   names_filter=lambda n: n in names)
    changed = 0
    width = clean["src" if stack == "enc" else "tgt"].shape[1]
    heads = range(int(bridge.cfg.n_heads)) if hook == "hook_z" else [None]
    out = torch.zeros(L, len(heads), width)
    with torch.no_grad():
        for l in range(L):
            for h in heads:
                for p in range(width):
                    at = (slice(None), p) if h is None else (slice(None), p, h)
                    changed += int(not torch.equal(cache[names[l]][at], own[names[l]][at]))

                    def write(act, hook, p=p, h=h, src=cache[names[l]]):
                        act = act.clone()
                        if h is None:
                            act[:, p] = src[:, p]
                        else:
                            act[:, p, h] = src[:, p, h]
                        return act
                    logits = bridge.run_with_hooks(bad["src"], decoder_input=bad["tgt"],
                                                   fwd_hooks=[(names[l], write)])
                    last = logits[:, -1].float()
                    out[l, 0 if h is None else h, p] = (last[rows, good] -
                                                        last[rows, wrong]).mean().cpu()
    return (out if hook == "hook_z" else out[:, 0]), changed


def bench_t5(a, ckpt) -> int:
    """The T5 part: for each site of --sites, the fast path, the batched path and one
    forward per patch on the same pairs, in one run."""
    import torch

    from circuits.patching import corrupt_pairs, patch

    bridge = ckpt.bridge()
    bridge.eval()
    pairs = corrupt_pairs(bridge, ckpt.task, n=a.n, field=a.corrupt, answer=a.answer)
    S, T = pairs.clean["src"].shape[1], pairs.clean["tgt"].shape[1]
    print(f"{a.checkpoint}: {pairs.n} pairs of {S} input and {T} output tokens, "
          f"{len(bridge.encoder_blocks)} + {len(bridge.decoder_blocks)} layers x "
          f"{int(bridge.cfg.n_heads)} heads, {a.threads} thread(s)" +
          ("" if (a.device, a.dtype) == ("cpu", "float32") else f", {a.device} {a.dtype}"))
    unit = "s" if torch.device(a.device).type == "cuda" else "CPU s"
    print(f"{'site':16s} {'cells':>6s} {'run':>5s} {'fast ' + unit:>10s} "
          f"{'batched ' + unit:>13s} {'1 fwd/patch ' + unit:>17s} {'ratio':>6s} "
          f"{'vs batched':>10s} {'largest diff':>12s}")
    worst = 0.0
    # one thread on a CPU: the process's CPU time (the figure a shared machine does not
    # inflate); on a GPU the wall clock, synchronised
    cuda = torch.device(a.device).type == "cuda"
    clock = time.perf_counter if cuda else time.process_time

    def timed(fn, *args, **kwargs):
        if cuda:
            torch.cuda.synchronize()
        t0 = clock()
        out = fn(*args, **kwargs)
        if cuda:
            torch.cuda.synchronize()
        return out, clock() - t0
    for what in a.sites.split(","):
        fast, t_fast = timed(patch, bridge, pairs, what)
        batched, t_batched = timed(patch, bridge, pairs, what, fast=False)
        (ref, run), t_ref = timed(one_forward_per_patch, bridge, pairs, what)
        diff = max(float((fast.values - ref).abs().max()),
                   float((batched.values - ref).abs().max()))
        worst = max(worst, diff)
        print(f"{what:16s} {ref.numel():6d} {run:5d} {t_fast:10.2f} {t_batched:13.2f} "
              f"{t_ref:17.2f} {t_ref / t_fast:5.1f}x {t_batched / t_fast:9.1f}x "
              f"{diff:12.1e}")
    print("ratio: one forward per patch (every cell) / the fast path (target >= 3x); run: "
          "the cells whose patch writes something new (the others write what is already "
          f"there and are skipped by both of ours); largest |ours - one forward per patch| "
          f"{worst:.1e} (target <= 1e-4)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
