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
import tempfile
from pathlib import Path

from interp.errors import InterpError

REQUIRED = ("config.json", "model.safetensors", "tokenizer.json", "interp.json")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
SHIPPED_DIR = Path(__file__).resolve().parent.parent / "checkpoints"


def shipped_models() -> list[str]:
    if not SHIPPED_DIR.is_dir():
        return []
    return sorted(p.name for p in SHIPPED_DIR.iterdir() if (p / "interp.json").is_file())


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
    """Check a checkpoint directory and return its interp.json; raise InterpError if unusable."""
    pickles = [f.name for f in directory.iterdir() if f.suffix in PICKLE_SUFFIXES]
    missing = [f for f in REQUIRED if not (directory / f).is_file()]
    if "model.safetensors" in missing and pickles:
        raise InterpError(f"{directory} holds pickled weights ({', '.join(pickles)}), which "
                          "interp never loads; convert them to model.safetensors")
    if missing:
        raise InterpError(f"checkpoint {directory} lacks {', '.join(missing)}; a checkpoint "
                          f"directory holds {', '.join(REQUIRED)}")
    try:
        meta = json.loads((directory / "interp.json").read_text())
        hf = json.loads((directory / "config.json").read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InterpError(f"{directory}: interp.json or config.json is not valid JSON ({e}); "
                          "re-save the checkpoint") from None
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
    return meta


def write_json_atomic(path: Path, obj) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def replace_dir_atomic(fill, target: Path) -> None:
    """Build a directory with `fill(tmpdir)` next to `target`, then swap it into place.

    A crash leaves either the old directory or the new one, never a half-written one; stray
    temporary directories start with a dot and are ignored by the loader.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        fill(tmp)
        if target.exists():
            old = target.with_name(f".{target.name}.old-{os.getpid()}")
            os.rename(target, old)
            os.rename(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


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
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.tmp-", dir=directory.parent))
    try:
        model.save_pretrained(str(tmp), safe_serialization=True)
        save_tokenizer(tmp)
        (tmp / "interp.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        names = sorted((f.name for f in tmp.iterdir()), key=lambda n: n == "interp.json")
        for name in names:
            os.replace(tmp / name, directory / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return directory
