"""`--nproc N`: a command that shares its sweep out (`interp.distributed`) starts itself over
N processes, the same as `torchrun --standalone --nproc-per-node N -m MODULE ARGS`.

    python -m circuits.patch quadratic-small --sites head_pos --nproc 2

A command takes the option through `add_options(..., nproc=True)` (interp.cli.common) and
hands its parsed arguments to `relaunch` once its cheap checks are done, before it loads
anything:

    if (rc := relaunch(a, argv, "circuits.patch")) is not None:
        return rc

`--nproc 1` (the default) returns None there: the command goes on as one plain process, as it
always did. `--nproc N` starts N workers through torch's own launcher (`elastic_launch`, a
standalone c10d rendezvous on a free port, no restarts; gloo on CPU, NCCL on GPUs) running
`python -m MODULE ARGS` with the same arguments, waits for them, and returns the exit status.
In a worker (and under `torchrun` or `accelerate launch` started by hand) the same call
returns None: the process is one of the N and runs its share.

Failures. The workers started here do not print their errors: each writes its one `error:`
line into a file of the launch (`INTERP_LAUNCH_DIR`, `worker_error`), then leaves at once
(`run_worker`), and the launcher prints one line for the whole run, exit status 2. When a
worker fails, torch's launcher stops the others (SIGTERM, then SIGKILL after `SHUTDOWN_S`);
collectives also time out
(`interp.distributed.TIMEOUT_S`). Only the main worker writes outputs, atomically at the end,
so a run that fails anywhere leaves no output and no temporary file. The workers' own
stderr (warnings, progress of the others) goes to the launch's files except the main
worker's, which reaches the terminal.

Threads: each worker gets OMP_NUM_THREADS = the usable cores // N (at least 1) unless the
caller set it; a plain process keeps torch's default (all cores).
"""

from __future__ import annotations

import argparse
import os
import sys

#: set by `launch` for its workers: the folder where each writes its error line
ENV_DIR = "INTERP_LAUNCH_DIR"
#: the most processes `--nproc` accepts on any machine
MAX_NPROC = 256
#: seconds torch's launcher waits for the other workers to stop after a failure (SIGTERM),
#: before it kills them (SIGKILL)
SHUTDOWN_S = 5


def cores() -> int:
    """The CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def nproc_value(text: str) -> int:
    """An argparse type: a whole number of processes from 1 to MAX_NPROC."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number; give how many "
                                         "processes share the sweep (1 to run as one)") from None
    if not 1 <= v <= MAX_NPROC:
        raise argparse.ArgumentTypeError(f"{v} is outside 1 to {MAX_NPROC}; give how many "
                                         "processes share the sweep (1, the default, runs "
                                         "as one process)")
    return v


def add_option(p: argparse.ArgumentParser) -> None:
    """`--nproc N` (default 1)."""
    p.add_argument("--nproc", type=nproc_value, default=1, metavar="N",
                   help="share the sweep over N processes on this machine (default 1: one "
                   "process); the same as torchrun --standalone --nproc-per-node N; at most "
                   "the CPU cores, or the GPUs with --device cuda")


def check(nproc: int, device: str = "cpu", units: int | None = None,
          what: str = "units") -> None:
    """Refuse, in one line, a --nproc this machine or this sweep cannot use: more processes
    than CPU cores (or than GPUs with a CUDA --device), or (`units`, when the command knows
    its count cheaply) more processes than units to share."""
    from interp.errors import InterpError

    if str(device).startswith("cuda"):
        import torch

        gpus = torch.cuda.device_count()
        if nproc > gpus:
            raise InterpError(f"--nproc {nproc} is more than the {gpus} GPUs of this machine; "
                              f"give --nproc {max(gpus, 1)} or fewer (one process per GPU)")
    elif nproc > cores():
        raise InterpError(f"--nproc {nproc} is more than the {cores()} CPU cores this process "
                          f"may use; give --nproc {cores()} or fewer (more processes than "
                          "cores only share the same cores)")
    if units is not None and 0 < units < nproc:
        raise InterpError(f"{units} {what} cannot be shared by {nproc} processes; give "
                          f"--nproc {units} or fewer, or ask for a larger sweep")


