"""Build, save and load models; every model comes back as a TransformerBridge.

    bridge, task = interp.load_model("quadratic-small")       # a shipped model
    bridge, task = interp.load_model("runs/my-model")         # a checkpoint directory
    bridge, _ = interp.load_model("path/to/hf-gpt2", dtype="bfloat16")   # any HF directory
    logits, cache = bridge.run_with_cache(tokens)              # TransformerLens hook names

One loader: `load_checkpoint` reads any checkpoint (a task model, a native language model, or
a plain HF directory the bridge can boot) onto a device and dtype, once; `load_model` is it
plus the bridge. Commands that decode at speed use `Checkpoint.model`, the plain HF model,
before the bridge wraps it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from interp.errors import InterpError
from interp.models.checkpoint import (
    REQUIRED,
    resolve,
    save_checkpoint,
    shipped_models,
    validate,
)
from interp.models.config import ARCHS, ModelConfig, build_model, n_params

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

DEFAULT_MODEL = "quadratic-small"


DTYPES = {"float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16",
          "float16": "float16", "fp16": "float16", "half": "float16"}


def resolve_device(device: str | None = "cpu"):
    """A torch.device from 'cpu', 'cuda', 'cuda:1', 'mps' or 'auto' (CUDA when present)."""
    import torch

    name = "cpu" if device is None else str(device)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError):
        raise InterpError(f"unknown device {name!r}; use cpu, cuda, cuda:N, mps or auto"
                          ) from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InterpError(f"device {name!r} asked for, but this machine has no CUDA GPU; use "
                          "--device cpu (or auto)")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise InterpError(f"device {name!r} does not exist; this machine has "
                          f"{torch.cuda.device_count()} CUDA device(s)")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise InterpError("device 'mps' asked for, but MPS is not available; use --device cpu")
    if dev.type not in ("cpu", "cuda", "mps"):
        raise InterpError(f"unsupported device {name!r}; use cpu, cuda, cuda:N, mps or auto")
    return dev


def resolve_dtype(dtype=None):
    """A torch dtype from None (float32), 'float32', 'bfloat16', 'float16' or a torch.dtype."""
    import torch

    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        if dtype not in (torch.float32, torch.bfloat16, torch.float16):
            raise InterpError(f"unsupported dtype {dtype}; use float32, bfloat16 or float16")
        return dtype
    name = DTYPES.get(str(dtype).lower())
    if name is None:
        raise InterpError(f"unknown dtype {str(dtype)!r}; use float32, bfloat16 or float16")
    return getattr(torch, name)


@dataclass
class Checkpoint:
    """A loaded checkpoint, on its device and dtype.

    model : the plain HF model in eval mode (task models; None for the others, whose model
        is read by `bridge()`)
    task : the checkpoint's task; asking a language model or an HF checkpoint for it raises
        InterpError (they have none: `task_or_none` is None)
    config : its ModelConfig (task models), else None
    meta : interp.json ({} for an HF checkpoint without one)
    arch : 'decoder' or 't5' (task models), 'native', or 'hf' (any HF directory)
    device : where token ids go (the input embedding's device under a device map)
    device_map : {module name: device} when the model is split (`interp.models.devmap`)
    """

    model: object
    task_or_none: object
    config: ModelConfig | None
    meta: dict
    path: Path
    arch: str = "decoder"
    device: object = None
    dtype: object = None
    device_map: dict | None = None
    _bridge: object = None

    @property
    def task(self):
        if self.task_or_none is None:
            what = ("an HF checkpoint without interp.json" if self.arch != "native" else
                    "a language model (arch 'native')"
                    if self.meta.get("task", {}).get("task") != "tracr" else
                    f"a compiled RASP program ({self.meta['task'].get('program')!r}, arch "
                    "'native'; its pairs: circuits.discovery.known)")
            raise InterpError(f"{self.path} is {what}, without a task; this needs a task model "
                              "(`interp models` lists them); analyse it with interp.load_model, "
                              "classify_heads or circuits.induction")
        return self.task_or_none

    def bridge(self):
        """The TransformerBridge over this checkpoint (made once, eval mode). For task models
        it wraps `model` in place: decode with `model` before asking for the bridge."""
        if self._bridge is None:
            self._bridge = _make_bridge(self)
        return self._bridge


def load_checkpoint(name_or_path: str | os.PathLike = DEFAULT_MODEL, device: str | None = "cpu",
                    dtype=None, device_map=None) -> Checkpoint:
    """Read any checkpoint once: a shipped name or a directory (task model, native language
    model, or a plain HF directory with safetensors weights). Safetensors only; eval mode.

    Parameters
    ----------
    name_or_path : a shipped model's name (`interp models`) or a checkpoint directory
    device : 'cpu' (default), 'cuda', 'cuda:N', 'mps' or 'auto'
    dtype : None or 'float32' (default), 'bfloat16', 'float16'
    device_map : None, 'auto', 'balanced', 'sequential', a dict module name -> device, a
        JSON object or a .json file: split an HF model (task models, HF directories) across
        devices (`interp.models.devmap`); `device` must then be left at 'cpu' or None
    """
    if device_map is not None:
        from interp.models.devmap import parse_device_map

        if device not in (None, "cpu"):
            raise InterpError(f"--device {device} and --device-map both given; give one "
                              "(the map names every module's device)")
        device_map = parse_device_map(device_map)
    dev, dt = resolve_device(device), resolve_dtype(dtype)
    path = resolve(name_or_path)
    if not (path / "interp.json").is_file():
        if (path / "config.json").is_file():
            from interp.models.checkpoint import check_weights

            for file in sorted(path.glob("*.safetensors")):   # an HF folder: finite weights
                check_weights(file)
            return Checkpoint(None, None, None, {}, path, "hf", dev, dt, device_map)
    meta = validate(path)
    if meta["model"]["arch"] == "native":
        if device_map is not None:
            what = ("a compiled RASP program" if meta.get("task", {}).get("task") == "tracr"
                    else "a native model")
            raise InterpError(f"{path} is {what} (arch 'native'), which loads on one device; "
                              "leave out --device-map and give --device")
        return Checkpoint(None, None, None, meta, path, "native", dev, dt)
    model, task, cfg = _load_task_model(path, meta)
    if device_map is None:
        model.to(device=dev, dtype=dt)
        return Checkpoint(model, task, cfg, meta, path, cfg.arch, dev, dt)
    from interp.models.devmap import dispatch, input_device, place

    model.to(dtype=dt)
    placement = place(model, device_map, dt)
    dispatch(model, placement)
    return Checkpoint(model, task, cfg, meta, path, cfg.arch, input_device(model), dt,
                      placement)


def load_model(name_or_path: str | os.PathLike = DEFAULT_MODEL, device: str | None = "cpu",
               dtype=None, device_map=None):
    """Return (bridge, task) for a shipped model name or a checkpoint directory.

    Parameters
    ----------
    name_or_path : a shipped model's name (`interp models`) or a checkpoint directory; a plain
        HF directory (GPT-2, BERT, T5 ... with safetensors weights) loads too
    device : 'cpu' (default), 'cuda', 'cuda:N', 'mps' or 'auto' (CUDA when present)
    dtype : None or 'float32' (default), 'bfloat16' or 'float16'
    device_map : None (one device), 'auto', 'balanced', 'sequential', or module name ->
        device (a dict, a JSON object, a .json file): the model split across devices, each
        module run where its weights are (`interp.models.devmap`; not for native models)

    Returns
    -------
    bridge : `transformer_lens.model_bridge.TransformerBridge` in eval mode. For T5 its hooks
        are `encoder_blocks.{l}.attn.*`, `decoder_blocks.{l}.self_attn.*` and
        `decoder_blocks.{l}.cross_attn.*` (`interp.hooks.hook_name` spells them).
    task : the checkpoint's `interp.tasks.Task`; None for language models (the induction
        models) and HF directories.
    """
    ckpt = load_checkpoint(name_or_path, device, dtype, device_map)
    return ckpt.bridge(), ckpt.task_or_none


def _load_task_model(path: Path, meta: dict):
    """The plain HF model (eval mode), task and config of a task checkpoint."""
    from transformers import GPT2LMHeadModel, T5ForConditionalGeneration
    from transformers.utils import logging as hf_logging

    from interp.tasks import task_from_description

    hf_logging.disable_progress_bar()
    try:
        cfg = ModelConfig.from_dict(meta["model"])
        task = task_from_description(meta.get("task", {}))
    except InterpError:
        raise
    except (TypeError, ValueError, KeyError) as e:
        raise InterpError(f"{path}/interp.json has an unreadable model or task description "
                          f"({type(e).__name__}: {e}); re-save the checkpoint") from None
    cls = GPT2LMHeadModel if cfg.arch == "decoder" else T5ForConditionalGeneration
    check_config_and_shapes(path, cls)
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
    return model, task, cfg


#: config.json fields that must be positive integers, per model type
_POSITIVE = {"gpt2": ("n_head", "n_embd", "n_layer", "n_positions", "vocab_size"),
             "t5": ("num_heads", "d_model", "d_kv", "num_layers", "d_ff", "vocab_size")}


def check_config_and_shapes(path: Path, cls) -> None:
    """One line, before HF builds anything, when config.json is out of range (a count of 0
    or below, a width its heads do not divide) or does not fit the weights: the model the
    config describes is built on the meta device (no memory) and every tensor's shape is
    compared with model.safetensors, naming the first that differs."""
    import json

    import torch
    from safetensors import safe_open

    hf = json.loads((path / "config.json").read_text())
    kind = hf.get("model_type")
    for name in _POSITIVE.get(kind, ()):
        v = hf.get(name, 1 if name == "num_layers" else None)
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
            raise InterpError(f"{path}/config.json: {name} is {v!r}; it must be a positive "
                              "integer (re-save the checkpoint, or fix the config)")
    with safe_open(str(path / "model.safetensors"), "pt") as f:
        have = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    _check_layer_counts(path, kind, hf, have)          # before a build of a wrong size
    try:
        config = cls.config_class.from_dict(hf)
        with torch.device("meta"):
            want = {k: tuple(v.shape) for k, v in cls(config).state_dict().items()}
    except Exception as e:        # HF's own checks: ValueError, strict dataclass errors ...
        raise InterpError(f"{path}/config.json describes no buildable model "
                          f"({type(e).__name__}: {(str(e).splitlines() or [''])[0]}); fix the "
                          "config or re-save the checkpoint") from None
    for k, shape in have.items():
        if k in want and want[k] != shape:
            raise InterpError(f"{path}: tensor {k} of model.safetensors has shape "
                              f"{list(shape)}, but config.json describes {list(want[k])}; the "
                              "weights and the config must come from the same model")
    tied = getattr(cls, "_tied_weights_keys", None) or ()       # stored once, under a source
    tied = set(tied.keys() if isinstance(tied, dict) else tied)
    missing = [k for k in want if k not in have and k not in tied]
    if missing:
        raise InterpError(f"{path}: config.json describes tensors that model.safetensors lacks "
                          f"({len(missing)}, e.g. {missing[0]}); the weights and the config "
                          "must come from the same model")


_LAYER_KEYS = {"gpt2": (("n_layer", r"^transformer\.h\.(\d+)\."),),
               "t5": (("num_layers", r"^encoder\.block\.(\d+)\."),
                      ("num_decoder_layers", r"^decoder\.block\.(\d+)\."))}


def _check_layer_counts(path: Path, kind, hf: dict, have: dict) -> None:
    """The number of layers config.json names against the blocks model.safetensors holds
    (read from the tensor names: no model is built)."""
    import re

    for field_name, pattern in _LAYER_KEYS.get(kind, ()):
        said = hf.get(field_name, hf.get("num_layers"))
        found = {int(m[1]) for k in have if (m := re.match(pattern, k))}
        if said is not None and found and said != max(found) + 1:
            raise InterpError(f"{path}/config.json: {field_name} is {said}, but "
                              f"model.safetensors holds {max(found) + 1} such layers; the "
                              "weights and the config must come from the same model")


def _make_bridge(ckpt: Checkpoint):
    """The bridge of a checkpoint, on its device and dtype, in eval mode."""
    from transformer_lens.model_bridge import TransformerBridge
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    if ckpt.arch == "native":
        from interp.models.native import load_native

        bridge = load_native(ckpt.path)
        bridge.to(device=ckpt.device, dtype=ckpt.dtype, print_details=False)
    elif ckpt.arch == "hf":
        bridge = _boot_hf(ckpt.path, ckpt.device, ckpt.dtype)
        if ckpt.device_map is not None:      # booted on the CPU, then split
            from interp.models.devmap import dispatch, input_device, place

            ckpt.device_map = place(bridge.original_model, ckpt.device_map, ckpt.dtype)
            dispatch(bridge.original_model, ckpt.device_map)
            ckpt.device = input_device(bridge.original_model)
    else:
        tokenizer = AutoTokenizer.from_pretrained(str(ckpt.path))
        bridge = TransformerBridge.boot_transformers(str(ckpt.path), hf_model=ckpt.model,
                                                     tokenizer=tokenizer, device=ckpt.device,
                                                     dtype=ckpt.dtype)
    if ckpt.device_map is not None:
        from interp.models.devmap import devices, follow

        follow(bridge.original_model, ckpt.device_map)

        bridge.cfg.device = str(ckpt.device)         # where the bridge puts token ids
        bridge.cfg.n_devices = len(devices(bridge.original_model))
        bridge._interp_input_device = ckpt.device
    bridge.eval()
    return bridge


def _boot_hf(path: Path, device, dtype):
    """Boot any HF checkpoint directory the bridge knows (GPT-2, BERT, T5 ...), without
    interp.json. Only safetensors weights are accepted."""
    from transformer_lens.model_bridge import TransformerBridge

    from interp.models.checkpoint import PICKLE_SUFFIXES

    if not any(path.glob("*.safetensors")):
        pickles = [f.name for f in path.iterdir() if f.suffix in PICKLE_SUFFIXES]
        raise InterpError(f"{path} has no .safetensors weights" +
                          (f" (only pickled {', '.join(pickles)}, which interp never loads)"
                           if pickles else "") + "; save the model with safetensors")
    try:
        return TransformerBridge.boot_transformers(str(path), device=device, dtype=dtype)
    except Exception as e:  # the bridge raises many types; the user needs one line
        raise InterpError(f"TransformerBridge could not boot {path}: "
                          f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None


__all__ = ["Checkpoint", "ModelConfig", "ARCHS", "DEFAULT_MODEL", "DTYPES", "REQUIRED",
           "build_model", "n_params", "load_checkpoint", "load_model", "save_checkpoint",
           "resolve", "resolve_device", "resolve_dtype", "shipped_models",
           "validate"]
