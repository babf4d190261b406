"""The shipped models: present, loadable through the bridge, and as good as they claim."""

import json
import math

import pytest
import torch

from conftest import one_thread
from interp.metrics import eval_examples, evaluate
from interp.models import load_checkpoint, load_model, shipped_models
from interp.models.checkpoint import SHIPPED_DIR

SHIPPED = shipped_models()


def _arch(name):
    return json.loads((SHIPPED_DIR / name / "interp.json").read_text())["model"]["arch"]


TASK_MODELS = [n for n in SHIPPED if _arch(n) != "native"]
TEXT_MODELS = [n for n in SHIPPED if _arch(n) == "native"]


def test_the_default_model_and_the_arithmetic_model_are_shipped():
    assert {"quadratic-small", "arithmetic"} <= set(SHIPPED)


@pytest.mark.parametrize("name", TASK_MODELS)
def test_shipped_model_loads_as_a_bridge_and_records_its_training(name):
    bridge, task = load_model(name)
    assert not bridge.training
    meta = json.loads((SHIPPED_DIR / name / "interp.json").read_text())
    assert meta["training"]["cpu_minutes"] > 0 and meta["training"]["finished"]
    assert meta["evaluation"]["n"] == 1000
    assert (SHIPPED_DIR / name / "model.safetensors").stat().st_size < 16 * 2**20


@pytest.mark.parametrize("name", [n for n in TASK_MODELS if n not in
                                  ("arithmetic", "quadratic-small", "quadratic-t5-small")])
def test_shipped_model_matches_the_figure_recorded_in_its_metadata(name):
    """200 fresh held-out examples (another seed than the recorded 1,000): the exact match
    must agree with the recorded one within sampling noise (4 standard errors). The models
    with a bar are checked against every held-out input below."""
    ckpt = load_checkpoint(name)
    examples = eval_examples(ckpt.task, 200, seed=2024)
    with one_thread():
        metrics, outputs = evaluate(ckpt.model, ckpt.arch, ckpt.task, examples,
                                    ckpt.config.n_ctx)
    # the oracle: exact string equality with the generator's own solution
    assert sum(o == e.tgt for o, e in zip(outputs, examples)) == round(metrics["exact_match"] * 200)
    p = ckpt.meta["evaluation"]["exact_match"]
    se = math.sqrt(max(p * (1 - p), 0.01) * (1 / 200 + 1 / 1000))
    assert abs(metrics["exact_match"] - p) <= 4 * se, (metrics["exact_match"], p)


# issue #2's bars: exact match on held-out inputs (never trained on)
BARS = {"arithmetic": 0.99, "quadratic-small": 0.85, "quadratic-t5-small": 0.75}


@pytest.mark.parametrize("name", sorted(BARS))
def test_shipped_model_reaches_its_bar_on_the_recorded_1000_held_out_examples(name):
    evaluation = load_checkpoint(name).meta["evaluation"]
    assert evaluation["n"] == 1000
    assert evaluation["exact_match"] >= BARS[name], evaluation["exact_match"]


# -- the bars measured on the weights, on every held-out input --------------------------------
# A sample of fresh held-out equations only bounds the rate: at quadratic-small's 86% a
# one-sided 95% Clopper-Pearson bound clears 85% only from about 3,000 draws, more than the
# 2,848 distinct held-out equations of the small preset. So the tests below evaluate the
# whole held-out partition once (a census: 2,848 equations per quadratic model, 1,474
# arithmetic problems) and weight it as the generator draws it. That is the expected exact
# match of any fresh held-out sample, with no sampling error and no seed to choose.
# The population is enumerated here from the README's definition of the generator, and the
# solutions written from the README's format, not by the task's own code.


def quadratic_solution(a: int, b: int, c: int) -> str:
    """The canonical solution, written from the README's description of the format."""
    d = b * b - 4 * a * c
    head = f"D=({b}^2-4*{a}*{c})={d};"
    if d < 0:
        return head + "x=nan;"
    s = math.isqrt(d)
    assert s * s == d and (-b - s) % (2 * a) == 0 and (-b + s) % (2 * a) == 0
    x1, x2 = (-b - s) // (2 * a), (-b + s) // (2 * a)
    return (head + f"x=({-b}-{s})/(2*{a})={x1};x=({-b}+{s})/(2*{a})={x2};"
            f"x={x1};x={x2};")


