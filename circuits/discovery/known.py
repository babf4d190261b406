"""Models whose circuits are known (tracr-compiled RASP programs), their corrupted pairs, and
the AUROC of a finder's edge scores against the known edges.

    bridge, info, known = load_known("reverse")          # circuits/known/tracr-reverse
    pairs = known_pairs(bridge, "reverse", n=64, seed=0)  # a circuits.patching.Pairs
    auroc({"input->L3H0.v": 2.0, ...}, known, all_edges)  # rank AUROC, ties averaged
    finder_auroc("reverse", "eap-ig")                     # once circuits.discovery.discover exists

The models are written by scripts/compile_tracr.py (docs/tracr.md). Each folder holds
circuit.json: `edges` (every edge the program's information flows through, derived from the
residual directions each compiled head and MLP reads and writes) and `edges_varying` (the
subset that can carry a difference between two inputs of the same length: the only edges a
resample ablation on `known_pairs` can detect; for reverse it is the value path alone, as in
auto-circuit's canonical tracr-reverse circuit). Edge names follow the graph contract at
positions none.

Pairs: clean and corrupted inputs of one length (BOS first, so positions line up); the
corrupted input's output at `answer_pos` differs from the clean one's. Categorical programs
(reverse, sort) read the logit difference of the two output tokens; frac_prevs has one
numerical output, so its `metric` reads that value, signed so that the clean input's is the
larger: metric(logits_at_answer [b, 1], pairs) = sign(frac_clean - frac_corrupt) * logit.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import torch

from interp.errors import InterpError

KNOWN_DIR = Path(__file__).resolve().parent.parent / "known"
#: per program: the input length of the pairs and the output position read (BOS is 0)
PAIR_LAYOUT = {"reverse": (5, 1), "frac_prevs": (5, 5), "sort": (4, 2)}
EDGE_SETS = ("edges", "edges_varying")


def known_names() -> list[str]:
    """The programs shipped in circuits/known/ ("reverse", "frac_prevs", "sort")."""
    return sorted(p.name[len("tracr-"):] for p in KNOWN_DIR.glob("tracr-*")
                  if (p / "circuit.json").is_file())


def known_dir(name: str) -> Path:
    short = name.removeprefix("tracr-")
    path = KNOWN_DIR / f"tracr-{short}"
    if not (path / "circuit.json").is_file():
        raise InterpError(f"no known-circuit model named {name!r}; choose one of "
                          f"{', '.join(known_names()) or 'none installed'}")
    return path


def program_info(name: str) -> dict:
    """interp.json's `tracr` block plus circuit.json (`circuit`) and the `metric` (None
    where the logit difference applies)."""
    path = known_dir(name)
    info = dict(json.loads((path / "interp.json").read_text())["tracr"])
    info["circuit"] = json.loads((path / "circuit.json").read_text())
    info["path"] = str(path)
    info["metric"] = _frac_metric(info) if info["output"] == "numerical" else None
    return info


def load_known(name: str, which: str = "edges", device: str | None = "cpu"):
    """(bridge, program info, known edges) of a shipped tracr model; `which` is "edges"
    (the program's whole circuit) or "edges_varying" (what same-length pairs can show)."""
    from interp import load_model

    if which not in EDGE_SETS:
        raise InterpError(f"unknown edge set {which!r}; choose one of {', '.join(EDGE_SETS)}")
    info = program_info(name)
    bridge, _ = load_model(info["path"], device=device)
    return bridge, info, set(info["circuit"][which])


def run_program(info: dict, xs: list[str]) -> list:
    """The program's output per input position (not BOS), from its semantics in plain
    Python: the oracle the compiled model is checked against."""
    prog = info["program"]
    if prog == "reverse":
        return list(reversed(xs))
    if prog == "sort":
        return sorted(xs, key=int)
    if prog == "frac_prevs":
        return [sum(t == "x" for t in xs[:i + 1]) / (i + 1) for i in range(len(xs))]
    raise InterpError(f"no oracle for program {prog!r}")


def encode(info: dict, xs: list[str]) -> list[int]:
    ids = info["input_ids"]
    return [ids[info["bos"]]] + [ids[str(t)] for t in xs]


def _inputs(info: dict, length: int) -> list[list[str]]:
    import itertools

    vocab = info["vocab"]
    if length > info["max_seq_len"] or length < 1:
        raise InterpError(f"length {length} is outside 1..{info['max_seq_len']} for "
                          f"{info['program']}")
    it = (itertools.permutations(vocab, length) if info["unique_tokens"]
          else itertools.product(vocab, repeat=length))
    return [list(x) for x in it]


def known_pairs(bridge, name: str, n: int = 64, seed: int = 0, length: int | None = None,
                answer_pos: int | None = None):
    """`n` clean/corrupted pairs (a circuits.patching.Pairs, arch "decoder", side "seq") of
    one input length: `n` distinct clean inputs (InterpError when fewer exist: 243 for
    reverse and frac_prevs, 120 for sort at the default lengths), each with a corrupted input
    drawn among those whose output at `answer_pos` differs. Defaults: PAIR_LAYOUT."""
    from circuits.patching.pairs import Pairs
    from interp.tasks.base import Example

    info = program_info(name)
    d_len, d_pos = PAIR_LAYOUT[info["program"]]
    length = d_len if length is None else int(length)
    pos = d_pos if answer_pos is None else int(answer_pos)
    if n < 1:
        raise InterpError(f"n must be at least 1, got {n}")
    if not 1 <= pos <= length:
        raise InterpError(f"answer_pos {pos} is not an output position (1..{length})")
    pool = _inputs(info, length)
    outs = [run_program(info, x)[pos - 1] for x in pool]
    if len(set(outs)) < 2:
        raise InterpError(f"every input of length {length} gives the same output at "
                          f"position {pos}: no corrupted pair exists; pick another length")
    if n > len(pool):
        raise InterpError(f"only {len(pool)} distinct inputs of length {length} exist for "
                          f"{info['program']}; ask for n <= {len(pool)}")
    rng = random.Random(seed)
    clean = rng.sample(range(len(pool)), n)          # distinct clean inputs
    corrupt = [rng.choice([k for k, o in enumerate(outs) if o != outs[i]]) for i in clean]
    out_ids = {v: k for k, v in enumerate(info["output_vocab"])}

    def token(k):
        return 0 if info["output"] == "numerical" else out_ids[str(outs[k])]

    dev = next(iter(bridge.native_params.values())).device
    ids = {s: torch.tensor([encode(info, pool[k]) for k in ks], device=dev)
           for s, ks in (("clean", clean), ("corrupt", corrupt))}
    roles = ["BOS"] + [f"p{p}" for p in range(1, length + 1)]
    return Pairs("decoder", {"seq": ids["clean"]}, {"seq": ids["corrupt"]}, pos,
                 torch.tensor([token(k) for k in clean]),
                 torch.tensor([token(k) for k in corrupt]),
                 {"seq": [info["bos"]] + pool[clean[0]]}, {"seq": roles},
                 [(Example(" ".join(pool[a]), " ".join(map(str, run_program(info, pool[a]))),
                           ""),
                   Example(" ".join(pool[b]), " ".join(map(str, run_program(info, pool[b]))),
                           "")) for a, b in zip(clean, corrupt)],
                 answer=info["label"], token="first", answer_index=pos - 1)


def _frac_metric(info: dict):
    x_id = info["input_ids"]["x"]

    def metric(logits_at_answer: torch.Tensor, pairs) -> torch.Tensor:
        """sign(frac_clean - frac_corrupt) * the output value, per row ([b, 1] -> [b])."""
        pos = pairs.answer_pos

        def frac(ids):
            return (ids[:, 1:pos + 1] == x_id).float().mean(1).cpu()

        sign = torch.sign(frac(pairs.clean["seq"]) - frac(pairs.corrupt["seq"]))
        rows = logits_at_answer.shape[0]
        return sign.repeat(rows // sign.shape[0]) * logits_at_answer[:, 0].to("cpu",
                                                                             torch.float32)
    return metric


def contract_edges(n_layers: int, n_heads: int, mlps: bool = True) -> list[str]:
    """Every edge of a decoder-only model's graph at positions none, as the graph contract
    names them (senders upstream of each receiver)."""
    edges = []

    def senders_before(layer, with_heads_of_layer=False):
        out = ["input"]
        for lay in range(layer):
            out += [f"L{lay}H{h}" for h in range(n_heads)] + ([f"MLP{lay}"] if mlps else [])
        if with_heads_of_layer:
            out += [f"L{layer}H{h}" for h in range(n_heads)]
        return out

    for layer in range(n_layers):
        for h in range(n_heads):
            for part in "qkv":
                edges += [f"{s}->L{layer}H{h}.{part}" for s in senders_before(layer)]
        if mlps:
            edges += [f"{s}->MLP{layer}" for s in senders_before(layer, True)]
    edges += [f"{s}->logits" for s in senders_before(n_layers)]
    return edges


def auroc(scores: dict, known: set, all_edges, absolute: bool = True) -> float:
    """Area under the ROC curve of edge scores against the known edges (the rank formula,
    ties given their average rank). Edges without a score count as 0; `absolute` ranks by
    |score|. Known edges outside `all_edges` are an error (a misnamed circuit)."""
    all_edges = list(all_edges)
    missing = set(known) - set(all_edges)
    if missing:
        raise InterpError(f"{len(missing)} known edge(s) are not in the graph (e.g. "
                          f"{sorted(missing)[0]}); the circuit and the graph must use the "
                          "same names")
    vals = [float(scores.get(e, 0.0)) for e in all_edges]
    vals = [abs(v) for v in vals] if absolute else vals
    pos = [e in known for e in all_edges]
    n_pos, n_neg = sum(pos), len(pos) - sum(pos)
    if n_pos == 0 or n_neg == 0:
        raise InterpError("AUROC needs both known and other edges; got "
                          f"{n_pos} known of {len(pos)}")
    import pandas as pd

    ranks = pd.Series(vals).rank(method="average").tolist()     # ties share their mean rank
    r_pos = sum(r for r, p in zip(ranks, pos) if p)
    return (r_pos - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def finder_auroc(name: str, method: str, n: int = 32, seed: int = 0, **kwargs) -> dict:
    """{"edges": AUROC, "edges_varying": AUROC} of `circuits.discovery.discover`'s edge
    scores (positions none, |score|) on `known_pairs`; extra kwargs go to discover. The
    numerical program passes its `metric` as discover's `metric`."""
    from circuits.discovery import discover       # the lead's engine (lazy: not on every branch)

    bridge, info, _ = load_known(name)
    pairs = known_pairs(bridge, name, n=n, seed=seed)
    if info["metric"] is not None:
        kwargs.setdefault("metric", info["metric"])
    res = discover(bridge, None, pairs, method=method, positions="none", **kwargs)
    frame = res.frame()
    scores = dict(zip(frame["edge"], frame["score"]))
    spec = bridge.native_spec
    graph = contract_edges(spec.n_layers, spec.n_heads, not spec.attn_only)
    return {w: auroc(scores, set(info["circuit"][w]), graph) for w in EDGE_SETS}


__all__ = ["KNOWN_DIR", "PAIR_LAYOUT", "EDGE_SETS", "known_names", "known_dir", "program_info",
           "load_known", "run_program", "encode", "known_pairs", "contract_edges", "auroc",
           "finder_auroc"]
