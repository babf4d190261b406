"""Tasks: generators, exact checkers and token roles. They know nothing of models."""

from __future__ import annotations

from interp.errors import TaskError
from interp.tasks.arithmetic import PRESETS as ARITHMETIC_PRESETS, ArithmeticTask
from interp.tasks.base import (CheckResult, Example, Task, distinct_count, is_heldout,
                               overlap, split_examples)
from interp.tasks.quadratic import PRESETS as QUADRATIC_PRESETS, QuadraticTask, Ranges
from interp.tasks.tokenizer import CharCodec, build_tokenizer, hf_tokenizer, save_tokenizer

TASKS = ("quadratic", "arithmetic")


def get_task(name: str, preset: str | None = None, **options) -> Task:
    """A task by name: `get_task("quadratic", "small")`, `get_task("arithmetic")`.

    options: for quadratic `ranges` (Ranges) and `mix`; for arithmetic `lo`, `hi`, `ops`.
    """
    if name == "quadratic":
        return QuadraticTask(preset or "small", **options)
    if name == "arithmetic":
        preset = preset or "default"
        if preset not in ARITHMETIC_PRESETS:
            from interp.errors import shorten

            raise TaskError(f"unknown arithmetic preset {shorten(preset)!r}; choose one of "
                            f"{', '.join(ARITHMETIC_PRESETS)}")
        return ArithmeticTask(**{**ARITHMETIC_PRESETS[preset], **options}, preset=preset)
    raise TaskError(f"unknown task {name!r}; choose one of {', '.join(TASKS)}")


def task_from_description(desc: dict) -> Task:
    """Rebuild a task from `Task.describe()` (as stored in a checkpoint's interp.json)."""
    name = desc.get("task")
    if name == "quadratic":
        ranges = Ranges(desc["root_max"], desc["k_max"], desc["coef_max"])
        return QuadraticTask(desc.get("preset", "custom"), ranges=ranges, mix=desc.get("mix"))
    if name == "arithmetic":
        return ArithmeticTask(desc["lo"], desc["hi"], tuple(desc["ops"]),
                              preset=desc.get("preset", "default"))
    raise TaskError(f"unknown task {name!r} in checkpoint metadata; known tasks: "
                    f"{', '.join(TASKS)}")


__all__ = ["Task", "Example", "CheckResult", "QuadraticTask", "ArithmeticTask", "Ranges",
           "QUADRATIC_PRESETS", "ARITHMETIC_PRESETS", "get_task", "task_from_description", "split_examples",
           "is_heldout", "CharCodec", "build_tokenizer", "hf_tokenizer", "save_tokenizer",
           "TASKS", "distinct_count", "overlap"]
