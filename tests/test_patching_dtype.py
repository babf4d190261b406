"""Patching in reduced precision: a bfloat16 model gives finite results, close to float32's,
returned as float32 on the CPU; and the command runs with `--device cpu --dtype bfloat16`."""

import pytest
import torch
from test_patching import sharpened

from circuits import patching as P
from interp.models import load_checkpoint


@pytest.fixture(scope="module", params=["decoder", "t5"])
def both_precisions(request, tiny_checkpoints, tmp_path_factory):
    """(float32 bridge, bfloat16 bridge, pairs, sites) of one tiny model: the decoder
    sharpened (its fresh logit differences are ~1e-3, below bfloat16's resolution), the T5
    as it is (sharpened, bfloat16 moves even its unpatched metric by a quarter of its range)."""
    arch = request.param
    if arch == "decoder":
        ckpt, bridge = sharpened(tiny_checkpoints[arch], tmp_path_factory, "decoder-bf16")
    else:
        ckpt = load_checkpoint(tiny_checkpoints[arch])
        bridge = ckpt.bridge()
    half = load_checkpoint(ckpt.path, "cpu", "bfloat16").bridge()
    assert next(half.parameters()).dtype == torch.bfloat16
    field, n = ("c", 4) if arch == "decoder" else ("b", 3)
    pairs = P.corrupt_pairs(bridge, ckpt.task, n=n, field=field, answer="D_value")
    sites = ("resid_pre", "head_pos", "mlp_out") if arch == "decoder" else \
        ("enc.resid_pre", "cross.head_pos", "dec.pattern")
    return bridge, half, pairs, sites


def close(half, full):
    """Finite float32 CPU values within bfloat16's error of the float32 ones: a tenth of the
    range the metric spans across the cells, plus 0.02."""
    assert half.values.dtype == torch.float32 and half.values.device.type == "cpu"
    assert half.per_example.dtype == torch.float32
    assert torch.isfinite(half.per_example).all()
    assert half.values.shape == full.values.shape and half.labels == full.labels
    tol = 0.1 * float(full.values.max() - full.values.min()) + 0.02
    assert float((half.values - full.values).abs().max()) <= tol
    assert half.clean == pytest.approx(full.clean, abs=tol)
    assert half.corrupt == pytest.approx(full.corrupt, abs=tol)


def test_bfloat16_patching_is_finite_and_close_to_float32(both_precisions):
    bridge, half, pairs, sites = both_precisions
    for what in sites:
        close(P.patch(half, pairs, what), P.patch(bridge, pairs, what))


def test_bfloat16_batched_path_and_attribution_are_close_to_float32(both_precisions):
    bridge, half, pairs, sites = both_precisions
    what = sites[1]                                          # heads by position
    close(P.patch(half, pairs, what, fast=False), P.patch(bridge, pairs, what, fast=False))
    close(P.attribute(half, pairs, what), P.attribute(bridge, pairs, what))


def test_patch_cli_runs_in_bfloat16_on_the_cpu(tiny_checkpoints, tmp_path):
    import json

    from clihelp import run

    proc = run("circuits.patch", str(tiny_checkpoints["decoder"]), "--n", "3", "--sites",
               "resid_pre,head", "--device", "cpu", "--dtype", "bfloat16", "--json",
               str(tmp_path / "p.json"), "--quiet")
    assert proc.returncode == 0, proc.stderr
    data = json.loads((tmp_path / "p.json").read_text())
    values = torch.tensor(data["sites"]["head"]["values"])
    assert values.shape == (2, 4) and torch.isfinite(values).all()
