"""The tracr-compiled models with known circuits (circuits/known/, scripts/compile_tracr.py):
no jax here. Oracles: each program's semantics in plain Python (reverse the list, the running
fraction of "x", the sorted list) on every input; a forward pass over the saved parameters
written here in plain torch; the residual directions the saved weights read and write (for
the known edges, derived by the compile script from tracr's craft blocks instead); and
scikit-learn's roc_auc_score for the AUROC."""

import itertools
import json
import random
import re

import pytest
import torch

from circuits.discovery import known as K
from interp import load_model
from interp.errors import InterpError
from interp.models.native import NativeSpec

NAMES = ("reverse", "frac_prevs", "sort")


def oracle(name, xs):
    if name == "reverse":
        return xs[::-1]
    if name == "sort":
        return sorted(xs, key=int)
    return [xs[:i + 1].count("x") / (i + 1) for i in range(len(xs))]


@pytest.fixture(scope="module")
def models():
    return {n: load_model(K.known_dir(n))[0] for n in NAMES}


def meta(name):
    return json.loads((K.known_dir(name) / "interp.json").read_text())["tracr"]


def circuit(name):
    return json.loads((K.known_dir(name) / "circuit.json").read_text())


def every_input(m):
    for n in range(1, m["max_seq_len"] + 1):
        it = (itertools.permutations(m["vocab"], n) if m["unique_tokens"]
              else itertools.product(m["vocab"], repeat=n))
        yield n, [list(x) for x in it]


def plain_forward(p, ids, spec):
    """No norm, bidirectional softmax(q k / sqrt(d_head)), ReLU MLP: from the parameters."""
    x = p["tok_embed.weight"][ids] + p["pos.weight"][: ids.shape[1]]
    b, s, _ = x.shape
    for layer in range(spec.n_layers):
        a = f"layers.{layer}.attn."
        q, k, v = (torch.nn.functional.linear(x, p[a + n + ".weight"], p[a + n + ".bias"])
                   .view(b, s, spec.n_heads, spec.d_head) for n in "qkv")
        pat = torch.softmax(torch.einsum("bqhd,bkhd->bhqk", q, k) / spec.d_head ** 0.5, -1)
        z = torch.einsum("bhqk,bkhd->bqhd", pat, v).reshape(b, s, -1)
        x = x + torch.nn.functional.linear(z, p[a + "o.weight"], p[a + "o.bias"])
        m = f"layers.{layer}.mlp."
        h = torch.relu(torch.nn.functional.linear(x, p[m + "fc_in.weight"], p[m + "fc_in.bias"]))
        x = x + torch.nn.functional.linear(h, p[m + "fc_out.weight"], p[m + "fc_out.bias"])
    return x @ p["head.weight"].T


@pytest.mark.parametrize("name", NAMES)
def test_each_model_computes_its_program_on_every_input(models, name):
    bridge, m = models[name], meta(name)
    ids_of = m["input_ids"]
    checked = 0
    for n, xs in every_input(m):
        ids = torch.tensor([[ids_of[m["bos"]]] + [ids_of[str(t)] for t in x] for x in xs])
        with torch.no_grad():
            logits = bridge(ids)
            mine = plain_forward({k: v.detach() for k, v in bridge.native_params.items()},
                                 ids, bridge.native_spec)
        assert torch.allclose(logits, mine, atol=1e-4)
        for x, row in zip(xs, logits[:, 1:]):
            want = oracle(name, [str(t) for t in x])
            if m["output"] == "numerical":
                assert row[:, 0].tolist() == pytest.approx(want, abs=1e-3), x
            else:
                assert [m["output_vocab"][i] for i in row.argmax(-1).tolist()] == want, x
        checked += len(xs)
    assert checked == m["checked_inputs"] and checked >= 300