def quadratic_population(root_max: int, k_max: int, coef_max: int) -> dict[str, set]:
    """Every distinct (a, b, c) per class: two roots r1 != r2, both nonzero, r1 != -r2,
    a = k, b = -k(r1+r2), c = k r1 r2; one root r: a = k, b = -2kr, c = kr^2; no roots:
    a, b, c nonzero in [-coef_max, coef_max] with b^2 - 4ac < 0."""
    roots = [r for r in range(-root_max, root_max + 1) if r]
    two = {(k, -k * (r1 + r2), k * r1 * r2) for k in range(1, k_max + 1) for r1 in roots
           for r2 in roots if r1 != r2 and r1 != -r2}
    one = {(k, -2 * k * r, k * r * r) for k in range(1, k_max + 1) for r in roots}
    coefs = [v for v in range(-coef_max, coef_max + 1) if v]
    none = {(a, b, c) for a in coefs for b in coefs for c in coefs if b * b < 4 * a * c}
    return {"two": two, "one": one, "none": none}


def quadratic_src(a: int, b: int, c: int) -> str:
    return f"{a}x^2{b:+d}x{c:+d}=0"


def heldout_census(task) -> dict[str, list[tuple[str, str, float]]]:
    """Per class, every held-out input as (src, exact solution, weight), the weight being
    proportional to the probability that the generator draws it within its class.

    Quadratic: uniform within a class (a two-root equation comes from exactly two ordered
    root pairs at its k, a one-root equation from one root, a no-root one from rejection
    sampling of a uniform cube). Arithmetic: operands uniform in [lo, hi]; subtraction swaps
    them when b > a, so a - b with a > b is drawn twice as often as a - a."""
    from interp.tasks import is_heldout

    out = {}
    if task.name == "quadratic":
        r = task.ranges
        for cls, coefs in quadratic_population(r.root_max, r.k_max, r.coef_max).items():
            out[cls] = [(quadratic_src(*t), quadratic_solution(*t), 1.0) for t in sorted(coefs)
                        if is_heldout(quadratic_src(*t))]
    else:
        ops = {"add": ("+", lambda a, b: a + b), "sub": ("-", lambda a, b: a - b)}
        span = range(task.lo, task.hi + 1)
        for cls in task.classes:
            sym, f = ops[cls]
            rows = [(f"{a}{sym}{b}=", str(f(a, b)), 1.0 if cls == "add" or a == b else 2.0)
                    for a in span for b in span if cls == "add" or b <= a]
            out[cls] = [row for row in rows if is_heldout(row[0])]
    return out


def census_exact_match(name: str) -> tuple[float, dict[str, float], int]:
    """(exact match weighted by the task's class mix, per-class rates, equations decoded)."""
    from interp.models.generate import greedy_decode

    ckpt = load_checkpoint(name)
    census = heldout_census(ckpt.task)
    mix = ckpt.task.default_mix
    srcs = [src for rows in census.values() for src, _, _ in rows]
    with one_thread():
        outputs = iter(greedy_decode(ckpt.model, ckpt.arch, srcs, ckpt.config.n_ctx))
    per_class = {}
    for cls, rows in census.items():
        right = sum(w for (_, tgt, w) in rows if next(outputs) == tgt)
        per_class[cls] = right / sum(w for _, _, w in rows)
    total = sum(mix.values())
    return sum(mix[c] / total * v for c, v in per_class.items()), per_class, len(srcs)


def test_the_census_is_the_task_population_with_the_task_solutions():
    """The enumeration above agrees with the task: the README's distinct counts, every
    held-out input of a sample lies in it, and the task writes the same solutions."""
    from interp.tasks import get_task

    task = get_task("quadratic", "small")
    r = task.ranges
    pop = quadratic_population(r.root_max, r.k_max, r.coef_max)
    assert {c: len(v) for c, v in pop.items()} == {"two": 3800, "one": 200, "none": 24536}
    census = heldout_census(task)
    by_src = {src: tgt for rows in census.values() for src, tgt, _ in rows}
    for ex in task.generate(300, seed=31337, heldout=True):
        assert by_src[ex.src] == ex.tgt, ex
    sample = [row for rows in census.values() for row in rows[::25]]
    assert all(task.solve(src) == tgt for src, tgt, _ in sample)
    arith = get_task("arithmetic")
    acensus = heldout_census(arith)
    by_src = {src: tgt for rows in acensus.values() for src, tgt, _ in rows}
    for ex in arith.generate(300, seed=31337, heldout=True):
        assert by_src[ex.src] == ex.tgt, ex


