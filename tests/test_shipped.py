"""The shipped models: present, loadable through the bridge, and as good as they claim."""

import json
import math

import pytest

from interp.evaluate import eval_examples, evaluate
from interp.models import load_checkpoint, load_model, shipped_models
from interp.models.checkpoint import SHIPPED_DIR

SHIPPED = shipped_models()


def test_the_default_model_and_the_arithmetic_model_are_shipped():
    assert {"quadratic-small", "arithmetic"} <= set(SHIPPED)


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_model_loads_as_a_bridge_and_records_its_training(name):
    bridge, task = load_model(name)
    assert not bridge.training
    meta = json.loads((SHIPPED_DIR / name / "interp.json").read_text())
    assert meta["training"]["cpu_minutes"] > 0 and meta["training"]["finished"]
    assert meta["evaluation"]["n"] == 1000
    assert (SHIPPED_DIR / name / "model.safetensors").stat().st_size < 16 * 2**20


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_model_matches_the_figure_recorded_in_its_metadata(name):
    """200 fresh held-out examples (another seed than the recorded 1,000): the exact match
    must agree with the recorded one within sampling noise (4 standard errors)."""
    ckpt = load_checkpoint(name)
    examples = eval_examples(ckpt.task, 200, seed=2024)
    metrics, outputs = evaluate(ckpt.model, ckpt.arch, ckpt.task, examples, ckpt.config.n_ctx)
    # the oracle: exact string equality with the generator's own solution
    assert sum(o == e.tgt for o, e in zip(outputs, examples)) == round(metrics["exact_match"] * 200)
    p = ckpt.meta["evaluation"]["exact_match"]
    se = math.sqrt(max(p * (1 - p), 0.01) * (1 / 200 + 1 / 1000))
    assert abs(metrics["exact_match"] - p) <= 4 * se, (metrics["exact_match"], p)


def test_arithmetic_reaches_its_bar():
    assert load_checkpoint("arithmetic").meta["evaluation"]["exact_match"] >= 0.99


@pytest.mark.xfail(strict=True, reason="issue #2's bar is not reached yet: quadratic-small "
                   "scores 77.2% on 1,000 held-out equations (89.9% on fresh equations drawn "
                   "from all inputs, most of them seen in training); remove this mark when it "
                   "passes")
def test_quadratic_small_solves_at_least_80_percent_of_fresh_held_out_equations():
    ckpt = load_checkpoint("quadratic-small")
    examples = eval_examples(ckpt.task, 200, seed=2024)  # held-out inputs, never trained on
    metrics, _ = evaluate(ckpt.model, ckpt.arch, ckpt.task, examples, ckpt.config.n_ctx)
    assert metrics["exact_match"] >= 0.80, metrics
