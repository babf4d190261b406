"""Sites: the activations patching writes, their cells, the setters that write one cell per
copy of the batch, and the forward passes that run them.

A site names an attention kind (`interp.hooks.KINDS`) and a TransformerLens hook; its hook
name at each layer comes from `interp.hooks.hook_name`. The user-visible T5 site names keep
their stack prefix (`enc.`, `dec.`, `cross.`), read here as the kinds `encoder`,
`decoder_self` and `cross`.

Layouts: "pos" [batch, pos, d_model]; "z" [batch, pos, head, d_head]; "pattern" and
"t5_pattern" [batch, head, query, key]. T5's patterns cannot be edited through
TransformerLens 4.3's hook (the bridge fires `hook_pattern` after HF has used the weights),
so a forward hook on HF's attention recomputes its output from the patched pattern instead
(`t5_pattern_hook`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from interp.errors import InterpError
from interp.hooks import (
    KINDS,
    arch_of,
    hook_name,
    module_at,
    n_layers,
    run,
)

DECODER_SITES = ("resid_pre", "attn_out", "mlp_out", "head", "head_pos", "pattern")
T5_SITES = ("enc.resid_pre", "enc.attn_out", "enc.mlp_out", "enc.head", "enc.head_pos",
            "dec.resid_pre", "dec.attn_out", "dec.cross_attn_out", "dec.mlp_out", "dec.head",
            "dec.head_pos", "cross.head", "cross.head_pos", "enc.pattern", "dec.pattern",
            "cross.pattern")
#: the stack prefix of a T5 site name -> the attention kind it reads
STACK_KINDS = {"enc": "encoder", "dec": "decoder_self", "cross": "cross"}
#: site name (without its stack) -> (hook, axes of a cell, layout)
PARTS = {"resid_pre": ("hook_resid_pre", ("layer", "pos"), "pos"),
         "attn_out": ("hook_attn_out", ("layer", "pos"), "pos"),
         "cross_attn_out": ("hook_cross_attn_out", ("layer", "pos"), "pos"),
         "mlp_out": ("hook_mlp_out", ("layer", "pos"), "pos"),
         "head": ("hook_z", ("layer", "head"), "z"),
         "head_pos": ("hook_z", ("layer", "head", "pos"), "z"),
         "pattern": ("hook_pattern", ("layer", "head"), "pattern")}


@dataclass(frozen=True)
class Site:
    """One patchable activation.

    Attributes
    ----------
    name : str
        The user-visible site name (`resid_pre`, `cross.head_pos` ...).
    kind : str
        The attention kind whose layers it spans (`self`, `encoder`, `decoder_self`, `cross`).
    hook : str
        The TransformerLens hook at each layer (`hook_resid_pre`, `hook_z` ...).
    axes : tuple of str
        The axes of a cell: ("layer", "pos"), ("layer", "head") or ("layer", "head", "pos").
    side : str
        The token sequence its positions index ("seq", "src" or "tgt").
    layout : str
        "pos", "z", "pattern" or "t5_pattern" (see the module docstring).
    """

    name: str
    kind: str
    hook: str
    axes: tuple[str, ...]
    side: str
    layout: str

    def names(self, bridge) -> list[str]:
        """The hook name at every layer, in order."""
        return [hook_name(bridge, self.kind, l, self.hook)
                for l in range(n_layers(bridge, self.kind))]


def site(bridge, what: str) -> Site:
    """The `Site` called `what` in this model; an InterpError lists the sites it has."""
    arch = arch_of(bridge)
    if arch == "decoder":
        if what not in DECODER_SITES:
            raise InterpError(f"unknown site {what!r} for a decoder-only model; choose one of "
                              f"{', '.join(DECODER_SITES)}")
        kind, part = "self", what
    elif arch == "t5":
        if what not in T5_SITES:
            raise InterpError(f"unknown site {what!r} for a T5 model; choose one of "
                              f"{', '.join(T5_SITES)}")
        stack, part = what.split(".", 1)
        kind = STACK_KINDS[stack]
    else:
        raise InterpError(f"patching needs a decoder-only or T5 model; this one is {arch!r}")
    hook, axes, layout = PARTS[part]
    if part == "mlp_out" and getattr(bridge.cfg, "attn_only", False) is True:
        raise InterpError(f"site {what!r}: this model is attention-only (no MLP); choose one "
                          f"of {', '.join(x for x in DECODER_SITES if x != 'mlp_out')}")
    if arch == "t5" and layout == "pattern":  # read through the hook, written by t5_pattern_hook
        layout = "t5_pattern"
    return Site(what, kind, hook, axes, KINDS[kind].query_side, layout)


# ---------------------------------------------------------------------------------------
# cells and setters
def cells(s: Site, n_heads: int, width: int, layer: int) -> list[tuple[int, ...]]:
    """The cells of `s` at `layer`: (layer, pos), (layer, head) or (layer, head, pos)."""
    if s.axes == ("layer", "pos"):
        return [(layer, p) for p in range(width)]
    if s.axes == ("layer", "head"):
        return [(layer, h) for h in range(n_heads)]
    return [(layer, h, p) for h in range(n_heads) for p in range(width)]


def cell_slice(s: Site, act: torch.Tensor, cell) -> torch.Tensor:
    """The part of `act` [batch, ...] that patching `cell` overwrites."""
    if s.layout == "pos":
        return act[:, cell[1]]
    if s.layout == "z":
        return act[:, :, cell[1]] if len(cell) == 2 else act[:, cell[2], cell[1]]
    return act[:, cell[1]]  # patterns [batch, head, q, k]


def setter(s: Site, cells: Sequence[tuple], source: torch.Tensor, batch: int):
    """A TransformerLens hook writing, in copy k of the batch, cell k's slice of `source`
    [batch, ...] (the activation is [len(cells) * batch, ...])."""
    def hook(act, hook, source=source):
        act = act.clone()
        source = source.to(act.device)     # a model split across devices: where act is
        view = act.view(len(cells), batch, *act.shape[1:])
        for k, cell in enumerate(cells):
            if s.layout == "pos":
                view[k, :, cell[1]] = source[:, cell[1]]
            elif s.layout == "z":
                if len(cell) == 2:
                    view[k, :, :, cell[1]] = source[:, :, cell[1]]
                else:
                    view[k, :, cell[2], cell[1]] = source[:, cell[2], cell[1]]
            else:  # pattern [b, head, q, k]
                view[k, :, cell[1]] = source[:, cell[1]]
        return act
    return hook


def t5_attention(bridge, s: Site, layer: int) -> torch.nn.Module:
    """HF's T5Attention module of site `s` at `layer` (the one holding its `hook_pattern`)."""
    name = hook_name(bridge, s.kind, layer, "hook_pattern").rsplit(".", 1)[0]
    return module_at(bridge, name).original_component


