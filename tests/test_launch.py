"""`--nproc N` (interp.launch): bad values refused in one line before anything starts; a
launch whose workers fail ends with ONE line, exit 2, no output and no temporary (a worker
killed in the middle of a real patching sweep, an exception in worker 1 only, a sweep too
small to share); the pieces of that path checked alone (which line is chosen, what a worker
hands over, the collectives' timeout)."""

import os
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest

HERE = Path(__file__).parent
ROOT = HERE.parent
# a launch needs two cores (--nproc is bounded by them)
two_cores = pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs 2 CPU cores")


def _env(**extra):
    env = {k: v for k, v in os.environ.items()
           if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT",
                        "OMP_NUM_THREADS", "INTERP_LAUNCH_DIR", "INTERP_TEST_FAIL")}
    return {**env, "HF_HUB_OFFLINE": "1", "PYTHONPATH": f"{ROOT}{os.pathsep}{HERE}", **extra}


def one_line(stderr: str) -> str:
    """The one line on stderr (asserted to be the only one, with no traceback)."""
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr[-3000:]
    return lines[0]


def _tmpdir(cwd: Path) -> Path:
    """The launch's own temp folder (TMPDIR), beside its working folder: the launcher's
    temporaries are counted there, not among other tests' launches running at the same time
    in the shared temp folder."""
    d = cwd.parent / f"{cwd.name}-tmp"
    d.mkdir(exist_ok=True)
    return d


def _launch(args, cwd, **extra):
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True,
                       timeout=300, env=_env(TMPDIR=str(_tmpdir(cwd)), **extra), cwd=cwd)
    return r, time.monotonic() - t0


def _temps(cwd: Path) -> set[str]:
    return {p.name for p in _tmpdir(cwd).glob("interp-launch-*")}


def _left(folder: Path, temps: set[str]) -> list[str]:
    """What a run left in `folder` (outputs, locks, temporaries) and, beyond `temps` (those
    there before it), in its temp folder."""
    return sorted(p.name for p in folder.iterdir()) + sorted(_temps(folder) - temps)


# -- real launches (each ~6-13 s of CPU: the fewest that cover the failure paths) ---------
@two_cores
def test_a_worker_killed_in_the_middle_of_a_patching_sweep_ends_the_run_in_one_line(
        tiny_checkpoints, tmp_path):
    """Worker 0 (the one that holds the output lock and writes) is SIGKILLed at its first
    gather, its share done and worker 1 waiting on it: the launcher stops worker 1, prints
    one line naming the killed worker, exits 2; no output, no lock, no temporary is left."""
    temps = _temps(tmp_path)
    r, took = _launch(["circuits.patch", str(tiny_checkpoints["decoder"]), "--sites",
                       "head_pos", "--count", "4", "--no-attribution", "--quiet", "--nproc", "2",
                       "--out", str(tmp_path / "out"), "--json", str(tmp_path / "s.json")],
                      tmp_path, INTERP_TEST_FAIL="0:kill", INTERP_DIST_TIMEOUT="240")
    assert r.returncode == 2, r.stderr[-2000:]
    assert one_line(r.stderr) == ("error: process 0 of 2: killed by SIGKILL; the other "
                                  "processes were stopped and nothing was written")
    assert took < 200                 # ended by the launcher, not by the collective's timeout
    assert _left(tmp_path, temps) == []


@two_cores
def test_an_exception_in_worker_1_only_ends_the_run_in_one_line(tmp_path):
    temps = _temps(tmp_path)
    r, _ = _launch(["launch_worker", "--units", "5", "--nproc", "2", "--out",
                    str(tmp_path / "out")], tmp_path, INTERP_TEST_FAIL="1:raise")
    assert r.returncode == 2 and r.stdout == ""
    line = one_line(r.stderr)
    assert line.startswith("error: process 1 of 2: RuntimeError: failure planted by "
                           "INTERP_TEST_FAIL in process 1 (at distributed.py:"), line
    assert line.endswith("; the other processes were stopped and nothing was written")
    assert _left(tmp_path, temps) == []