def test_the_checkpoints_are_native_models_without_norm_and_with_their_sizes(models):
    for name, bridge in models.items():
        spec, cfg = bridge.native_spec, bridge.cfg
        assert (spec.normalization, spec.act_fn, spec.attention) == ("none", "relu",
                                                                      "bidirectional")
        assert cfg.normalization_type is None and cfg.act_fn == "relu"
        assert cfg.d_head == spec.d_head and cfg.attention_dir == "bidirectional"
        assert not any(".ln" in k for k in bridge.native_params)
        assert bridge.native_params["head.weight"].shape == (spec.d_vocab_out, spec.d_model)
        assert bridge.tokenizer(" ".join(meta(name)["vocab"][:2])).input_ids[0] == \
            meta(name)["input_ids"]["BOS"]


def test_native_specs_written_before_the_new_fields_load_as_before():
    old = {"conv_width": 3, "d_mlp": 0, "d_model": 128, "d_vocab": 512, "mixing": "none",
           "model_type": "interp-native", "n_ctx": 128, "n_heads": 4, "n_layers": 2}
    s = NativeSpec.from_dict(old)
    assert (s.normalization, s.act_fn, s.d_head, s.d_vocab_out, s.attention) == \
        ("LN", "gelu_new", 32, 0, "causal")
    cfg = s.tl_config()
    assert (cfg.normalization_type, cfg.act_fn, cfg.d_head, cfg.d_vocab_out,
            cfg.attention_dir) == ("LN", "gelu_new", 32, 512, "causal")


@pytest.mark.parametrize("kw, msg", [({"normalization": "RMS"}, "unknown normalization"),
                                     ({"act_fn": "tanh"}, "unknown act_fn"),
                                     ({"attention": "sideways"}, "unknown attention"),
                                     ({"d_head": -1}, "d_head"),
                                     ({"d_vocab_out": 1.5}, "d_vocab_out")])
def test_bad_new_spec_fields_name_what_is_wrong(kw, msg):
    with pytest.raises(InterpError, match=msg):
        NativeSpec(**kw)


GRAPH = re.compile(r"^(input|L(\d+)H(\d+)|MLP(\d+))->(L(\d+)H(\d+)\.[qkv]|MLP(\d+)|logits)$")


def edge_exists(e, n_layers, n_heads):
    """The graph contract, spelled here: a head of layer l receives from input and every
    head/MLP of layers < l; MLP l also from the heads of layer l; logits from everything."""
    m = GRAPH.match(e)
    if not m:
        return False
    s_layer = -1 if m[1] == "input" else int(m[2] if m[2] is not None else m[4])
    s_head = m[2] is not None
    if s_head and int(m[3]) >= n_heads:
        return False
    if m[5] == "logits":
        return s_layer < n_layers
    r_layer = int(m[6] if m[6] is not None else m[8])
    if m[6] is not None and int(m[7]) >= n_heads or r_layer >= n_layers:
        return False
    return s_layer < r_layer or (s_layer == r_layer and s_head and m[8] is not None)


@pytest.mark.parametrize("name", NAMES)
def test_known_edges_exist_in_the_graph_and_match_the_weights(models, name):
    bridge, c = models[name], circuit(name)
    spec, labels = bridge.native_spec, meta(name)["residual_labels"]
    graph = K.contract_edges(spec.n_layers, spec.n_heads)
    assert all(edge_exists(e, spec.n_layers, spec.n_heads) for e in graph)
    assert len(graph) == len(set(graph))
    assert set(c["edges_varying"]) <= set(c["edges"]) <= set(graph)
    assert all(edge_exists(e, spec.n_layers, spec.n_heads) for e in c["edges"])
    assert not edge_exists("MLP0->L0H0.q", spec.n_layers, spec.n_heads)   # the oracle bites

    # which directions each component reads and writes, from the saved tensors
    p = {k: v.detach() for k, v in bridge.native_params.items()}

    def nz(m, dim):
        return {labels[i] for i in torch.nonzero(m.abs().sum(dim) > 1e-9).flatten().tolist()}

    writes = {"input": nz(p["tok_embed.weight"], 0) | nz(p["pos.weight"], 0)}
    reads = {"logits": nz(p["head.weight"], 0)}
    dh = spec.d_head
    for layer in range(spec.n_layers):
        a = f"layers.{layer}.attn."
        for h in range(spec.n_heads):
            sl = slice(h * dh, (h + 1) * dh)
            qk = p[a + "q.weight"][sl].T @ p[a + "k.weight"][sl]
            ov = p[a + "v.weight"][sl].T @ p[a + "o.weight"][:, sl].T
            writes[f"L{layer}H{h}"] = nz(ov, 0)
            reads.update({f"L{layer}H{h}.q": nz(qk, 1), f"L{layer}H{h}.k": nz(qk, 0),
                          f"L{layer}H{h}.v": nz(ov, 1)})
        m = f"layers.{layer}.mlp."
        writes[f"MLP{layer}"] = nz(p[m + "fc_out.weight"], 1)
        reads[f"MLP{layer}"] = nz(p[m + "fc_in.weight"], 0)
    from_weights = {e for e in graph
                    if writes[e.split("->")[0]] & reads[e.split("->")[1]]}
    assert from_weights == set(c["edges"])
    for e in c["edges"]:
        s, r = e.split("->")
        assert set(c["edge_directions"][e]) == writes[s] & reads[r]
    assert set(c["nodes"]) == {e.split("->")[0] for e in c["edges"]} | {"logits"}


