"""The speed-up of an exact patching sweep shared over processes (interp.distributed).

Runs `python -m circuits.patch MODEL --sites SITES --no-attribution` once as one process and
once under `torchrun --standalone --nproc-per-node N` (gloo on CPU), each process on one
thread, back to back; prints both wall times, the ratio, and whether the two runs wrote the
same CSV files (they must: the processes share out whole batches).

    python scripts/bench_distributed.py [--model quadratic-small] [--sites head_pos]
                                        [--pairs 32] [--nproc 2]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run(cmd: list[str], env: dict) -> float:
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    dt = time.perf_counter() - t0
    if r.returncode != 0:
        sys.exit(f"error: {' '.join(cmd[:6])} ... failed: {r.stderr.strip()[-400:]}")
    return dt


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="quadratic-small")
    p.add_argument("--sites", default="head_pos")
    p.add_argument("--pairs", type=int, default=32)
    p.add_argument("--nproc", type=int, default=2)
    a = p.parse_args(argv)
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK")}
    env.update(HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    args = ["-m", "circuits.patch", a.model, "--sites", a.sites, "--count", str(a.pairs),
            "--no-attribution", "--quiet"]
    with tempfile.TemporaryDirectory() as tmp:
        one, many = Path(tmp) / "one", Path(tmp) / "many"
        t1 = run([sys.executable, *args, "--out", str(one)], env)
        tn = run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                  f"--nproc-per-node={a.nproc}", *args, "--out", str(many)], env)
        same = all((one / f.name).read_bytes() == f.read_bytes()
                   for f in many.iterdir() if f.suffix == ".csv")
    print(f"{a.model} exact patching ({a.sites}, {a.pairs} pairs), wall time with start-up:")
    print(f"  1 process   {t1:7.1f} s")
    print(f"  {a.nproc} processes {tn:7.1f} s  ({t1 / tn:.2f}x); CSV files identical: {same}")
    try:
        print(f"  load average before the end: {os.getloadavg()[0]:.1f} on "
              f"{os.cpu_count()} cores")
    except OSError:
        pass
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
