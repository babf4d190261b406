"""Sweeps shared out over processes, through accelerate.

A command started by `accelerate launch` or `torchrun` (`--nproc-per-node N`, `--nnodes M`)
runs once per process; each process computes its share of a sweep's units and every process
receives all the results, in the order one process would have made them:

    units = ...                                   # the same list in every process
    mine = shard(units)                           # this process's share (contiguous)
    results = gather([work(u) for u in mine])     # every process's results, in units' order

Run as one plain process (the default), nothing is initialised: `shard` returns the list
itself and `gather` its argument, so a single run is exactly what it was. Launched, the
processes talk over gloo on CPU and NCCL on GPUs (accelerate's `PartialState` picks the
backend). Only the main process writes outputs (`is_main`).

A unit is the smallest piece whose result must not depend on what else runs beside it (for
patching: one batch of patches as one process would batch them), so that N processes give
results identical to one.
"""

from __future__ import annotations

import os
import sys
from typing import Sequence

#: set by scripts/bench_distributed.py: each process appends "RANK EVENT TIME CPU-TIME" lines to
#: this file at its start, around the process group's start, at each share and each gather
#: (also as one process), and at its exit: where the time of a run goes
BENCH_LOG = "INTERP_BENCH_LOG"


def mark(event: str) -> None:
    """Append one event to the BENCH_LOG file when it is set (else nothing)."""
    path = os.environ.get(BENCH_LOG)
    if path:
        import time

        with open(path, "a") as f:
            f.write(f"{os.environ.get('RANK', '-')} {event} {time.time():.6f} "
                    f"{time.process_time():.6f}\n")


if os.environ.get(BENCH_LOG):
    import atexit

    mark("start")
    atexit.register(mark, "exit")


def launched() -> bool:
    """Whether this process is one of several started by a launcher (WORLD_SIZE > 1)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1")) > 1
    except ValueError:
        return False


_STATE = None

#: seconds a collective (gather, barrier) waits for the other processes before it fails
#: (torch's default is 30 min on gloo); INTERP_DIST_TIMEOUT sets another bound
TIMEOUT_S = 600


def timeout_s() -> float:
    """The collectives' timeout: INTERP_DIST_TIMEOUT seconds when set, else TIMEOUT_S."""
    try:
        value = float(os.environ.get("INTERP_DIST_TIMEOUT", TIMEOUT_S))
    except ValueError:
        value = TIMEOUT_S
    return value if value > 0 else TIMEOUT_S


def state():
    """accelerate's PartialState when launched (initialised once, its process group's
    collectives bounded by `timeout_s`), else None."""
    global _STATE
    if not launched():
        return None
    if _STATE is None:
        from datetime import timedelta

        import torch
        from accelerate import PartialState

        # gloo unless the command computes on CUDA (then NCCL, each process on the GPU of its
        # local rank); on a machine without CUDA accelerate needs cpu=True for gloo
        on_cuda = torch.cuda.is_available() and (_DEVICE is None or _DEVICE.startswith("cuda"))
        mark("init")
        _STATE = PartialState(cpu=not on_cuda, timeout=timedelta(seconds=timeout_s()))
        mark("ready")
    return _STATE


_DEVICE: str | None = None   # the command's --device, once it is known (`use_device`)


def use_device(device) -> None:
    """Record the device the command computes on, before any collective starts: a sweep on
    the CPU takes a gloo group even on a machine with GPUs (NCCL would put every process on
    a GPU); a sweep on CUDA takes NCCL. Unrecorded: NCCL wherever CUDA is present."""
    global _DEVICE
    _DEVICE = str(device)


def rank() -> int:
    st = state()
    return 0 if st is None else int(st.process_index)


def size() -> int:
    st = state()
    return 1 if st is None else int(st.num_processes)


def is_main() -> bool:
    """True in the process that writes outputs (the only one when not launched)."""
    return rank() == 0


