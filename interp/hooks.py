"""Attention kinds, the one adapter from (kind, layer) to TransformerLens hook names, and the
one helper that runs a model with hooks.

A decoder-only model has one kind, `self` (causal). An encoder (BERT) has `encoder`
(bidirectional). T5 has three: `encoder` (bidirectional over the input), `decoder_self`
(causal over the output) and `cross` (output positions x input positions). Analyses name the
kind they read instead of assuming `blocks.{l}`.

Vocabulary, used everywhere: an attention *kind* (above) names what a head attends over; a
*side* names a token sequence (`seq` for decoder-only and encoder models, `src` and `tgt` for
T5's input and output); a model's *arch* is `decoder`, `encoder` or `t5` (`arch_of`).

    hook_name(bridge, "cross", 2, "hook_z")      # 'decoder_blocks.2.cross_attn.hook_z'
    hook_name(bridge, "self", 1, "hook_resid_pre")   # 'blocks.1.hook_resid_pre'
    out = run(bridge, ids, hooks=[(name, fn)])  # eval mode, no grad, mode restored
    acts = capture(bridge, ids, {name})         # stops after the last wanted hook
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import torch

from interp.errors import InterpError


@dataclass(frozen=True)
class Kind:
    name: str
    causal: bool
    query_side: str  # "seq" (decoder-only / encoder input), "src" or "tgt" (T5)
    key_side: str


KINDS = {
    "self": Kind("self", True, "seq", "seq"),
    "encoder": Kind("encoder", False, "src", "src"),
    "decoder_self": Kind("decoder_self", True, "tgt", "tgt"),
    "cross": Kind("cross", False, "tgt", "src"),
}


def arch_of(bridge) -> str:
    """'decoder' (causal LM), 'encoder' (BERT-like) or 't5' (encoder-decoder): the `arch` a
    checkpoint's interp.json records, read from the bridge itself (and kept on it: the
    module tree is walked once)."""
    arch = getattr(bridge, "_interp_arch", None)
    if arch is None:
        arch = _read_arch(bridge)
        try:
            bridge._interp_arch = arch
        except AttributeError:     # an object that takes no attributes: read it each time
            pass
    return arch


def _read_arch(bridge) -> str:
    names = {n for n, _ in bridge.named_modules()}
    if any(n.startswith("encoder_blocks") for n in names) and \
            any(n.startswith("decoder_blocks") for n in names):
        return "t5"
    arch = str(getattr(bridge.cfg, "architecture", "") or
               getattr(bridge.cfg, "original_architecture", "") or "")
    if "Bert" in arch or "Roberta" in arch or "Electra" in arch:
        return "encoder"
    return "decoder"


def kinds_of(bridge) -> tuple[str, ...]:
    return {"decoder": ("self",), "encoder": ("encoder",),
            "t5": ("encoder", "decoder_self", "cross")}[arch_of(bridge)]


def n_layers(bridge, kind: str) -> int:
    if arch_of(bridge) == "t5":
        return len(bridge.encoder_blocks if kind == "encoder" else bridge.decoder_blocks)
    return int(bridge.cfg.n_layers)


# hooks that live on the block (the residual stream, the sublayers' outputs); all others
# (hook_pattern, hook_z, hook_q, hook_k, hook_v, hook_result ...) live on the attention module
BLOCK_HOOKS = ("hook_resid_pre", "hook_resid_mid", "hook_resid_post", "hook_attn_out",
               "hook_mlp_out", "hook_cross_attn_out")


def block_name(bridge, kind: str, layer: int) -> str:
    """The block holding attention `kind` at `layer`: `blocks.{l}`, `encoder_blocks.{l}` or
    `decoder_blocks.{l}` (T5's decoder self and cross attention share one block)."""
    allowed = kinds_of(bridge)
    if kind not in allowed:
        raise InterpError(f"attention kind {kind!r} does not exist in this model; its kinds "
                          f"are {', '.join(allowed)}")
    n = n_layers(bridge, kind)
    if not 0 <= layer < n:
        raise InterpError(f"layer {layer} is out of range for kind {kind!r}; layers are 0..{n - 1}")
    if arch_of(bridge) != "t5":
        return f"blocks.{layer}"
    return f"{'encoder' if kind == 'encoder' else 'decoder'}_blocks.{layer}"


def hook_name(bridge, kind: str, layer: int, hook: str = "hook_pattern") -> str:
    """The TransformerLens hook name of `hook` for attention `kind` at `layer`.

    Block-level hooks (`BLOCK_HOOKS`, e.g. `hook_resid_pre`) are those of the block holding
    the kind; the others are the attention module's (`attn`, `self_attn` or `cross_attn`)."""
    block = block_name(bridge, kind, layer)
    if hook in BLOCK_HOOKS:
        return f"{block}.{hook}"
    attn = {"cross": "cross_attn", "decoder_self": "self_attn"}.get(kind, "attn")
    return f"{block}.{attn}.{hook}"


def layer_hooks(bridge, kind: str, hook: str) -> list[str]:
    """`hook_name` for every layer of `kind`, in order."""
    return [hook_name(bridge, kind, l, hook) for l in range(n_layers(bridge, kind))]


def module_at(bridge, name: str) -> torch.nn.Module:
    """The submodule at a dotted name (a hook name without its last part, e.g.
    `blocks.1.attn`)."""
    return bridge.get_submodule(name)


def device_of(model: torch.nn.Module) -> torch.device:
    """The device a model takes its inputs on: that of its input embedding when it is split
    across devices (`interp.models.devmap`), else of its first parameter (CPU for a model
    without parameters)."""
    home = getattr(model, "_interp_input_device", None)
    if home is not None:
        return home
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def to_device(x, device: torch.device):
    """`x` on `device`: tensors moved, lists/tuples/dicts of them walked, all else as is."""
    if isinstance(x, torch.Tensor):
        return x.to(device)
    if isinstance(x, (list, tuple)):
        return type(x)(to_device(v, device) for v in x)
    if isinstance(x, dict):
        return {k: to_device(v, device) for k, v in x.items()}
    return x


class InputMover:
    """A forward pre-hook moving a module's tensor inputs to `device`; `calls` counts the
    forward passes it saw."""

    def __init__(self, device: torch.device):
        self.device, self.calls = device, 0

    def __call__(self, module, args, kwargs):
        self.calls += 1
        return to_device(args, self.device), to_device(kwargs, self.device)


def move_inputs(module: torch.nn.Module, device: torch.device) -> InputMover:
    """Make `module` take its inputs on `device` from now on (a model split across devices,
    `interp.models.devmap`): a lasting forward pre-hook; returns it."""
    mover = InputMover(device)
    module.register_forward_pre_hook(mover, with_kwargs=True)
    return mover


def dtype_of(model: torch.nn.Module) -> torch.dtype:
    """The floating dtype of a model's first floating parameter (float32 without one)."""
    for p in model.parameters():
        if p.is_floating_point():
            return p.dtype
    return torch.float32


@contextlib.contextmanager
def eval_mode(model: torch.nn.Module):
    """Put `model` in eval mode for the block and restore its training flag afterwards.

    A model whose root is already in eval mode is left as it is (`Module.eval` walks every
    submodule: hundreds in a bridge, on every forward of an analysis)."""
    was_training = model.training
    if was_training:
        model.eval()
    try:
        yield model
    finally:
        if was_training:
            model.train(was_training)


class _Enough(Exception):
    """Raised inside the last wanted hook: the rest of the forward pass is not needed."""


Hook = tuple[str, Callable]


def run(model, *args, hooks: Iterable[Hook] = (), pre_hooks: Sequence[tuple] = (),
        module_hooks: Sequence[tuple] = (), grad: bool = False, **kwargs):
    """Run `model(*args, **kwargs)` once in eval mode; the one forward path of every analysis.

    Parameters
    ----------
    model : TransformerBridge (or any torch module: then `hooks` must be empty)
    hooks : (hook name, fn(tensor, hook) -> tensor | None) pairs, TransformerLens style
    pre_hooks : (module, fn(module, args, kwargs) -> (args, kwargs) | None) pairs, registered
        as torch forward pre-hooks with kwargs for this call only
    module_hooks : (module, fn(module, args, kwargs, output) -> output | None) pairs, torch
        forward hooks with kwargs for this call only
    grad : keep the autograd graph (attribution patching); default no_grad
    kwargs : passed to the model (`attention_mask`, `decoder_input`, `start_at_layer` ...)

    Notes
    -----
    Tensors among `args` and `kwargs` are moved to the model's device first. Returns the
    model's output (on that device). The model's training flag and its hooks are restored
    whatever happens.
    """
    dev = device_of(model)
    args, kwargs = to_device(args, dev), to_device(kwargs, dev)
    handles = []
    with eval_mode(model), torch.set_grad_enabled(grad):
        try:
            handles += [m.register_forward_pre_hook(fn, with_kwargs=True) for m, fn in pre_hooks]
            handles += [m.register_forward_hook(fn, with_kwargs=True) for m, fn in module_hooks]
            hooks = list(hooks)
            if not hooks:
                return model(*args, **kwargs)
            with contextlib.ExitStack() as stack:
                try:
                    stack.enter_context(model.hooks(fwd_hooks=hooks))
                except KeyError as e:   # the bridge names a hook it does not have
                    raise InterpError(f"{e.args[0] if e.args else e}; hook names come from "
                                      "interp.hooks.hook_name") from None
                return model(*args, **kwargs)
        finally:
            for h in handles:
                h.remove()


def capture(model, *args, names: Iterable[str], hooks: Iterable[Hook] = (),
            stop: bool = True, **kwargs) -> dict[str, torch.Tensor]:
    """The activations at hook `names` of one forward pass (detached), as {name: tensor}.

    With `stop` (the default) the pass ends as soon as the last of them is seen: the later
    layers and the unembedding are skipped. `hooks` (applied first) and the other keywords are
    those of `run`. Raises InterpError when the model never reaches one of the names."""
    wanted = set(names)
    store: dict[str, torch.Tensor] = {}

    def keeper(name):
        def keep(tensor, hook):
            store[name] = tensor.detach()
            if stop and len(store) == len(wanted):
                raise _Enough
            return tensor
        return keep

    try:
        run(model, *args, hooks=[*hooks, *((n, keeper(n)) for n in sorted(wanted))], **kwargs)
    except _Enough:
        pass
    missing = wanted - set(store)
    if missing:
        raise InterpError(f"the model never ran the hooks {sorted(missing)}")
    return store
