"""The three sweeps besides exact patching, on a tiny decoder checkpoint, each written under OUT
by the main process only: run by tests/test_distributed_sweeps.py once per process under
torchrun (argv: CKPT OUT) and once as one process (`main`, in the test's own process).

- classify/: `python -m interp.classify_heads --verify` (heads.csv, heads.json): the heads'
  knockouts shared out in groups (`circuits.ablation.route_shards`), with the reads test;
- probe/: `python -m probes --causal-at =` of one target at both layers (causal.csv ...):
  the causal cells shared out, and the activations collected in memory in rounds;
- store/: `probes.collect(..., folder=)`, 26 examples in batches of 6: five batches, so the
  last round leaves one process idle.
"""

import functools
import sys
from pathlib import Path

import torch

import circuits.ablation.routes as routes
import interp
import interp.distributed as dist
from circuits.ablation.reads import find_donors
from interp.classify_heads import main as classify
from probes import collect
from probes.__main__ import main as probe


def main(ckpt: str, out: Path) -> int:
    """The three sweeps of CKPT into OUT (written by the main process); 0, or a command's
    exit status."""
    # the reads test's same-layout donors come from a generated pool (3,000 by default,
    # prepared again for every head): 40 keep this test short, the same pool in every run
    plain = routes.find_donors
    routes.find_donors = functools.partial(find_donors, pool=40)
    try:
        if dist.is_main():
            out.mkdir(parents=True, exist_ok=True)
            (out / "size").write_text(str(dist.size()))
        for run, argv in ((classify, [ckpt, "--n", "6", "--resamples", "5", "--verify",
                                      "--verify-n", "4", "--controls", "1", "--no-report",
                                      "--format", "csv", "--quiet", "--out",
                                      str(out / "classify")]),
                          (probe, [ckpt, "--target", "D_sign", "--n", "100", "--positions",
                                   "=", "--causal-at", "=", "--causal-n", "6", "--controls",
                                   "1", "--quiet", "--out", str(out / "probe")])):
            rc = run(argv)
            if rc:
                return rc
        bridge, task = interp.load_model(ckpt)
        collect(bridge, task, task.generate(26, seed=5), sites=("resid_pre", "attn_out"),
                positions="input", batch_size=6, folder=out / "store")
    finally:
        routes.find_donors = plain
    return 0


if __name__ == "__main__":
    torch.set_num_threads(1)
    sys.exit(main(sys.argv[1], Path(sys.argv[2])))
