"""Token ablation on another dtype: a bfloat16 model gives finite figures close to float32's,
float32 is unchanged by the dtype plumbing, and the command runs with --dtype bfloat16."""

import json
import math

import pytest
import torch

from circuits.ablation import AblationResult, ablate_tokens
from clihelp import run
from interp.hooks import dtype_of
from interp.models import load_checkpoint

TOKENS = ["x", "^", "="]


def ablate(path, dtype, mode, decode):
    ckpt = load_checkpoint(path, "cpu", dtype)
    examples = ckpt.task.generate(8, seed=0)
    bridge = ckpt.bridge()
    res = ablate_tokens(bridge, ckpt.task, examples, TOKENS, mode=mode, n_controls=2,
                        decode=decode)
    return bridge, res


@pytest.mark.parametrize("arch,mode", [("decoder", "knockout"), ("decoder", "mean"),
                                       ("t5", "knockout"), ("t5", "mean")])
def test_bfloat16_gives_finite_figures_close_to_float32(tiny_checkpoints, arch, mode):
    path = tiny_checkpoints[arch]
    decode = arch == "decoder"
    bridge16, half = ablate(path, "bfloat16", mode, decode)
    assert dtype_of(bridge16) == torch.bfloat16
    _, full = ablate(path, "float32", mode, decode)
    a, b = full.frame().set_index("metric"), half.frame().set_index("metric")
    assert list(a.index) == list(b.index) and list(a.columns) == list(b.columns)
    for col in ("clean", "ablated", "target_damage", "difference"):
        for metric, value in b[col].items():
            assert math.isfinite(value) or math.isnan(a.loc[metric, col]), (metric, col)
    loss = ["clean", "ablated", "target_damage", "difference"]
    assert (a.loc["answer_loss", loss] - b.loc["answer_loss", loss]).abs().max() < 0.05
    # results come back on the CPU in float32, whatever the model computes in
    assert half.per_example.loss_clean.dtype == "float32"
    assert sorted(set(half.sweep.from_layer)) == [0, 1]


def test_float32_is_unchanged_by_the_dtype_plumbing(tiny_checkpoints):
    """An explicit float32 load gives the very figures of the default load, every table."""
    path = tiny_checkpoints["decoder"]
    _, default = ablate(path, None, "mean", True)
    _, explicit = ablate(path, "float32", "mean", True)
    for name in ("summary", "sweep", "per_example", "control_damage"):
        assert getattr(default, name).equals(getattr(explicit, name)), name
    assert default.decoded == explicit.decoded


def test_result_has_a_frame_and_a_figure(tiny_checkpoints):
    _, res = ablate(tiny_checkpoints["decoder"], None, "knockout", False)
    assert isinstance(res, AblationResult)
    assert res.frame() is res.summary and "answer_loss" in set(res.frame().metric)
    fig = res.figure()
    names = {t.name for t in fig.data}
    assert {"target", "controls"} <= names


def test_the_command_runs_in_bfloat16_on_the_cpu(tiny_checkpoints, tmp_path):
    out = tmp_path / "a.json"
    proc = run("circuits.ablate", str(tiny_checkpoints["decoder"]), "--tokens", "x,^,=",
               "--n", "6", "--controls", "2", "--mode", "mean", "--device", "cpu",
               "--dtype", "bfloat16", "--json", str(out), "--quiet")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(out.read_text())
    loss = next(r for r in data["summary"] if r["metric"] == "answer_loss")
    assert all(math.isfinite(loss[k]) for k in ("clean", "ablated", "difference"))
