"""Compile RASP programs to transformer weights with tracr and write them as interp native
checkpoints with their known circuits (circuits/known/tracr-<name>/). Over 400 lines: it runs
alone in tracr's own environment (no interp there), so compiling, exporting, the three checks
and the circuit derivation live in this one file.

Run with a separate virtual environment (never the project's lock or .venv; tracr needs jax):

    python3 -m venv tracr-venv
    tracr-venv/bin/pip install tracr-pypi safetensors tokenizers
    tracr-venv/bin/python scripts/compile_tracr.py [--out circuits/known] [--only reverse,sort]

The script writes every file itself (numpy + safetensors + json + tokenizers); it imports
nothing of interp. Each folder holds config.json (model_type "interp-native" and the spec),
model.safetensors (the native parameter names), tokenizer.json + tokenizer_config.json (a
WordLevel tokenizer over the program's input vocabulary and BOS), interp.json (program,
vocabularies, how it was compiled) and circuit.json (the known circuit at positions none).

Before writing, it checks on every input (all sequences of length 1..max_seq_len; for the
sort, every sequence of distinct tokens) that both tracr's own model and a numpy forward
pass over the exported tensors compute the program, and that the exported tensors read and
write the same residual directions as tracr's craft blocks.

The known circuit is derived, not written by hand: every compiled head and MLP reads and
writes named residual directions (tracr's bases, "tokens:a", "length:3", "one" ...); a
sender -> receiver edge is known when the sender writes a direction the receiver reads with a
nonzero weight (q: rows of W_QK, k: columns of W_QK, v: rows of W_OV, MLP: rows of its first
layer, logits: the output directions). `edges_varying` is the subset that can carry a
difference between two inputs of the same length (what a resample ablation on same-length
pairs can see): some shared direction varies across same-length inputs at a fixed position
(the RASP program evaluated on every input), and a q/k edge of a head whose selector's
predicate is TRUE or FALSE carries nothing (its pattern ignores the values).
"""

from __future__ import annotations

import argparse
import itertools
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

MAX_SEQ_LEN = 5
BOS, PAD = "BOS", "PAD"
PROGRAMS = ("reverse", "frac_prevs", "sort")


def programs():
    from tracr.compiler import lib
    from tracr.rasp import rasp

    def reverse():
        return lib.make_reverse(rasp.tokens)

    def frac_prevs():
        is_x = rasp.numerical(rasp.tokens == "x").named("is_x")
        return rasp.numerical(lib.make_frac_prevs(is_x)).named("frac_prevs")

    def sort():
        return lib.make_sort_unique(rasp.tokens, rasp.tokens)

    return {
        "reverse": dict(build=reverse, vocab=["a", "b", "c"], unique=False,
                        source="lib.make_reverse(rasp.tokens): length = SelectorWidth("
                               "Select(tokens, tokens, TRUE)); opp_idx = length - indices "
                               "- 1; Aggregate(Select(indices, opp_idx, EQ), tokens)",
                        oracle=lambda xs: list(reversed(xs))),
        "frac_prevs": dict(build=frac_prevs, vocab=["a", "b", "x"], unique=False,
                           source="lib.make_frac_prevs(numerical(tokens == 'x')): numerical "
                                  "Aggregate(Select(indices, indices, LEQ), is_x)",
                           oracle=lambda xs: [sum(t == "x" for t in xs[:i + 1]) / (i + 1)
                                              for i in range(len(xs))]),
        "sort": dict(build=sort, vocab=[1, 2, 3, 4, 5], unique=True,
                     source="lib.make_sort_unique(tokens, tokens): target_pos = "
                            "SelectorWidth(Select(tokens, tokens, LT)); "
                            "Aggregate(Select(target_pos, indices, EQ), tokens)",
                     oracle=lambda xs: sorted(xs)),
    }


def all_inputs(vocab, unique: bool, max_len: int = MAX_SEQ_LEN):
    out = []
    for n in range(1, max_len + 1):
        it = itertools.permutations(vocab, n) if unique else itertools.product(vocab, repeat=n)
        out.extend(list(x) for x in it)
    return out


