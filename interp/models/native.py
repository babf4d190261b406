"""Small language models on TransformerLens's native architecture (for induction-head work),
and models compiled from RASP programs by tracr (no norm, ReLU, bidirectional attention; see
`NativeSpec` and docs/tracr.md), loaded the same way.

    spec = NativeSpec(n_layers=2, mixing="none", d_vocab=2048)   # attention-only, 2 layers
    bridge = build_native(spec, seed=0, tokenizer=tok)           # a TransformerBridge
    save_native(bridge, "runs/attn2l", meta)                     # safetensors + JSON, atomic
    bridge, _ = interp.load_model("runs/attn2l")                 # the one loader (load_native)

`spec.mixing` chooses how a token's neighbour reaches the attention keys:
- "none": plain attention (the 2-layer model and the 1-layer control).
- "smeared": smeared keys (Olsson et al. 2022): k'_j = s_h k_j + (1 - s_h) k_{j-1} with
  s_h = sigmoid(alpha_h), one trainable alpha per head and layer; the first key is unchanged.
- "conv": a causal depthwise convolution over the token embeddings (one kernel of
  `conv_width` taps per residual channel), as the first layer of seed 004's conv-attention
  model. It starts as the identity (current tap 1, earlier taps 0).

The models are TransformerLens's `NativeModel` with the key projection (smeared) or the token
embedding (conv) wrapped, booted with `build_bridge_from_module`, so every hook, the cache and
`W_K`/`W_E` work as for any bridge. The bridge rewires the module tree in place; the clean
parameter names (`layers.0.attn.k.alpha`, ...) are kept on `bridge.native_params` and are the
names in `model.safetensors`.

A checkpoint directory holds `config.json` (`model_type` "interp-native" and the spec),
`model.safetensors`, the BPE tokenizer (`tokenizer.json`, loadable by `AutoTokenizer`) and
`interp.json` (corpus, recipe, training curves).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from interp.errors import InterpError
from interp.models.config import PlainConfig

MIXINGS = ("none", "smeared", "conv")
NORMALIZATIONS = ("LN", "none")
ACT_FNS = ("gelu_new", "relu")
ATTENTIONS = ("causal", "bidirectional")
MODEL_TYPE = "interp-native"


@dataclass
class NativeSpec(PlainConfig):
    """Size and kind of a native model. `d_mlp` 0 means attention only.

    The fields after `conv_width` describe models compiled from programs (tracr, see
    circuits/known/); their defaults are the language models' (and every config.json written
    before they existed loads as before): `normalization` "LN" or "none" (identity),
    `act_fn` of the MLP, `d_head` the width of each head (0: d_model // n_heads; the
    attention scale is sqrt(d_head) either way), `d_vocab_out` the number of logits (0:
    d_vocab), `attention` "causal" or "bidirectional" (every query sees every key)."""

    n_layers: int = 2
    d_model: int = 128
    n_heads: int = 4
    n_ctx: int = 128
    d_vocab: int = 2048
    d_mlp: int = 0
    mixing: str = "none"
    conv_width: int = 3
    normalization: str = "LN"
    act_fn: str = "gelu_new"
    d_head: int = 0
    d_vocab_out: int = 0
    attention: str = "causal"

    def __post_init__(self):
        for name, what, allowed in (("mixing", "key mixing", MIXINGS),
                                    ("normalization", "normalization", NORMALIZATIONS),
                                    ("act_fn", "act_fn", ACT_FNS),
                                    ("attention", "attention", ATTENTIONS)):
            if getattr(self, name) not in allowed:
                raise InterpError(f"unknown {what} {getattr(self, name)!r}; choose one of "
                                  f"{', '.join(allowed)}")
        for name in ("d_head", "d_vocab_out"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise InterpError(f"{name} must be 0 (the default size) or a positive "
                                  f"integer, got {v!r}")
        for name in ("n_layers", "d_model", "n_heads", "n_ctx", "d_vocab"):
            if int(getattr(self, name)) < 1:
                raise InterpError(f"{name} must be a positive integer, got "
                                  f"{getattr(self, name)}")
        if not self.d_head and self.d_model % self.n_heads:
            raise InterpError(f"d_model {self.d_model} is not divisible by n_heads "
                              f"{self.n_heads}; pick sizes with d_model % n_heads == 0")
        if self.d_mlp < 0:
            raise InterpError(f"d_mlp must be 0 (attention only) or positive, got {self.d_mlp}")
        if self.mixing == "conv" and self.conv_width < 2:
            raise InterpError(f"conv_width must be at least 2 to reach the previous token, "
                              f"got {self.conv_width}")
        if not self.d_head:
            self.d_head = self.d_model // self.n_heads

    @property
    def attn_only(self) -> bool:
        return self.d_mlp == 0

    def tl_config(self):
        from transformer_lens.config import TransformerBridgeConfig

        cfg = TransformerBridgeConfig(
            d_model=self.d_model, d_head=self.d_head, n_heads=self.n_heads,
            n_layers=self.n_layers, n_ctx=self.n_ctx, d_vocab=self.d_vocab,
            attn_only=self.attn_only, d_mlp=self.d_mlp or 4 * self.d_model,
            normalization_type=None if self.normalization == "none" else self.normalization,
            act_fn=self.act_fn, d_vocab_out=self.d_vocab_out or self.d_vocab,
            attention_dir=self.attention, seed=0)
        cfg.architecture = "TransformerLensNative"
        return cfg


class SmearedKey(nn.Module):
    """Wraps a key projection: k'_j = s k_j + (1 - s) k_{j-1} per head, s = sigmoid(alpha).

    `weight`/`bias` are the wrapped projection's, so the bridge's W_K is the unsmeared one."""

    def __init__(self, lin: nn.Linear, n_heads: int):
        super().__init__()
        self.lin = lin
        self.n_heads = n_heads
        self.alpha = nn.Parameter(torch.zeros(n_heads))

    @property
    def weight(self):
        return self.lin.weight

    @property
    def bias(self):
        return self.lin.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = self.lin(x)
        b, s, d = k.shape
        k = k.view(b, s, self.n_heads, d // self.n_heads)
        w = torch.sigmoid(self.alpha)[:, None]                   # [head, 1]
        smeared = w * k[:, 1:] + (1 - w) * k[:, :-1]
        return torch.cat([k[:, :1], smeared], 1).view(b, s, d)


class ConvEmbed(nn.Module):
    """Wraps the token embedding with a causal depthwise convolution over positions:
    out_j = sum_t kernel[:, t] * embed(x_{j - (width - 1) + t}), zeros before the start."""

    def __init__(self, embed: nn.Embedding, width: int):
        super().__init__()
        self.embed = embed
        d = embed.weight.shape[1]
        self.kernel = nn.Parameter(torch.zeros(d, width))
        with torch.no_grad():
            self.kernel[:, -1] = 1.0

    @property
    def weight(self):
        return self.embed.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        e = self.embed(ids).transpose(1, 2)                       # [batch, d, pos]
        width = self.kernel.shape[1]
        e = nn.functional.pad(e, (width - 1, 0))
        out = nn.functional.conv1d(e, self.kernel[:, None, :], groups=self.kernel.shape[0])
        return out.transpose(1, 2)


def _module(spec: NativeSpec, seed: int) -> nn.Module:
    from transformer_lens.model_bridge.sources.native import (
        NativeModel,
        initialize_native_model,
    )

    cfg = spec.tl_config()
    torch.manual_seed(seed)
    m = NativeModel(cfg)
    initialize_native_model(m, cfg)
    if spec.mixing == "smeared":
        for block in m.layers:
            block.attn.k = SmearedKey(block.attn.k, spec.n_heads)
    elif spec.mixing == "conv":
        m.tok_embed = ConvEmbed(m.tok_embed, spec.conv_width)
    return m


def _loadable(tokenizer):
    """The bridge re-loads the tokenizer from its `name_or_path` (to add BOS), which an
    in-memory tokenizer lacks: give it one by a round trip through a temporary folder."""
    import tempfile

    from transformers import AutoTokenizer

    if tokenizer is None or tokenizer.init_kwargs.get("name_or_path"):
        return tokenizer
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer.save_pretrained(tmp)
        return AutoTokenizer.from_pretrained(tmp, add_bos_token=True)


def _bridge(m: nn.Module, spec: NativeSpec, tokenizer=None):
    from transformer_lens.model_bridge.sources._bridge_builder import (
        build_bridge_from_module,
    )

    tokenizer = _loadable(tokenizer)
    params = dict(m.named_parameters())      # clean names, before the bridge rewires the tree
    bridge = build_bridge_from_module(m, architecture="TransformerLensNative",
                                      tl_config=m.cfg, tokenizer=tokenizer)
    bridge.native_spec = spec
    bridge.native_params = params
    bridge.eval()
    return bridge


def build_native(spec: NativeSpec, seed: int = 0, tokenizer=None):
    """A freshly initialised model as a TransformerBridge (weights depend only on `seed`).

    Train `bridge.native_params.values()`: the model's parameters under their own names
    (the ones saved), whatever the bridge's module tree calls them."""
    return _bridge(_module(spec, seed), spec, tokenizer)


