"""auto-circuit's EAP on quadratic-small, on the pairs `circuits.corrupt_pairs` makes, written
with the circuit graph's edge names, to compare with `circuits.discover(..., method="eap")`.

auto-circuit (1.0.1, the package index's latest) needs TransformerLens 2.x, so it runs in a
venv of its own, never the project's; the pairs cross over as a safetensors file:

    python scripts/autocircuit_eap.py dump --n 32 --seed 0 --out pairs.safetensors
        (the project's venv: builds the pairs and the project model's clean logits)
    python scripts/autocircuit_eap.py score --pairs pairs.safetensors --out ac_eap.csv
        [--json ac_eap.json] [--repeats 5] [--threads 1] [--no-check]
        (auto-circuit's venv; docs/autocircuit.md says how to make it)

`score` loads the checkpoint folder's HF GPT-2 weights into a `HookedTransformer` (no
folding or centring), checks its logits against HF's own model and against the project's
bridge (to 1e-4), runs auto-circuit's "Edge Attribution Patching" (its registered EAP:
`mask_gradient_prune_scores` with grad_function="logit", answer_function="avg_diff",
mask_val=0, resample ablation from the corrupted inputs, separate q/k/v, every position at
once) with the logit difference (clean answer token minus corrupted one, mean over the
pairs, at the last position = the pairs' answer_pos) and writes one row per edge:
`edge, sender, receiver, group, score, ac_score, abs_score, rank`.

Sign: auto-circuit's score (`ac_score`) is the gradient of its loss, -(mean logit
difference), with respect to an edge's mask (0 = clean, 1 = corrupted), i.e. minus the
first-order change of the metric when the edge alone is corrupted. `score` = -ac_score is
the contract's sign (the estimated change of the metric, in logits).

Unless --no-check, every score is also recomputed by hand from TransformerLens caches
(the receiver's input gradient on the clean run dotted with the sender's corrupted-minus-
clean output, summed over positions, mean over pairs) - an oracle that shares no code with
auto-circuit - and the largest difference is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
TENSORS = ("clean", "corrupt", "answer_pos", "clean_token", "corrupt_token", "ref_logits")


class UsageError(Exception):
    """Bad input: printed as one `error: ...` line, exit status 2."""


def contract_node(name: str, receiver: bool) -> str:
    """auto-circuit's node name -> the circuit graph's: "Resid Start" -> input, "A1.2" ->
    L1H2, "A1.2.Q" -> L1H2.q, "MLP 3" -> MLP3, "Resid End" -> logits."""
    if name == "Resid Start" and not receiver:
        return "input"
    if name == "Resid End" and receiver:
        return "logits"
    m = re.fullmatch(r"A(\d+)\.(\d+)(?:\.([QKV]))?", name)
    if m and (m.group(3) is not None) == receiver:
        return f"L{m.group(1)}H{m.group(2)}" + (f".{m.group(3).lower()}" if receiver else "")
    m = re.fullmatch(r"MLP (\d+)", name)
    if m:
        return f"MLP{m.group(1)}"
    raise ValueError(f"no contract name for auto-circuit {'receiver' if receiver else 'sender'}"
                     f" {name!r}")


def contract_edges(n_layers: int, n_heads: int, mlps: bool = True) -> list[str]:
    """Every edge of the decoder graph at positions none, as graph_contract.md defines it."""
    out = []
    senders = ["input"]
    for layer in range(n_layers):
        heads = [f"L{layer}H{h}" for h in range(n_heads)]
        out += [f"{s}->{h}.{x}" for h in heads for x in "qkv" for s in senders]
        if mlps:
            out += [f"{s}->MLP{layer}" for s in senders + heads]
        senders = senders + heads + ([f"MLP{layer}"] if mlps else [])
    return out + [f"{s}->logits" for s in senders]


# ---------------------------------------------------------------- dump (project venv)

def dump(a) -> int:
    import torch
    from safetensors.torch import save_file

    from circuits.patching import corrupt_pairs
    from interp.errors import InterpError
    from interp.models import load_checkpoint

    if a.n < 1:
        raise UsageError(f"--n must be at least 1, got {a.n}")
    try:
        ckpt = load_checkpoint(a.checkpoint)
        if ckpt.arch != "decoder":
            raise UsageError(f"auto-circuit takes decoder-only models; {a.checkpoint!r} is "
                             f"{ckpt.arch!r} (use quadratic-small)")
        bridge = ckpt.bridge()
        pairs = corrupt_pairs(bridge, ckpt.task, n=a.n, field=a.corrupt, answer=a.answer,
                              seed=a.seed)
    except InterpError as e:
        raise UsageError(str(e)) from None
    with torch.no_grad():
        logits = bridge(pairs.clean["seq"])
    tensors = {"clean": pairs.clean["seq"], "corrupt": pairs.corrupt["seq"],
               "answer_pos": torch.tensor(pairs.answer_pos),
               "clean_token": pairs.clean_token, "corrupt_token": pairs.corrupt_token,
               "ref_logits": logits[:, pairs.answer_pos].float()}
    meta = {"checkpoint": a.checkpoint, "corrupt": a.corrupt or "", "answer": pairs.answer,
            "n": str(pairs.n), "seed": str(a.seed)}
    save_file({k: v.contiguous().cpu() for k, v in tensors.items()}, a.out, metadata=meta)
    print(f"{pairs.n} pairs of {pairs.clean['seq'].shape[1]} tokens, answer {pairs.answer!r} "
          f"at position {pairs.answer_pos} -> {a.out}")
    return 0


# ---------------------------------------------------------------- score (auto-circuit venv)

def load_pairs(path: str):
    from safetensors import safe_open

    if not Path(path).is_file():
        raise UsageError(f"no pairs file {path!r}; make one with `dump`")
    with safe_open(path, "pt") as f:
        meta = f.metadata() or {}
        missing = [k for k in TENSORS if k not in f.keys()]
        if missing:
            raise UsageError(f"{path!r} lacks {', '.join(missing)}; make it with `dump`")
        return {k: f.get_tensor(k) for k in TENSORS}, meta


def hooked_from_hf(folder: Path):
    """(HookedTransformer, GPT2LMHeadModel) of an HF GPT-2 folder; weights unprocessed."""
    import torch
    from transformer_lens import HookedTransformer, HookedTransformerConfig
    from transformer_lens.pretrained.weight_conversions import convert_gpt2_weights
    from transformers import GPT2LMHeadModel

    hf = GPT2LMHeadModel.from_pretrained(folder).eval()
    c = hf.config
    cfg = HookedTransformerConfig(
        n_layers=c.n_layer, d_model=c.n_embd, n_heads=c.n_head, d_head=c.n_embd // c.n_head,
        d_mlp=c.n_inner or 4 * c.n_embd, d_vocab=c.vocab_size, n_ctx=c.n_positions,
        act_fn=c.activation_function, normalization_type="LN", eps=c.layer_norm_epsilon,
        positional_embedding_type="standard", default_prepend_bos=False,
        dtype=torch.float32)
    model = HookedTransformer(cfg)
    model.load_and_process_state_dict(convert_gpt2_weights(hf, cfg), fold_ln=False,
                                      center_writing_weights=False, center_unembed=False,
                                      fold_value_biases=False)
    model.eval().requires_grad_(False)
    return model, hf


def logits_check(model, hf, t) -> dict:
    import torch

    with torch.no_grad():
        ours = model(t["clean"], return_type="logits")
        ref = hf(t["clean"]).logits
    pos = int(t["answer_pos"])
    return {"max_abs_vs_hf": float((ours - ref).abs().max()),
            "max_abs_vs_project_bridge": float((ours[:, pos] - t["ref_logits"]).abs().max())}


def hand_eap(model, t) -> dict[str, float]:
    """The oracle: EAP of every edge straight from TransformerLens caches, contract names,
    contract sign (change of the mean logit difference when the edge is corrupted)."""
    import torch

    L, H = model.cfg.n_layers, model.cfg.n_heads
    send = {"input": ("blocks.0.hook_resid_pre", None)}
    recv = {"logits": (f"blocks.{L - 1}.hook_resid_post", None)}
    for layer in range(L):
        for h in range(H):
            send[f"L{layer}H{h}"] = (f"blocks.{layer}.attn.hook_result", h)
            for x in "qkv":
                recv[f"L{layer}H{h}.{x}"] = (f"blocks.{layer}.hook_{x}_input", h)
        send[f"MLP{layer}"] = (f"blocks.{layer}.hook_mlp_out", None)
        recv[f"MLP{layer}"] = (f"blocks.{layer}.hook_mlp_in", None)
    names = {n for n, _ in send.values()} | {n for n, _ in recv.values()}
    with torch.no_grad():
        _, bad = model.run_with_cache(t["corrupt"], names_filter=lambda n: n in names)
    acts, grads = {}, {}

    def keep(act, hook):
        if not act.requires_grad:                  # the weights are frozen: the first hook
            act = act.detach().clone().requires_grad_(True)
        act.register_hook(lambda g: grads.__setitem__(hook.name, g.detach()))
        acts[hook.name] = act.detach()
        return act

    with torch.enable_grad():
        logits = model.run_with_hooks(t["clean"], fwd_hooks=[(lambda n: n in names, keep)])
        last = logits[:, int(t["answer_pos"])]
        rows = torch.arange(last.shape[0])
        (last[rows, t["clean_token"]] - last[rows, t["corrupt_token"]]).mean().backward()

    def part(cache, name, h):
        return cache[name] if h is None else cache[name][:, :, h]

    out = {}
    for edge in contract_edges(L, H):
        s, r = edge.split("->")
        (sn, sh), (rn, rh) = send[s], recv[r]
        delta = part(bad, sn, sh) - part(acts, sn, sh)
        out[edge] = float((part(grads, rn, rh) * delta).sum())   # the grad holds the 1/n
    return out


def score(a) -> int:
    import torch

    torch.set_num_threads(a.threads)
    t, meta = load_pairs(a.pairs)
    folder = Path(a.checkpoint) if a.checkpoint else \
        ROOT / "interp" / "checkpoints" / meta.get("checkpoint", "quadratic-small")
    if not (folder / "config.json").is_file():
        raise UsageError(f"no HF checkpoint folder {str(folder)!r}; give --checkpoint DIR")
    if int(t["answer_pos"]) != t["clean"].shape[1] - 1:
        raise UsageError("auto-circuit reads the last position; these pairs' answer_pos is "
                         f"{int(t['answer_pos'])} of {t['clean'].shape[1]}")
    from auto_circuit.data import PromptDataLoader, PromptDataset
    from auto_circuit.prune_algos.mask_gradient import mask_gradient_prune_scores
    from auto_circuit.utils.graph_utils import patchable_model

    model, hf = hooked_from_hf(folder)
    check = logits_check(model, hf, t)
    print(f"logits: max |TL - HF| {check['max_abs_vs_hf']:.1e}, max |TL - project bridge| at "
          f"answer_pos {check['max_abs_vs_project_bridge']:.1e} (tolerance 1e-4)")
    if max(check.values()) > 1e-4:
        raise UsageError("the HookedTransformer's logits differ from HF's by more than 1e-4")
    model.set_use_attn_result(True)                     # auto-circuit's graph needs these
    model.set_use_split_qkv_input(True)
    model.set_use_hook_mlp_in(True)
    oracle = None if a.no_check else hand_eap(model, t)
    t0 = time.perf_counter()
    pm = patchable_model(model, factorized=True, slice_output="last_seq", seq_len=None,
                         separate_qkv=True, device=torch.device("cpu"))
    t_wrap = time.perf_counter() - t0
    n = t["clean"].shape[0]
    ds = PromptDataset(t["clean"], t["corrupt"], [x.view(1) for x in t["clean_token"]],
                       [x.view(1) for x in t["corrupt_token"]])
    dl = PromptDataLoader(ds, seq_len=None, diverge_idx=0, batch_size=n, shuffle=False)
    times, scores = [], None
    for _ in range(a.repeats + 1):                     # the first run warms up, untimed
        t0 = time.perf_counter()
        scores = mask_gradient_prune_scores(pm, dl, None, grad_function="logit",
                                            answer_function="avg_diff", mask_val=0.0)
        times.append(time.perf_counter() - t0)
    times = times[1:]

    rows = []
    for e in pm.edges:
        s, r = contract_node(e.src.name, False), contract_node(e.dest.name, True)
        ac = float(e.prune_score(scores))
        rows.append({"edge": f"{s}->{r}", "sender": s, "receiver": r, "group": "*",
                     "score": -ac, "ac_score": ac, "abs_score": abs(ac)})
    rows.sort(key=lambda r: (-r["abs_score"], r["edge"]))
    expected = set(contract_edges(model.cfg.n_layers, model.cfg.n_heads))
    got = {r["edge"] for r in rows}
    with open(a.out, "w") as f:
        f.write("edge,sender,receiver,group,score,ac_score,abs_score,rank\n")
        for i, r in enumerate(rows, 1):
            f.write(f"{r['edge']},{r['sender']},{r['receiver']},{r['group']},{r['score']!r},"
                    f"{r['ac_score']!r},{r['abs_score']!r},{i}\n")
    import importlib.metadata as md
    summary = {
        "versions": {p: md.version(p) for p in ("auto-circuit", "transformer-lens",
                                                 "transformers", "torch")},
        "pairs": n, "positions": t["clean"].shape[1], "threads": a.threads,
        "edges": len(rows), "contract_edges": len(expected),
        "edges_missing": sorted(expected - got), "edges_extra": sorted(got - expected),
        "logits_check": check, "wrap_s": t_wrap, "score_s_median": statistics.median(times),
        "score_s_all": times, "mean_logit_diff_clean": None,
        "max_abs_vs_hand_eap": None if oracle is None else
        max(abs(r["score"] - oracle[r["edge"]]) for r in rows if r["edge"] in oracle),
        "max_abs_score": rows[0]["abs_score"]}
    last = hf(t["clean"]).logits[:, -1].detach()
    idx = torch.arange(n)
    summary["mean_logit_diff_clean"] = float(
        (last[idx, t["clean_token"]] - last[idx, t["corrupt_token"]]).mean())
    if a.json:
        Path(a.json).write_text(json.dumps(summary, indent=1) + "\n")
    print(f"auto-circuit {summary['versions']['auto-circuit']} EAP: {len(rows)} edges "
          f"(contract: {len(expected)}, missing {len(summary['edges_missing'])}, extra "
          f"{len(summary['edges_extra'])}), {n} pairs x {t['clean'].shape[1]} tokens")
    print(f"scoring {summary['score_s_median']:.3f} s (median of {a.repeats}, {a.threads} "
          f"thread(s); wrapping the model {t_wrap:.3f} s, once)")
    if oracle is not None:
        print(f"largest |auto-circuit - hand EAP| {summary['max_abs_vs_hand_eap']:.1e} "
              f"(largest |score| {summary['max_abs_score']:.3f})")
    print("top edges (score = change of the logit difference when corrupted):")
    for r in rows[:10]:
        print(f"  {r['edge']:22s} {r['score']:+.4f}")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("dump", help="write the pairs (project venv)")
    d.add_argument("checkpoint", nargs="?", default="quadratic-small")
    d.add_argument("--n", type=int, default=32)
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--corrupt", default=None, help="field corrupted (default c)")
    d.add_argument("--answer", default=None, help="answer field (default D_value)")
    d.add_argument("--out", required=True)
    s = sub.add_parser("score", help="auto-circuit's EAP (auto-circuit venv)")
    s.add_argument("--pairs", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--json", default=None)
    s.add_argument("--checkpoint", default=None, help="HF folder (default: the dumped name)")
    s.add_argument("--repeats", type=int, default=5)
    s.add_argument("--threads", type=int, default=1)
    s.add_argument("--no-check", action="store_true", help="skip the hand-EAP oracle")
    return p


def main(argv=None) -> int:
    a = parser().parse_args(argv)
    try:
        if a.cmd == "score" and (a.repeats < 1 or a.threads < 1):
            raise UsageError("--repeats and --threads must be at least 1")
        return dump(a) if a.cmd == "dump" else score(a)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
