"""Models split across devices: `--device-map auto|balanced|sequential|JSON`.

    spec = parse_device_map('{"transformer.wte": "cuda:0", ...}')   # or "auto", or a .json
    placement = place(hf_model, spec, dtype)     # {module name: torch.device}, checked
    dispatch(hf_model, placement)                # weights moved, inputs follow them

A device map names, for modules of the plain HF model (`transformer.h.0`, `lm_head`,
`encoder.block.3` ...), the device that holds their weights AND runs them: unlike HF's own
`from_pretrained(device_map=...)`, a module mapped to "cpu" computes on the CPU (HF and
accelerate treat "cpu" beside a GPU as offload: the weights are streamed to the GPU for
every call, which TransformerBridge refuses). Each mapped module gets an accelerate
`AlignDevicesHook` that moves its inputs to its device; the model as a whole returns its
outputs on the device of its input embedding (`input_device`), where the bridge puts the
tokens. The strategies `auto` (= `balanced`), `balanced` and `sequential` are accelerate's
`infer_auto_device_map` over the CUDA devices present, then the CPU.

Checked before anything moves, each in one line: a device that does not exist (`cuda:3` on a
machine with one GPU, `cpu:7`), `disk` or `meta` (no offload), a name that is no module of
the model, two entries one inside the other, tensors no entry covers, and tied weights (GPT-2's
`transformer.wte` and `lm_head`; T5's `shared` and the embeddings) put on different devices.
"""

from __future__ import annotations

import json
from pathlib import Path

from interp.errors import InterpError

#: the named strategies (`auto` is accelerate's `balanced`)
STRATEGIES = ("auto", "balanced", "sequential")


def parse_device_map(spec):
    """A device map as given: a strategy name, a JSON object (text), a path to a .json file
    holding one, or a dict already. Returns the strategy (str) or the dict, unchecked
    against any model (`place` does that); refuses anything else in one line."""
    if isinstance(spec, dict):
        return _check_entries(spec)
    text = str(spec).strip()
    if text in STRATEGIES:
        return text
    path = Path(text)
    if path.suffix.lower() == ".json" and path.is_file():
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as e:
            raise InterpError(f"--device-map {path}: cannot read it ({e}); give a readable "
                              ".json file") from None
    elif text[:1] not in ("{", "["):
        raise InterpError(f"--device-map {_short(text)} is not a strategy, a JSON object "
                          f"or a .json file; give one of {', '.join(STRATEGIES)}, a JSON "
                          'object such as {"transformer.h.0": "cuda:0", ...}, or the '
                          "path of a .json file holding one")
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise InterpError(f"--device-map {_short(str(spec))} is not valid JSON ({e.msg} at "
                          f"character {e.pos}); give an object of module name -> device"
                          ) from None
    if not isinstance(value, dict):
        raise InterpError(f"--device-map holds a JSON {type(value).__name__}, not an object; "
                          'give module name -> device, e.g. {"transformer.h.0": "cuda:0"}')
    return _check_entries(value)


def _short(text: str, n: int = 80) -> str:
    return repr(text if len(text) <= n else text[:n] + "…")


def _check_entries(value: dict) -> dict:
    """Keys strings, values devices that exist here (no model needed)."""
    if not value:
        raise InterpError("--device-map is an empty object; give module name -> device for "
                          "every module (or auto, balanced, sequential)")
    out = {}
    for name, dev in value.items():
        if not isinstance(name, str):
            raise InterpError(f"--device-map key {name!r} is not a module name (a string)")
        out[name] = device_value(name, dev)
    return out


def device_value(name: str, dev):
    """The torch.device a map entry names: 'cpu', 'cuda', 'cuda:N', N (= cuda:N), 'mps';
    one line for a device this machine lacks, and for 'disk' / 'meta' (no offload)."""
    import torch

    where = f"--device-map entry {name!r}"
    if isinstance(dev, torch.device):
        dev = str(dev)
    if isinstance(dev, bool) or not isinstance(dev, (str, int)):
        raise InterpError(f"{where} maps to {dev!r}, not a device; use cpu, cuda:N or N")
    if isinstance(dev, int):
        if dev < 0:
            raise InterpError(f"{where} maps to {dev}; a GPU index is 0 or more")
        dev = f"cuda:{dev}"
    if dev.strip().lower() in ("disk", "meta"):
        raise InterpError(f"{where} maps to {dev!r}: offloading is not supported (weights "
                          "must sit on the device that runs them); use cpu, cuda:N or N")
    try:
        d = torch.device(dev.strip())
    except (RuntimeError, ValueError):
        raise InterpError(f"{where} maps to {dev!r}, not a device; use cpu, cuda:N or N"
                          ) from None
    if d.type == "cpu":
        if d.index not in (None, 0):
            raise InterpError(f"{where} maps to {dev!r}, which does not exist: there is one "
                              "CPU device, 'cpu'")
        return torch.device("cpu")
    if d.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = d.index if d.index is not None else 0
        if index >= count:
            raise InterpError(f"{where} maps to {dev!r}, which does not exist: this machine "
                              f"has {count} CUDA device(s)" +
                              (f" (cuda:0..cuda:{count - 1})" if count else "; use cpu"))
        return torch.device("cuda", index)
    if d.type == "mps":
        if not torch.backends.mps.is_available():
            raise InterpError(f"{where} maps to 'mps', which this machine lacks; use cpu")
        return d
    raise InterpError(f"{where} maps to {dev!r}, a device type interp does not run on; use "
                      "cpu, cuda:N or N")


