"""Model configurations: a decoder-only transformer (HF GPT-2) and an encoder-decoder (HF T5).

Both are built from a few plain numbers and saved in the HF layout, so that
`TransformerBridge.boot_transformers(dir)` wraps them with TransformerLens hook names.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from interp.errors import InterpError
from interp.tasks.tokenizer import VOCAB

ARCHS = ("decoder", "t5")


class PlainConfig:
    """A dataclass of plain values that round-trips through JSON (unknown keys ignored)."""

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict):
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


@dataclass
class ModelConfig(PlainConfig):
    """Size of a model. `n_ctx` is the longest token sequence the model takes: for the decoder
    the whole `<bos> src <sep> tgt <eos>`, for T5 each of the encoder and decoder inputs."""

    arch: str = "decoder"
    n_layers: int = 4
    d_model: int = 128
    n_heads: int = 4
    d_ff: int = 512
    n_ctx: int = 128
    dropout: float = 0.0

    def __post_init__(self):
        if self.arch not in ARCHS:
            raise InterpError(f"unknown architecture {self.arch!r}; choose one of "
                              f"{', '.join(ARCHS)}")
        for name in ("n_layers", "d_model", "n_heads", "d_ff", "n_ctx"):
            if getattr(self, name) < 1:
                raise InterpError(f"{name} must be a positive integer, got {getattr(self, name)}")
        if self.d_model % self.n_heads:
            raise InterpError(f"d_model {self.d_model} is not divisible by n_heads "
                              f"{self.n_heads}; pick sizes with d_model % n_heads == 0")


def build_model(cfg: ModelConfig, seed: int = 0):
    """A freshly initialised HF model for `cfg` (weights depend only on `seed`)."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, T5Config, T5ForConditionalGeneration

    torch.manual_seed(seed)
    v = len(VOCAB)
    if cfg.arch == "decoder":
        hf = GPT2Config(vocab_size=v, n_positions=cfg.n_ctx, n_embd=cfg.d_model,
                        n_layer=cfg.n_layers, n_head=cfg.n_heads, n_inner=cfg.d_ff,
                        resid_pdrop=cfg.dropout, embd_pdrop=cfg.dropout,
                        attn_pdrop=cfg.dropout, bos_token_id=VOCAB["<bos>"],
                        eos_token_id=VOCAB["<eos>"], pad_token_id=VOCAB["<pad>"],
                        tie_word_embeddings=True)
        model = GPT2LMHeadModel(hf)
    else:
        hf = T5Config(vocab_size=v, d_model=cfg.d_model, d_kv=cfg.d_model // cfg.n_heads,
                      d_ff=cfg.d_ff, num_layers=cfg.n_layers, num_decoder_layers=cfg.n_layers,
                      num_heads=cfg.n_heads, dropout_rate=cfg.dropout,
                      decoder_start_token_id=VOCAB["<pad>"], pad_token_id=VOCAB["<pad>"],
                      eos_token_id=VOCAB["<eos>"], tie_word_embeddings=False,
                      feed_forward_proj="relu")
        model = T5ForConditionalGeneration(hf)
    return model


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())
