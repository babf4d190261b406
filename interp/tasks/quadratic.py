"""Quadratic equations solved step by step (seeds 000/001, REFERENCE §1). Over 400 lines: the format, parser, checker and probe targets of one task read best together.

Input and output, in the canonical format this package uses::

    input : 7x^2+3556x+451612=0
    output: D=(3556^2-4*7*451612)=0;x=(-3556-0)/(2*7)=-254;x=(-3556+0)/(2*7)=-254;x=-254;x=-254;

- Every coefficient is always written, `a` included (`1x^2-2x+1=0`); b and c carry their sign.
- In the D expression the coefficients are printed raw: `D=(-113^2-4*2*-869)=...`.
- In the root expressions the first number is the value of -b (`x=(113-s)/(2*2)` for b = -113),
  s is the integer square root of D, and x1 <= x2 (a > 0 for every equation with roots).
- No real roots: `D=(...)=-1558383;x=nan;`.

The original study's CSV had three generator bugs that this format does not reproduce: a
doubled parenthesis when b < 0, a dropped `a` when c == 1, and wrong answers when a == b.
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass

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

CLASSES = ("two", "one", "none")
STEPS = ("D_expr", "D_value", "sqrt", "x1_expr", "x1_value", "x2_expr", "x2_value", "final",
         "nan", "format")


@dataclass(frozen=True)
class Ranges:
    """Ranges of the generator: roots in [-root_max, root_max] \\ {0}, multiplier k in
    1..k_max, and for equations without real roots a, b, c nonzero in [-coef_max, coef_max]."""

    root_max: int
    k_max: int
    coef_max: int


PRESETS = {
    "seed": Ranges(root_max=1000, k_max=10, coef_max=1000),
    "small": Ranges(root_max=20, k_max=5, coef_max=20),
    "medium": Ranges(root_max=100, k_max=10, coef_max=100),
}

DEFAULT_MIX = {"two": 0.5, "one": 0.3, "none": 0.2}
MAX_DIGITS = 18  # longest coefficient read; the widest preset (seed) has up to 7 digits


def _num(v: int, field: str) -> Segment:
    return Segment(str(v), field)


def format_input(a: int, b: int, c: int) -> tuple[str, list[str]]:
    return render([_num(a, "a"), Segment("x^2"), Segment(f"{b:+d}", "b"), Segment("x"),
                   Segment(f"{c:+d}", "c"), Segment("=0")])


def discriminant(a: int, b: int, c: int) -> int:
    return b * b - 4 * a * c


def roots(a: int, b: int, c: int) -> tuple[int, int, int] | None:
    """(s, x1, x2) with s = isqrt(D) and x1 <= x2, or None when D < 0.

    Raises TaskError when the roots are not integers (the format has no fractions)."""
    d = discriminant(a, b, c)
    if d < 0:
        return None
    if a < 0:
        raise TaskError(f"an equation with real roots is written with a > 0 (got a = {a}); "
                        "multiply it by -1")
    s = math.isqrt(d)
    if s * s != d:
        raise TaskError(f"D = {d} is not a perfect square, so the roots are not integers; "
                        "the quadratic task covers equations with integer roots or none")
    n1, n2 = -b - s, -b + s
    if n1 % (2 * a) or n2 % (2 * a):
        raise TaskError(f"the roots {n1}/{2 * a} and {n2}/{2 * a} are not integers; "
                        "the quadratic task covers equations with integer roots or none")
    x1, x2 = sorted((n1 // (2 * a), n2 // (2 * a)))
    return s, x1, x2


def format_output(a: int, b: int, c: int) -> tuple[str, list[str]]:
    d = discriminant(a, b, c)
    segs = [Segment("D=("), _num(b, "Dexpr_b"), Segment("^2-4*"), _num(a, "Dexpr_a"),
            Segment("*"), _num(c, "Dexpr_c"), Segment(")="), _num(d, "D_value"), Segment(";")]
    r = roots(a, b, c)
    if r is None:
        segs += [Segment("x="), Segment("nan", role="nan"), Segment(";")]
    else:
        s, _, _ = r
        # x1 uses -s, x2 uses +s; with a > 0 that gives x1 <= x2 as printed.
        for i, op in ((1, "-"), (2, "+")):
            val = (-b - s) // (2 * a) if op == "-" else (-b + s) // (2 * a)
            segs += [Segment("x=("), _num(-b, f"x{i}expr_negb"), Segment(op),
                     _num(s, f"x{i}expr_s"), Segment(")/(2*"), _num(a, f"x{i}expr_a"),
                     Segment(")="), _num(val, f"x{i}"), Segment(";")]
        x1v, x2v = (-b - s) // (2 * a), (-b + s) // (2 * a)
        segs += [Segment("x="), _num(x1v, "x1_final"), Segment(";"),
                 Segment("x="), _num(x2v, "x2_final"), Segment(";")]
    return render(segs)


_INPUT_RE = re.compile(r"^(-?[1-9][0-9]*)x\^2([+-][0-9]+)x([+-][0-9]+)=0$")
_NUM = r"(0|-?[1-9][0-9]*)"
_D_RE = re.compile(rf"^D=\({_NUM}\^2-4\*{_NUM}\*{_NUM}\)={_NUM}$")
_X_RE = re.compile(rf"^x=\({_NUM}([-+]){_NUM}\)/\(2\*{_NUM}\)={_NUM}$")
_FINAL_RE = re.compile(rf"^x={_NUM}$")


def read_input(src: str) -> tuple[int, int, int]:
    """Coefficients of an equation in the canonical input format."""
    m = _INPUT_RE.match(src) if len(src) <= 3 * MAX_DIGITS + 12 else None
    if not m:
        from interp.errors import shorten

        raise TaskError(f"{shorten(src)!r} is not in the canonical input format (coefficients "
                        f"of at most {MAX_DIGITS} digits), e.g. '7x^2+3556x+451612=0' (use "
                        "parse_equation for typed input)")
    return int(m.group(1)), int(m.group(2)), int(m.group(3))


def parse_equation(text: str) -> tuple[int, int, int]:
    """Read a typed equation such as `7x^2+3556x+451612=0`, `x^2-2x+1=0` or `- x^2 + 4 = 0`.

    Terms may come in any order and may be missing (their coefficient is 0), spaces are
    ignored, `a` must not be 0 and the right-hand side must be 0. Errors name the position.
    """
    s = text
    n = len(s)
    i = 0
    coef: dict[int, int] = {}

    def skip(j: int) -> int:
        while j < n and s[j] == " ":
            j += 1
        return j

    from interp.errors import shorten

    def fail(j: int, expected: str) -> TaskError:
        got = repr(s[j]) if j < n else "the end"
        return TaskError(f"could not read the equation {shorten(text)!r} at position {j}: "
                         f"found {got}, expected {expected} (e.g. '7x^2+3556x+451612=0')")

    i = skip(i)
    first = True
    while True:
        start = i
        sign = 1
        if i < n and s[i] in "+-":
            sign = -1 if s[i] == "-" else 1
            i = skip(i + 1)
        elif not first:
            raise fail(i, "'+', '-' or '='")
        j = i
        while j < n and s[j].isdigit():
            j += 1
        digits = s[i:j]
        if len(digits.lstrip("0")) > MAX_DIGITS:
            raise TaskError(f"could not read the equation {shorten(text)!r}: the coefficient "
                            f"at position {i} has {len(digits):,} digits; coefficients have at "
                            f"most {MAX_DIGITS} digits (the shipped models were trained on at "
                            "most 7)")
        i = skip(j)
        degree = 0
        if i < n and s[i] == "x":
            i = skip(i + 1)
            degree = 1
            if i < n and s[i] == "^":
                i = skip(i + 1)
                if i < n and s[i] == "2":
                    degree = 2
                    i = skip(i + 1)
                elif i < n and s[i] == "1" and (i + 1 >= n or not s[i + 1].isdigit()):
                    i = skip(i + 1)
                else:
                    raise fail(i, "the exponent 2")
        elif not digits:
            raise fail(i, "a digit or 'x'")
        if degree in coef:
            raise TaskError(f"could not read the equation {shorten(text)!r} at position "
                            f"{start}: the "
                            f"x^{degree} term appears twice; write each power once")
        coef[degree] = sign * (int(digits) if digits else 1)
        first = False
        if i < n and s[i] == "=":
            i = skip(i + 1)
            break
        if i >= n:
            raise fail(i, "'=0' at the end")
    j = i
    while j < n and s[j].isdigit():
        j += 1
    if j == i or s[i:j].strip("0"):
        raise fail(i, "0 on the right-hand side")
    j = skip(j)
    if j != n:
        raise fail(j, "the end of the equation")
    a, b, c = coef.get(2, 0), coef.get(1, 0), coef.get(0, 0)
    if a == 0:
        raise TaskError(f"{shorten(text)!r} has no x^2 term (a = 0); a quadratic equation "
                        "needs a != 0")
    return a, b, c


class QuadraticTask(Task):
    """The quadratic-equation task with a named preset or custom ranges."""

    name = "quadratic"
    classes = CLASSES
    step_names = STEPS

    def __init__(self, preset: str = "small", ranges: Ranges | None = None,
                 mix: dict[str, float] | None = None):
        if ranges is None:
            if preset not in PRESETS:
                from interp.errors import shorten

                raise TaskError(f"unknown quadratic preset {shorten(str(preset))!r}; choose one of "
                                f"{', '.join(PRESETS)} or pass custom ranges")
            ranges = PRESETS[preset]
        else:
            preset = preset if preset in PRESETS and PRESETS[preset] == ranges else "custom"
        if ranges.root_max < 2 or ranges.k_max < 1 or ranges.coef_max < 1:
            raise TaskError(f"ranges {ranges} too small: need root_max >= 2, k_max >= 1, "
                            "coef_max >= 1")
        self.preset = preset
        self.ranges = ranges
        self.mix = dict(mix or DEFAULT_MIX)
        unknown = set(self.mix) - set(CLASSES)
        if unknown:
            raise TaskError(f"unknown classes {sorted(unknown)} in the mix; classes are "
                            f"{', '.join(CLASSES)}")

    @property
    def default_mix(self) -> dict[str, float]:
        return self.mix

    def describe(self) -> dict:
        r = self.ranges
        return {"task": self.name, "preset": self.preset, "root_max": r.root_max,
                "k_max": r.k_max, "coef_max": r.coef_max, "mix": self.mix}

    def ranges_text(self) -> str:
        r = self.ranges
        return (f"roots in [-{r.root_max}, {r.root_max}], a = k in 1..{r.k_max}, no-root "
                f"coefficients in [-{r.coef_max}, {r.coef_max}]")

    def coverage(self, src: str) -> str | None:
        """None when this task's generator can produce `src` (the model was trained on such
        equations); else what lies outside its ranges."""
        a, b, c = read_input(src)
        r = self.ranges
        d = discriminant(a, b, c)
        if d < 0:
            out = [f"{n} = {v} outside [-{r.coef_max}, {r.coef_max}]" for n, v in
                   (("a", a), ("b", b), ("c", c)) if abs(v) > r.coef_max]
            out += [f"{n} = 0 (never generated)" for n, v in (("b", b), ("c", c)) if v == 0]
            return "; ".join(out) or None
        s, x1, x2 = roots(a, b, c)
        out = [] if 1 <= a <= r.k_max else [f"a = {a} outside 1..{r.k_max}"]
        out += [f"root {x} outside [-{r.root_max}, {r.root_max}]" for x in sorted({x1, x2})
                if abs(x) > r.root_max]
        if 0 in (x1, x2):
            out.append("a root 0 (never generated)")
        if x1 != x2 and x1 == -x2:
            out.append("opposite roots, b = 0 (never generated)")
        return "; ".join(out) or None

    def covers_task(self, other: "QuadraticTask") -> bool:
        """Whether every equation `other` generates is one this task's generator produces."""
        if other.name != self.name:
            return False
        a, b = self.ranges, other.ranges
        return b.root_max <= a.root_max and b.k_max <= a.k_max and b.coef_max <= a.coef_max

    # -- generation -----------------------------------------------------------------------
    def sample_coefficients(self, rng: random.Random, cls: str) -> tuple[int, int, int]:
        r = self.ranges
        k = rng.randint(1, r.k_max)
        if cls == "two":
            while True:
                r1 = rng.randint(-r.root_max, r.root_max)
                r2 = rng.randint(-r.root_max, r.root_max)
                if r1 and r2 and r1 != r2 and r1 != -r2:
                    return k, -k * (r1 + r2), k * r1 * r2
        if cls == "one":
            while True:
                x = rng.randint(-r.root_max, r.root_max)
                if x:
                    return k, -2 * k * x, k * x * x
        if cls == "none":
            while True:
                a, b, c = (rng.randint(-r.coef_max, r.coef_max) for _ in range(3))
                if a and b and c and b * b - 4 * a * c < 0:
                    return a, b, c
        raise TaskError(f"unknown class {cls!r}; classes are {', '.join(CLASSES)}")

    def sample(self, rng: random.Random, cls: str | None = None) -> Example:
        cls = cls or sample_class(rng, self.mix)
        a, b, c = self.sample_coefficients(rng, cls)
        return Example(format_input(a, b, c)[0], format_output(a, b, c)[0], cls)

    # -- reading and solving --------------------------------------------------------------
    def parse(self, text: str) -> str:
        """Canonical input for a typed equation; with real roots and a < 0 it is multiplied
        by -1 (same roots), since the format writes such equations with a > 0."""
        a, b, c = parse_equation(text)
        if a < 0 and discriminant(a, b, c) >= 0:
            a, b, c = -a, -b, -c
        roots(a, b, c)  # raises for roots the format cannot write
        return format_input(a, b, c)[0]

    def solve(self, src: str) -> str:
        return format_output(*read_input(src))[0]

    def classify(self, src: str) -> str:
        d = discriminant(*read_input(src))
        return "two" if d > 0 else "one" if d == 0 else "none"

    def roles(self, src: str, tgt: str | None = None) -> tuple[list[str], list[str]]:
        a, b, c = read_input(src)
        out, out_roles = format_output(a, b, c)
        if tgt is not None and tgt != out:
            raise TaskError("roles are defined for the exact solution only; got a different "
                            "output string")
        return format_input(a, b, c)[1], out_roles

    # -- probe targets --------------------------------------------------------------------
    def _places(self) -> dict[str, int]:
        """Digit places of each number field: enough for the largest value the generator
        makes (two roots: |b| <= 2 k r, D <= (2 k r)^2; no roots: |D| <= 5 coef^2)."""
        r = self.ranges
        big = 2 * r.k_max * r.root_max
        bound = {"a": max(r.k_max, r.coef_max), "b": max(big, r.coef_max),
                 "c": max(r.k_max * r.root_max ** 2, r.coef_max), "D": max(big ** 2,
                 5 * r.coef_max ** 2), "s": big, "x1": r.root_max, "x2": r.root_max}
        return {k: len(str(v)) for k, v in bound.items()}

    def probe_targets(self, example: Example) -> dict[str, int | float]:
        a, b, c = read_input(example.src)
        d = discriminant(a, b, c)
        r = roots(a, b, c)
        s, x1, x2 = r if r is not None else (None, None, None)
        nan = float("nan")
        out: dict[str, int | float] = {
            "class": CLASSES.index("two" if d > 0 else "one" if d == 0 else "none"),
            "D_sign": (d > 0) - (d < 0),
            "D_value": math.copysign(math.log10(1 + abs(d)), d),
            "abs_b": abs(b), "ac": a * c,
            "s": nan if s is None else s, "x1": nan if x1 is None else x1,
            "x2": nan if x2 is None else x2}
        for name, v in (("a", a), ("b", b), ("c", c), ("D", d), ("s", s), ("x1", x1),
                        ("x2", x2)):
            out.update(digit_targets(name, v, self._places()[name]))
        return out

    def probe_target_info(self) -> dict[str, str]:
        info = {"class": "class: 0 two roots, 1 one root, 2 no real root",
                "D_sign": "class: the sign of D = b^2 - 4ac (-1, 0, +1)",
                "D_value": "regression: D on the scale sign(D) * log10(1 + |D|)",
                "abs_b": "regression: |b| (raw scale)", "ac": "regression: a*c (raw scale)",
                "s": "regression: s = sqrt(D) (raw scale; NaN without real roots)",
                "x1": "regression: the smaller root (raw scale; NaN without real roots)",
                "x2": "regression: the larger root (raw scale; NaN without real roots)"}
        for name, what in (("a", "|a|"), ("b", "|b|"), ("c", "|c|"), ("D", "|D|"),
                           ("s", "s (NaN without real roots)"), ("x1", "|x1| (NaN ...)"),
                           ("x2", "|x2| (NaN ...)")):
            info.update(digit_info(name, what, self._places()[name]))
        return info

    # -- checking -------------------------------------------------------------------------
    def check(self, src: str, out: str) -> CheckResult:
        """Verify each step of `out` against integer arithmetic on the equation `src`."""
        a, b, c = read_input(src)
        d = discriminant(a, b, c)
        r = roots(a, b, c)
        steps: dict[str, bool | None] = {k: None for k in STEPS}
        errors: list[str] = []

        def verdict(step: str, ok: bool, why: str) -> None:
            steps[step] = ok
            if not ok:
                errors.append(f"{step}: {why}")

        stmts = out.split(";")
        trailing = stmts.pop() if stmts else ""
        m = _D_RE.match(stmts[0]) if stmts else None
        if m:
            pb, pa, pc, pd = map(int, m.groups())
            verdict("D_expr", (pb, pa, pc) == (b, a, c),
                    f"wrote b, a, c = {pb}, {pa}, {pc}; expected {b}, {a}, {c}")
            verdict("D_value", pd == d, f"wrote D = {pd}; expected {d}")
        else:
            verdict("D_expr", False, "no readable 'D=(b^2-4*a*c)=D' statement")
            verdict("D_value", False, "no readable D value")
        n_expected = 2 if r is None else 5
        if r is None:
            verdict("nan", len(stmts) > 1 and stmts[1] == "x=nan", "expected 'x=nan;' after D")
        else:
            s, x1, x2 = r
            parsed = []
            for i, op in ((1, "-"), (2, "+")):
                mx = _X_RE.match(stmts[i]) if len(stmts) > i else None
                parsed.append(mx)
                if not mx:
                    verdict(f"x{i}_expr", False, f"no readable x{i} statement")
                    verdict(f"x{i}_value", False, f"no readable x{i} value")
                    continue
                # s (group 3) is judged by the "sqrt" step below
                nb, pop, pa, pv = (int(mx.group(1)), mx.group(2), int(mx.group(4)),
                                   int(mx.group(5)))
                verdict(f"x{i}_expr", (nb, pop, pa) == (-b, op, a),
                        f"wrote ({nb}{pop}s)/(2*{pa}); expected ({-b}{op}s)/(2*{a})")
                verdict(f"x{i}_value", pv == (x1 if i == 1 else x2),
                        f"wrote x{i} = {pv}; expected {x1 if i == 1 else x2}")
            svals = [int(mx.group(3)) for mx in parsed if mx]
            verdict("sqrt", len(svals) == 2 and all(v == s for v in svals),
                    f"wrote s = {svals}; expected {s} (s^2 = D = {d})")
            finals = []
            for i in (3, 4):
                mf = _FINAL_RE.match(stmts[i]) if len(stmts) > i else None
                finals.append(int(mf.group(1)) if mf else None)
            verdict("final", finals == [x1, x2], f"wrote final answers {finals}; expected "
                    f"[{x1}, {x2}]")
        verdict("format", trailing == "" and len(stmts) == n_expected,
                f"expected {n_expected} statements each ending in ';', got {len(stmts)}"
                + (f" and trailing {trailing!r}" if trailing else ""))
        return CheckResult(steps, errors[0] if errors else None)


__all__ = ["QuadraticTask", "Ranges", "PRESETS", "CLASSES", "STEPS", "parse_equation",
           "read_input", "format_input", "format_output", "discriminant", "roots"]
