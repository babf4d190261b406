"""scripts/autocircuit_eap.py, the parts that run in the project's venv: the edge list of the
circuit graph's contract, the mapping of auto-circuit's node names onto it, `dump` (checked
against HF's own GPT-2 run on the dumped ids) and its one-line errors. `score` needs
auto-circuit's own venv and is checked there against a hand EAP (docs/autocircuit.md)."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from clihelp import one_line

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "autocircuit_eap.py"


def _module():
    spec = importlib.util.spec_from_file_location("autocircuit_eap", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


ac = _module()


def _run(*args, cwd):
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True,
                          text=True, env=env, cwd=cwd, timeout=300)


def test_importing_the_script_does_not_import_auto_circuit():
    assert "auto_circuit" not in sys.modules
    assert callable(ac.main)


@pytest.mark.parametrize("layers,heads,mlps", [(4, 4, True), (2, 4, False), (3, 2, True)])
def test_contract_edges_count_by_closed_form(layers, heads, mlps):
    # a head of layer l: input, 4l heads and l MLPs before it, three receivers (q, k, v);
    # MLP l: input, the heads of layers <= l, the MLPs before it; logits: every sender
    per_layer = [1 + heads * l + (l if mlps else 0) for l in range(layers)]
    want = 3 * heads * sum(per_layer)
    if mlps:
        want += sum(1 + heads * (l + 1) + l for l in range(layers))
    want += 1 + layers * heads + (layers if mlps else 0)
    edges = ac.contract_edges(layers, heads, mlps)
    assert len(edges) == len(set(edges)) == want


def test_contract_edges_respect_the_order_of_layers():
    edges = set(ac.contract_edges(4, 4))
    assert {"input->L0H3.v", "L0H1->L2H3.k", "L1H0->MLP1", "MLP1->logits",
            "MLP0->L1H2.q"} <= edges
    assert not {"L1H0->L1H1.q", "MLP1->L1H0.q", "MLP1->MLP1", "L2H0->MLP1",
                "logits->MLP3", "input->logits.q"} & edges
    assert len(edges) == 479


def test_field_edges_put_every_edge_at_every_group_but_the_logits():
    groups = ["a", "a", "b", "=", "c", "="]
    edges = ac.field_edges(4, 4, groups, "=")
    assert len(edges) == len(set(edges)) == (479 - 21) * 4 + 21   # 4 distinct groups
    assert "MLP3->logits@=" in edges and "MLP3->logits@a" not in edges
    assert {"input->L0H0.q@a", "L0H1->L2H3.k@c", "L1H0->MLP1@b"} <= set(edges)


def test_auto_circuit_names_map_onto_the_contract():
    # auto-circuit 1.0.1's factorized TransformerLens graph names its nodes this way
    senders = ["Resid Start"] + [f"A{l}.{h}" for l in range(4) for h in range(4)] + \
        [f"MLP {l}" for l in range(4)]
    got = {ac.contract_node(s, receiver=False) for s in senders}
    assert got == {"input", "MLP0", "MLP1", "MLP2", "MLP3"} | \
        {f"L{l}H{h}" for l in range(4) for h in range(4)}
    assert ac.contract_node("A2.3.Q", receiver=True) == "L2H3.q"
    assert ac.contract_node("A0.1.V", receiver=True) == "L0H1.v"
    assert ac.contract_node("MLP 2", receiver=True) == "MLP2"
    assert ac.contract_node("Resid End", receiver=True) == "logits"
    for name, receiver in [("Resid End", False), ("Resid Start", True), ("A0.1.Q", False),
                           ("A0.1", True), ("Resid Mid 0", False)]:
        with pytest.raises(ValueError):
            ac.contract_node(name, receiver)


def test_receiver_kinds():
    assert [ac.kind(r) for r in ("L0H1.q", "L3H0.k", "L1H1.v", "MLP2", "logits")] == \
        ["q", "k", "v", "mlp", "logits"]


def test_dump_writes_the_pairs_and_the_logits_hf_gives(tmp_path):
    from safetensors import safe_open
    from transformers import GPT2LMHeadModel

    proc = _run("dump", "--n", "4", "--seed", "0", "--out", "p.safetensors", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    with safe_open(str(tmp_path / "p.safetensors"), "pt") as f:
        meta = f.metadata()
        t = {k: f.get_tensor(k) for k in f.keys()}
    assert set(t) == set(ac.TENSORS)
    assert meta["checkpoint"] == "quadratic-small" and meta["answer"] == "D_value"
    n, T = t["clean"].shape
    groups = json.loads(meta["groups"])
    assert len(groups) == T and groups[-1] == "sol:=" and "c" in groups   # answer after the solution's "="
    assert n == 4 and t["corrupt"].shape == (n, T)
    assert int(t["answer_pos"]) == T - 1                 # auto-circuit reads the last position
    assert (t["clean_token"] != t["corrupt_token"]).all()
    assert ((t["clean"] != t["corrupt"]).any(1)).all()  # every pair differs somewhere
    hf = GPT2LMHeadModel.from_pretrained(ROOT / "interp" / "checkpoints" / "quadratic-small")
    with torch.no_grad():
        ref = hf.eval()(t["clean"]).logits[:, -1]
    assert (ref - t["ref_logits"]).abs().max() < 1e-4


@pytest.mark.parametrize("args,needles", [
    (["dump", "--n", "0", "--out", "p.safetensors"], ["--n", "at least 1"]),
    (["dump", "quadratic-t5-small", "--n", "2", "--out", "p.safetensors"], ["decoder-only"]),
    (["dump", "--out", "no/such/p.safetensors"], ["--out"]),
    (["dump"], ["--out"]),
    (["score", "--pairs", "none.safetensors", "--out", "s.csv"], ["none.safetensors"]),
    (["score", "--pairs", "none.safetensors", "--out", "s.csv", "--repeats", "0"],
     ["--repeats"]),
])
def test_bad_inputs_give_one_line_and_write_nothing(tmp_path, args, needles):
    proc = _run(*args, cwd=tmp_path)
    one_line(proc.returncode, proc.stderr, *needles)
    assert not list(tmp_path.iterdir())


def test_score_without_auto_circuit_says_which_python(tmp_path):
    from safetensors.torch import save_file

    if importlib.util.find_spec("auto_circuit") is not None:
        pytest.skip("auto-circuit is installed in this venv")
    t = {k: torch.zeros(2, 3, dtype=torch.long) for k in ("clean", "corrupt")}
    t.update(answer_pos=torch.tensor(2), clean_token=torch.tensor([1, 2]),
             corrupt_token=torch.tensor([2, 1]), ref_logits=torch.zeros(2, 28))
    save_file(t, str(tmp_path / "p.safetensors"), metadata={"checkpoint": "quadratic-small"})
    proc = _run("score", "--pairs", "p.safetensors", "--out", "s.csv", cwd=tmp_path)
    one_line(proc.returncode, proc.stderr, "auto-circuit", "venv")
    assert not (tmp_path / "s.csv").exists()


def test_spearman_matches_scipy_with_ties():
    from scipy.stats import spearmanr

    g = torch.Generator().manual_seed(0)
    for n in (5, 40):
        x = torch.randint(0, 6, (n,), generator=g).tolist()      # many ties
        y = (torch.randn(n, generator=g) + torch.tensor(x)).tolist()
        assert abs(ac.spearman(x, y) - spearmanr(x, y).statistic) < 1e-12
    assert ac.spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)


def test_compare_reads_two_csvs_by_edge_name(tmp_path):
    edges = ac.field_edges(2, 2, ["x", "="], "=")       # receiver types read before "@"
    ours = {e: float(i) for i, e in enumerate(edges)}
    theirs = {e: -float(i) if "->logits" in e else float(i) for i, e in enumerate(edges)}
    (tmp_path / "a.csv").write_text("edge,score\n" + "".join(f"{e},{v}\n" for e, v in
                                                              reversed(ours.items())))
    (tmp_path / "b.csv").write_text("score,edge,rank\n" + "".join(
        f"{v},{e},0\n" for e, v in theirs.items()))
    proc = _run("compare", "a.csv", "b.csv", "--k", "3", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    n_logits = sum("->logits" in e for e in edges)
    assert f"{len(edges)} edges in common" in proc.stdout
    assert f"logits -1.0000 ({n_logits})" in proc.stdout and "mlp 1.0000" in proc.stdout
    # the 3 largest |score| are the last 3 edges in both (the logits ones, sign aside)
    assert "top-3 recall 1.00" in proc.stdout and n_logits >= 3
    proc = _run("compare", "a.csv", "none.csv", cwd=tmp_path)
    one_line(proc.returncode, proc.stderr, "none.csv")


def test_ours_names_every_contract_edge_once(tmp_path):
    """`ours` runs circuits.discovery on the dumped pairs: its edge names must be exactly the
    contract's 479 (the closed form above), so the two CSVs line up edge by edge."""
    pytest.importorskip("circuits.discovery")
    assert _run("dump", "--n", "4", "--out", "p.safetensors", cwd=tmp_path).returncode == 0
    proc = _run("ours", "--pairs", "p.safetensors", "--out", "o.csv", "--repeats", "1",
                cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    scores = ac.read_scores(str(tmp_path / "o.csv"))
    assert sorted(scores) == sorted(ac.contract_edges(4, 4))
    assert any(v != 0 for v in scores.values())
