"""Pairs of clean and corrupted inputs (`corrupt_pairs`), and the metric read at the answer
position (`metric_values`); the package docstring says what a pair is and what each metric
measures."""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass, field

import torch

from interp.errors import InterpError
from interp.hooks import arch_of
from interp.tasks.base import Example, Task
from interp.tasks.tokenizer import CharCodec
from interp.tokens import build_sides, decoder_prompt, encoder_input
from interp.viz.views import shown_tokens

METRICS = ("logit_diff", "logprob")


@dataclass
class Pairs:
    """Clean and corrupted inputs cut before the answer token.

    Attributes
    ----------
    arch : str
        "decoder" or "t5" (`interp.hooks.arch_of` of the model the pairs were made for).
    clean, corrupt : dict of str to Tensor
        side -> ids [batch, pos] ("seq" for decoder-only; "src" and "tgt" for T5, tgt being
        the decoder input).
    answer_pos : int
        The position of the output side whose logits predict the answer.
    clean_token, corrupt_token : Tensor
        The answer token of each input, [batch].
    tokens, roles : dict of str to list of str
        side -> labels of each position (the roles are shared by every pair; the tokens are
        the first pair's).
    examples : list of (Example, Example)
        The clean and corrupted problems.
    answer, token : str
        The solution field read and which of its tokens (`TOKENS`).
    answer_index : int
        The index of the answer token in the solution (the same in every pair).
    """

    arch: str
    clean: dict[str, torch.Tensor]
    corrupt: dict[str, torch.Tensor]
    answer_pos: int
    clean_token: torch.Tensor
    corrupt_token: torch.Tensor
    tokens: dict[str, list[str]]
    roles: dict[str, list[str]]
    examples: list[tuple[Example, Example]] = field(default_factory=list)
    answer: str = ""
    token: str = "first"
    answer_index: int = -1

    @property
    def n(self) -> int:
        return int(self.clean_token.shape[0])

    @property
    def out_side(self) -> str:
        return "seq" if self.arch == "decoder" else "tgt"


#: per task: the field corrupted and the solution field read, by default
DEFAULT_FIELDS = {"quadratic": ("c", "D_value"), "arithmetic": ("b", "result")}


def _digit_changes(v: int, rng: random.Random, allow_zero: bool = False) -> list[int]:
    """Every number made from v by changing one digit (no leading zero, same sign; 0 itself
    only if `allow_zero`), shuffled."""
    digits = str(abs(v))
    out = []
    for i, d in itertools.product(range(len(digits)), "0123456789"):
        if d == digits[i] or (i == 0 and d == "0" and (len(digits) > 1 or not allow_zero)):
            continue
        out.append(int(digits[:i] + d + digits[i + 1:]) * (-1 if v < 0 else 1))
    rng.shuffle(out)
    return out


def corrupt_equation(task: Task, ex: Example, field: str, rng: random.Random
                     ) -> Example | None:
    """The example with one digit of `field` changed (quadratic: coefficient a, b or c;
    arithmetic: operand a or b) so that the input keeps its length and format and the task
    still accepts it (integer roots or none; operands in range, b <= a for subtraction);
    None if no digit change works."""
    from interp.tasks.arithmetic import ArithmeticTask
    from interp.tasks.quadratic import (
        QuadraticTask,
        format_input,
        format_output,
        read_input,
    )

    if isinstance(task, QuadraticTask):
        coef = dict(zip("abc", read_input(ex.src)))
        if field not in coef:
            raise InterpError(f"unknown field {field!r} to corrupt; choose a, b or c")
        # no zero coefficient: the generator never writes one (it would be out of distribution)
        for w in _digit_changes(coef[field], rng):
            new = dict(coef, **{field: w})
            try:
                src = format_input(new["a"], new["b"], new["c"])[0]
                tgt = format_output(new["a"], new["b"], new["c"])[0]
            except InterpError:  # roots that are not integers, a < 0 with real roots
                continue
            if len(src) == len(ex.src):
                return Example(src, tgt, task.classify(src))
        return None
    if isinstance(task, ArithmeticTask):
        a, op, b = task._read(ex.src)
        vals = {"a": a, "b": b}
        if field not in vals:
            raise InterpError(f"unknown field {field!r} to corrupt; choose a or b")
        for w in _digit_changes(vals[field], rng, allow_zero=task.lo <= 0):
            new = dict(vals, **{field: w})
            if not all(task.lo <= x <= task.hi for x in new.values()) or \
                    (op == "-" and new["b"] > new["a"]):
                continue
            src = f"{new['a']}{op}{new['b']}="
            if len(src) == len(ex.src):
                return Example(src, task.solve(src), task.classify(src))
        return None
    raise InterpError(f"corrupted pairs are defined for the quadratic and arithmetic tasks; "
                      f"this model's task is {task.name!r}")


