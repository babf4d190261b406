"""Sweeps over processes (interp.distributed): two gloo processes started by torchrun give
exactly the results of one process, and one plain process never starts accelerate."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

WORKER = Path(__file__).with_name("dist_worker.py")


def _env():
    env = {k: v for k, v in os.environ.items()
           if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    return {**env, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
            "PYTHONPATH": str(Path(__file__).parents[1])}


def _run(ckpt, sites: str, n: int | None, out: Path):
    launcher = ["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={n}"] \
        if n else []
    r = subprocess.run([sys.executable, *launcher, str(WORKER), str(ckpt), str(out), sites],
                       capture_output=True, text=True, timeout=600, env=_env())
    assert r.returncode == 0, r.stderr[-3000:]
    with safe_open(str(out), "pt") as f:
        size = int(f.metadata()["size"])
    return load_file(str(out)), size


@pytest.mark.parametrize("arch,sites", [("decoder", "resid_pre,head_pos,head"),
                                        ("t5", "enc.resid_pre,cross.head_pos,dec.head")])
def test_two_gloo_processes_patch_exactly_as_one(tiny_checkpoints, tmp_path, arch, sites):
    ckpt = tiny_checkpoints[arch]
    one, n1 = _run(ckpt, sites, None, tmp_path / "one.safetensors")
    two, n2 = _run(ckpt, sites, 2, tmp_path / "two.safetensors")
    assert (n1, n2) == (1, 2)
    assert one.keys() == two.keys() == set(sites.split(","))
    for s in one:
        assert one[s].shape == two[s].shape
        assert torch.equal(one[s], two[s]), (s, (one[s] - two[s]).abs().max())
        # and not trivially: the patches changed the metric somewhere
        assert (one[s] != one[s].flatten()[0]).any()


def test_one_plain_process_does_not_start_accelerate(monkeypatch):
    import interp.distributed as dist

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setattr(dist, "_STATE", None)
    assert not dist.launched() and dist.state() is None
    units = list(range(7))
    assert dist.shard(units) == units and dist.gather(units) == units
    assert dist.is_main() and dist.size() == 1 and dist.rank() == 0