def place(model, spec, dtype=None) -> dict:
    """{module name: torch.device} for `model` (the plain HF model) under `spec` (see
    `parse_device_map`), checked against the model's modules, tensors and tied weights."""
    spec = parse_device_map(spec)
    placement = _strategy(model, spec, dtype) if isinstance(spec, str) else spec
    check_placement(model, placement)
    return placement


def check_placement(model, placement: dict) -> None:
    """Refuse, in one line, a placement {module name: torch.device} that names no module of
    `model`, nests one entry in another, leaves a tensor unplaced or splits tied weights."""
    modules = dict(model.named_modules())
    unknown = [k for k in placement if k not in modules]
    if unknown:
        top = [n for n, m in model.named_modules() if n and n.count(".") <= 2
               and any(True for _ in m.parameters(recurse=False))][:6]
        raise InterpError(f"--device-map names {unknown[0]!r}, which is no module of this "
                          f"{type(model).__name__} (its modules are named like "
                          f"{', '.join(top)} ...; \"\" is the whole model)")
    keys = sorted(placement)
    for a in keys:
        for b in keys:
            if a != b and (a == "" or b.startswith(a + ".")):
                raise InterpError(f"--device-map names both {a or chr(34) * 2!r} and {b!r}, "
                                  "one inside the other; give each module one device")
    owner = {}                       # every tensor, by identity: (its name, its device)
    for kind, named in (("weight", model.named_parameters(remove_duplicate=False)),
                        ("buffer", model.named_buffers(remove_duplicate=False))):
        for name, t in named:
            key = _covering(name, placement)
            if key is None:
                raise InterpError(f"--device-map leaves the {kind} {name!r} without a "
                                  f"device; add its module ({name.rsplit('.', 1)[0]!r}) or "
                                  "a parent of it")
            seen = owner.setdefault(id(t), (name, key))
            if placement[seen[1]] != placement[key]:
                raise InterpError(f"--device-map puts {seen[1]!r} on {placement[seen[1]]} and "
                                  f"{key!r} on {placement[key]}, but they share one tied "
                                  f"tensor ({seen[0]} = {name}); map them to the same device")


def _covering(name: str, placement: dict):
    """The map entry holding tensor `name` (None when none does)."""
    parts = name.split(".")
    for i in range(len(parts) - 1, -1, -1):
        key = ".".join(parts[:i])
        if key in placement:
            return key
    return None


def _strategy(model, spec: str, dtype) -> dict:
    """accelerate's placement for a strategy: the CUDA devices present, then the CPU."""
    import torch
    from accelerate.utils import get_balanced_memory, get_max_memory, infer_auto_device_map

    no_split = list(getattr(model, "_no_split_modules", None) or [])
    dt = dtype or next(model.parameters()).dtype
    if spec == "sequential":
        memory = get_max_memory()
    else:
        memory = get_balanced_memory(model, dtype=dt, no_split_module_classes=no_split)
    found = infer_auto_device_map(model, max_memory=memory, no_split_module_classes=no_split,
                                  dtype=dt)
    placement = {}
    for name, dev in found.items():
        if dev == "disk":
            raise InterpError(f"--device-map {spec}: the model does not fit the memory of this "
                              "machine's devices (accelerate would offload to disk, which "
                              "interp does not do); give a map, or a machine with more memory")
        placement[name] = torch.device(f"cuda:{dev}" if isinstance(dev, int) else dev)
    return placement


def dispatch(model, placement: dict) -> None:
    """Move every mapped module to its device and make it take its inputs there; the model
    returns its outputs on `input_device(model)`. Also records the placement on the model
    (`interp_device_map`) and the input device (`_interp_input_device`)."""
    from accelerate.hooks import AlignDevicesHook, add_hook_to_module

    skip = getattr(model, "_skip_keys_device_placement", None)
    for name, dev in placement.items():
        module = model.get_submodule(name)
        module.to(dev)
        if name:             # a bridge component: the HF module it wraps takes the hook
            module = module._modules.get("_original_component", module)
            add_hook_to_module(module, AlignDevicesHook(execution_device=dev,
                                                        io_same_device=False,
                                                        skip_keys=skip))
    home = input_device(model)
    # the whole model: its inputs go to the embedding's device, its outputs come back there
    add_hook_to_module(model, AlignDevicesHook(execution_device=home, io_same_device=True,
                                               skip_keys=skip))
    model.interp_device_map = {k: str(v) for k, v in placement.items()}
    model._interp_input_device = home


def follow(model, placement: dict) -> None:
    """After the bridge has wrapped `model`: each mapped bridge component (which may compute
    from its HF module's weights without calling that module: TransformerBridge's T5 blocks
    and layer norms do) takes its inputs on its device too (`interp.hooks.move_inputs`)."""
    from interp.hooks import move_inputs

    for name, dev in placement.items():
        module = model.get_submodule(name)
        if name and "_original_component" in module._modules and \
                getattr(module, "_interp_mover", None) is None:
            module._interp_mover = move_inputs(module, dev)


def input_device(model):
    """Where token ids go: the device of the model's input embedding."""
    import torch

    embed = model.get_input_embeddings()
    for p in embed.parameters():
        return p.device
    return torch.device("cpu")


def devices(model) -> list:
    """The distinct devices a model's weights sit on, in order of first use."""
    out = []
    for p in model.parameters():
        if p.device not in out:
            out.append(p.device)
    return out