@pytest.mark.parametrize("name", NAMES)
def test_edges_outside_edges_varying_carry_nothing_that_differs_at_one_length(models, name):
    """Along an edge outside `edges_varying`, what the receiver reads from the sender (its
    input weights times the sender's output) is the same for every input of the pairs'
    length, at every position; along each edge of `edges_varying` it differs (q/k edges of a
    TRUE selector are judged by the attention scores instead)."""
    bridge, c, m = models[name], circuit(name), meta(name)
    length, _ = K.PAIR_LAYOUT[name]
    xs = dict(every_input(m))[length]
    ids = torch.tensor([[m["input_ids"][m["bos"]]] + [m["input_ids"][str(t)] for t in x]
                        for x in xs])
    p = {k: v.detach() for k, v in bridge.native_params.items()}
    spec = bridge.native_spec
    dh = spec.d_head
    out = {"input": p["tok_embed.weight"][ids] + p["pos.weight"][: ids.shape[1]]}
    x = out["input"].clone()
    b, s, _ = x.shape
    for layer in range(spec.n_layers):
        a = f"layers.{layer}.attn."
        q, k, v = (torch.nn.functional.linear(x, p[a + n + ".weight"], p[a + n + ".bias"])
                   .view(b, s, spec.n_heads, dh) for n in "qkv")
        pat = torch.softmax(torch.einsum("bqhd,bkhd->bhqk", q, k) / dh ** 0.5, -1)
        z = torch.einsum("bhqk,bkhd->bqhd", pat, v)
        for h in range(spec.n_heads):
            out[f"L{layer}H{h}"] = z[:, :, h] @ p[a + "o.weight"][:, h * dh:(h + 1) * dh].T
        x = x + torch.nn.functional.linear(z.reshape(b, s, -1), p[a + "o.weight"],
                                           p[a + "o.bias"])
        mm = f"layers.{layer}.mlp."
        hid = torch.relu(torch.nn.functional.linear(x, p[mm + "fc_in.weight"],
                                                    p[mm + "fc_in.bias"]))
        out[f"MLP{layer}"] = hid @ p[mm + "fc_out.weight"].T
        x = x + out[f"MLP{layer}"] + p[mm + "fc_out.bias"]

    def read(recv, vec):
        if recv == "logits":
            return vec @ p["head.weight"].T
        mlp = re.fullmatch(r"MLP(\d+)", recv)
        if mlp:
            return vec @ p[f"layers.{mlp[1]}.mlp.fc_in.weight"].T
        layer, h, part = re.fullmatch(r"L(\d+)H(\d+)\.([qkv])", recv).groups()
        w = p[f"layers.{layer}.attn.{part}.weight"][int(h) * dh:(int(h) + 1) * dh]
        return vec @ w.T

    for e in c["edges"]:
        sender, recv = e.split("->")
        got = read(recv, out[sender])
        spread = (got - got[:1]).abs().max().item()
        if e in c["edges_varying"]:
            assert spread > 1e-3, e
        elif recv[-2:] in (".q", ".k") and spread > 1e-6:
            # a selector with a constant predicate (TRUE): its q and k read the tokens, but
            # every pair of input tokens gets the same score (BOS is at position 0 always)
            layer, h = map(int, re.fullmatch(r"L(\d+)H(\d+)\..", recv).groups())
            a = f"layers.{layer}.attn."
            sl = slice(h * dh, (h + 1) * dh)
            qk = (p[a + "q.weight"][sl].T @ p[a + "k.weight"][sl])
            tok_rows = [i for i, lab in enumerate(meta(name)["residual_labels"])
                        if lab.startswith("tokens:") and lab.split(":")[1] in m["vocab"]]
            block = qk[tok_rows][:, tok_rows]
            assert torch.allclose(block, block[0, 0].expand_as(block)), e
        else:
            assert spread <= 1e-6, e