def compile_program(program, vocab):
    """tracr's compile_rasp_to_model, step by step, keeping the graph and the craft model."""
    from tracr.compiler import (
        basis_inference,
        craft_graph_to_model,
        craft_model_to_transformer,
        expr_to_craft_graph,
        rasp_to_graph,
    )
    from tracr.craft import bases
    from tracr.rasp import rasp

    ex = rasp_to_graph.extract_rasp_graph(program)
    basis_inference.infer_bases(ex.graph, ex.sink, set(vocab), MAX_SEQ_LEN)
    expr_to_craft_graph.add_craft_components_to_rasp_graph(
        ex.graph, bos_dir=bases.BasisDirection(rasp.tokens.label, BOS), mlp_exactness=100)
    craft = craft_graph_to_model.craft_graph_to_model(ex.graph, ex.sources)
    model = craft_model_to_transformer.craft_model_to_transformer(
        craft_model=craft, graph=ex.graph, sink=ex.sink, max_seq_len=MAX_SEQ_LEN,
        causal=False, compiler_bos=BOS, compiler_pad=PAD)
    return ex, craft, model


def export_tensors(model, output_labels):
    """The native model's tensors (names as interp.models.native saves them) from tracr's
    haiku parameters: Linear weights are [out, in]; the unembedding is one row per output
    direction of the residual stream."""
    p = {k: {n: np.asarray(v, dtype=np.float32) for n, v in d.items()}
         for k, d in model.params.items()}
    cfg = model.model_config
    t = {"tok_embed.weight": p["token_embed"]["embeddings"],
         "pos.weight": p["pos_embed"]["embeddings"]}
    for layer in range(cfg.num_layers):
        pre = f"transformer/layer_{layer}"
        for ours, theirs in (("q", "query"), ("k", "key"), ("v", "value"), ("o", "linear")):
            t[f"layers.{layer}.attn.{ours}.weight"] = p[f"{pre}/attn/{theirs}"]["w"].T
            t[f"layers.{layer}.attn.{ours}.bias"] = p[f"{pre}/attn/{theirs}"]["b"]
        for ours, theirs in (("fc_in", "linear_1"), ("fc_out", "linear_2")):
            t[f"layers.{layer}.mlp.{ours}.weight"] = p[f"{pre}/mlp/{theirs}"]["w"].T
            t[f"layers.{layer}.mlp.{ours}.bias"] = p[f"{pre}/mlp/{theirs}"]["b"]
    labels = model.residual_labels
    head = np.zeros((len(output_labels), len(labels)), np.float32)
    for i, lab in enumerate(output_labels):
        head[i, labels.index(lab)] = 1.0
    t["head.weight"] = head
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in t.items()}


def numpy_forward(t, ids, n_layers, n_heads, d_head):
    """The exported model in plain numpy: no norm, bidirectional attention, ReLU MLP."""
    x = t["tok_embed.weight"][ids] + t["pos.weight"][np.arange(len(ids))]
    for layer in range(n_layers):
        a = f"layers.{layer}.attn."
        q, k, v = ((x @ t[a + n + ".weight"].T + t[a + n + ".bias"]).reshape(
            len(ids), n_heads, d_head) for n in "qkv")
        s = np.einsum("qhd,khd->hqk", q, k) / np.sqrt(d_head)
        s = np.exp(s - s.max(-1, keepdims=True))
        s = s / s.sum(-1, keepdims=True)
        z = np.einsum("hqk,khd->qhd", s, v).reshape(len(ids), -1)
        x = x + z @ t[a + "o.weight"].T + t[a + "o.bias"]
        m = f"layers.{layer}.mlp."
        h = np.maximum(x @ t[m + "fc_in.weight"].T + t[m + "fc_in.bias"], 0)
        x = x + h @ t[m + "fc_out.weight"].T + t[m + "fc_out.bias"]
    return x @ t["head.weight"].T


def _nonzero(basis, matrix) -> list[str]:
    return [str(d) for d, row in zip(basis, np.asarray(matrix)) if np.any(np.abs(row) > 1e-9)]


