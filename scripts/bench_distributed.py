"""The speed-up of an exact patching sweep shared over processes (`--nproc`), and where the
time goes.

Runs `python -m circuits.patch MODEL --sites SITES --count PAIRS --no-attribution` as one
process with torch's default threads (what a user gets: one per core), as one process on
one thread, and with `--nproc N` (each worker on cores // N threads), --repeat times in turn;
prints the wall times (best and median), the speed-ups, whether every run wrote the same
CSV files (they must: the processes share out whole batches), and a profile of each kind of
run from the events the processes log (`interp.distributed.mark`):

    start     from the command's start to its first line of our code (Python, the launcher)
    set-up    from there to the first sweep's share: imports, model, pairs, process group
    sweep     computing the shares (the only part N processes divide)
    gather    waiting for the other processes' shares and receiving them
    between   from one site's gather to the next site's share (its clean and corrupted runs,
              the printed table)
    end       from the last gather to the exit (reports, files)

and the best N processes could do by Amdahl's law: everything but the sweep as one
process takes, plus the sweep / N.

    python scripts/bench_distributed.py [--model quadratic-small] [--sites head_pos]
                                        [--pairs 32] [--nproc 2] [--repeat 1]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(cmd: list[str], env: dict, log: Path) -> tuple[float, float]:
    """(wall seconds, start time) of one run, its events logged to `log`."""
    env = {**env, "INTERP_BENCH_LOG": str(log)}
    t0 = time.time()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    dt = time.time() - t0
    if r.returncode != 0:
        sys.exit(f"error: {' '.join(cmd[:6])} ... failed: {r.stderr.strip()[-400:]}")
    return dt, t0


def phases(events: list, clock: int, t0: float, total: float) -> dict:
    """One process's phases on one clock (0: wall time from the run's start t0, 1: its own
    CPU time), `total` the clock's value at the end of the run."""
    times = dict(start=None, setup=0.0, init=0.0, sweep=0.0, gather=0.0, between=0.0)
    shard = last = init_at = gat = None
    for event, *clocks in events:
        t = clocks[clock] - (t0 if clock == 0 else 0.0)
        if event == "start" and times["start"] is None:
            times["start"] = t
        elif event == "init":
            init_at = t
        elif event == "ready":
            times["init"] += t - init_at
        elif event == "shard":
            if last is None and shard is None:
                times["setup"] = t - times["start"]
            elif last is not None:
                times["between"] += t - last
            shard = t
        elif event == "gather":
            times["sweep"] += t - shard
            gat = t
        elif event == "gathered":
            times["gather"] += t - gat
            last = t
    times["setup"] -= times["init"]
    times["end"] = total - last
    return times


