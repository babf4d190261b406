"""Run a model over a dataset once and keep its attention patterns, with tokens and roles.

    bridge, task = interp.load_model("quadratic-small")
    examples = task.generate(256, seed=0)
    ac = cache_attention(bridge, task, examples)          # every attention kind of the model
    ac.patterns["self"]                                   # [layer, batch, head, query, key]
    ac.query("self").roles[0]                             # role of each query position

Sequences are teacher-forced with the exact solution, so maps cover input and output. Only
the pattern hooks asked for are kept (TransformerLens `names_filter`). Padding is masked: a
padded query row and every padded key column hold zeros, so padding never counts as attention.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch

from interp.attention.kinds import KINDS, hook_name, kinds_of, model_family, n_layers
from interp.errors import InterpError
from interp.models.sequences import decoder_prompt, encoder_input, pad_rows
from interp.tasks.base import Example, Task
from interp.tasks.tokenizer import BOS, EOS, PAD, SEP, CharCodec


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


@dataclass
class AttentionCache:
    """Attention patterns over a dataset. patterns[kind]: [layer, batch, head, query, key]."""

    family: str
    patterns: dict[str, torch.Tensor]
    sides: dict[str, Side]
    examples: list = field(default_factory=list)

    def query(self, kind: str) -> Side:
        return self.sides[KINDS[kind].query_side]

    def key(self, kind: str) -> Side:
        return self.sides[KINDS[kind].key_side]

    def mask(self, kind: str) -> torch.Tensor:
        """[batch, query, key] True where both positions are real (and, if causal, k <= q)."""
        m = self.query(kind).valid[:, :, None] & self.key(kind).valid[:, None, :]
        if KINDS[kind].causal:
            q, k = m.shape[1:]
            m = m & torch.ones(q, k, dtype=torch.bool).tril()[None]
        return m

    @property
    def kinds(self) -> tuple[str, ...]:
        return tuple(self.patterns)


def build_sides(family: str, task: Task | None, examples: Sequence, tokenizer=None
                ) -> dict[str, Side]:
    """Token ids, strings and roles of each side for a list of Examples (or raw strings)."""
    codec = CharCodec()
    if examples and isinstance(examples[0], str):
        if family == "t5" or tokenizer is None:
            raise InterpError("raw text prompts need a decoder or encoder model with a "
                              "tokenizer; give task examples for T5 models")
        enc = [tokenizer(t, add_special_tokens=True).input_ids for t in examples]
        if family == "decoder" and tokenizer.bos_token_id is not None:
            enc = [ids if ids[:1] == [tokenizer.bos_token_id] else [tokenizer.bos_token_id] + ids
                   for ids in enc]
        toks = [tokenizer.convert_ids_to_tokens(ids) for ids in enc]
        side = Side(pad_rows(enc, tokenizer.pad_token_id or 0), torch.tensor([len(e) for e in enc]),
                    toks, [list(t) for t in toks])
        return {"seq" if family == "decoder" else "src": side}
    if task is None:
        raise InterpError("task examples need their task to name token roles")
    src_ids, src_tok, src_roles, tgt_ids, tgt_tok, tgt_roles = [], [], [], [], [], []
    for ex in examples:
        if not isinstance(ex, Example):
            raise InterpError(f"expected task Examples or strings, got {type(ex).__name__}")
        r_src, r_tgt = task.roles(ex.src, ex.tgt)
        if family == "decoder":
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
    if family == "decoder":
        return {"seq": first}
    if family == "encoder":
        return {"src": first}
    return {"src": first, "tgt": Side(pad_rows(tgt_ids, codec.pad),
                                      torch.tensor([len(i) for i in tgt_ids]), tgt_tok,
                                      tgt_roles)}


@torch.no_grad()
def cache_attention(bridge, task: Task | None, examples: Sequence, kinds: Sequence[str] | None
                    = None, batch_size: int = 64, progress: bool = False) -> AttentionCache:
    """Attention patterns of every layer for the chosen kinds (default: all of the model's).

    examples: task Examples (teacher-forced with their solution) or, for decoder/encoder
    models, raw strings (roles are then the token strings).
    Returns an AttentionCache with patterns[kind]: [layer, batch, head, query, key] float32.
    """
    import sys

    from tqdm.auto import tqdm

    if not examples:
        raise InterpError("no examples to cache; give at least one")
    family = model_family(bridge)
    allowed = kinds_of(bridge)
    kinds = tuple(kinds or allowed)
    bad = [k for k in kinds if k not in allowed]
    if bad:
        raise InterpError(f"attention kinds {bad} do not exist in this model; its kinds are "
                          f"{', '.join(allowed)}")
    sides = build_sides(family, task, examples, getattr(bridge, "tokenizer", None))
    names = {(k, l): hook_name(bridge, k, l) for k in kinds for l in range(n_layers(bridge, k))}
    wanted = set(names.values())
    was_training = bridge.training
    bridge.eval()
    n = len(examples)
    chunks: dict[str, list[torch.Tensor]] = {k: [] for k in kinds}
    widths = {s: side.ids.shape[1] for s, side in sides.items()}
    try:
        for start in tqdm(range(0, n, batch_size), desc="cache", leave=False,
                          disable=not progress or not sys.stderr.isatty()):
            sl = slice(start, start + batch_size)
            main = sides["src" if family != "decoder" else "seq"]
            w = int(main.lengths[sl].max())
            ids = main.ids[sl, :w]
            mask = main.valid[sl, :w].long()
            kw = {"attention_mask": mask}
            if family == "t5":
                tgt = sides["tgt"]
                kw["decoder_input"] = tgt.ids[sl, :int(tgt.lengths[sl].max())]
            _, cache = bridge.run_with_cache(ids, names_filter=lambda name: name in wanted, **kw)
            for k in kinds:
                layers = [cache[names[(k, l)]].float() for l in range(n_layers(bridge, k))]
                chunks[k].append(torch.stack(layers))
            del cache
    finally:
        bridge.train(was_training)
    out = AttentionCache(family, {}, sides, list(examples))
    for k in kinds:
        qw, kw_ = widths[KINDS[k].query_side], widths[KINDS[k].key_side]
        parts = [torch.nn.functional.pad(c, (0, kw_ - c.shape[-1], 0, qw - c.shape[-2]))
                 for c in chunks[k]]
        pat = torch.cat(parts, dim=1)
        out.patterns[k] = pat * out.mask(k)[None, :, None].to(pat.dtype)
    return out