def components(ex, craft, model):
    """Every compiled head and MLP with the residual directions it reads and writes (from
    tracr's craft blocks) and the RASP expression it computes (heads; MLPs by what they
    write)."""
    from tracr.compiler import assemble, nodes
    from tracr.craft import transformers

    head_expr = {}
    for nid, nd in ex.graph.nodes.items():
        block = nd.get(nodes.MODEL_BLOCK)
        subs = block.blocks if isinstance(block, transformers.SeriesWithResiduals) else [block]
        for sb in subs:
            if isinstance(sb, (transformers.AttentionHead, transformers.MultiAttentionHead)):
                for h in sb.as_multi().heads():
                    head_expr[id(h)] = nd[nodes.EXPR]
    _, names = assemble._get_model_config_and_module_names(craft)
    out = []
    for name, block in zip(names, craft.blocks):
        layer = int(name.split("layer_")[1].split("/")[0])
        if isinstance(block, transformers.MLP):
            out.append(dict(node=f"MLP{layer}", kind="mlp", layer=layer,
                            reads={"": _nonzero(block.fst.input_space.basis, block.fst.matrix)},
                            writes=_nonzero(block.snd.output_space.basis, block.snd.matrix.T)))
            continue
        for h, head in enumerate(block.as_multi().heads()):
            qk, ov = head.w_qk, head.w_ov
            expr = head_expr[id(head)]
            out.append(dict(node=f"L{layer}H{h}", kind="head", layer=layer, expr=expr,
                            reads={"q": _nonzero(qk.left_space.basis, qk.matrix),
                                   "k": _nonzero(qk.right_space.basis, qk.matrix.T),
                                   "v": _nonzero(ov.input_space.basis, ov.matrix)},
                            writes=_nonzero(ov.output_space.basis, ov.matrix.T)))
    return out


def varying_directions(ex, labels, inputs):
    """The residual directions whose value, at some position, differs between two inputs of
    the same length (each SOp of the program evaluated on every input)."""
    from tracr.compiler import nodes
    from tracr.rasp import rasp

    sops = {nid: nd[nodes.EXPR] for nid, nd in ex.graph.nodes.items()
            if isinstance(nd[nodes.EXPR], rasp.SOp)}
    values = {nid: [rasp.evaluate(e, x) for x in inputs] for nid, e in sops.items()}
    varying = set()
    for lab in labels:
        name, _, val = lab.partition(":")
        base = name[:-len("_selector_width_attn_output")] \
            if name.endswith("_selector_width_attn_output") else name
        if base not in values:          # "one"
            continue
        seen = {}
        for x, v in zip(inputs, values[base]):
            for pos, vi in enumerate(v):
                key = (len(x), pos)
                f = (str(vi) == val) if val and base == name else vi
                if seen.setdefault(key, f) != f:
                    varying.add(lab)
    return varying


def known_circuit(comps, input_writes, output_labels, n_layers, varying):
    """Edges sender -> receiver (graph contract names, positions none) where the sender
    writes a direction the receiver reads; and the subset that can vary at fixed length."""
    from tracr.rasp import rasp

    senders = [("input", -1, "input", set(input_writes))] + \
        [(c["node"], c["layer"], c["kind"], set(c["writes"])) for c in comps]
    receivers = []
    for c in comps:
        for part, reads in c["reads"].items():
            name = f"{c['node']}.{part}" if part else c["node"]
            pred = None
            if c["kind"] == "head":
                sel = c["expr"].selector
                pred = sel.predicate
            receivers.append((name, c["layer"], c["kind"], set(reads), part, pred))
    receivers.append(("logits", n_layers, "logits", set(output_labels), "", None))
    edges, vary, why = [], [], {}
    for r, rl, rkind, reads, part, pred in receivers:
        for s, sl, skind, writes in senders:
            upstream = sl < rl or (sl == rl and skind == "head" and rkind == "mlp")
            shared = sorted(writes & reads)
            if not upstream or not shared:
                continue
            e = f"{s}->{r}"
            edges.append(e)
            why[e] = shared
            dead = part in ("q", "k") and pred in (rasp.Comparison.TRUE, rasp.Comparison.FALSE)
            if not dead and any(d in varying for d in shared):
                vary.append(e)
    return edges, vary, why


def _sop_names(dirs) -> str:
    names = []
    for d in dirs:
        n = d.split(":")[0]
        if n not in names:
            names.append(n)
    return ", ".join(names)


def describe(c) -> str:
    if c["kind"] == "head":
        e = c["expr"]
        sel = e.selector
        what = (f"{type(e).__name__}(Select({sel.keys.label}, {sel.queries.label}, "
                f"{sel.predicate.name}){'' if type(e).__name__ == 'SelectorWidth' else ', ' + e.sop.label})"
                f" -> {e.label}")
        return (f"{c['node']}: {what}; q reads {_sop_names(c['reads']['q'])}; k reads "
                f"{_sop_names(c['reads']['k'])}; v reads {_sop_names(c['reads']['v'])}; "
                f"writes {_sop_names(c['writes'])}")
    return (f"{c['node']}: reads {_sop_names(c['reads'][''])}; writes "
            f"{_sop_names(c['writes'])}")


