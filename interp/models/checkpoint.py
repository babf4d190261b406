"""Checkpoints: a directory in the HF layout plus `interp.json`; safetensors only, atomic writes.

    DIR/config.json          HF config (GPT-2 or T5)
    DIR/model.safetensors    weights
    DIR/tokenizer.json       the character tokenizer (+ tokenizer_config.json)
    DIR/interp.json          task, preset, architecture, training recipe, seed, metrics
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from interp.errors import InterpError
from interp.io import PARTIAL, make_temp_dir

REQUIRED = ("config.json", "model.safetensors", "tokenizer.json", "interp.json")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
SHIPPED_DIR = Path(__file__).resolve().parent.parent / "checkpoints"


def shipped_models() -> list[str]:
    if not SHIPPED_DIR.is_dir():
        return []
    return sorted(p.name for p in SHIPPED_DIR.iterdir() if (p / "interp.json").is_file())


def shipped_tasks() -> dict:
    """{shipped model name: its task} for the task models (not the text models)."""
    from interp.tasks import task_from_description

    out = {}
    for name in shipped_models():
        try:
            meta = json.loads((SHIPPED_DIR / name / "interp.json").read_text())
            if meta.get("task", {}).get("task") in ("quadratic", "arithmetic"):
                out[name] = task_from_description(meta["task"])
        except (OSError, ValueError, KeyError, InterpError):
            continue
    return out


def range_note(model: str, task, why: str, covering: list[str]) -> str:
    """The warning for input outside a model's training ranges: which ranges, and which
    shipped model covers the input."""
    def named(n: str) -> str:  # with its recorded held-out exact match, good or bad
        try:
            m = json.loads((SHIPPED_DIR / n / "interp.json").read_text())["evaluation"]
            return f"{n} ({m['exact_match']:.1%} exact on held-out inputs)"
        except (OSError, ValueError, KeyError, TypeError):
            return n

    better = (f"; {' and '.join(map(named, covering))} "
              f"{'covers' if len(covering) == 1 else 'cover'} it"
              if covering else "; no shipped model covers it")
    return (f"outside the training ranges of {model} (preset {task.preset}: "
            f"{task.ranges_text()}): {why}; expect wrong answers{better}")


def resolve(name_or_path: str | os.PathLike) -> Path:
    """A checkpoint directory from a shipped model's name or a path."""
    p = Path(name_or_path)
    if p.is_dir():
        return p
    if isinstance(name_or_path, str) and "/" not in name_or_path and \
            (SHIPPED_DIR / name_or_path).is_dir():
        return SHIPPED_DIR / name_or_path
    if p.exists():
        raise InterpError(f"{str(p)!r} is a file; a checkpoint is a directory holding "
                          f"{', '.join(REQUIRED)}")
    names = ", ".join(shipped_models()) or "none installed"
    raise InterpError(f"no checkpoint directory or shipped model named {str(name_or_path)!r}; "
                      f"give a directory holding {', '.join(REQUIRED)} or one of: {names}")


