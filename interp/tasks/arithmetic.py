"""Addition and subtraction (seed 002): `23+45=` -> `68`.

Operands are drawn from [lo, hi]; subtraction keeps b <= a so results are never negative,
as in the seed. The model reads `a+b=` (or `a-b=`) and writes the result.
"""

from __future__ import annotations

import random
import re

from interp.errors import TaskError
from interp.tasks.base import (
    CheckResult,
    Example,
    Segment,
    Task,
    digit_info,
    digit_targets,
    render,
    sample_class,
)

OPS = {"add": "+", "sub": "-"}
PRESETS = {"default": {"lo": 1, "hi": 99, "ops": ("add", "sub")}}
MAX_DIGITS = 18  # longest operand parse() reads; the shipped model has 2-digit operands
_SRC_RE = re.compile(r"^(0|[1-9][0-9]*)([+-])(0|[1-9][0-9]*)=$")
_OUT_RE = re.compile(r"^(0|-?[1-9][0-9]*)$")
_TYPED_RE = re.compile(r"^\s*([0-9]+)\s*([+-])\s*([0-9]+)\s*=?\s*$")


class ArithmeticTask(Task):
    name = "arithmetic"
    step_names = ("result", "format")

    def __init__(self, lo: int = 1, hi: int = 99, ops: tuple[str, ...] = ("add", "sub"),
                 preset: str = "default"):
        bad = [o for o in ops if o not in OPS]
        if bad or not ops:
            raise TaskError(f"unknown operations {bad or ops}; choose from {', '.join(OPS)}")
        if not 0 <= lo <= hi:
            raise TaskError(f"operand range [{lo}, {hi}] is empty or negative; need 0 <= lo <= hi")
        self.lo, self.hi, self.ops = lo, hi, tuple(ops)
        self.classes = tuple(ops)
        self.preset = preset

    def describe(self) -> dict:
        return {"task": self.name, "preset": self.preset, "lo": self.lo, "hi": self.hi,
                "ops": list(self.ops)}

    def sample(self, rng: random.Random, cls: str | None = None) -> Example:
        cls = cls or sample_class(rng, self.default_mix)
        a = rng.randint(self.lo, self.hi)
        b = rng.randint(self.lo, self.hi)
        if cls == "sub" and b > a:
            a, b = b, a
        src = f"{a}{OPS[cls]}{b}="
        return Example(src, self.solve(src), cls)

    def _read(self, src: str) -> tuple[int, str, int]:
        m = _SRC_RE.match(src)
        if not m:
            raise TaskError(f"{src!r} is not an arithmetic problem like '23+45='")
        return int(m.group(1)), m.group(2), int(m.group(3))

    def parse(self, text: str) -> str:
        from interp.errors import shorten

        m = _TYPED_RE.match(text)
        if not m:
            raise TaskError(f"could not read {shorten(text)!r}: expected 'a+b' or 'a-b' with "
                            "non-negative integers, e.g. '23+45'")
        for g in (m.group(1), m.group(3)):
            if len(g.lstrip("0")) > MAX_DIGITS:
                raise TaskError(f"an operand of {len(g):,} digits in {shorten(text)!r}; "
                                f"operands have at most {MAX_DIGITS} digits (this task's "
                                f"models were trained on {self.lo}..{self.hi})")
        return f"{int(m.group(1))}{m.group(2)}{int(m.group(3))}="

    def ranges_text(self) -> str:
        return f"operands {self.lo}..{self.hi}, {'/'.join(self.ops)}"

    def coverage(self, src: str) -> str | None:
        """None when the generator of this task can produce `src`; else why it cannot."""
        a, op, b = self._read(src)
        cls = "add" if op == "+" else "sub"
        if cls not in self.ops:
            return f"operation {cls} is not trained"
        out = [f"operand {v} outside {self.lo}..{self.hi}" for v in (a, b)
               if not self.lo <= v <= self.hi]
        if cls == "sub" and b > a:
            out.append(f"{a}-{b} has a negative result (subtractions are generated with b <= a)")
        return "; ".join(out) or None

    def covers_task(self, other: "Task") -> bool:
        """Whether every input `other` generates is one this task's generator produces."""
        return (other.name == self.name and self.lo <= other.lo and other.hi <= self.hi
                and set(other.ops) <= set(self.ops))

    def solve(self, src: str) -> str:
        a, op, b = self._read(src)
        return str(a + b if op == "+" else a - b)

    def classify(self, src: str) -> str:
        return "add" if self._read(src)[1] == "+" else "sub"

    def roles(self, src: str, tgt: str | None = None) -> tuple[list[str], list[str]]:
        a, op, b = self._read(src)
        out = self.solve(src)
        if tgt is not None and tgt != out:
            raise TaskError("roles are defined for the exact solution only")
        _, src_roles = render([Segment(str(a), "a"), Segment(op, role="op"), Segment(str(b), "b"),
                               Segment("=")])
        _, out_roles = render([Segment(out, "result")])
        return src_roles, out_roles

    def _places(self) -> int:
        return len(str(2 * self.hi))

    def probe_targets(self, example: Example) -> dict[str, int | float]:
        """The operation, the result, its digits, and the carry (addition) or borrow
        (subtraction) out of each digit place of the column arithmetic."""
        a, op, b = self._read(example.src)
        res = a + b if op == "+" else a - b
        out: dict[str, int | float] = {"op": int(op == "-"), "result": res}
        out.update(digit_targets("result", res, self._places()))
        carry = 0
        for k in range(self._places()):
            da, db = (a // 10 ** k) % 10, (b // 10 ** k) % 10
            carry = int(da + db + carry >= 10) if op == "+" else int(da - db - carry < 0)
            out[f"carry_{k}"] = carry
        return out

    def probe_target_info(self) -> dict[str, str]:
        info = {"op": "class: 0 addition, 1 subtraction",
                "result": "regression: the result (raw scale)"}
        info.update(digit_info("result", "the result", self._places()))
        info.update({f"carry_{k}": f"class: 1 when column {k} (0 = units) carries into "
                     f"column {k + 1} (addition) or borrows from it (subtraction)"
                     for k in range(self._places())})
        return info

    def check(self, src: str, out: str) -> CheckResult:
        want = self.solve(src)
        steps: dict[str, bool | None] = {}
        ok_format = bool(_OUT_RE.match(out))
        steps["format"] = ok_format
        steps["result"] = out == want
        error = None
        if not ok_format:
            error = f"format: {out!r} is not an integer"
        elif out != want:
            error = f"result: wrote {out}; expected {want}"
        return CheckResult(steps, error)