def t5_pattern_hook(cells: Sequence[tuple], source: torch.Tensor, batch: int):
    """A forward hook on HF's T5Attention that recomputes its output with the pattern of
    head cell[1] taken from `source` [batch, head, q, k] in copy k of the batch.

    TransformerLens 4.3 fires T5's hook_pattern after HF has used the weights, so the
    pattern is replaced here instead: output = o(pattern @ values), values recomputed from
    the same input."""
    def hook(module, args, kwargs, output, source=source):
        weights = output[2] if len(output) > 2 else None
        if weights is None:
            raise InterpError("this T5 attention does not return its weights (a non-eager "
                              "attention implementation); pattern patching needs them")
        hidden = args[0] if args else kwargs["hidden_states"]
        kv = kwargs.get("key_value_states")
        cur = hidden if kv is None else kv
        b, t = cur.shape[:2]
        v = module.v(cur).view(b, t, -1, module.key_value_proj_dim).transpose(1, 2)
        w = weights.clone()
        source = source.to(w.device)      # a model split across devices: where w is
        view = w.view(len(cells), batch, *w.shape[1:])
        for k, cell in enumerate(cells):
            view[k, :, cell[1]] = source[:, cell[1]]
        z = (w @ v).transpose(1, 2).reshape(b, w.shape[2], -1)
        return (module.o(z),) + tuple(output[1:2]) + (w,) + tuple(output[3:])
    return hook


def grad_keeper(store: dict):
    """A hook factory for gradient runs: `keeper(name)` is a hook that keeps its activation in
    `store[name]` with its gradient retained (read `.grad` after the backward pass)."""
    def keeper(name):
        def keep(t, hook):
            t.retain_grad()
            store[name] = t
            return t
        return keep
    return keeper


# ---------------------------------------------------------------------------------------
# forward passes (all through interp.hooks.run)
def forward(bridge, ids: dict[str, torch.Tensor], hooks=(), module_hooks=(),
            grad: bool = False) -> torch.Tensor:
    """Logits [batch, pos, vocab] of one run of `ids` (side -> [batch, pos] ids: "seq", or
    T5's "src" and "tgt") with TransformerLens `hooks` and torch `module_hooks`."""
    if "seq" in ids:
        return run(bridge, ids["seq"], hooks=hooks, module_hooks=module_hooks, grad=grad)
    return run(bridge, ids["src"], decoder_input=ids["tgt"], hooks=hooks,
               module_hooks=module_hooks, grad=grad)


def forward_keep(bridge, ids: dict[str, torch.Tensor], names: Sequence[str]
                 ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The logits of one run of `ids` and copies of its activations at hook `names`."""
    store = {}

    def keeper(name):
        def keep(t, hook):
            store[name] = t.detach().clone()
            return t
        return keep
    logits = forward(bridge, ids, [(n, keeper(n)) for n in names])
    return logits, store