def relaunch(args, argv, module: str, *, units: int | None = None,
             what: str = "units", outputs=None) -> int | None:
    """Start `python -m module argv` over `args.nproc` processes and return its exit status,
    or None when this process should run the command itself (--nproc 1, or this process is
    already one of the launched workers). `outputs`: the (option, path) pairs the command
    writes, when they are not just --out and --json as given (e.g. a default folder)."""
    from interp import distributed
    from interp.errors import InterpError

    n = getattr(args, "nproc", 1) or 1
    if distributed.launched():
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if n not in (1, world):
            raise InterpError(f"--nproc {n} under a launcher of {world} processes; leave "
                              "--nproc out when starting the command with torchrun or "
                              "accelerate launch")
        return None
    if n == 1:
        return None
    check(n, getattr(args, "device", "cpu"), units, what)
    if outputs is None:
        outputs = [(o, getattr(args, k, None)) for o, k in (("--out", "out"), ("--json", "json"))]
    return launch(module, list(sys.argv[1:] if argv is None else argv), n,
                  [(o, path) for o, path in outputs if path],
                  gpus=str(getattr(args, "device", "cpu")).startswith("cuda"))


def launch(module: str, argv: list[str], n: int, outputs=(), gpus: bool = False) -> int:
    """Run `python -m module *argv` as n workers through torch's launcher; 0 when every worker
    succeeded, else 2 after one `error:` line on stderr. SIGINT and SIGTERM stop the workers
    and are raised again here (KeyboardInterrupt, interp.cli.common.Terminated). After a
    failure the command's `outputs` ((option, path) pairs) are cleared of what a killed main
    worker may have left: its lock and its temporaries (`clean_up`). With `gpus`, each worker
    sees only its own GPU, as `cuda:0` (CUDA_VISIBLE_DEVICES), so `--device cuda` puts
    the model of worker k on GPU k."""
    import logging
    import shutil
    import signal
    import tempfile
    import uuid

    from torch.distributed.elastic.multiprocessing import DefaultLogsSpecs, SignalException, Std
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    if os.environ.get(ENV_DIR):            # never a launch inside a launch (a fork bomb)
        from interp.errors import InterpError

        raise InterpError(f"--nproc {n} inside a process that --nproc started; leave "
                          "--nproc out of the workers' command lines")
    tmp = tempfile.mkdtemp(prefix="interp-launch-")
    saved = {k: os.environ.get(k) for k in (ENV_DIR, "OMP_NUM_THREADS")}
    os.environ[ENV_DIR] = tmp
    if saved["OMP_NUM_THREADS"] is None:
        os.environ["OMP_NUM_THREADS"] = str(max(1, cores() // n))
    config = LaunchConfig(
        min_nodes=1, max_nodes=1, nproc_per_node=n, run_id=str(uuid.uuid4()),
        rdzv_backend="c10d", rdzv_endpoint="localhost:0", max_restarts=0,
        monitor_interval=0.1, start_method="spawn", shutdown_timeout=SHUTDOWN_S,
        virtual_local_rank=gpus,
        # the main worker's stderr reaches the terminal; the others' goes to files
        logs_specs=DefaultLogsSpecs(log_dir=os.path.join(tmp, "logs"),
                                    redirects={r: Std.ERR for r in range(1, n)}))
    logging.disable(logging.CRITICAL)      # torch's launcher logs each stop and failure
    from interp.distributed import mark

    mark("launch")
    try:
        elastic_launch(config, sys.executable)("-m", module, *argv)
        return 0
    except ChildFailedError as e:
        clean_up(outputs)
        print(f"error: {failure_line(e.failures, tmp, n)}", file=sys.stderr)
        return 2
    except SignalException as e:           # the launcher's own handlers stopped the workers
        clean_up(outputs)
        if e.sigval == signal.SIGINT:
            raise KeyboardInterrupt from None
        from interp.cli.common import Terminated

        raise Terminated() from None
    except Exception as e:                 # the launcher itself (its rendezvous, a spawn)
        from interp.cli.common import unexpected

        clean_up(outputs)
        print(f"error: torch's launcher failed before the workers ran: {unexpected(e)}",
              file=sys.stderr)
        return 2
    finally:
        logging.disable(logging.NOTSET)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        shutil.rmtree(tmp, ignore_errors=True)


def clean_up(outputs) -> None:
    """Once the workers are gone: take each output's lock (free: its holder is dead), which
    removes our stale temporaries beside it and in it, then let it go (the lock file too)."""
    from interp.errors import InterpError
    from interp.io import output_lock

    for option, path in outputs:
        try:
            with output_lock(path, option, clean=os.path.isdir(path)):
                pass
        except (InterpError, OSError):
            pass                # another run holds it now: its files are its own


STOPPED = "stopped"     # what a worker stopped by the launcher writes (not a cause)


def in_worker() -> bool:
    """Whether this process is a worker that `launch` started (its folder still there)."""
    where = os.environ.get(ENV_DIR)
    return bool(where) and os.environ.get("RANK") is not None and os.path.isdir(where)


def run_worker(run, fn, argv) -> int:
    """In a worker `launch` started: `run(fn, argv)` (interp.cli.common's one-line handling),
    then, when it failed or was stopped, leave at once (`os._exit`, the streams flushed; the
    command's own `finally`s, locks and temporaries are done by then). The interpreter's and
    the C++ runtime's exit would tear down a process group whose peers are gone, and could
    print on the terminal (the main worker's stderr reaches it): `terminate called without an
    active exception` for a communication thread still running. The launcher's stop (SIGTERM,
    raised as `Terminated`) arriving while the worker hands over its failure, after `run`'s
    handlers caught it, ends it the same way, with no traceback."""
    from interp.cli.common import Terminated

    try:
        code = run(fn, argv)
    except Terminated:
        code = 143
    except KeyboardInterrupt:
        code = 130
    if code:
        import signal

        try:                            # a second stop changes nothing now
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        except (ValueError, OSError):
            pass
        from interp.distributed import mark

        mark("exit")                    # the benchmark's log (scripts/bench_distributed.py)
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(code)
    return code


def worker_error(line: str, refusal: bool = False) -> bool:
    """In a worker started by `launch`: write its one error line (without `error: `) where
    the launcher reads it, and return True (the caller prints nothing); False elsewhere.
    `refusal`: the line refuses the command's input (an InterpError): the launcher gives it
    as one process would (`failure_line`)."""
    if not in_worker():
        return False
    import time

    path = os.path.join(os.environ[ENV_DIR], f"{os.environ['RANK']}.err")
    with open(path + ".part", "w") as f:
        f.write(f"{time.time():.6f} {'input' if refusal else 'other'} {line}")
    os.replace(path + ".part", path)
    return True


def failure_line(failures: dict, where: str, n: int) -> str:
    """The one line that says why a launch failed (without `error: `), from the workers'
    error files and exit codes (`failures`: rank -> torch's ProcessFailure). A line every
    failed worker wrote alike is given as it is, and so is a first cause that refuses the
    input (an InterpError: what one process would say of the same arguments; the others may
    be stopped before they say it too, as with a sweep too small to share); any other failure
    of some workers names the first of them."""
    import signal

    lines = {}                                  # rank -> (time written, line, its kind)
    for r in range(n):
        try:
            with open(os.path.join(where, f"{r}.err")) as f:
                t, _, rest = f.read().strip().partition(" ")
                kind, _, text = rest.partition(" ")
            lines[r] = (float(t), text, kind)
        except (OSError, ValueError):
            pass
    causes = {r: tl for r, tl in lines.items() if tl[1] != STOPPED}
    if len(causes) == n and len({text for _, text, _ in causes.values()}) == 1:
        return causes[0][1]                     # every worker refused alike: as one would
    # the first cause: a line written, or a death by a signal the launcher did not send
    # (torch's timestamps are whole seconds, taken within a tenth of one after the death:
    # a second earlier is before it; the launcher's own SIGKILL comes SHUTDOWN_S later)
    first = [(t, 0, r, text, kind) for r, (t, text, kind) in causes.items()]
    for r, f in failures.items():
        code = f.exitcode
        if code is not None and code < 0 and -code != signal.SIGTERM and r not in causes:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = f"signal {-code}"
            first.append((float(f.timestamp) - 1, -1, r, f"killed by {name}", "other"))
    stop = "the other processes were stopped and nothing was written"
    if first:
        _, _, r, text, kind = min(first)
        return text if kind == "input" else f"process {r} of {n}: {text}; {stop}"
    r = min(failures) if failures else 0
    tail = _last_line(where, r)
    code = failures[r].exitcode if r in failures else "?"
    return (f"process {r} of {n} exited with status {code}"
            + (f" ({tail})" if tail else "") + f"; {stop}")


def _last_line(where: str, rank: int) -> str:
    """The last non-empty line a worker wrote on its stderr file (none for the main one)."""
    import glob

    for path in glob.glob(os.path.join(where, "logs", "**", str(rank), "stderr.log"),
                          recursive=True):
        try:
            with open(path, errors="replace") as f:
                tail = [ln.strip() for ln in f.read().splitlines()[-20:] if ln.strip()]
        except OSError:
            continue
        if tail:
            from interp.cli.common import one_line

            return one_line(tail[-1])[:300]
    return ""