def profile(log: Path, t0: float, wall: float) -> dict:
    """The phases of one run, wall ("wall") and CPU ("cpu") seconds, from its event log: for
    a launch, those of the worker whose sweep ended last, and the launcher's own start."""
    ranks: dict[str, list] = {}
    for line in log.read_text().splitlines():
        rank, event, t, cpu = line.split()
        ranks.setdefault(rank, []).append((event, float(t), float(cpu)))
    workers = {r: ev for r, ev in ranks.items() if r != "-"} or {"-": ranks["-"]}
    walls, cpus = [], []
    for ev in workers.values():
        exit_cpu = [c for e, _, c in ev if e == "exit"]
        walls.append(phases(ev, 0, t0, wall))
        cpus.append(phases(ev, 1, t0, exit_cpu[-1] if exit_cpu else float("nan")))
    k = max(range(len(walls)), key=lambda i: walls[i]["setup"] + walls[i]["sweep"])
    launcher = [(t - t0, c) for e, t, c in ranks.get("-", []) if e == "launch"]
    if launcher and len(workers) > 1:
        walls[k]["launcher"], cpus[k]["launcher"] = launcher[0]
    return {"wall": walls[k], "cpu": cpus[k]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="quadratic-small")
    p.add_argument("--sites", default="head_pos")
    p.add_argument("--pairs", type=int, default=32)
    p.add_argument("--nproc", type=int, default=2)
    p.add_argument("--repeat", type=int, default=1, help="runs of each kind, in turn")
    a = p.parse_args(argv)
    env = {k: v for k, v in os.environ.items()
           if k not in ("WORLD_SIZE", "RANK", "OMP_NUM_THREADS", "INTERP_BENCH_LOG")}
    env.update(HF_HUB_OFFLINE="1", PYTHONPATH=os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]))
    args = ["-m", "circuits.patch", a.model, "--sites", a.sites, "--count", str(a.pairs),
            "--no-attribution", "--quiet"]
    kinds = {"1 process, default threads": ([], {}),
             "1 process, 1 thread": ([], {"OMP_NUM_THREADS": "1"}),
             f"--nproc {a.nproc}": (["--nproc", str(a.nproc)], {})}
    walls = {k: [] for k in kinds}
    profiles = {k: [] for k in kinds}
    loads = []
    same = True
    with tempfile.TemporaryDirectory() as tmp:
        ref = None
        for i in range(a.repeat):
            for j, (kind, (extra, more)) in enumerate(kinds.items()):
                out, log = Path(tmp) / f"out{i}{j}", Path(tmp) / f"log{i}{j}"
                loads.append(os.getloadavg()[0])
                wall, t0 = run([sys.executable, *args, *extra, "--out", str(out)],
                               {**env, **more}, log)
                walls[kind].append(wall)
                profiles[kind].append(profile(log, t0, wall))
                csvs = {f.name: f.read_bytes() for f in out.iterdir() if f.suffix == ".csv"}
                ref = ref or csvs
                same = same and csvs == ref
    print(f"{a.model} exact patching ({a.sites}, {a.pairs} pairs), wall time with start-up, "
          f"{a.repeat} run(s) of each; CSV files identical in every run: {same}")
    best = {k: min(v) for k, v in walls.items()}
    base = list(kinds)[:2]
    for kind, v in walls.items():
        ratio = "" if kind in base else "  " + ", ".join(
            f"{best[b] / best[kind]:.2f}x over {b.split(', ')[1]}" for b in base)
        print(f"  {kind:28s} best {best[kind]:6.1f} s  median {statistics.median(v):6.1f} s"
              f"{ratio}")
    cols = ("launcher", "start", "setup", "init", "sweep", "gather", "between", "end")
    for clock in ("wall", "cpu"):
        print(f"profile of the best run of each kind, {clock} seconds (a launch: its slowest "
              "worker; launcher: the launcher's own start before the workers')")
        print(f"  {'':28s}" + "".join(f"{c:>9s}" for c in cols))
        for kind in kinds:
            prof = profiles[kind][walls[kind].index(best[kind])][clock]
            print(f"  {kind:28s}" + "".join(f"{prof.get(c, 0.0):9.2f}" for c in cols))
    for b in base:
        prof = profiles[b][walls[b].index(best[b])]["wall"]
        serial = best[b] - prof["sweep"]
        amdahl = serial + prof["sweep"] / a.nproc
        print(f"  Amdahl from '{b}': serial {serial:.1f} s + sweep {prof['sweep']:.1f} s / "
              f"{a.nproc} = {amdahl:.1f} s, at best {best[b] / amdahl:.2f}x")
    # on an idle machine a one-thread process's wall time is about its CPU time; a launch's
    # is the launcher's own start plus its slowest worker's CPU time (each on its own core)
    cpu = {k: profiles[k][walls[k].index(best[k])]["cpu"] for k in kinds}
    phase_cols = ("start", "setup", "init", "sweep", "gather", "between", "end")
    one = sum(cpu[base[1]][c] for c in phase_cols)
    many = cpu[list(kinds)[2]].get("launcher", 0.0) + \
        sum(cpu[list(kinds)[2]][c] for c in phase_cols)
    print(f"  from CPU times (an idle machine's estimate, one-thread processes): 1 process "
          f"{one:.1f} s, --nproc {a.nproc} {many:.1f} s (launcher + slowest worker): "
          f"{one / many:.2f}x")
    print(f"  load average (1 min) before the runs: {min(loads):.1f} to {max(loads):.1f} on "
          f"{os.cpu_count()} cores")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