@pytest.mark.parametrize("name", sorted(BARS))
def test_shipped_model_reaches_its_bar_on_every_held_out_input(name):
    """The weights, decoded greedily on the whole held-out partition, reach issue #2's bar
    (exact match, weighted as the generator draws inputs: a population value, not a
    sample estimate)."""
    rate, per_class, n = census_exact_match(name)
    print(f"{name}: {rate:.2%} exact on all {n} held-out inputs, per class "
          + ", ".join(f"{c} {v:.2%}" for c, v in per_class.items()))
    assert rate >= BARS[name], (name, rate, per_class, n)
    # the figure recorded in interp.json (1,000 draws from the same population, seed 12345)
    # agrees with the population value within 4 standard errors
    recorded = load_checkpoint(name).meta["evaluation"]
    se = math.sqrt(max(rate * (1 - rate), 0.01) / recorded["n"])
    assert abs(recorded["exact_match"] - rate) <= 4 * se, (recorded["exact_match"], rate)


# ------------------------------------------------------------------ induction models (#5)

INDUCTION = ["induction-attn2l", "induction-smeared1l", "induction-conv1l", "induction-attn1l"]


def test_the_induction_models_are_shipped():
    assert set(INDUCTION) <= set(TEXT_MODELS)


@pytest.mark.parametrize("name", TEXT_MODELS)
def test_text_model_loads_and_its_recorded_curve_ends_at_its_weights(name):
    from interp.attention.induction import induction_score, model_patterns, score_prompts

    bridge, task = load_model(name)
    assert task is None and not bridge.training
    meta = json.loads((SHIPPED_DIR / name / "interp.json").read_text())
    assert 0 < meta["cpu_minutes"]["training"] <= 15 and meta["cpu_minutes"]["threads"] == 1
    assert (SHIPPED_DIR / name / "model.safetensors").stat().st_size < 16 * 2**20
    ids, half, _, _ = score_prompts(bridge, n=16, seed=0)
    got = induction_score(model_patterns(bridge, ids), half)
    assert torch.allclose(got, torch.tensor(meta["history"][-1]["induction"]), atol=1e-4)


def _recipe(name):
    return json.loads((SHIPPED_DIR / name / "interp.json").read_text())["recipe"]


def test_attn2l_has_the_two_head_induction_mechanism():
    """Issue #5's bar: a layer-1 induction head >= 0.7, layer-0 heads < 0.2, a layer-0
    previous-token head >= 0.5, their K-composition >= 3 sd above random heads, and
    ablating the previous-token head drops the induction score below 0.2."""
    from circuits.induction import head_scores, mechanism_check

    bridge, _ = load_model("induction-attn2l")
    heads = head_scores(bridge, n=32, seed=1)          # other prompts than training's
    l0, l1 = heads[heads.layer == 0], heads[heads.layer == 1]
    assert l1.induction.max() >= 0.7 and l0.induction.max() < 0.2
    assert l0.previous_token.max() >= 0.5
    m = mechanism_check(bridge, heads, n=32, seed=1)
    assert m["k_composition_z"] >= 3
    assert m["induction_after_ablation"] < 0.2 and m["induction_after_mean_ablation"] < 0.2
    assert m["drop_ci"][0] > m["control_drop_ci"][1]   # the control head matters less


def test_smeared_keys_form_an_induction_head_where_the_plain_control_does_not():
    from circuits.induction import head_scores

    smeared, _ = load_model("induction-smeared1l")
    plain, _ = load_model("induction-attn1l")
    assert head_scores(smeared, n=32, seed=1, copying=False).induction.max() >= 0.5
    assert head_scores(plain, n=32, seed=1, copying=False).induction.max() < 0.2
    a, b = _recipe("induction-smeared1l"), _recipe("induction-attn1l")
    same = ("steps", "batch_size", "n_ctx", "d_model", "n_heads", "vocab", "mix", "lr", "seed")
    assert all(a[k] == b[k] for k in same)