@pytest.mark.parametrize("name", NAMES)
def test_pairs_line_up_and_the_model_prefers_each_side_s_answer(models, name):
    bridge = models[name]
    pairs = K.known_pairs(bridge, name, n=40, seed=3)
    m = meta(name)
    length, pos = K.PAIR_LAYOUT[name]
    assert pairs.clean["seq"].shape == pairs.corrupt["seq"].shape == (40, length + 1)
    assert (pairs.clean["seq"][:, 0] == m["input_ids"]["BOS"]).all() and pairs.answer_pos == pos
    assert len({tuple(r) for r in pairs.clean["seq"].tolist()}) == 40      # distinct inputs
    inv = {v: k for k, v in m["input_ids"].items()}
    for side, tok in (("clean", pairs.clean_token), ("corrupt", pairs.corrupt_token)):
        for row, t in zip(getattr(pairs, side)["seq"].tolist(), tok.tolist()):
            want = oracle(name, [inv[i] for i in row[1:]])[pos - 1]
            if m["output"] == "categorical":
                assert m["output_vocab"][t] == want
    with torch.no_grad():
        lc = bridge(pairs.clean["seq"])[:, pos]
        lx = bridge(pairs.corrupt["seq"])[:, pos]
    if m["output"] == "categorical":
        rows = torch.arange(40)
        assert (pairs.clean_token != pairs.corrupt_token).all()
        assert (lc[rows, pairs.clean_token] - lc[rows, pairs.corrupt_token] > 0.5).all()
        assert (lx[rows, pairs.clean_token] - lx[rows, pairs.corrupt_token] < -0.5).all()
    else:
        metric = K.program_info(name)["metric"]
        fc = [oracle(name, [inv[i] for i in r[1:]])[pos - 1] for r in pairs.clean["seq"].tolist()]
        fx = [oracle(name, [inv[i] for i in r[1:]])[pos - 1]
              for r in pairs.corrupt["seq"].tolist()]
        assert all(a != b for a, b in zip(fc, fx))
        want = torch.tensor([abs(a - b) for a, b in zip(fc, fx)])
        assert torch.allclose(metric(lc, pairs) - metric(lx, pairs), want, atol=1e-3)
        assert metric(torch.cat([lc, lc]), pairs).shape == (80,)     # repeated rows
    again = K.known_pairs(bridge, name, n=40, seed=3)
    assert torch.equal(again.clean["seq"], pairs.clean["seq"])


def test_known_pairs_refuse_a_layout_without_pairs(models):
    with pytest.raises(InterpError, match="no corrupted pair"):
        K.known_pairs(models["sort"], "sort", n=4, length=5, answer_pos=1)
    with pytest.raises(InterpError, match="only 120 distinct inputs of length 4"):
        K.known_pairs(models["sort"], "sort", n=121)
    with pytest.raises(InterpError, match="no known-circuit model"):
        K.load_known("nope")


@pytest.mark.parametrize("seed", range(6))
def test_auroc_matches_scikit_learn_with_ties_and_signs(seed):
    from sklearn.metrics import roc_auc_score

    rng = random.Random(seed)
    edges = [f"e{i}" for i in range(rng.randrange(5, 60))]
    known = set(rng.sample(edges, rng.randrange(1, len(edges) - 1)))
    scores = {e: rng.choice([-2.0, -1.0, 0.0, 0.5, 1.0, rng.gauss(0, 1)]) for e in edges
              if rng.random() < 0.9}
    y = [e in known for e in edges]
    s = [abs(scores.get(e, 0.0)) for e in edges]
    assert K.auroc(scores, known, edges) == pytest.approx(roc_auc_score(y, s))
    signed = [scores.get(e, 0.0) for e in edges]
    assert K.auroc(scores, known, edges, absolute=False) == \
        pytest.approx(roc_auc_score(y, signed))
    with pytest.raises(InterpError, match="not in the graph"):
        K.auroc(scores, known | {"ghost"}, edges)


