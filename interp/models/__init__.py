"""Build, save and load models; every model comes back as a TransformerBridge.

    bridge, task = interp.load_model("quadratic-small")       # a shipped model
    bridge, task = interp.load_model("runs/my-model")         # a checkpoint directory
    logits, cache = bridge.run_with_cache(tokens)              # TransformerLens hook names
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from interp.errors import InterpError
from interp.models.checkpoint import (REQUIRED, replace_dir_atomic, resolve, save_checkpoint,
                                      shipped_models, validate)
from interp.models.config import ARCHS, ModelConfig, build_model, n_params

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

DEFAULT_MODEL = "quadratic-small"


@dataclass
class Checkpoint:
    """A loaded checkpoint: the plain HF model (eval mode), its task, config and metadata."""

    model: object
    task: object
    config: ModelConfig
    meta: dict
    path: Path

    @property
    def arch(self) -> str:
        return self.config.arch


def load_checkpoint(name_or_path: str | os.PathLike = DEFAULT_MODEL) -> Checkpoint:
    """Load a checkpoint's HF model (safetensors only, eval mode) and rebuild its task."""
    from transformers import GPT2LMHeadModel, T5ForConditionalGeneration
    from transformers.utils import logging as hf_logging

    from interp.tasks import task_from_description

    hf_logging.disable_progress_bar()

    path = resolve(name_or_path)
    meta = validate(path)
    if meta["model"]["arch"] == "native":
        raise InterpError(f"{path} is a language model without a task (arch 'native'); load "
                          "it with interp.load_model or interp.models.native.load_native")
    try:
        cfg = ModelConfig.from_dict(meta["model"])
        task = task_from_description(meta.get("task", {}))
    except InterpError:
        raise
    except (TypeError, ValueError, KeyError) as e:
        raise InterpError(f"{path}/interp.json has an unreadable model or task description "
                          f"({type(e).__name__}: {e}); re-save the checkpoint") from None
    cls = GPT2LMHeadModel if cfg.arch == "decoder" else T5ForConditionalGeneration
    try:
        model, info = cls.from_pretrained(str(path), use_safetensors=True,
                                          output_loading_info=True)
    except (OSError, ValueError, RuntimeError) as e:
        raise InterpError(f"could not load the weights in {path}: {str(e).splitlines()[0]}; "
                          "the checkpoint's config.json and model.safetensors must match") from None
    # tied output embeddings are stored once; anything else missing would stay random
    missing = [k for k in info.get("missing_keys", []) if k != "lm_head.weight"]
    if missing or info.get("unexpected_keys") or info.get("mismatched_keys"):
        bad = (missing + list(info.get("unexpected_keys", [])) +
               [str(m[0]) if isinstance(m, tuple) else str(m)
                for m in info.get("mismatched_keys", [])])
        raise InterpError(f"model.safetensors in {path} does not match config.json (e.g. "
                          f"{', '.join(bad[:3])}); the weights and the config must come from "
                          "the same model")
    model.eval()
    return Checkpoint(model, task, cfg, meta, path)


def to_bridge(ckpt: Checkpoint):
    """Wrap a loaded checkpoint in a TransformerBridge (eval mode, tokenizer from the dir)."""
    from transformer_lens.model_bridge import TransformerBridge
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(ckpt.path))
    bridge = TransformerBridge.boot_transformers(str(ckpt.path), hf_model=ckpt.model,
                                                 tokenizer=tokenizer)
    bridge.eval()
    return bridge


def load_hf_bridge(path: str | os.PathLike):
    """A TransformerBridge for any HF checkpoint directory the bridge can boot (GPT-2, BERT,
    T5 ...), without interp.json. Only safetensors weights are accepted."""
    from transformer_lens.model_bridge import TransformerBridge
    from transformers.utils import logging as hf_logging

    from interp.models.checkpoint import PICKLE_SUFFIXES

    hf_logging.disable_progress_bar()
    path = Path(path)
    if not path.is_dir():
        raise InterpError(f"no checkpoint directory {str(path)!r}")
    if not (path / "config.json").is_file():
        raise InterpError(f"{path} has no config.json; an HF checkpoint directory holds "
                          "config.json, model.safetensors and the tokenizer files")
    if not any(path.glob("*.safetensors")):
        pickles = [f.name for f in path.iterdir() if f.suffix in PICKLE_SUFFIXES]
        raise InterpError(f"{path} has no .safetensors weights" +
                          (f" (only pickled {', '.join(pickles)}, which interp never loads)"
                           if pickles else "") + "; save the model with safetensors")
    try:
        bridge = TransformerBridge.boot_transformers(str(path))
    except Exception as e:  # the bridge raises many types; the user needs one line
        raise InterpError(f"TransformerBridge could not boot {path}: "
                          f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    bridge.eval()
    return bridge


def load_model(name_or_path: str | os.PathLike = DEFAULT_MODEL):
    """Return (bridge, task) for a shipped model name or a checkpoint directory.

    The bridge is a `transformer_lens.model_bridge.TransformerBridge` in eval mode; for T5 its
    hooks are `encoder_blocks.{l}.attn.*`, `decoder_blocks.{l}.self_attn.*` and
    `decoder_blocks.{l}.cross_attn.*`. Native language models (the induction models) have
    no task: their task is None.
    """
    path = resolve(name_or_path)
    if validate(path)["model"]["arch"] == "native":
        from interp.models.native import load_native

        return load_native(path), None
    ckpt = load_checkpoint(path)
    return to_bridge(ckpt), ckpt.task


__all__ = ["Checkpoint", "ModelConfig", "ARCHS", "DEFAULT_MODEL", "REQUIRED", "build_model",
           "n_params", "load_checkpoint", "load_model", "load_hf_bridge", "to_bridge", "save_checkpoint",
           "replace_dir_atomic", "resolve", "shipped_models", "validate"]