def shard(units: Sequence, what: str = "units", interleave: bool = False) -> list:
    """This process's contiguous share of `units`: the first `len % size` processes get one
    more (accelerate's `split_between_processes`). Fewer units than processes is refused
    (one line naming `what`): a process with nothing to do is a launch to correct. With
    `interleave`, process k gets units k, k+N, k+2N, ...: shares of equal cost when the
    units' costs drift along the list; only for results gathered by key (`gather_into`),
    as `gather` concatenates the shares in process order."""
    mark("shard")
    st = state()
    units = list(units)
    if st is None:
        return units
    if 0 < len(units) < st.num_processes:
        from interp.errors import InterpError

        raise InterpError(f"{len(units)} {what} cannot be shared by {st.num_processes} "
                          f"processes; launch at most {len(units)} (--nproc, or torchrun's "
                          "--nproc-per-node) or ask for a larger sweep")
    if interleave:      # dealt in turn: equal shares when the units' costs rise or fall
        return units[st.process_index::st.num_processes]
    with st.split_between_processes(units) as mine:
        return list(mine)


def gather(part: list) -> list:
    """Every process's `part`, concatenated in process order (so in the order of the units
    `shard` split), in every process; `part` itself when not launched."""
    st = state()
    if st is None:
        return list(part)
    planted_failure()
    from accelerate.utils import gather_object

    return list(gather_object(list(part)))


def gather_into(table, keys) -> None:
    """Launched: every process's entries `table[key]` (tensors) for its own `keys`, written
    into every process's `table`, so each ends with the whole sweep. A no-op otherwise."""
    mark("gather")
    _exchange(table, keys)
    mark("gathered")


def _exchange(table, keys) -> None:
    if not launched():
        return
    for key, value in gather([(k, table[k].cpu()) for k in keys]):
        table[key] = value.to(table.device)


#: test-only: "RANK:kill" (SIGKILL) or "RANK:raise" (an exception) makes that process fail
#: when it reaches its first gather, its share computed and the others waiting on it
PLANT = "INTERP_TEST_FAIL"


def planted_failure() -> None:
    """The one place that reads PLANT (tests of a process failing in the middle of a run)."""
    spec = os.environ.get(PLANT)
    if not spec:
        return
    who, _, what = spec.partition(":")
    if who != os.environ.get("RANK"):
        return
    if what == "kill":
        import signal

        os.kill(os.getpid(), signal.SIGKILL)
    raise RuntimeError(f"failure planted by {PLANT} in process {who}")


def barrier() -> None:
    """Wait for every process (no-op when not launched)."""
    st = state()
    if st is not None:
        st.wait_for_everyone()


def one_process_only(command: str) -> None:
    """Refuse, in one line, a launch over several processes of a command that does not
    share its work out (each process would run the whole of it and race for its outputs)."""
    if launched():
        from interp.errors import InterpError

        raise InterpError(f"{command} runs as one process; start it without torchrun or "
                          "accelerate launch (its work is not shared over processes)")


# ---- streamed sweeps and sweeps whose units the caller groups (helper "shard") -------------

def in_rounds(units: Sequence, work):
    """Yield `(unit, work(unit))` for every unit, in the units' order, in every process.

    Not launched: the plain loop, each unit's work done when it is reached. Launched: the
    units go out in rounds of one unit per process (process p takes unit r * size + p of
    round r), and each round's results are gathered on every process before the next round
    starts, so no process holds more than one round of results (activation collection streams
    batches to disk this way). A round may leave processes idle, the last one or a sweep
    smaller than the processes: nothing is refused, the idle ones only wait."""
    units = list(units)
    st = state()
    if st is None:
        for u in units:
            yield u, work(u)
        return
    size_, me = int(st.num_processes), int(st.process_index)
    for r in range(0, len(units), size_):
        mine = [(r + me, work(units[r + me]))] if r + me < len(units) else []
        for i, result in gather(mine):
            yield units[i], result


def shard_groups(groups: Sequence[Sequence], what: str = "units") -> list:
    """This process's share of `groups` (lists of items that must run together), flattened
    and in the items' order: a sweep whose unit is a group of items (knockouts whose
    conditions one process stacks into the same forward passes) shares out whole groups."""
    mine = shard([list(g) for g in groups], what)
    return [x for g in mine for x in g]


def quiet_unless_main():
    """Launched over several processes: only the main one prints its
    results; the others' stdout goes nowhere (their errors still reach stderr). Returns
    (the stdout to restore, the sink put in its place), or None."""
    if not launched() or is_main():
        return None
    sink = open(os.devnull, "w")
    old, sys.stdout = sys.stdout, sink
    return old, sink