def validate(directory: Path) -> dict:
    """Check a checkpoint directory and return its interp.json; raise InterpError if unusable.

    Checked: the four files exist; interp.json and config.json are JSON objects; every tensor
    of model.safetensors can be read; the architecture is known and named alike in
    interp.json (`model.arch`, and the top-level `arch` where present) and config.json; the
    tokenizer loads (and for task models has the package's character vocabulary). Pickled
    weights beside model.safetensors are never loaded: a warning says so."""
    pickles = [f.name for f in directory.iterdir() if f.suffix in PICKLE_SUFFIXES]
    missing = [f for f in REQUIRED if not (directory / f).is_file()]
    if "model.safetensors" in missing and pickles:
        raise InterpError(f"{directory} holds pickled weights ({', '.join(pickles)}), which "
                          "interp never loads; convert them to model.safetensors")
    if pickles and not missing:
        from interp.errors import warn

        warn(f"{directory} holds pickled {', '.join(pickles)} beside model.safetensors; "
             "using model.safetensors, the pickle is ignored (never loaded)")
    if missing:
        raise InterpError(f"checkpoint {directory} lacks {', '.join(missing)}; a checkpoint "
                          f"directory holds {', '.join(REQUIRED)}")
    try:
        meta = json.loads((directory / "interp.json").read_text())
        hf = json.loads((directory / "config.json").read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InterpError(f"{directory}: interp.json or config.json is not valid JSON ({e}); "
                          "re-save the checkpoint") from None
    if not isinstance(meta, dict) or not isinstance(hf, dict) or \
            not isinstance(meta.get("model", {}), dict):
        raise InterpError(f"{directory}: interp.json and config.json must each hold a JSON "
                          "object (interp.json with a 'model' object); re-save the checkpoint")
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(directory / "model.safetensors"), "pt") as f:
            keys = list(f.keys())
            for k in keys:  # reading every tensor catches truncated files
                f.get_slice(k)
    except (SafetensorError, OSError, ValueError) as e:
        raise InterpError(f"{directory / 'model.safetensors'} is corrupt or truncated ({e}); "
                          "rebuild the checkpoint") from None
    if not keys:
        raise InterpError(f"{directory / 'model.safetensors'} holds no tensors; rebuild the "
                          "checkpoint")
    arch = meta.get("model", {}).get("arch")
    model_type = hf.get("model_type")
    if (arch, model_type) not in {("decoder", "gpt2"), ("t5", "t5"),
                                  ("native", "interp-native")}:
        raise InterpError(f"{directory}: unknown architecture (interp.json arch={arch!r}, "
                          f"config.json model_type={model_type!r}); interp loads 'decoder' "
                          "(gpt2), 't5' and 'native' (interp-native) checkpoints")
    if "arch" in meta and meta["arch"] != arch:
        raise InterpError(f"{directory}: interp.json names two architectures (arch="
                          f"{meta['arch']!r}, model.arch={arch!r}); interp loads 'decoder', "
                          "'t5' and 'native' checkpoints, named alike in both places")
    check_tokenizer(directory, task_model=arch != "native")
    return meta


def check_tokenizer(directory: Path, task_model: bool = True) -> None:
    """Raise InterpError unless directory/tokenizer.json loads; a task model's tokenizer
    must hold the package's character vocabulary (the ids the model was trained on)."""
    from tokenizers import Tokenizer

    path = directory / "tokenizer.json"
    try:
        tok = Tokenizer.from_file(str(path))
    except Exception as e:  # the tokenizers library raises plain Exception subclasses
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise InterpError(f"{path} is not a readable tokenizer ({first[:120]}); rebuild the "
                          "checkpoint or restore its tokenizer.json") from None
    if task_model:
        from interp.tasks.tokenizer import VOCAB

        vocab = tok.get_vocab()
        wrong = [t for t, i in VOCAB.items() if vocab.get(t) != i]
        if wrong:
            raise InterpError(f"{path} does not hold the character vocabulary of the task "
                              f"models (e.g. {', '.join(map(repr, wrong[:3]))} missing or "
                              "renumbered); restore it with interp.tasks.save_tokenizer")


def save_checkpoint(model, directory: str | Path, meta: dict) -> Path:
    """Save an HF model, the tokenizer and interp.json into `directory`.

    Everything is first written to a temporary folder beside `directory`; each file then
    replaces its old version with one atomic rename, interp.json last. A crash therefore never
    leaves a half-written file, and other entries of `directory` (a training run's `resume`
    folder) stay untouched.
    """
    from transformers.utils import logging as hf_logging

    from interp.tasks.tokenizer import save_tokenizer

    hf_logging.disable_progress_bar()
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tmp = make_temp_dir(directory)
    try:
        model.save_pretrained(str(tmp), safe_serialization=True)
        save_tokenizer(tmp)
        (tmp / "interp.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        names = sorted((f.name for f in tmp.iterdir() if f.name != PARTIAL),
                       key=lambda n: n == "interp.json")
        for name in names:
            os.replace(tmp / name, directory / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return directory