#: short names of answer fields: D is D's value, sqrt the square root written in x1's
#: expression (the first place the solution writes it)
ANSWER_ALIASES = {"D": "D_value", "sqrt": "x1expr_s"}
#: the class decision: pairs whose two problems are of different classes (two, one or no
#: roots), read at D's first token, the first token where the classes' solutions part ('-'
#: for no root, '0' for one, another digit for two)
CLASS_ANSWER = "class"
#: which token of the answer field the metric reads: its first token (kept only where the
#: two solutions differ there), its first digit (after a sign), or the first token where the
#: two solutions differ
TOKENS = ("first", "digit", "differ")


def answer_field(answer: str) -> str:
    """The solution field an `--answer` name means (`ANSWER_ALIASES` resolved)."""
    return ANSWER_ALIASES.get(answer, answer)


def answer_index(roles_c: list[str], roles_b: list[str], tgt_c: str, tgt_b: str,
                 answer: str, token: str = "first", same_role: bool = True) -> int | None:
    """The index in the solution of the token the metric reads for one pair, or None when
    the pair cannot be read there (the field is absent, the two solutions' roles differ up
    to it, or their tokens there are equal).

    roles_c / roles_b: the solution roles of the clean and corrupted problem; tgt_c / tgt_b
    their solutions; answer: a solution field (or `ANSWER_ALIASES` name); token: one of
    `TOKENS`; same_role: the two roles at the answer token must agree too (False for the
    class decision, where a sign in one solution faces a digit in the other)."""
    if token not in TOKENS:
        raise InterpError(f"unknown answer token {token!r}; choose one of {', '.join(TOKENS)}")
    f = answer_field(answer)
    idx = [i for i, r in enumerate(roles_c) if r == f or r.startswith(f + "_")]
    if not idx:
        return None
    if token == "first":
        k = idx[0]
    elif token == "digit":
        k = next((i for i in idx if roles_c[i].endswith("_digit")), None)
    else:
        k = next((i for i in idx if i >= len(tgt_b) or tgt_c[i] != tgt_b[i]), None)
    if k is None or k >= len(tgt_b) or roles_b[:k + int(same_role)] != \
            roles_c[:k + int(same_role)] or tgt_c[k] == tgt_b[k]:
        return None
    return k


def _check_task(bridge, task: Task, n: int) -> str:
    if task.name not in DEFAULT_FIELDS:
        raise InterpError(f"corrupted pairs are defined for the "
                          f"{' and '.join(DEFAULT_FIELDS)} tasks; this model's task is "
                          f"{task.name!r}")
    if n < 1:
        raise InterpError(f"the number of pairs must be at least 1, got {n}")
    arch = arch_of(bridge)
    if arch not in ("decoder", "t5"):
        raise InterpError(f"patching needs a decoder-only or T5 model; this one is {arch!r}")
    return arch


def _group_pairs(task: Task, pool, field: str, answer: str, token: str,
                 rng: random.Random, stop_at: int | None = None) -> dict[tuple, list]:
    """Layout -> [(clean, corrupted, answer index)] for the problems of `pool` that give a
    pair readable at the answer token; a layout is (input roles, solution roles before the
    answer). Stops when one layout has `stop_at` pairs."""
    by_layout: dict[tuple, list] = {}
    for ex in pool:
        bad = corrupt_equation(task, ex, field, rng)
        if bad is None:
            continue
        roles_c = task.roles(ex.src, ex.tgt)[1]
        roles_b = task.roles(bad.src, bad.tgt)[1]
        if answer == CLASS_ANSWER:     # the class decision: D's first token across classes
            if bad.cls == ex.cls:
                continue
            k = answer_index(roles_c, roles_b, ex.tgt, bad.tgt, "D_value", "first",
                             same_role=False)
        else:
            k = answer_index(roles_c, roles_b, ex.tgt, bad.tgt, answer, token)
        if k is None:
            continue
        layout = (tuple(task.roles(ex.src, ex.tgt)[0]), tuple(roles_c[:k]))
        group = by_layout.setdefault(layout, [])
        if any(e.src == ex.src for e, _, _ in group):
            continue
        group.append((ex, bad, k))
        if stop_at is not None and len(group) >= stop_at:
            break
    return by_layout


def _no_pair(field: str, answer: str, token: str) -> InterpError:
    return InterpError(f"no equation gives a usable pair for field {field!r} and answer "
                       f"{answer!r} ({token} token: the answer field must exist and differ "
                       "there); try another --corrupt, --answer or --answer-token")


