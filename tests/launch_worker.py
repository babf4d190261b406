"""Run by tests/test_launch.py as `python -m launch_worker --nproc 2 ...`: a sweep of --units
numbers shared over the processes (interp.distributed), each squared, gathered in every
process; the main one writes them to --out/sweep.txt under the output lock, atomically (the
same path as the sweep commands, without a model)."""

import sys

from interp.cli.common import Parser, add_options, check_outputs, run_cli


def _main(argv) -> int:
    from interp import distributed as dist
    from interp.io import output_lock, replace_dir_atomic
    from interp.launch import relaunch

    p = Parser(prog="python -m launch_worker")
    add_options(p, out="write sweep.txt here", device=False, nproc=True)
    p.add_argument("--units", type=int, default=4)
    a = p.parse_args(argv)
    out = check_outputs(a, "sweep.txt", ("sweep.txt",))
    if (rc := relaunch(a, argv, "launch_worker")) is not None:
        return rc
    with output_lock(out):
        squares = dist.gather([u * u for u in dist.shard(range(a.units), "numbers")])
        print(" ".join(map(str, squares)))
        if out is not None:
            replace_dir_atomic(lambda tmp: (tmp / "sweep.txt").write_text(str(squares)), out)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(_main, None))