def test_finder_auroc_scores_a_finder_that_knows_the_circuit(monkeypatch):
    """The plug for the lead's engine: a stand-in `discover` that scores the known edges 1 and
    the rest 0 gets AUROC 1 on `edges`; one that scores them the other way round gets 0."""
    import types

    import pandas as pd

    import circuits.discovery as D

    def fake(flip):
        def discover(bridge, task, pairs, method, positions, **kw):
            spec = bridge.native_spec
            assert positions == "none" and pairs.n == 8
            edges = K.contract_edges(spec.n_layers, spec.n_heads)
            known = set(circuit("frac_prevs")["edges"])
            sc = [float((e in known) != flip) for e in edges]
            assert "metric" in kw
            return types.SimpleNamespace(frame=lambda: pd.DataFrame({"edge": edges, "score": sc}))
        return discover

    monkeypatch.setattr(D, "discover", fake(False), raising=False)
    assert K.finder_auroc("frac_prevs", "exact", n=8)["edges"] == 1.0
    monkeypatch.setattr(D, "discover", fake(True), raising=False)
    assert K.finder_auroc("frac_prevs", "exact", n=8)["edges"] == 0.0


def test_a_tracr_checkpoint_has_no_task_and_says_what_it_is():
    from interp.models import load_checkpoint

    ckpt = load_checkpoint(K.known_dir("sort"))
    assert (ckpt.arch, ckpt.task_or_none) == ("native", None)
    with pytest.raises(InterpError, match=r"compiled RASP program \('sort'.*without a task"):
        ckpt.task
    assert K.known_names() == sorted(NAMES)
    from interp.models.checkpoint import shipped_models
    assert not any(n.startswith("tracr") for n in shipped_models())   # not in interp/checkpoints


def sender_outputs_and_logits(p, spec, ids, patch=None):
    """A plain forward pass that keeps every sender's output ("input", "L{l}H{h}" with
    b_O / n_heads, "MLP{l}"); `patch` = (sender, receiver, delta) adds delta (the sender's
    corrupted minus clean output) to that one receiver's input: exact edge patching."""
    dh, nh = spec.d_head, spec.n_heads
    out = {"input": p["tok_embed.weight"][ids] + p["pos.weight"][: ids.shape[1]]}
    x = out["input"]

    def inp(recv, resid):
        return resid + patch[2] if patch and patch[1] == recv else resid

    for layer in range(spec.n_layers):
        a = f"layers.{layer}.attn."
        proj = {}
        for part in "qkv":
            w, bias = p[a + part + ".weight"], p[a + part + ".bias"]
            proj[part] = torch.stack([
                torch.nn.functional.linear(inp(f"L{layer}H{h}.{part}", x),
                                           w[h * dh:(h + 1) * dh], bias[h * dh:(h + 1) * dh])
                for h in range(nh)], 2)
        pat = torch.softmax(torch.einsum("bqhd,bkhd->bhqk", proj["q"], proj["k"]) / dh ** 0.5,
                            -1)
        z = torch.einsum("bhqk,bkhd->bqhd", pat, proj["v"])
        for h in range(nh):
            out[f"L{layer}H{h}"] = (z[:, :, h] @ p[a + "o.weight"][:, h * dh:(h + 1) * dh].T
                                    + p[a + "o.bias"] / nh)
            x = x + out[f"L{layer}H{h}"]
        m = f"layers.{layer}.mlp."
        hid = torch.relu(torch.nn.functional.linear(inp(f"MLP{layer}", x),
                                                    p[m + "fc_in.weight"], p[m + "fc_in.bias"]))
        out[f"MLP{layer}"] = torch.nn.functional.linear(hid, p[m + "fc_out.weight"],
                                                        p[m + "fc_out.bias"])
        x = x + out[f"MLP{layer}"]
    return out, inp("logits", x) @ p["head.weight"].T


