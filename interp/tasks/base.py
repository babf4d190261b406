"""What every task provides: examples, an exact checker and token roles.

A task knows nothing of models. It turns a seed into examples (`src` -> `tgt` strings), says
whether a model's output is right step by step, and names the role of every character so that
analyses can average across examples of different lengths.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from typing import Sequence


@dataclass(frozen=True)
class Example:
    """One problem: `src` is what the model reads, `tgt` the exact solution, `cls` its class."""

    src: str
    tgt: str
    cls: str


@dataclass
class CheckResult:
    """The verdict of a task's checker on one output string.

    `steps` maps each step name to True (right), False (wrong) or None (does not apply, e.g. the
    roots of an equation without real roots). `error` names the first wrong step and why.
    """

    steps: dict[str, bool | None]
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and all(v is not False for v in self.steps.values())


@dataclass
class Segment:
    """A piece of a formatted string: literal text, or a number that belongs to a field."""

    text: str
    field: str | None = None  # None: literal; roles are the characters themselves
    role: str | None = None  # every character gets this role (e.g. "nan")


def render(segments: Sequence[Segment]) -> tuple[str, list[str]]:
    """Join segments into the string and its per-character roles.

    Literal characters take themselves as role (`=`, `x`, `^`, `;` ...); a number in field `f`
    gives `f_sign` to a leading minus or plus and `f_digit` to each digit.
    """
    chars: list[str] = []
    roles: list[str] = []
    for seg in segments:
        for i, ch in enumerate(seg.text):
            chars.append(ch)
            if seg.role is not None:
                roles.append(seg.role)
            elif seg.field is None:
                roles.append(ch)
            elif ch in "+-" and i == 0:
                roles.append(f"{seg.field}_sign")
            else:
                roles.append(f"{seg.field}_digit")
    return "".join(chars), roles


def stable_hash(text: str) -> int:
    """A hash of a string that is the same on every machine and every run (unlike `hash`)."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


def is_heldout(src: str, fraction: float = 0.1) -> bool:
    """Whether an input belongs to the held-out partition (never trained on when holdout is on).

    The partition is a fixed function of the input string, so a fresh sample at any seed can be
    sorted into train or test without storing the training set.
    """
    return (stable_hash(src) % 10_000) < int(round(fraction * 10_000))


def overlap(train: Sequence[Example], test: Sequence[Example]) -> list[bool]:
    """For each test example, whether its input also occurs in `train`."""
    inputs = {ex.src for ex in train}
    return [ex.src in inputs for ex in test]


def split_examples(examples: Sequence[Example], test_fraction: float = 0.2,
                   dedup: bool = True) -> tuple[list[Example], list[Example]]:
    """First (1 - test_fraction) train, the rest test (the list is already shuffled).

    dedup True: duplicated inputs are kept once (their first occurrence), then the list is
    cut, so no input is in both. dedup False: the seed's own protocol, the list cut as it is;
    a test equation may then also be a training one (`overlap` measures how many).
    """
    if not dedup:
        cut = int(round(len(examples) * (1 - test_fraction)))
        return list(examples[:cut]), list(examples[cut:])
    seen: set[str] = set()
    unique = []
    for ex in examples:
        if ex.src not in seen:
            seen.add(ex.src)
            unique.append(ex)
    cut = int(round(len(unique) * (1 - test_fraction)))
    return unique[:cut], unique[cut:]


class Task:
    """Interface shared by the tasks. Subclasses set `name`, `classes`, `step_names`."""

    name: str = ""
    classes: tuple[str, ...] = ()
    step_names: tuple[str, ...] = ()
    preset: str = ""

    def sample(self, rng: random.Random, cls: str | None = None) -> Example:
        raise NotImplementedError

    def generate(self, n: int, seed: int, mix: dict[str, float] | None = None,
                 heldout: bool | None = None, unique: bool = False) -> list[Example]:
        """`n` examples with exact class counts from `mix`, shuffled; same seed, same list.

        heldout: None keeps every input; True keeps only held-out inputs (for testing);
        False drops them (for training).
        unique: every input at most once (draws that repeat an earlier input are skipped).
        A class whose inputs run out (`EXHAUSTED` draws in a row bring nothing new) raises
        `TaskError` naming how many distinct inputs were found, and what to ask for instead.
        Analyses use unique examples: a repeated equation is no independent observation.
        """
        mix = mix or self.default_mix
        rng = random.Random(seed)
        counts = class_counts(n, mix)
        out: list[Example] = []
        seen: set[str] = set()
        for cls, k in counts.items():
            made, dry = 0, 0
            while made < k:
                ex = self.sample(rng, cls)
                if heldout is not None and is_heldout(ex.src) != heldout:
                    continue
                if unique:
                    if ex.src in seen:
                        dry += 1
                        if dry >= EXHAUSTED:
                            _exhausted(self, cls, made, k, n, mix, heldout)
                        continue
                    seen.add(ex.src)
                    dry = 0
                out.append(ex)
                made += 1
        rng.shuffle(out)
        return out

    @property
    def default_mix(self) -> dict[str, float]:
        return {c: 1 / len(self.classes) for c in self.classes}

    def solve(self, src: str) -> str:
        raise NotImplementedError

    def parse(self, text: str) -> str:
        """Read a problem typed by a person; return it in the canonical input format."""
        raise NotImplementedError

    def classify(self, src: str) -> str:
        raise NotImplementedError

    def check(self, src: str, out: str) -> CheckResult:
        raise NotImplementedError

    def roles(self, src: str, tgt: str | None = None) -> tuple[list[str], list[str]]:
        """Roles of each character of `src` and of `tgt` (the exact solution when None)."""
        raise NotImplementedError

    def describe(self) -> dict:
        return {"task": self.name, "preset": self.preset}

    def probe_targets(self, example: Example) -> dict[str, int | float]:
        """Properties of one example for linear probes (`probes.fit`), computed with exact
        integer arithmetic from its input alone; NaN where a property does not exist (the
        roots of an equation without real roots). The same names for every example."""
        return {}

    def probe_target_info(self) -> dict[str, str]:
        """name -> "class: description" or "regression: description (scale)" of each target
        of `probe_targets`."""
        return {}

    def ranges_text(self) -> str:
        """The generator's ranges in words (shown in warnings and `interp models`)."""
        return ""

    def coverage(self, src: str) -> str | None:
        """None when the generator can produce input `src`; else what lies outside its
        ranges (a model trained on this task has never seen such an input)."""
        return None

    def covers_task(self, other: "Task") -> bool:
        """Whether every input `other` generates lies within this task's ranges."""
        return other.describe() == self.describe()


