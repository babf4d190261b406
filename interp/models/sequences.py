"""Turn examples into token tensors for each architecture.

Decoder: `<bos> src <sep> tgt <eos>`, right-padded; the loss covers `tgt <eos>` only.
T5: encoder `src <eos>`; decoder input `<pad> tgt` (T5 starts from pad), labels `tgt <eos>`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from interp.errors import InterpError
from interp.tasks.tokenizer import CharCodec

IGNORE = -100


@dataclass
class Batch:
    """input_ids: [batch, pos]; labels: [batch, pos] with IGNORE outside the answer.

    For T5 `input_ids`/`attention_mask` are the encoder's and `decoder_input_ids` the decoder's.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor
    decoder_input_ids: torch.Tensor | None = None


def pad_rows(rows: Sequence[list[int]], value: int) -> torch.Tensor:
    """Right-pad lists of ids into a [batch, width] tensor."""
    width = max(len(r) for r in rows)
    return torch.tensor([r + [value] * (width - len(r)) for r in rows], dtype=torch.long)


def decoder_prompt(codec: CharCodec, src: str) -> list[int]:
    return [codec.bos] + codec.encode(src) + [codec.sep]


def encoder_input(codec: CharCodec, src: str) -> list[int]:
    return codec.encode(src) + [codec.eos]


def check_length(n: int, n_ctx: int, what: str) -> None:
    if n > n_ctx:
        raise InterpError(f"{what} is {n} tokens long but the model's context is {n_ctx}; "
                          f"use inputs of at most {n_ctx} tokens or a model with a longer context")


def make_batch(arch: str, codec: CharCodec, pairs: Sequence[tuple[str, str]],
               n_ctx: int) -> Batch:
    """Tokenise (src, tgt) pairs for training or teacher-forced evaluation."""
    if not pairs:
        raise InterpError("no examples to batch; give at least one")
    if arch == "decoder":
        rows, labels = [], []
        for src, tgt in pairs:
            p = decoder_prompt(codec, src)
            t = codec.encode(tgt) + [codec.eos]
            ids = p + t
            check_length(len(ids), n_ctx, f"the sequence for {src!r}")
            rows.append(ids)
            # position i predicts token i+1: labels are aligned to inputs, HF shifts them
            labels.append([IGNORE] * len(p) + t)
        ids = pad_rows(rows, codec.pad)
        lab = pad_rows(labels, IGNORE)
        mask = (torch.arange(ids.shape[1])[None, :] <
                torch.tensor([len(r) for r in rows])[:, None]).long()
        return Batch(ids, mask, lab)
    enc = [encoder_input(codec, s) for s, _ in pairs]
    tgt = [codec.encode(t) + [codec.eos] for _, t in pairs]
    for (s, _), e, t in zip(pairs, enc, tgt):
        check_length(len(e), n_ctx, f"the input {s!r}")
        check_length(len(t), n_ctx, f"the solution of {s!r}")
    ids = pad_rows(enc, codec.pad)
    mask = (ids != codec.pad).long()
    lab = pad_rows(tgt, IGNORE)
    dec = pad_rows([[codec.pad] + t[:-1] for t in tgt], codec.pad)
    return Batch(ids, mask, lab, dec)


def answer_loss(model, arch: str, batch: Batch, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy on answer tokens only. reduction='none' gives [batch] mean per example."""
    if arch == "decoder":
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
        logits, labels = logits[:, :-1], batch.labels[:, 1:]
    else:
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                       decoder_input_ids=batch.decoder_input_ids).logits
        labels = batch.labels
    flat = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(),
                                             labels.reshape(-1), ignore_index=IGNORE,
                                             reduction="none").view(labels.shape)
    mask = (labels != IGNORE).float()
    if reduction == "none":
        return (flat * mask).sum(1) / mask.sum(1)
    return (flat * mask).sum() / mask.sum()