def weight_reads_writes(t, n_layers, n_heads, d_head, labels):
    """Reads and writes of every head and MLP from the exported tensors (a check on the craft
    derivation)."""
    def nz(m, axis):
        return sorted(labels[i] for i in np.flatnonzero(np.abs(m).sum(axis) > 1e-9))

    out = {}
    for layer in range(n_layers):
        a = f"layers.{layer}.attn."
        for h in range(n_heads):
            sl = slice(h * d_head, (h + 1) * d_head)
            qk = t[a + "q.weight"][sl].T @ t[a + "k.weight"][sl]
            ov = t[a + "v.weight"][sl].T @ t[a + "o.weight"][:, sl].T
            if np.abs(ov).sum() > 0:
                out[f"L{layer}H{h}"] = {"q": nz(qk, 1), "k": nz(qk, 0), "v": nz(ov, 1),
                                        "writes": nz(ov, 0)}
        m = f"layers.{layer}.mlp."
        if np.abs(t[m + "fc_out.weight"]).sum() > 0:
            out[f"MLP{layer}"] = {"": nz(t[m + "fc_in.weight"], 0),
                                  "writes": nz(t[m + "fc_out.weight"], 1)}
    return out


def tokenizer_files(folder: Path, encoding: dict):
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {str(k): int(v) for k, v in encoding.items()}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=PAD))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.add_special_tokens([BOS, PAD])
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"bos_token": BOS, "eos_token": PAD, "pad_token": PAD, "unk_token": PAD, "model_max_length": MAX_SEQ_LEN + 1,
         "tokenizer_class": "PreTrainedTokenizerFast"}, indent=2, sort_keys=True) + "\n")


