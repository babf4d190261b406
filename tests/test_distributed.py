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


# the decoder (GPT-2 fast path and batched path) is covered through the command below
@pytest.mark.parametrize("arch,sites", [("t5", "enc.resid_pre,cross.head_pos,dec.head,edges,probes")])
def test_two_gloo_processes_patch_exactly_as_one(tiny_checkpoints, tmp_path, arch, sites):
    ckpt = tiny_checkpoints[arch]
    one, n1 = _run(ckpt, sites, None, tmp_path / "one.safetensors")
    two, n2 = _run(ckpt, sites, 2, tmp_path / "two.safetensors")
    assert (n1, n2) == (1, 2)
    assert one.keys() == two.keys() >= set(sites.split(","))
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


def test_a_sweep_smaller_than_the_processes_is_refused_in_one_line(monkeypatch):
    import interp.distributed as dist
    from interp.errors import InterpError

    class Two:                                   # a launched state of two processes
        num_processes, process_index = 2, 1

        def split_between_processes(self, units):
            raise AssertionError("not reached")

    monkeypatch.setattr(dist, "_STATE", Two())
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(InterpError, match=r"^1 head batches cannot be shared by 2 processes; "
                       r"launch at most 1"):
        dist.shard([("L0",)], "head batches")
    assert not dist.is_main()


def test_the_patch_command_under_two_processes_writes_once_what_one_writes(tiny_checkpoints,
                                                                          tmp_path):
    ckpt = tiny_checkpoints["decoder"]
    args = ["-m", "circuits.patch", str(ckpt), "--sites", "resid_pre,head_pos,head",
            "--count", "4",
            "--no-attribution", "--quiet"]
    outs = {}
    for n in (None, 2):
        launcher = ["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={n}"] \
            if n else []
        out = tmp_path / f"out{n}"
        r = subprocess.run([sys.executable, *launcher, *args, "--out", str(out)],
                           capture_output=True, text=True, timeout=600, env=_env())
        assert r.returncode == 0, r.stderr[-3000:]
        outs[n] = (r.stdout, out)
    one, two = outs[None], outs[2]
    assert one[0] == two[0] and one[0].count("resid_pre") >= 1      # printed once, the same
    files = sorted(p.name for p in one[1].iterdir())
    assert files == sorted(p.name for p in two[1].iterdir()) and "resid_pre.csv" in files
    for name in ("resid_pre.csv", "head_pos.csv", "head.csv"):
        assert (one[1] / name).read_text() == (two[1] / name).read_text()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]   # no temporaries


@pytest.mark.parametrize("module", ["interp.classify_heads", "interp.train", "interp.train_text"])
def test_a_command_that_does_not_share_its_work_refuses_a_launch(module, monkeypatch, capsys,
                                                                 tmp_path):
    """Launched (WORLD_SIZE > 1), a command whose work is not shared out says so in one
    line, exit 2, before it loads anything or writes."""
    import importlib

    import interp.distributed as dist

    class Second:                                # the second of two launched processes
        num_processes, process_index = 2, 1

    monkeypatch.setattr(dist, "_STATE", Second())
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.chdir(tmp_path)
    mod = importlib.import_module(module)
    argv = {"interp.classify_heads": [], "interp.train": ["--out", str(tmp_path / "o")],
            "interp.train_text": [next(iter(getattr(mod, "PRESETS", {"attn1l": 0}))), "--out",
                                  str(tmp_path / "o")]}[module]
    assert mod.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: python -m {module} runs as one process")
    assert list(tmp_path.iterdir()) == []


def test_a_process_other_than_the_main_one_checks_but_writes_nothing(monkeypatch, tmp_path):
    """check_outputs in the second of two processes: the destinations are still checked (a
    bad one is refused the same way), but no folder, no --json and no progress are left."""
    import argparse

    import interp.distributed as dist
    from interp.cli.common import check_outputs
    from interp.errors import InterpError

    class Second:
        num_processes, process_index = 2, 1

    monkeypatch.setattr(dist, "_STATE", Second())
    monkeypatch.setenv("WORLD_SIZE", "2")
    args = argparse.Namespace(out=str(tmp_path / "o"), json=str(tmp_path / "s.json"),
                              quiet=False, checkpoint=None)
    assert check_outputs(args, "patching.json", ("patching.json",)) is None
    assert args.json is None and args.quiet is True
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "mine.txt").write_text("a user's file")
    bad = argparse.Namespace(out=str(foreign), json=None, quiet=False, checkpoint=None)
    with pytest.raises(InterpError):
        check_outputs(bad, "patching.json", ("patching.json",))
    monkeypatch.setattr(dist, "_STATE", type("Main", (), {"num_processes": 2,
                                                            "process_index": 0})())
    args = argparse.Namespace(out=str(tmp_path / "o"), json=None, quiet=False, checkpoint=None)
    assert check_outputs(args, "patching.json", ("patching.json",)) is not None