@two_cores
def test_a_sweep_smaller_than_the_processes_is_one_line_not_one_per_worker(tmp_path):
    """Both workers refuse alike: the user sees that refusal once, as one process says it."""
    temps = _temps(tmp_path)
    r, _ = _launch(["launch_worker", "--nproc", "2", "--out", str(tmp_path / "out"),
                    "--units", "1"], tmp_path)     # every argument reaches the workers
    assert r.returncode == 2 and r.stdout == ""
    assert one_line(r.stderr) == ("error: 1 numbers cannot be shared by 2 processes; launch "
                                  "at most 1 (--nproc, or torchrun's --nproc-per-node) or ask "
                                  "for a larger sweep")
    assert _left(tmp_path, temps) == []


# -- refusals before anything starts (in-process) -----------------------------------------
@pytest.mark.parametrize("value,says", [
    ("0", "argument --nproc: 0 is outside 1 to 256"),
    ("257", "argument --nproc: 257 is outside 1 to 256"),
    ("two", "argument --nproc: 'two' is not a whole number"),
])
def test_a_bad_nproc_is_refused_in_one_line(value, says, tmp_path, capsys, monkeypatch):
    from circuits.patch import main

    monkeypatch.chdir(tmp_path)
    assert main(["--nproc", value, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert one_line(err).startswith(f"error: {says}") and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


def test_more_processes_than_cores_or_slices_are_refused_before_launching(tmp_path, capsys,
                                                                         monkeypatch):
    import interp.launch as launch
    from circuits.patch import main

    def no_launch(*a, **k):
        raise AssertionError("launched")

    monkeypatch.setattr(launch, "launch", no_launch)
    monkeypatch.setattr(launch, "cores", lambda: 3)
    assert main(["--nproc", "4", "--out", str(tmp_path / "o")]) == 2
    assert one_line(capsys.readouterr().err) == (
        "error: --nproc 4 is more than the 3 CPU cores this process may use; give --nproc 3 "
        "or fewer (more processes than cores only share the same cores)")
    assert main(["--slices", "--nproc", "2"]) == 2
    assert one_line(capsys.readouterr().err).startswith("error: --slices runs as one process")
    assert list(tmp_path.iterdir()) == []


def test_relaunch_passes_the_command_line_through_unchanged_and_only_when_asked(monkeypatch):
    import argparse

    import interp.launch as launch

    seen = []
    monkeypatch.setattr(launch, "launch", lambda *a, **k: seen.append((*a, k)) or 7)
    monkeypatch.setattr(launch, "cores", lambda: 4)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    argv = ["ckpt", "--n", "3", "--sites", "a,b", "--nproc", "3", "--out", "o"]
    ns = argparse.Namespace(nproc=3, device="cpu", out="o", json=None)
    assert launch.relaunch(ns, argv, "circuits.patch") == 7
    assert seen == [("circuits.patch", argv, 3, [("--out", "o")], {"gpus": False})]
    assert launch.relaunch(argparse.Namespace(nproc=1), argv, "m") is None     # one process
    monkeypatch.setenv("WORLD_SIZE", "3")                  # a worker: runs its share
    assert launch.relaunch(ns, argv, "m") is None and len(seen) == 1
    monkeypatch.setenv("WORLD_SIZE", "2")                  # torchrun of 2 with --nproc 3
    from interp.errors import InterpError

    with pytest.raises(InterpError, match=r"^--nproc 3 under a launcher of 2 processes"):
        launch.relaunch(ns, argv, "m")


# -- the failure path's parts -------------------------------------------------------------
class _Failure:
    def __init__(self, exitcode, timestamp):
        self.exitcode, self.timestamp = exitcode, timestamp


def _errors(folder: Path, lines: dict):
    """Error files as workers write them: rank -> (time, line[, kind: "input" for a refusal
    of the command's input, else "other"])."""
    for rank, (t, text, *kind) in lines.items():
        (folder / f"{rank}.err").write_text(f"{t} {(kind or ['other'])[0]} {text}")


def test_the_line_names_the_first_cause_not_its_consequences(tmp_path):
    from interp.launch import failure_line

    stop = "; the other processes were stopped and nothing was written"
    # worker 1 raised first; worker 0's broken connection came after
    _errors(tmp_path, {0: (105.5, "RuntimeError: Connection closed by peer"),
                       1: (105.2, "ValueError: bad")})
    assert failure_line({0: _Failure(1, 105), 1: _Failure(1, 105)}, str(tmp_path), 2) == \
        "process 1 of 2: ValueError: bad" + stop
    # worker 1 killed (no line), worker 0's connection error written in the same second
    for f in tmp_path.iterdir():
        f.unlink()
    _errors(tmp_path, {0: (106.01, "RuntimeError: Connection closed by peer")})
    assert failure_line({0: _Failure(1, 106), 1: _Failure(-9, 106)}, str(tmp_path), 2) == \
        "process 1 of 2: killed by SIGKILL" + stop
    # a worker the launcher stopped (SIGTERM) is no cause; the first line is
    for f in tmp_path.iterdir():
        f.unlink()
    _errors(tmp_path, {2: (7.0, "OSError: disk full"), 1: (9.0, "stopped")})
    # (torch's whole-second stamp of a stop can read before the cause's line)
    assert failure_line({1: _Failure(-15, 9), 2: _Failure(2, 7), 0: _Failure(-15, 7)},
                        str(tmp_path), 3) == "process 2 of 3: OSError: disk full" + stop
    # a refusal of the input that came first: as one process gives it (the others, stopped
    # before they said it, would have refused alike), whoever else was stopped
    _errors(tmp_path, {2: (7.0, "too small to share", "input"), 1: (9.0, "stopped")})
    assert failure_line({1: _Failure(-15, 9), 2: _Failure(2, 7), 0: _Failure(-15, 7)},
                        str(tmp_path), 3) == "too small to share"
    # every worker refused alike: the refusal alone, as one process gives it
    _errors(tmp_path, {0: (1.0, "same"), 1: (1.1, "same"), 2: (1.2, "same")})
    assert failure_line({0: _Failure(2, 1), 1: _Failure(2, 1), 2: _Failure(2, 1)},
                        str(tmp_path), 3) == "same"
    # no line at all: the exit status, and the worker's last stderr line when there is one
    empty = tmp_path / "none"
    empty.mkdir()
    log = empty / "logs" / "run" / "attempt_0" / "1"
    log.mkdir(parents=True)
    (log / "stderr.log").write_text("Traceback ...\nImportError: no module x\n\n")
    assert failure_line({1: _Failure(1, 3)}, str(empty), 2) == \
        "process 1 of 2 exited with status 1 (ImportError: no module x)" + stop


def test_a_worker_hands_its_error_to_the_launcher_and_prints_nothing(tmp_path, monkeypatch,
                                                                    capsys):
    from interp.cli.common import run_cli
    from interp.errors import InterpError

    def refuse(argv):
        raise InterpError("no such thing")

    def crash(argv):
        raise ZeroDivisionError("boom")

    class Left(BaseException):
        pass

    def leave(code):                # the worker's os._exit, kept from ending pytest's process
        raise Left(code)

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("INTERP_LAUNCH_DIR", str(tmp_path))
    monkeypatch.setattr(os, "_exit", leave)
    with pytest.raises(Left) as left:
        run_cli(refuse, [])
    assert left.value.args == (2,)
    assert capsys.readouterr().err == ""
    t, kind, text = (tmp_path / "1.err").read_text().split(" ", 2)
    assert (kind, text) == ("input", "no such thing") and abs(float(t) - time.time()) < 60
    with pytest.raises(Left) as left:
        run_cli(crash, [])
    assert left.value.args == (1,)
    assert capsys.readouterr().err == ""
    assert run_cli(lambda argv: 0, []) == 0                # a worker that succeeded returns
    assert (tmp_path / "1.err").read_text().split(" ", 2)[1:] == ["other",
        "ZeroDivisionError: boom (at test_launch.py:%d)" % (crash.__code__.co_firstlineno + 1)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["1.err"]
    monkeypatch.delenv("INTERP_LAUNCH_DIR")                 # not a worker: as before
    assert run_cli(refuse, []) == 2
    assert capsys.readouterr().err == "error: no such thing\n"
    with pytest.raises(ZeroDivisionError):
        run_cli(crash, [])


WORKER = """
import atexit, os, signal, sys
from interp import launch
from interp.cli.common import run_cli
from interp.errors import InterpError
atexit.register(lambda: print("a line written at the interpreter's exit", file=sys.stderr))
if sys.argv[1] == "stopped-while-failing":
    hand_over = launch.worker_error
    def stopped_then(*a, **k):       # the launcher's stop, as the failure is handed over
        os.kill(os.getpid(), signal.SIGTERM)
        return hand_over(*a, **k)
    launch.worker_error = stopped_then
def fn(argv):
    if sys.argv[1] in ("raise", "stopped-while-failing"):
        raise RuntimeError("planted")
    if sys.argv[1] == "refuse":
        raise InterpError("refused")
    return 0
sys.exit(run_cli(fn, None))
"""


@pytest.mark.parametrize("how,code,written", [
    ("raise", 1, ["0.err"]), ("refuse", 2, ["0.err"]), ("stopped-while-failing", 143, []),
    ("succeed", 0, [])])
def test_a_worker_that_failed_leaves_without_the_interpreters_exit(how, code, written,
                                                                   tmp_path):
    """What the interpreter's exit would print after a worker's failure is handed over (here
    an atexit hook; in a real launch the C++ runtime tearing down a process group whose peer
    is gone: `terminate called without an active exception`) never reaches the terminal: the
    worker leaves at once. So does a worker the launcher stops (SIGTERM) while it hands over
    its failure (a gather broken by the other worker's exit, then the stop): no traceback.
    A worker that succeeded exits as any process does."""
    r = subprocess.run([sys.executable, "-c", WORKER, how], capture_output=True, text=True,
                       timeout=120, env=_env(INTERP_LAUNCH_DIR=str(tmp_path), RANK="0"))
    assert r.returncode == code, r.stderr[-2000:]
    assert r.stderr == ("" if code else "a line written at the interpreter's exit\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == written


def test_the_process_group_gets_the_collectives_timeout(monkeypatch):
    import accelerate

    import interp.distributed as dist

    made = []

    class Recorder:
        def __init__(self, **kw):
            made.append(kw)

    monkeypatch.setattr(accelerate, "PartialState", Recorder)
    monkeypatch.setattr(dist, "_STATE", None)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("INTERP_DIST_TIMEOUT", "42.5")
    dist.state()
    monkeypatch.setattr(dist, "_STATE", None)
    monkeypatch.delenv("INTERP_DIST_TIMEOUT")
    dist.state()
    monkeypatch.setattr(dist, "_STATE", None)
    assert [m["timeout"] for m in made] == [timedelta(seconds=42.5),
                                            timedelta(seconds=dist.TIMEOUT_S)]


def test_the_backend_follows_the_commands_device_not_the_machine(monkeypatch):
    """On a machine with CUDA, a sweep on the CPU takes gloo (cpu=True), one on CUDA takes
    NCCL (cpu=False); without CUDA it is always gloo."""
    import accelerate
    import torch

    import interp.distributed as dist

    made = []

    class Recorder:
        def __init__(self, **kw):
            made.append(kw["cpu"])

    monkeypatch.setattr(accelerate, "PartialState", Recorder)
    monkeypatch.setenv("WORLD_SIZE", "2")
    for cuda, device in ((True, "cpu"), (True, "cuda:0"), (False, "cpu")):
        monkeypatch.setattr(torch.cuda, "is_available", lambda c=cuda: c)
        monkeypatch.setattr(dist, "_STATE", None)
        monkeypatch.setattr(dist, "_DEVICE", None)
        dist.use_device(device)
        dist.state()
    monkeypatch.setattr(dist, "_STATE", None)
    assert made == [True, False, True]


def test_an_interleaved_share_deals_the_units_in_turn(monkeypatch):
    import interp.distributed as dist

    class Second:                                # the second of three launched processes
        num_processes, process_index = 3, 1

        def split_between_processes(self, units):
            raise AssertionError("not reached")

    monkeypatch.setattr(dist, "_STATE", Second())
    monkeypatch.setenv("WORLD_SIZE", "3")
    assert dist.shard(list("abcdefg"), interleave=True) == ["b", "e"]