def build(name: str, spec: dict, out: Path) -> dict:
    import tracr
    from importlib.metadata import version
    from safetensors.numpy import save_file

    program = spec["build"]()
    vocab = spec["vocab"]
    ex, craft, model = compile_program(program, vocab)
    cfg = model.model_config
    labels = model.residual_labels
    enc = model.input_encoder.encoding_map
    categorical = model.output_encoder is not None and \
        getattr(model.output_encoder, "encoding_map", None) is not None
    label = program.label
    if categorical:
        dec = {i: v for v, i in model.output_encoder.encoding_map.items()}   # id -> value
        output_vocab = [dec[i] for i in range(len(dec))]
        output_labels = [f"{label}:{v}" for v in output_vocab]
    else:
        output_vocab = [label]
        output_labels = [label]
    assert all(lab in labels for lab in output_labels), (output_labels, labels)
    t = export_tensors(model, output_labels)
    n_heads, d_head = cfg.num_heads, cfg.key_size

    inputs = all_inputs(vocab, spec["unique"])
    for x in inputs:                                     # the program, three ways
        want = spec["oracle"](x)
        got = model.apply([BOS] + x).decoded[1:]
        logits = numpy_forward(t, np.array([enc[BOS]] + [enc[v] for v in x]),
                               cfg.num_layers, n_heads, d_head)[1:]
        mine = [output_vocab[i] for i in logits.argmax(-1)] if categorical else logits[:, 0]
        if categorical:
            assert got == want and mine == want, (name, x, want, got, mine)
        else:
            assert np.allclose(got, want, atol=1e-3) and np.allclose(mine, want, atol=1e-3), \
                (name, x, want, got, mine)

    comps = components(ex, craft, model)
    from_weights = weight_reads_writes(t, cfg.num_layers, n_heads, d_head, labels)
    assert set(from_weights) == {c["node"] for c in comps}, (set(from_weights), comps)
    for c in comps:
        w = from_weights[c["node"]]
        assert sorted(c["writes"]) == w["writes"], (c["node"], c["writes"], w["writes"])
        for part, reads in c["reads"].items():
            assert sorted(reads) == w[part], (c["node"], part, reads, w[part])
    input_writes = sorted(labels[i] for i in np.flatnonzero(
        np.abs(t["tok_embed.weight"]).sum(0) + np.abs(t["pos.weight"]).sum(0) > 0))
    varying = varying_directions(ex, labels, inputs)
    edges, vary, why = known_circuit(comps, input_writes, output_labels, cfg.num_layers,
                                     varying)
    nodes_in = sorted({e.split("->")[0] for e in edges} | {"logits"})

    d_model = len(labels)
    native = {"model_type": "interp-native", "n_layers": cfg.num_layers, "d_model": d_model,
              "n_heads": n_heads, "d_head": d_head, "n_ctx": MAX_SEQ_LEN + 1,
              "d_vocab": len(enc), "d_vocab_out": len(output_vocab),
              "d_mlp": cfg.mlp_hidden_size, "mixing": "none", "conv_width": 3,
              "normalization": "none", "act_fn": "relu", "attention": "bidirectional"}
    assert t["pos.weight"].shape[0] == native["n_ctx"]
    meta = {"model": {"arch": "native", **{k: v for k, v in native.items()
                                            if k != "model_type"}},
            "task": {"task": "tracr", "program": name},
            "tracr": {"program": name, "source": spec["source"], "label": label,
                      "vocab": [str(v) for v in vocab], "bos": BOS, "pad": PAD,
                      "max_seq_len": MAX_SEQ_LEN, "unique_tokens": spec["unique"],
                      "input_ids": {str(k): int(v) for k, v in enc.items()},
                      "output": "categorical" if categorical else "numerical",
                      "output_vocab": [str(v) for v in output_vocab],
                      "residual_labels": labels,
                      "compiled_with": f"tracr-pypi {version('tracr-pypi')} "
                                       f"(jax {version('jax')}), compile_rasp_to_model "
                                       f"steps, causal=False, mlp_exactness=100",
                      "checked_inputs": len(inputs),
                      "attention_scale": f"1/sqrt(d_head) = 1/sqrt({d_head}) (tracr's)",
                      "script": "scripts/compile_tracr.py"}}
    del tracr
    notes = [describe(c) for c in comps]
    circuit = {
        "program": name, "source": spec["source"], "positions": "none",
        "edges": edges, "edges_varying": vary, "nodes": nodes_in,
        "components": notes,
        "edge_directions": {e: why[e] for e in edges},
        "note": ("Derived from tracr's compiled blocks, not by hand: an edge SENDER->RECEIVER "
                 "is known when the sender writes a residual direction (tracr's named "
                 "subspaces, edge_directions) that the receiver reads with a nonzero weight "
                 "(q: rows of W_QK, k: its columns, v: rows of W_OV, an MLP: rows of its "
                 "first layer, logits: the output directions). 'input' writes tokens:*, one "
                 "and indices:*. Every compiled head and MLP is needed by the program (tracr "
                 "compiles nothing else); layers left empty by tracr's layer allocation have "
                 "zero weights and no edges. edges_varying: the edges that can carry a "
                 "difference between two inputs of the same length (what resample ablation "
                 "on same-length pairs can detect): some shared direction varies across "
                 "same-length inputs at a fixed position, and q/k edges of heads with a TRUE "
                 "or FALSE selector are excluded (their pattern ignores the values).")}
    folder = out / f"tracr-{name}"
    with tempfile.TemporaryDirectory(dir=out) as tmp:
        tmp = Path(tmp) / "new"
        tmp.mkdir()
        save_file(t, str(tmp / "model.safetensors"))
        (tmp / "config.json").write_text(json.dumps(native, indent=2, sort_keys=True) + "\n")
        (tmp / "interp.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        (tmp / "circuit.json").write_text(json.dumps(circuit, indent=2) + "\n")
        tokenizer_files(tmp, enc)
        for f in tmp.iterdir():
            f.chmod(0o644)
        if folder.exists():
            shutil.rmtree(folder)
        tmp.rename(folder)
    return {"name": name, "inputs": len(inputs), "edges": len(edges), "varying": len(vary),
            "d_model": d_model, "layers": cfg.num_layers, "params": int(sum(v.size for v in t.values()))}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent.parent
                                         / "circuits" / "known"))
    ap.add_argument("--only", default="", help="comma-separated program names")
    args = ap.parse_args(argv)
    names = [n for n in args.only.split(",") if n] or list(PROGRAMS)
    bad = [n for n in names if n not in PROGRAMS]
    if bad:                        # before tracr is imported and before anything is written
        print(f"error: unknown program {bad[0]!r} in --only; choose from "
              f"{', '.join(PROGRAMS)}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if len(names) > 1:
        # one fresh process per program: tracr numbers its expressions from a global counter
        # when their labels are first read, so the residual labels ("sort_1:3") then do not
        # depend on which programs were compiled before
        for n in names:
            rc = subprocess.run([sys.executable, __file__, "--only", n, "--out", str(out)]
                                ).returncode
            if rc:
                return rc
        return 0
    progs = programs()
    assert tuple(progs) == PROGRAMS
    print(build(names[0], progs[names[0]], out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