def _make_pairs(arch: str, task: Task, chosen: list, answer: str = "",
                token: str = "first") -> Pairs:
    """The Pairs of `chosen` [(clean, corrupted, answer index)], all of one layout: every
    side has the first pair's length when cut before the answer token."""
    codec = CharCodec()
    ex0, _, k0 = chosen[0]
    width = {"seq": len(decoder_prompt(codec, ex0.src)) + k0,
             "src": len(encoder_input(codec, ex0.src)), "tgt": 1 + k0}  # tgt: <start> tgt[:k]
    clean = build_sides(arch, task, [e for e, _, _ in chosen])
    bad = build_sides(arch, task, [b for _, b, _ in chosen])
    out = "seq" if arch == "decoder" else "tgt"
    return Pairs(arch, {s: side.ids[:, :width[s]].contiguous() for s, side in clean.items()},
                 {s: side.ids[:, :width[s]].contiguous() for s, side in bad.items()},
                 width[out] - 1,
                 torch.tensor([codec.vocab[e.tgt[k]] for e, _, k in chosen]),
                 torch.tensor([codec.vocab[b.tgt[k]] for _, b, k in chosen]),
                 {s: shown_tokens(side, 0)[:width[s]] for s, side in clean.items()},
                 {s: side.roles[0][:width[s]] for s, side in clean.items()},
                 [(e, b) for e, b, _ in chosen], answer, token, k0)


def corrupt_pairs(bridge, task: Task, n: int = 64, field: str | None = None,
                  answer: str | None = None, seed: int = 0, heldout: bool | None = True,
                  max_tries: int = 20_000, token: str = "first") -> Pairs:
    """`n` clean/corrupted pairs of one layout, cut before the answer token: the first token
    of `answer` (a solution field: D_value, x1, x2, ... or result; or `ANSWER_ALIASES`: D,
    sqrt), or with `token="digit"` its first digit, with `token="differ"` its first token
    where the two solutions differ; only pairs whose two solutions differ at that token are
    kept. `answer="class"` (`CLASS_ANSWER`): the class decision, pairs of problems of
    different classes read at D's first token.
    field / answer default to `DEFAULT_FIELDS` of the task (quadratic: c and D_value;
    arithmetic: b and result).

    Problems are drawn from the task (held-out partition by default) until one layout has
    `n` pairs, so positions line up; that layout (the first to reach `n`) is the one
    returned. Every layout group at once, from unique problems: `pair_groups`."""
    arch = _check_task(bridge, task, n)
    field = field or DEFAULT_FIELDS[task.name][0]
    answer = answer or DEFAULT_FIELDS[task.name][1]
    rng = random.Random(seed)

    def pool():  # drawn in chunks until one layout has n pairs
        for chunk in range(0, max_tries, 500):
            yield from task.generate(500, seed=seed * 1_000_003 + chunk, heldout=heldout)
    by_layout = _group_pairs(task, pool(), field, answer, token, rng, stop_at=n)
    if not by_layout:
        raise _no_pair(field, answer, token)
    chosen = max(by_layout.values(), key=len)
    chosen = chosen[:n]
    if len(chosen) < n:
        raise InterpError(f"only {len(chosen)} pairs of one layout found for field {field!r} "
                          f"and answer {answer!r}; ask for fewer (--n {len(chosen)})")
    return _make_pairs(arch, task, chosen, answer, token)


def metric_values(logits: torch.Tensor, pairs: Pairs, metric: str = "logit_diff",
                  repeats: int = 1, pos: int | None = None) -> torch.Tensor:
    """The metric of each example, read at the answer position (or at `pos`).

    Parameters
    ----------
    logits : Tensor
        [repeats * batch, pos, vocab], copy k of the pairs in rows k * batch ..., on any
        device and dtype.
    pairs : Pairs
    metric : {"logit_diff", "logprob"}
    repeats : int
        How many copies of the pairs the rows hold.
    pos : int, optional
        The position read instead of `pairs.answer_pos`.

    Returns
    -------
    Tensor
        [repeats * batch], float32 on the CPU (differentiable: attribution patching
        back-propagates through it).
    """
    if metric not in METRICS:
        raise InterpError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")
    last = logits[:, pairs.answer_pos if pos is None else pos].to("cpu", torch.float32)
    good = pairs.clean_token.repeat(repeats)
    rows = torch.arange(last.shape[0])
    if metric == "logit_diff":
        return last[rows, good] - last[rows, pairs.corrupt_token.repeat(repeats)]
    return torch.log_softmax(last, -1)[rows, good]


def metric_values_last(last: torch.Tensor, pairs: Pairs, metric: str, repeats: int = 1
                       ) -> torch.Tensor:
    """`metric_values` from the answer position's logits alone ([repeats * batch, vocab])."""
    return metric_values(last[:, None], pairs, metric, repeats, pos=0)