DIGIT_NONE = 10   # digit-place class of a place beyond the number's most significant digit


def digit_targets(name: str, value: int | None, places: int) -> dict[str, float]:
    """`{name}_digit_{k}` for k = 0 (units) .. places - 1: the digit of |value| at place k,
    or DIGIT_NONE (10) where |value| has fewer digits; NaN for every place when value is
    None. Counting from the units keeps one place value per target across numbers of
    different lengths."""
    out = {}
    for k in range(places):
        if value is None:
            out[f"{name}_digit_{k}"] = float("nan")
        else:
            text = str(abs(value))
            out[f"{name}_digit_{k}"] = int(text[-1 - k]) if k < len(text) else DIGIT_NONE
    return out


def digit_info(name: str, what: str, places: int) -> dict[str, str]:
    """probe_target_info entries for `digit_targets(name, ., places)`."""
    return {f"{name}_digit_{k}": f"class: digit {k} (0 = units) of {what}, 0-9, "
            f"{DIGIT_NONE} = no such digit" for k in range(places)}


#: draws in a row that bring no new input before `generate(unique=True)` calls a class spent
#: (held-out filtering happens first: only draws of the wanted partition count). With u of a
#: class's m inputs unseen, such a run has probability (1 - u/m)^EXHAUSTED: negligible unless
#: nearly every input of a class of many thousands is asked for.
EXHAUSTED = 20_000


def _exhausted(task: "Task", cls: str, made: int, k: int, n: int, mix: dict, heldout) -> None:
    from interp.errors import TaskError

    where = {True: "held-out ", False: "training "}.get(heldout, "")
    share = mix[cls] / sum(mix.values())
    most = int(made / share) if share > 0 else made
    raise TaskError(f"unique examples: the {task.preset or task.name} generator gave only "
                    f"{made} distinct {where}inputs of class {cls!r} ({EXHAUSTED:,} draws in a "
                    f"row brought none new) for the {k} of {n} asked in that class; ask for "
                    f"n <= {most} at this class mix, or a mix with a smaller {cls!r} share")


def distinct_count(examples: Sequence[Example]) -> int:
    """How many distinct inputs `examples` hold (the independent observations)."""
    return len({ex.src for ex in examples})


def class_counts(n: int, mix: dict[str, float]) -> dict[str, int]:
    """Split n into exact per-class counts (largest remainder), e.g. 50/30/20."""
    total = sum(mix.values())
    if total <= 0 or any(v < 0 for v in mix.values()):
        from interp.errors import TaskError
        raise TaskError(f"class mix {mix} must have non-negative shares with a positive sum")
    raw = {c: n * v / total for c, v in mix.items()}
    counts = {c: int(r) for c, r in raw.items()}
    rest = n - sum(counts.values())
    for c in sorted(raw, key=lambda c: raw[c] - counts[c], reverse=True)[:rest]:
        counts[c] += 1
    return counts


def sample_class(rng: random.Random, mix: dict[str, float]) -> str:
    r = rng.random() * sum(mix.values())
    acc = 0.0
    for cls, w in mix.items():
        acc += w
        if r < acc:
            return cls
    return next(reversed(mix))


__all__ = ["Example", "CheckResult", "Segment", "Task", "render", "split_examples", "overlap",
           "is_heldout", "stable_hash", "class_counts", "sample_class", "digit_targets",
           "digit_info", "DIGIT_NONE", "distinct_count", "EXHAUSTED"]
