"""The out-of-range warning: `coverage` says None exactly for inputs the generator can
produce, and the warning names the covering shipped model with its recorded figure."""

import json
import random

from interp.models.checkpoint import SHIPPED_DIR, range_note
from interp.tasks import ArithmeticTask


def test_arithmetic_coverage_is_none_exactly_for_what_the_generator_draws():
    task = ArithmeticTask(lo=3, hi=12)
    drawn = {task.sample(random.Random(s)).src for s in range(20_000)}
    # the generator's definition, enumerated: a+b and a-b with b <= a, operands in [lo, hi]
    possible = {f"{a}+{b}=" for a in range(3, 13) for b in range(3, 13)} | \
               {f"{a}-{b}=" for a in range(3, 13) for b in range(3, 13) if b <= a}
    assert drawn == possible
    for a in range(0, 16):
        for b in range(0, 16):
            for op in "+-":
                src = f"{a}{op}{b}="
                assert (task.coverage(src) is None) == (src in possible), src


def test_the_warning_names_the_covering_model_with_its_recorded_exact_match():
    recorded = json.loads((SHIPPED_DIR / "quadratic-seed" / "interp.json").read_text())
    figure = recorded["evaluation"]["exact_match"]
    note = range_note("m", ArithmeticTask(), "why", ["quadratic-seed"])
    assert f"quadratic-seed ({100 * figure:.1f}% exact on held-out inputs) covers it" in note
    assert range_note("m", ArithmeticTask(), "why", []).endswith("; no shipped model covers it")