def exact_edge_effects(bridge, name, pairs):
    """{edge: mean over pairs of metric(clean) - metric(clean with that one edge taking the
    corrupted sender's output)}, for every edge of the graph contract (positions none)."""
    p = {k: v.detach() for k, v in bridge.native_params.items()}
    spec = bridge.native_spec
    info = K.program_info(name)
    rows = torch.arange(pairs.n)

    def metric(logits):
        last = logits[:, pairs.answer_pos]
        if info["metric"] is not None:
            return info["metric"](last, pairs)
        return last[rows, pairs.clean_token] - last[rows, pairs.corrupt_token]

    clean, base = sender_outputs_and_logits(p, spec, pairs.clean["seq"])
    corrupt, _ = sender_outputs_and_logits(p, spec, pairs.corrupt["seq"])
    m0 = metric(base)
    effects = {}
    for e in K.contract_edges(spec.n_layers, spec.n_heads):
        s, r = e.split("->")
        _, logits = sender_outputs_and_logits(p, spec, pairs.clean["seq"],
                                              (s, r, corrupt[s] - clean[s]))
        effects[e] = float((m0 - metric(logits)).mean())
    return effects


@pytest.mark.parametrize("name", NAMES)
def test_exact_edge_patching_moves_the_metric_on_edges_varying_and_nowhere_else(models, name):
    """The known circuit checked causally: on same-length pairs, patching one edge of
    `edges_varying` moves the metric; every other edge of the graph (the rest of the known
    circuit included) moves it by nothing. So exact patching gets AUROC 1 against
    edges_varying, and the AUROC against the whole circuit is what same-length pairs allow."""
    bridge = models[name]
    c = circuit(name)
    with torch.no_grad():
        eff = exact_edge_effects(bridge, name, K.known_pairs(bridge, name, n=48, seed=1))
    moved = {e for e, v in eff.items() if abs(v) > 1e-3}
    assert moved == set(c["edges_varying"]), (sorted(moved), c["edges_varying"])
    spec = bridge.native_spec
    graph = K.contract_edges(spec.n_layers, spec.n_heads)
    assert K.auroc(eff, set(c["edges_varying"]), graph) == 1.0
    n_var, n_all = len(c["edges_varying"]), len(c["edges"])
    # zero-effect known edges tie with the zero-effect others: (varying + ties) / all known
    want = (n_var * (len(graph) - n_all) + (n_all - n_var) * (len(graph) - n_all) / 2) / \
        (n_all * (len(graph) - n_all))
    assert K.auroc(eff, set(c["edges"]), graph) == pytest.approx(want)


def test_docs_state_each_model_s_sizes_and_edge_counts(models):
    from pathlib import Path

    text = (Path(__file__).resolve().parent.parent / "docs" / "tracr.md").read_text()
    for name, bridge in models.items():
        row = next(line for line in text.splitlines() if line.startswith(f"| `tracr-{name}`"))
        cells = [c.strip() for c in row.strip("|").split("|")]
        s, c = bridge.native_spec, circuit(name)
        assert cells[3] == f"{s.n_layers} x {s.n_heads}"
        assert [int(x) for x in cells[4:7]] == [s.d_model, s.d_head, s.d_mlp]
        assert cells[7].startswith(f"{s.d_vocab_out} ")
        assert [int(x) for x in cells[8:11]] == [len(K.contract_edges(s.n_layers, s.n_heads)),
                                                 len(c["edges"]), len(c["edges_varying"])]


def test_the_compile_script_refuses_an_unknown_program_in_one_line_without_jax(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    from clihelp import one_line

    script = Path(__file__).resolve().parent.parent / "scripts" / "compile_tracr.py"
    proc = subprocess.run([sys.executable, str(script), "--only", "reverse,nope", "--out",
                           str(tmp_path / "out")], capture_output=True, text=True, timeout=120)
    one_line(proc.returncode, proc.stderr, "'nope'", "reverse, frac_prevs, sort")
    assert not (tmp_path / "out").exists()
