"""Attention kinds and the one adapter from (kind, layer) to TransformerLens hook names.

A decoder-only model has one kind, `self` (causal). An encoder (BERT) has `encoder`
(bidirectional). T5 has three: `encoder` (bidirectional over the input), `decoder_self`
(causal over the output) and `cross` (output positions x input positions). Analyses name the
kind they read instead of assuming `blocks.{l}`.
"""

from __future__ import annotations

from dataclasses import dataclass

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


def model_family(bridge) -> str:
    """'decoder' (causal LM), 'encoder' (BERT-like) or 't5' (encoder-decoder)."""
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
            "t5": ("encoder", "decoder_self", "cross")}[model_family(bridge)]


def n_layers(bridge, kind: str) -> int:
    fam = model_family(bridge)
    if fam == "t5":
        return len(bridge.encoder_blocks if kind == "encoder" else bridge.decoder_blocks)
    return int(bridge.cfg.n_layers)


def hook_name(bridge, kind: str, layer: int, hook: str = "hook_pattern") -> str:
    """The TransformerLens hook name of `hook` for attention `kind` at `layer`."""
    allowed = kinds_of(bridge)
    if kind not in allowed:
        raise InterpError(f"attention kind {kind!r} does not exist in this model; its kinds "
                          f"are {', '.join(allowed)}")
    n = n_layers(bridge, kind)
    if not 0 <= layer < n:
        raise InterpError(f"layer {layer} is out of range for kind {kind!r}; layers are 0..{n - 1}")
    if model_family(bridge) != "t5":
        return f"blocks.{layer}.attn.{hook}"
    block = {"encoder": "encoder_blocks.{l}.attn", "decoder_self": "decoder_blocks.{l}.self_attn",
             "cross": "decoder_blocks.{l}.cross_attn"}[kind]
    return f"{block.format(l=layer)}.{hook}"
