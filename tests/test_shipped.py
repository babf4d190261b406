"""The shipped models: present, loadable through the bridge, and as good as their bar."""

import pytest

from interp.evaluate import eval_examples, evaluate
from interp.models import load_checkpoint, load_model, shipped_models

EXPECTED = {"quadratic-small", "quadratic-t5-small", "arithmetic", "quadratic-seed"}


def test_every_shipped_model_is_present_and_loads_as_a_bridge():
    missing = EXPECTED - set(shipped_models())
    assert not missing, f"shipped models missing: {sorted(missing)}"
    for name in sorted(EXPECTED):
        bridge, task = load_model(name)
        assert not bridge.training
        ckpt = load_checkpoint(name)
        assert ckpt.meta["training"]["wall_minutes"] > 0
        assert ckpt.path.joinpath("model.safetensors").stat().st_size < 16 * 2**20


@pytest.mark.slow
def test_quadratic_small_solves_at_least_80_percent_of_fresh_equations():
    ckpt = load_checkpoint("quadratic-small")
    examples = eval_examples(ckpt.task, 200, seed=2024)  # held-out inputs, never trained on
    metrics, outputs = evaluate(ckpt.model, ckpt.arch, ckpt.task, examples, ckpt.config.n_ctx)
    # the oracle: exact string equality with the generator's solution, checked step by step
    assert sum(o == e.tgt for o, e in zip(outputs, examples)) == round(metrics["exact_match"] * 200)
    assert metrics["exact_match"] >= 0.80, metrics