def is_native(bridge) -> bool:
    return hasattr(bridge, "native_params")


def mixing_weights(bridge) -> dict[str, torch.Tensor]:
    """The learned mixing: {"smear": [layer, head] sigmoid(alpha) (weight on the current
    key)} or {"conv": [d_model, width] kernel (last column = current token)}; {} for none.
    CPU float32 whatever the model's device and dtype."""
    spec = bridge.native_spec
    p = bridge.native_params
    if spec.mixing == "smeared":
        return {"smear": torch.stack([
            torch.sigmoid(p[f"layers.{layer}.attn.k.alpha"].detach().float().cpu())
            for layer in range(spec.n_layers)])}
    if spec.mixing == "conv":
        return {"conv": p["tok_embed.kernel"].detach().float().cpu().clone()}
    return {}


def save_native(bridge, directory: str | os.PathLike, meta: dict) -> Path:
    """Write config.json, model.safetensors, the tokenizer and interp.json into a fresh
    directory that then replaces `directory` in one rename (never half-written)."""
    from safetensors.torch import save_file

    from interp.io import replace_dir_atomic
    from interp.models.checkpoint import write_meta

    if not is_native(bridge):
        raise InterpError("save_native takes a bridge made by build_native or load_native")
    if getattr(bridge, "tokenizer", None) is None:
        raise InterpError("the model has no tokenizer; build it with tokenizer=...")
    spec = bridge.native_spec
    tensors = {k: v.detach().cpu().contiguous().clone()
               for k, v in bridge.native_params.items()}
    meta = dict(meta)
    meta["model"] = {"arch": "native", **spec.to_dict()}

    def fill(tmp: Path):
        save_file(tensors, str(tmp / "model.safetensors"))
        (tmp / "config.json").write_text(json.dumps(
            {"model_type": MODEL_TYPE, **spec.to_dict()}, indent=2, sort_keys=True) + "\n")
        bridge.tokenizer.save_pretrained(str(tmp))
        write_meta(tmp, meta)

    replace_dir_atomic(fill, Path(directory))
    return Path(directory)


