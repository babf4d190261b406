"""The sweeps besides exact patching, shared out over processes (`interp.distributed`): `--verify`
of classify_heads, the causal checks of `probes`, and activation collection to a store. Two
gloo processes under torchrun write exactly what one process writes; the store also against
TransformerLens run on each example alone; and the groups `--verify` shares out never split a
forward pass that one process would run (against a simulation of its stacking)."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import torch

HERE = Path(__file__).parent
WORKER = HERE / "dist_sweeps_worker.py"


def _env():
    env = {k: v for k, v in os.environ.items()
           if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    return {**env, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
            "PYTHONPATH": str(HERE.parent)}


def _sharp_decoder(path: Path) -> Path:
    """The conftest tiny decoder with head 0's queries and keys scaled up in both layers:
    sharp attention there, so the taxonomy labels those two heads with a route that --verify
    checks (a random tiny model's heads are all `broad`: nothing to verify)."""
    from conftest import tiny_config
    from interp.models import build_model, save_checkpoint
    from interp.tasks import get_task

    task = get_task("quadratic", "small")
    cfg = tiny_config("decoder")
    model = build_model(cfg, seed=1)
    d, dh = cfg.d_model, cfg.d_model // cfg.n_heads
    with torch.no_grad():
        for block in model.transformer.h:
            for at in (0, d):                       # head 0's query and key columns
                block.attn.c_attn.weight[:, at:at + dh] *= 30
    save_checkpoint(model, path, {"task": task.describe(), "model": cfg.to_dict(),
                                  "arch": "decoder", "metrics": {}})
    return path


def _files(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p for p in sorted(folder.rglob("*")) if p.is_file()}


# ---- the groups --verify shares out: never a forward pass split between processes ----------

def _passes(arch, lengths, kos, n_controls, batch_size, max_rows):
    """The forward passes one process runs (`circuits.ablation.routes._run_stacked`, written
    out again): per batch, the conditions of each layer's knockouts taken `max_rows // b` at a
    time; each pass as the set of knockout indices it holds."""
    per = 1 + n_controls
    by_stack: dict = {}
    for j, ko in enumerate(kos):
        by_stack.setdefault(ko.layer if arch == "decoder" else 0, []).extend([j] * per)
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    out = []
    for start in range(0, len(order), batch_size):
        b = len(order[start:start + batch_size])
        step = max(1, max_rows // b)
        for members in by_stack.values():
            for s in range(0, len(members), step):
                out.append(set(members[s:s + step]))
    return out


@pytest.mark.parametrize("arch,layers,n_controls,n,batch_size,max_rows", [
    ("decoder", [0, 1, 0, 1, 0, 1], 2, 6, 128, 16),     # 2 conditions a pass: hand-checked
    ("decoder", [0, 0, 0, 1, 1, 0, 1], 4, 10, 4, 24),   # batches of 4, 4, 2: steps 6 and 12
    ("t5", [0, 1, 1, 0, 2], 1, 5, 128, 15),             # T5: one stack for every layer
    ("decoder", [1, 1, 1], 20, 70, 128, 128),           # --verify's defaults: one per pass
])
def test_route_groups_hold_every_stacked_pass_whole(arch, layers, n_controls, n, batch_size,
                                                    max_rows):
    from circuits.ablation.route_shards import route_groups

    kos = [SimpleNamespace(layer=layer) for layer in layers]
    lengths = torch.tensor([(7 * i) % 5 + 3 for i in range(n)])
    groups = route_groups(arch, lengths, kos, n_controls, batch_size, max_rows)
    assert sorted(j for g in groups for j in g) == list(range(len(kos)))
    home = {j: g for g, members in enumerate(groups) for j in members}
    passes = _passes(arch, lengths.tolist(), kos, n_controls, batch_size, max_rows)
    for p in passes:                          # no pass spans two groups
        assert len({home[j] for j in p}) == 1, (p, groups)
    for members in groups:                    # and no group is larger than it must be
        assert all(any({a, b} <= p for p in passes) for a, b in zip(members, members[1:]))
    if (arch, layers, n_controls) == ("decoder", [0, 1, 0, 1, 0, 1], 2):
        assert groups == [[0, 2], [1, 3], [4], [5]]
    if n_controls == 20:
        assert groups == [[0], [1], [2]]


def test_one_plain_process_streams_units_in_order_and_shares_groups_whole(monkeypatch):
    import interp.distributed as dist

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setattr(dist, "_STATE", None)
    seen = []
    out = list(dist.in_rounds(range(5), lambda u: seen.append(u) or u * u))
    assert out == [(u, u * u) for u in range(5)] and seen == list(range(5))
    assert dist.shard_groups([[0, 2], [1], [3, 4]]) == [0, 2, 1, 3, 4]
    assert dist.state() is None                # nothing was started


# ---- the three sweeps under torchrun (last: the cheap checks above fail first) ---------

def test_two_gloo_processes_run_verify_causal_and_collect_exactly_as_one(tmp_path, capsys):
    ckpt = _sharp_decoder(tmp_path / "sharp")
    # one process: the worker's sweeps in this process (no launcher, nothing initialised)
    spec = importlib.util.spec_from_file_location("dist_sweeps_worker", WORKER)
    worker = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(worker)
    assert worker.main(str(ckpt), tmp_path / "one") == 0
    capsys.readouterr()
    # two processes under torchrun
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                        "--nproc-per-node=2", str(WORKER), str(ckpt), str(tmp_path / "two")],
                       capture_output=True, text=True, timeout=600, env=_env())
    assert r.returncode == 0, r.stderr[-3000:]
    one, two = _files(tmp_path / "one"), _files(tmp_path / "two")
    assert (one["size"].read_text(), two["size"].read_text()) == ("1", "2")
    assert one.keys() == two.keys()            # the same files, and no temporaries beside
    assert not [n for n in two if Path(n).name.startswith(".")]
    same = [n for n in one if n not in ("size", "probe/probes.json", "probe/report.html")]
    for name in same:
        assert one[name].read_bytes() == two[name].read_bytes(), name
    # probes.json: the same but for the timings (the report page embeds them too)
    a, b = (json.loads(f[name].read_text()) for f in (one, two) for name in
            ["probe/probes.json"])
    for d in (a, b):
        d["meta"].pop("timing_s")
    assert a == b

    # not trivially: head 0 of each layer verified (two knockouts, one group a process), the
    # others broad; two causal cells
    heads = pd.read_csv(one["classify/heads.csv"])
    checked = heads[heads.verify_effect.notna()]
    assert list(zip(checked["layer"], checked["head"])) == [(0, 0), (1, 0)]
    assert checked.verify_effect.nunique() == 2 and checked.verify_reads_n.gt(0).any()
    causal = pd.read_csv(one["probe/causal.csv"])
    assert sorted(set(causal.layer)) == [0, 1] and causal.difference.notna().any()

    # the store against TransformerLens run on each example alone (no batch, no padding)
    import interp
    from interp.hooks import hook_name
    from interp.tokens import build_sides
    from probes import load

    bridge, task = interp.load_model(str(ckpt))
    acts = load(tmp_path / "two" / "store", task)
    assert acts.n == 26 and bool(acts.present.any())
    seq = build_sides("decoder", task, acts.examples, None)["seq"]
    for site in ("resid_pre", "attn_out"):
        X = acts.get(site, 1)
        name = hook_name(bridge, "self", 1, f"hook_{site}")
        for i in (0, 13, 25):                  # first, middle and last (short) batch
            n = int(seq.lengths[i])
            _, cache = bridge.run_with_cache(seq.ids[i:i + 1, :n], names_filter=[name])
            for p in torch.nonzero(acts.present[i]).flatten().tolist():
                want = cache[name][0, int(acts.token_index[i, p])].float()
                assert torch.allclose(X[i, p], want, atol=1e-5), (site, i, p)
