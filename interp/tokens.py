"""Examples -> token ids: the one tokenizing path (padding, batches of similar length).

    batch = make_batch("decoder", codec, [(ex.src, ex.tgt) for ex in examples], n_ctx)
    sides = build_sides("t5", task, examples)        # ids, lengths, tokens and roles per side

Decoder: `<bos> src <sep> tgt <eos>`, right-padded; the loss covers `tgt <eos>` only.
T5: encoder `src <eos>`; decoder input `<pad> tgt` (T5 starts from pad), labels `tgt <eos>`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

import torch

from interp.errors import InterpError
from interp.tasks.base import Example, Task
from interp.tasks.tokenizer import BOS, EOS, PAD, SEP, CharCodec

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


def length_batches(lengths: torch.Tensor, batch_size: int) -> Iterator[torch.Tensor]:
    """Indices of examples in batches of similar length (sorted, stable): less padding."""
    order = torch.argsort(lengths, stable=True)
    for start in range(0, len(order), batch_size):
        yield order[start:start + batch_size]


@dataclass
class Side:
    """One side of the attention (the decoder-only sequence, or T5's input or output).

    ids: [batch, pos] right-padded; lengths: [batch]; tokens and roles: per example, unpadded.
    """

    ids: torch.Tensor
    lengths: torch.Tensor
    tokens: list[list[str]]
    roles: list[list[str]]

    @property
    def valid(self) -> torch.Tensor:
        """[batch, pos] True where a real token stands."""
        return torch.arange(self.ids.shape[1])[None, :] < self.lengths[:, None]


def prompt_ids(arch: str, tokenizer, text: str) -> list[int]:
    """The token ids of a raw text prompt: the tokenizer's own specials, and a decoder's BOS
    in front unless the tokenizer already put it there."""
    ids = tokenizer(text, add_special_tokens=True).input_ids
    bos = tokenizer.bos_token_id
    if arch == "decoder" and bos is not None and ids[:1] != [bos]:
        ids = [bos] + ids
    return ids


def build_sides(arch: str, task: Task | None, examples: Sequence, tokenizer=None
                ) -> dict[str, Side]:
    """Token ids, strings and roles of each side for a list of Examples (or raw strings)."""
    codec = CharCodec()
    if examples and isinstance(examples[0], str):
        if arch == "t5" or tokenizer is None:
            raise InterpError("raw text prompts need a decoder or encoder model with a "
                              "tokenizer; give task examples for T5 models")
        enc = [prompt_ids(arch, tokenizer, t) for t in examples]
        toks = [tokenizer.convert_ids_to_tokens(ids) for ids in enc]
        side = Side(pad_rows(enc, tokenizer.pad_token_id or 0), torch.tensor([len(e) for e in enc]),
                    toks, [list(t) for t in toks])
        return {"seq" if arch == "decoder" else "src": side}
    if task is None:
        raise InterpError("task examples need their task to name token roles")
    src_ids, src_tok, src_roles, tgt_ids, tgt_tok, tgt_roles = [], [], [], [], [], []
    for ex in examples:
        if not isinstance(ex, Example):
            raise InterpError(f"expected task Examples or strings, got {type(ex).__name__}")
        r_src, r_tgt = task.roles(ex.src, ex.tgt)
        if arch == "decoder":
            src_tok.append([BOS, *ex.src, SEP, *ex.tgt, EOS])
            src_roles.append([BOS, *r_src, SEP, *r_tgt, EOS])
            src_ids.append(decoder_prompt(codec, ex.src) + codec.encode(ex.tgt) + [codec.eos])
        else:
            src_tok.append([*ex.src, EOS])
            src_roles.append([*r_src, EOS])
            src_ids.append(encoder_input(codec, ex.src))
            tgt_tok.append([PAD, *ex.tgt])
            tgt_roles.append(["<start>", *r_tgt])
            tgt_ids.append([codec.pad, *codec.encode(ex.tgt)])
    first = Side(pad_rows(src_ids, codec.pad), torch.tensor([len(i) for i in src_ids]), src_tok,
                 src_roles)
    if arch == "decoder":
        return {"seq": first}
    if arch == "encoder":
        return {"src": first}
    return {"src": first, "tgt": Side(pad_rows(tgt_ids, codec.pad),
                                      torch.tensor([len(i) for i in tgt_ids]), tgt_tok,
                                      tgt_roles)}


def repeated_tokens(vocab_size: int, n: int, length: int, repeats: int, bos: int,
                    special: set[int] = frozenset(), seed: int = 0) -> torch.Tensor:
    """[n, 1 + repeats * length]: BOS, then `length` random non-special tokens, `repeats`
    times. The same seed gives the same tokens."""
    pool = torch.tensor([i for i in range(vocab_size) if i not in special])
    if len(pool) == 0:
        raise InterpError("the vocabulary has no ordinary tokens to draw from")
    g = torch.Generator().manual_seed(seed)
    block = pool[torch.randint(len(pool), (n, length), generator=g)]
    return torch.cat([torch.full((n, 1), bos), block.repeat(1, repeats)], 1)


def repeated_random_tokens(bridge, n: int = 32, half: int | None = None, seed: int = 0
                           ) -> torch.Tensor:
    """[n, 1 + 2 * half] token ids: BOS, then `half` random non-special tokens, repeated.
    half defaults to min(40, (n_ctx - 1) // 2)."""
    vocab, special, bos = token_pool(bridge)
    n_ctx = int(getattr(bridge.cfg, "n_ctx", 0) or 2 * 40 + 1)
    half = half or max(2, min(40, (n_ctx - 1) // 2))
    return repeated_tokens(vocab, n, half, 2, bos, special, seed)


def token_pool(bridge) -> tuple[int, set[int], int]:
    """(vocabulary size, special token ids to avoid, BOS id) of a bridge's tokenizer: what
    random prompts are drawn from. BOS is 0 without a tokenizer."""
    tok = getattr(bridge, "tokenizer", None)
    special = set(getattr(tok, "all_special_ids", []) or []) if tok is not None else set()
    vocab = int(bridge.cfg.d_vocab)
    if special >= set(range(vocab)):   # nothing but special tokens: draw from all of them
        special = set()
    bos = tok.bos_token_id if tok is not None and tok.bos_token_id is not None else 0
    return vocab, special, bos
