"""Metrics of a task model (pure: no printing, no files): exact match, character accuracy,
per class and per checker step of greedy outputs, the teacher-forced answer loss, and one
typed problem solved and checked step by step.

    metrics, outputs = evaluate(ckpt.model, ckpt.arch, task, examples, n_ctx)
    loss = answer_loss(model, arch, make_batch(arch, codec, pairs, n_ctx))
    result = solve_one(ckpt, "7x^2+3556x+451612=0")

Decoding is `interp.models.generate.greedy_decode`, on the model's device and dtype; the
figures returned are Python floats.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import fields
from typing import Sequence

import torch

from interp.tasks.base import Example, Task
from interp.tokens import IGNORE, Batch


def char_accuracy(pred: str, label: str) -> tuple[int, int]:
    """(matching positions, label length): position i counts when pred[i] == label[i]."""
    return sum(1 for i, ch in enumerate(label) if i < len(pred) and pred[i] == ch), len(label)


def score_outputs(task: Task, examples: Sequence[Example], outputs: Sequence[str]) -> dict:
    """Metrics of outputs against exact solutions. Pure: no model involved.

    exact_match: share of outputs equal to the whole solution; char_accuracy: matching
    characters over all label characters (the seed's per-position match over the label
    length, pooled over examples); both per class; per_step: share of examples whose checker
    verdict for that step is right, over the examples where the step applies.
    """
    tot = defaultdict(lambda: [0, 0, 0, 0])  # cls -> [n, exact, chars_ok, chars]
    steps = defaultdict(lambda: [0, 0])
    for ex, out in zip(examples, outputs, strict=True):
        ok_chars, n_chars = char_accuracy(out, ex.tgt)
        verdict = task.check(ex.src, out)
        exact = out == ex.tgt
        if exact != verdict.ok:  # the checker and the string comparison must agree
            raise AssertionError(f"checker disagrees with exact match on {ex.src!r} -> {out!r}")
        for key in (ex.cls, "all"):
            t = tot[key]
            t[0] += 1
            t[1] += exact
            t[2] += ok_chars
            t[3] += n_chars
        for step, v in verdict.steps.items():
            if v is not None:
                steps[step][0] += 1
                steps[step][1] += v
    n, exact, ok_chars, n_chars = tot["all"]
    return {
        "n": n,
        "exact_match": exact / n if n else 0.0,
        "char_accuracy": ok_chars / n_chars if n_chars else 0.0,
        "per_class": {c: {"n": v[0], "exact_match": v[1] / v[0], "char_accuracy": v[2] / v[3]}
                      for c, v in sorted(tot.items()) if c != "all"},
        "per_step": {s: v[1] / v[0] for s, v in steps.items() if s != "format"},
    }


def evaluate(model, arch: str, task: Task, examples: Sequence[Example], n_ctx: int,
             batch_size: int = 256, progress: bool = False) -> tuple[dict, list[str]]:
    """Greedy-decode every example and score it; returns (metrics, outputs)."""
    from interp.models.generate import greedy_decode

    outputs = greedy_decode(model, arch, [e.src for e in examples], n_ctx,
                            batch_size=batch_size, progress=progress)
    return score_outputs(task, examples, outputs), outputs


def on_device(batch: Batch, device: torch.device) -> Batch:
    """`batch` with every tensor on `device` (the model's)."""
    from interp.hooks import to_device

    return Batch(*(to_device(getattr(batch, f.name), device) for f in fields(batch)))


def answer_loss(model, arch: str, batch: Batch, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy on answer tokens only, computed in float32 on the model's device.

    batch : `interp.tokens.Batch` (moved to the model's device here); labels: [batch, pos]
    reduction : 'mean' gives a scalar over all answer tokens, 'none' [batch] (per example)
    """
    from interp.hooks import device_of

    batch = on_device(batch, device_of(model))
    if arch == "decoder":
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
        logits, labels = logits[:, :-1], batch.labels[:, 1:]
    else:
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                       decoder_input_ids=batch.decoder_input_ids).logits
        labels = batch.labels
    flat = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(),
                                             labels.reshape(-1), ignore_index=IGNORE,
                                             reduction="none").view(labels.shape)
    mask = (labels != IGNORE).float()
    if reduction == "none":
        return (flat * mask).sum(1) / mask.sum(1)
    return (flat * mask).sum() / mask.sum()


def eval_examples(task: Task, n: int, seed: int, holdout: bool = True,
                  unique: bool = False) -> list[Example]:
    """`n` fresh test examples; with holdout only inputs never used in training; unique:
    each input once."""
    return task.generate(n, seed=seed, heldout=True if holdout else None, unique=unique)


def solve_one(ckpt, text: str) -> dict:
    """The model's greedy output for a typed problem, the exact solution and the per-step
    verdict: {input, model, exact, correct, steps, first_error}. `ckpt`: a task
    `interp.models.Checkpoint`; `text` is parsed by its task (InterpError when malformed)."""
    from interp.models.generate import greedy_decode

    task = ckpt.task
    src = task.parse(text)
    exact = task.solve(src)
    out = greedy_decode(ckpt.model, ckpt.arch, [src], ckpt.config.n_ctx)[0]
    verdict = task.check(src, out)
    return {"input": src, "model": out, "exact": exact, "correct": verdict.ok,
            "steps": verdict.steps, "first_error": verdict.error}
