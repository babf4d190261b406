"""auto-circuit's EAP on quadratic-small, on the pairs `circuits.corrupt_pairs` makes, written
with the circuit graph's edge names, to compare with `circuits.discover(..., method="eap")`.
Over 400 lines for a reason: one file must import in both venvs (the project's and
auto-circuit's), and the oracle that checks auto-circuit lives beside the code it checks.

auto-circuit (1.0.1, the package index's latest) needs TransformerLens 2.x, so it runs in a
venv of its own, never the project's; the pairs cross over as a safetensors file:

    python scripts/autocircuit_eap.py dump --n 32 --seed 0 --out pairs.safetensors
        (the project's venv: builds the pairs and the project model's clean logits)
    python scripts/autocircuit_eap.py score --pairs pairs.safetensors --out ac_eap.csv
        [--json ac_eap.json] [--repeats 5] [--threads 1] [--no-check] [--exact]
        (auto-circuit's venv; docs/autocircuit.md says how to make it)
    python scripts/autocircuit_eap.py ours --pairs pairs.safetensors --out ours.csv
        [--method eap] [--repeats 5] [--threads 1]
        (the project's venv: circuits.discovery's scores on the same pairs, timed alike)
    python scripts/autocircuit_eap.py compare ours.csv ac_eap.csv [--k 20]
        (either venv: two CSVs with `edge` and `score` columns, e.g. DiscoveryResult.frame())

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
auto-circuit - and the largest difference is printed; the five largest are also checked
against central finite differences of the metric. With --exact, auto-circuit's own edge
patching (one run per edge) gives each edge's exact change, the Spearman correlation and
top-20 recall of EAP against it, and its five largest are checked against a hook patch.
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


class Parser(argparse.ArgumentParser):
    """argparse whose errors are one line (the usage block left out)."""

    def error(self, message):
        raise UsageError(f"{message} (see {self.prog} --help)")


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


def field_edges(n_layers: int, n_heads: int, groups: list[str], answer_group: str,
                mlps: bool = True) -> list[str]:
    """The contract's edges at positions field: every edge at every group, except the
    logits', which read one position and live at the answer's group only."""
    order = list(dict.fromkeys(groups))
    return [f"{e}@{g}" for e in contract_edges(n_layers, n_heads, mlps)
            for g in ([answer_group] if e.endswith("->logits") else order)]


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
    from circuits.discovery.graph import position_labels

    meta = {"checkpoint": a.checkpoint, "corrupt": a.corrupt or "", "answer": pairs.answer,
            "n": str(pairs.n), "seed": str(a.seed),
            "groups": json.dumps(position_labels(pairs.roles["seq"], "seq"))}
    save_file({k: v.contiguous().cpu() for k, v in tensors.items()}, a.out, metadata=meta)
    print(f"{pairs.n} pairs of {pairs.clean['seq'].shape[1]} tokens, answer {pairs.answer!r} "
          f"at position {pairs.answer_pos} -> {a.out}")
    return 0


def ours(a) -> int:
    """`circuits.discovery`'s scores on the dumped pairs (rebuilt from the dump's settings
    and checked equal), positions none or field, timed like `score`: the graph built once, then
    the clean and corrupted runs plus the method (median of --repeats after a warm-up)."""
    import torch

    from circuits.patching import corrupt_pairs
    from interp.models import load_checkpoint

    try:
        from circuits.discovery.graph import EdgeGraph
        from circuits.discovery.model import GraphModel
        from circuits.discovery.scores import prepare, score as scores_of
    except ImportError as e:
        raise UsageError(f"circuits.discovery does not import here ({e}); `ours` needs "
                         "the project's circuit engine") from None
    torch.set_num_threads(a.threads)
    t, meta = load_pairs(a.pairs)
    ckpt = load_checkpoint(meta.get("checkpoint", "quadratic-small"))
    bridge = ckpt.bridge()
    pairs = corrupt_pairs(bridge, ckpt.task, n=int(meta.get("n", t["clean"].shape[0])),
                          field=meta.get("corrupt") or None, answer=meta.get("answer"),
                          seed=int(meta.get("seed", 0)))
    if not (torch.equal(pairs.clean["seq"], t["clean"]) and
            torch.equal(pairs.corrupt["seq"], t["corrupt"])):
        raise UsageError(f"{a.pairs!r} is not what corrupt_pairs gives for its settings")
    gm = GraphModel(bridge, {s: v.shape[1] for s, v in pairs.clean.items()})
    graph = EdgeGraph(gm, pairs.roles, a.positions, pairs.answer_pos)
    times = []
    for _ in range(a.repeats + 1):
        t0 = time.perf_counter()
        sc = scores_of(prepare(gm, graph, pairs), a.method)
        times.append(time.perf_counter() - t0)
    with open(a.out, "w") as f:
        f.write("edge,score\n" + "".join(f"{e},{float(v)!r}\n"
                                         for e, v in zip(graph.names, sc)))
    print(f"circuits.discovery {a.method}, positions {a.positions}: {graph.n_edges} edges, "
          f"{pairs.n} pairs; "
          f"{statistics.median(times[1:]):.3f} s (median of {a.repeats}, {a.threads} "
          f"thread(s)) -> {a.out}")
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


def sites(n_layers: int, n_heads: int):
    """Contract node -> (TransformerLens hook, head index or None): (senders, receivers)."""
    send = {"input": ("blocks.0.hook_resid_pre", None)}
    recv = {"logits": (f"blocks.{n_layers - 1}.hook_resid_post", None)}
    for layer in range(n_layers):
        for h in range(n_heads):
            send[f"L{layer}H{h}"] = (f"blocks.{layer}.attn.hook_result", h)
            for x in "qkv":
                recv[f"L{layer}H{h}.{x}"] = (f"blocks.{layer}.hook_{x}_input", h)
        send[f"MLP{layer}"] = (f"blocks.{layer}.hook_mlp_out", None)
        recv[f"MLP{layer}"] = (f"blocks.{layer}.hook_mlp_in", None)
    return send, recv


def _part(cache, name, h):
    return cache[name] if h is None else cache[name][:, :, h]


def _metric(logits, t):
    """The mean logit difference (clean answer token minus corrupted one) at answer_pos."""
    import torch

    last = logits[:, int(t["answer_pos"])]
    rows = torch.arange(last.shape[0])
    return (last[rows, t["clean_token"]] - last[rows, t["corrupt_token"]]).mean()


class HandEAP:
    """The oracle, from TransformerLens caches alone (no auto-circuit code): each edge's EAP
    (the receiver's input gradient on the clean run dotted with the sender's corrupted-minus-
    clean output, summed over positions; the gradient of the mean holds the 1/n), and the
    metric with the receiver's input moved by alpha times that difference (alpha = 1: the
    exact edge patch; small alpha: a finite-difference check of the gradient). Contract
    names and sign (change of the mean logit difference)."""

    def __init__(self, model, t, groups=None):
        import torch

        self.model, self.t, self.groups = model, t, groups
        self.send, self.recv = sites(model.cfg.n_layers, model.cfg.n_heads)
        names = {n for n, _ in self.send.values()} | {n for n, _ in self.recv.values()}
        with torch.no_grad():
            _, self.bad = model.run_with_cache(t["corrupt"], names_filter=lambda n: n in names)
        self.acts, self.grads = {}, {}

        def keep(act, hook):
            if not act.requires_grad:                  # the weights are frozen: first hook
                act = act.detach().clone().requires_grad_(True)
            act.register_hook(lambda g: self.grads.__setitem__(hook.name, g.detach()))
            self.acts[hook.name] = act.detach()
            return act

        with torch.enable_grad():
            logits = model.run_with_hooks(t["clean"], fwd_hooks=[(lambda n: n in names, keep)])
            m = _metric(logits, t)
            m.backward()
        self.m_clean = float(m.detach())

    def delta(self, sender):
        name, h = self.send[sender]
        return _part(self.bad, name, h) - _part(self.acts, name, h)

    def _split(self, edge: str):
        """(sender, receiver, position mask or None) of `S->R` or `S->R@GROUP`."""
        import torch

        edge, _, group = edge.partition("@")
        s, r = edge.split("->")
        mask = None if not group else \
            torch.tensor([g == group for g in self.groups], dtype=torch.float32)[:, None]
        return s, r, mask

    def eap(self, edge: str) -> float:
        s, r, mask = self._split(edge)
        name, h = self.recv[r]
        d = self.delta(s) if mask is None else self.delta(s) * mask
        return float((_part(self.grads, name, h) * d).sum())

    def moved(self, edge: str, alpha: float = 1.0) -> float:
        """m(receiver input + alpha * delta) - m(clean)."""
        import torch

        s, r, mask = self._split(edge)
        name, h = self.recv[r]
        d = alpha * (self.delta(s) if mask is None else self.delta(s) * mask)

        def add(act, hook):
            act = act.clone()
            if h is None:
                act += d
            else:
                act[:, :, h] += d
            return act

        with torch.no_grad():
            logits = self.model.run_with_hooks(self.t["clean"], fwd_hooks=[(name, add)])
        return float(_metric(logits, self.t)) - self.m_clean


def ac_exact(pm, t, edges) -> dict:
    """auto-circuit's own edge patching: each edge alone takes the corrupted run's sender
    output (its patch_mode with that edge's mask at 1); metric change from the clean run."""
    import torch
    from auto_circuit.types import AblationType
    from auto_circuit.utils.ablation_activations import src_ablations
    from auto_circuit.utils.graph_utils import patch_mode, set_all_masks

    with torch.no_grad():
        outs = src_ablations(pm, t["corrupt"], AblationType.RESAMPLE)
        set_all_masks(pm, 0.0)
        base = float(_metric(pm(t["clean"]), t))
        res = {}
        for e in edges:
            set_all_masks(pm, 0.0)
            e.patch_mask(pm).data[e.patch_idx] = 1.0
            with patch_mode(pm, outs):
                res[e] = float(_metric(pm(t["clean"]), t)) - base
        set_all_masks(pm, 0.0)
    return res


def kind(node: str) -> str:
    """Component type of a receiver, for the per-type correlations."""
    return {"q": "q", "k": "k", "v": "v"}.get(node[-1], "") if "." in node else \
        ("logits" if node == "logits" else "mlp")


def _ranks(values: list[float]) -> list[float]:
    """1-based ranks, ties sharing their mean rank."""
    order = sorted(range(len(values)), key=values.__getitem__)
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in order[i:j + 1]:
            ranks[k] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def spearman(x: list[float], y: list[float]) -> float:
    """Pearson's correlation of the ranks (nan when either side is constant)."""
    if len(x) < 2:
        return float("nan")
    rx, ry = _ranks(x), _ranks(y)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    sxy = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    sxx, syy = sum((a - mx) ** 2 for a in rx), sum((b - my) ** 2 for b in ry)
    return sxy / (sxx * syy) ** 0.5 if sxx and syy else float("nan")


def correlations(rows, key="exact", k=20) -> dict:
    """Spearman of score against `key` over every edge and per receiver type, and the
    top-k recall (|score|'s top k among |key|'s top k)."""
    out = {}
    for name in ("all", "q", "k", "v", "mlp", "logits"):
        sub = [r for r in rows if name == "all" or kind(r["receiver"]) == name]
        out[name] = {"edges": len(sub), "spearman": spearman([r["score"] for r in sub],
                                                             [r[key] for r in sub])}
    top = {r["edge"] for r in sorted(rows, key=lambda r: -abs(r[key]))[:k]}
    mine = {r["edge"] for r in sorted(rows, key=lambda r: -r["abs_score"])[:k]}
    out[f"top{k}_recall"] = len(top & mine) / k
    return out


def score(a) -> int:
    import contextlib
    import importlib.metadata as md
    import io

    import torch

    torch.set_num_threads(a.threads)
    t, meta = load_pairs(a.pairs)
    folder = Path(a.checkpoint) if a.checkpoint else \
        ROOT / "interp" / "checkpoints" / meta.get("checkpoint", "quadratic-small")
    if not (folder / "config.json").is_file():
        raise UsageError(f"no HF checkpoint folder {str(folder)!r}; give --checkpoint DIR")
    T = t["clean"].shape[1]
    if int(t["answer_pos"]) != T - 1:
        raise UsageError("auto-circuit reads the last position; these pairs' answer_pos is "
                         f"{int(t['answer_pos'])} of {T}")
    field = a.positions == "field"
    if field and a.exact:
        raise UsageError("--exact runs at --positions none only (one pass per edge)")
    groups = json.loads(meta["groups"]) if field and "groups" in meta else None
    if field and (groups is None or len(groups) != T):
        raise UsageError(f"{a.pairs!r} has no field groups; dump it again")
    try:
        from auto_circuit.data import PromptDataLoader, PromptDataset
        from auto_circuit.prune_algos.mask_gradient import mask_gradient_prune_scores
        from auto_circuit.utils.graph_utils import patchable_model
    except ImportError as e:
        raise UsageError(f"auto-circuit does not import in this Python ({e}); run `score` "
                         "with auto-circuit's own venv (docs/autocircuit.md)") from None

    model, hf = hooked_from_hf(folder)
    check = logits_check(model, hf, t)
    print(f"logits: max |TL - HF| {check['max_abs_vs_hf']:.1e}, max |TL - project bridge| at "
          f"answer_pos {check['max_abs_vs_project_bridge']:.1e} (tolerance 1e-4)")
    if max(check.values()) > 1e-4:
        raise UsageError("the HookedTransformer's logits differ from HF's by more than 1e-4")
    model.set_use_attn_result(True)                     # auto-circuit's graph needs these
    model.set_use_split_qkv_input(True)
    model.set_use_hook_mlp_in(True)
    hand = None if a.no_check else HandEAP(model, t, groups)
    t0 = time.perf_counter()
    pm = patchable_model(model, factorized=True, slice_output="last_seq",
                         seq_len=T if field else None,
                         separate_qkv=True, device=torch.device("cpu"))
    t_wrap = time.perf_counter() - t0
    n = t["clean"].shape[0]
    ds = PromptDataset(t["clean"], t["corrupt"], [x.view(1) for x in t["clean_token"]],
                       [x.view(1) for x in t["corrupt_token"]])
    dl = PromptDataLoader(ds, seq_len=T if field else None, diverge_idx=0, batch_size=n,
                          shuffle=False)
    times, scores = [], None
    for _ in range(a.repeats + 1):                     # the first run warms up, untimed
        t0 = time.perf_counter()
        with contextlib.redirect_stderr(io.StringIO()):  # its progress bar
            scores = mask_gradient_prune_scores(pm, dl, None, grad_function="logit",
                                                answer_function="avg_diff", mask_val=0.0)
        times.append(time.perf_counter() - t0)
    times = times[1:]

    # per token (field) auto-circuit scores each position's edge: a group's edge is the sum
    # over its positions (EAP is linear in the difference); logits read the answer's only
    L, H, answer_group = model.cfg.n_layers, model.cfg.n_heads, groups and groups[-1]
    acc, by_edge, off = {}, {}, 0.0
    for e in pm.edges:
        s, r = contract_node(e.src.name, False), contract_node(e.dest.name, True)
        ac = float(e.prune_score(scores))
        g = groups[e.seq_idx] if field else "*"
        if field and r == "logits" and g != answer_group:
            off = max(off, abs(ac))
            continue
        name = f"{s}->{r}" + (f"@{g}" if field else "")
        acc[name] = (s, r, g, acc.get(name, (0, 0, 0, 0.0))[3] + ac)
        by_edge[name] = e
    rows = [{"edge": k, "sender": s, "receiver": r, "group": g, "score": -ac, "ac_score": ac,
             "abs_score": abs(ac)} for k, (s, r, g, ac) in acc.items()]
    rows.sort(key=lambda r: (-r["abs_score"], r["edge"]))
    expected = set(field_edges(L, H, groups, answer_group) if field else contract_edges(L, H))
    got = {r["edge"] for r in rows}
    summary = {
        "versions": {p: md.version(p) for p in ("auto-circuit", "transformer-lens",
                                                 "transformers", "torch")},
        "pairs": n, "tokens": T, "positions": a.positions, "threads": a.threads,
        "auto_circuit_edges": len(pm.edges), "logits_edges_off_answer_max_abs": off,
        "edges": len(rows), "contract_edges": len(expected),
        "edges_missing": sorted(expected - got), "edges_extra": sorted(got - expected),
        "logits_check": check, "wrap_s": t_wrap, "score_s_median": statistics.median(times),
        "score_s_all": times, "max_abs_score": rows[0]["abs_score"]}
    if hand is not None:
        summary["mean_logit_diff_clean"] = hand.m_clean
        summary["max_abs_vs_hand_eap"] = max(abs(r["score"] - hand.eap(r["edge"]))
                                             for r in rows)
        fd = [(hand.moved(r["edge"], 1e-2) - hand.moved(r["edge"], -1e-2)) / 2e-2
              for r in rows[:5]]
        summary["hand_eap_vs_finite_difference_top5"] = [
            [r["edge"], hand.eap(r["edge"]), d] for r, d in zip(rows[:5], fd)]
    if a.exact:
        t0 = time.perf_counter()
        ex = ac_exact(pm, t, list(by_edge.values()))
        summary["exact_s"] = time.perf_counter() - t0
        for r in rows:
            r["exact"] = ex[by_edge[r["edge"]]]
        summary["eap_vs_exact"] = correlations(rows)
        if hand is not None:
            summary["max_abs_exact_vs_hand_patch_top5"] = max(
                abs(r["exact"] - hand.moved(r["edge"])) for r in rows[:5])
    cols = ["edge", "sender", "receiver", "group", "score", "ac_score", "abs_score", "rank"] + \
        (["exact"] if a.exact else [])
    with open(a.out, "w") as f:
        f.write(",".join(cols) + "\n")
        for i, r in enumerate(rows, 1):
            r["rank"] = i
            f.write(",".join(repr(r[c]) if isinstance(r[c], float) else str(r[c])
                             for c in cols) + "\n")
    if a.json:
        Path(a.json).write_text(json.dumps(summary, indent=1) + "\n")
    report(summary, rows)
    return 0


def report(s: dict, rows: list) -> None:
    print(f"auto-circuit {s['versions']['auto-circuit']} EAP: {s['edges']} edges (contract: "
          f"{s['contract_edges']}, missing {len(s['edges_missing'])}, extra "
          f"{len(s['edges_extra'])}) at positions {s['positions']} from its "
          f"{s['auto_circuit_edges']}, {s['pairs']} pairs x {s['tokens']} tokens")
    print(f"scoring {s['score_s_median']:.3f} s (median of {len(s['score_s_all'])}, "
          f"{s['threads']} thread(s); wrapping the model {s['wrap_s']:.3f} s, once)")
    if "max_abs_vs_hand_eap" in s:
        print(f"largest |auto-circuit - hand EAP| {s['max_abs_vs_hand_eap']:.1e} (largest "
              f"|score| {s['max_abs_score']:.3f}); hand EAP vs finite difference, top 5: " +
              ", ".join(f"{e} {g:+.3f}/{d:+.3f}"
                        for e, g, d in s["hand_eap_vs_finite_difference_top5"]))
    if "eap_vs_exact" in s:
        c = s["eap_vs_exact"]
        print(f"auto-circuit exact edge patching {s['exact_s']:.1f} s; Spearman(EAP, exact): " +
              ", ".join(f"{k} {v['spearman']:.2f} ({v['edges']})" for k, v in c.items()
                        if isinstance(v, dict)) + f"; top-20 recall {c['top20_recall']:.2f}")
        if "max_abs_exact_vs_hand_patch_top5" in s:
            print(f"largest |auto-circuit exact - hand patch| over the top 5: "
                  f"{s['max_abs_exact_vs_hand_patch_top5']:.1e}")
    print("top edges (score = change of the logit difference when corrupted"
          + (", then exact" if "eap_vs_exact" in s else "") + "):")
    for r in rows[:10]:
        print(f"  {r['edge']:22s} {r['score']:+.4f}" +
              (f"  {r['exact']:+.4f}" if "exact" in r else ""))


def read_scores(path: str, column: str = "score") -> dict[str, float]:
    """edge -> column of a CSV with `edge` and that column (this script's, or
    `DiscoveryResult.frame()` written at positions none)."""
    import csv

    if not Path(path).is_file():
        raise UsageError(f"no CSV {path!r}")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or "edge" not in rows[0] or column not in rows[0]:
        raise UsageError(f"{path!r} has no rows with `edge` and `{column}` columns")
    return {r["edge"]: float(r[column]) for r in rows}


def compare(a) -> int:
    """Two edge-score CSVs on the same graph: edges in common, largest difference, Spearman
    over all edges and per receiver type, top-k recall of `theirs` against `ours`."""
    ours, theirs = read_scores(a.ours), read_scores(a.theirs)
    common = sorted(set(ours) & set(theirs))
    if not common:
        raise UsageError("the two CSVs share no edge name")
    rows = [{"edge": e, "receiver": e.split("->")[1].split("@")[0], "score": theirs[e],
             "abs_score": abs(theirs[e]), "ours": ours[e]} for e in common]
    c = correlations(rows, key="ours", k=a.k)
    diff = max(abs(r["score"] - r["ours"]) for r in rows)
    scale = max(abs(r["ours"]) for r in rows)
    print(f"{len(common)} edges in common ({len(ours)} in {a.ours}, {len(theirs)} in "
          f"{a.theirs}); largest |difference| {diff:.2e} (largest |score| {scale:.3f})")
    print("Spearman: " + ", ".join(f"{k} {v['spearman']:.4f} ({v['edges']})"
                                   for k, v in c.items() if isinstance(v, dict)) +
          f"; top-{a.k} recall {c[f'top{a.k}_recall']:.2f}")
    return 0


def parser() -> argparse.ArgumentParser:
    p = Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
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
    s.add_argument("--positions", default="none", choices=("none", "field"),
                   help="field: auto-circuit per token, summed over each field group")
    s.add_argument("--no-check", action="store_true", help="skip the hand-EAP oracle")
    s.add_argument("--exact", action="store_true",
                   help="also auto-circuit's exact edge patching (one run per edge)")
    o = sub.add_parser("ours", help="circuits.discovery's scores on the pairs (project venv)")
    o.add_argument("--pairs", required=True)
    o.add_argument("--out", required=True)
    o.add_argument("--method", default="eap", choices=("eap", "eap-ig", "exact"))
    o.add_argument("--positions", default="none", choices=("none", "field"))
    o.add_argument("--repeats", type=int, default=5)
    o.add_argument("--threads", type=int, default=1)
    c = sub.add_parser("compare", help="two edge-score CSVs on the same graph")
    c.add_argument("ours")
    c.add_argument("theirs")
    c.add_argument("--k", type=int, default=20, help="top-k recall (default 20)")
    return p


def main(argv=None) -> int:
    try:
        a = parser().parse_args(argv)
        if a.cmd in ("score", "ours") and (a.repeats < 1 or a.threads < 1):
            raise UsageError("--repeats and --threads must be at least 1")
        if a.cmd == "compare":
            if a.k < 1:
                raise UsageError(f"--k must be at least 1, got {a.k}")
            return compare(a)
        out = Path(a.out).parent
        if not out.is_dir():
            raise UsageError(f"no folder {str(out)!r} for --out")
        return {"dump": dump, "score": score, "ours": ours}[a.cmd](a)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