def load_native(directory: str | os.PathLike):
    """The bridge of a saved native model (eval mode, tokenizer from the directory)."""
    from safetensors.torch import load_file
    from transformers import AutoTokenizer

    path = Path(directory)
    try:
        spec = NativeSpec.from_dict(json.loads((path / "config.json").read_text()))
    except (OSError, json.JSONDecodeError, TypeError) as e:
        raise InterpError(f"{path}/config.json is not a native model's config ({e}); "
                          "rebuild the checkpoint") from None
    m = _module(spec, seed=0)
    try:
        tensors = load_file(str(path / "model.safetensors"))
    except Exception as e:  # safetensors raises its own error types
        raise InterpError(f"{path / 'model.safetensors'} is missing, corrupt or truncated "
                          f"({str(e).splitlines()[0][:120] if str(e) else type(e).__name__}); "
                          "rebuild the checkpoint") from None
    want = dict(m.named_parameters())
    if set(tensors) != set(want) or any(tensors[k].shape != want[k].shape for k in want):
        bad = sorted(set(tensors) ^ set(want)) or \
            [k for k in want if tensors[k].shape != want[k].shape]
        raise InterpError(f"model.safetensors in {path} does not match config.json (e.g. "
                          f"{', '.join(bad[:3])}); the weights and the config must come from "
                          "the same model")
    with torch.no_grad():
        for k, p in want.items():
            p.copy_(tensors[k])
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path), add_bos_token=True)
    except Exception as e:  # transformers raises many types for a damaged tokenizer
        raise InterpError(f"the tokenizer in {path} cannot be loaded "
                          f"({str(e).splitlines()[0][:120] if str(e) else type(e).__name__}); "
                          "restore its tokenizer.json") from None
    return _bridge(m, spec, tokenizer)


__all__ = ["MIXINGS", "NativeSpec", "SmearedKey", "ConvEmbed", "build_native", "is_native",
           "mixing_weights", "save_native", "load_native"]
