# Over 400 lines: it still holds prompt generators and small analyses beside the cache;
# issue #12 moves them to their own homes.
"""Run a model over a dataset once and keep its attention patterns, with tokens and roles.

    bridge, task = interp.load_model("quadratic-small")
    examples = task.generate(256, seed=0)
    ac = cache_attention(bridge, task, examples)          # every attention kind of the model
    ac.patterns["self"]                                   # [layer, batch, head, query, key]
    ac.query("self").roles[0]                             # role of each query position

Sequences are teacher-forced with the exact solution, so maps cover input and output. Only
the pattern hooks asked for are kept, and the forward pass stops after the last of them. Padding is masked: a
padded query row and every padded key column hold zeros, so padding never counts as attention.
Examples are run in batches of similar length (less padding), results come back in order.

For datasets too big to hold, `stream_attention` computes batches as they are read and
`save_shards(stream, folder)` writes one safetensors shard per batch (`ShardedCache(folder)`
reads them back); `interp.attention.stats.collect_stats` takes any of the three.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import torch

from interp.attention.kinds import KINDS, hook_name, kinds_of, model_family, n_layers
from interp.errors import InterpError
from interp.models.sequences import decoder_prompt, encoder_input, pad_rows
from interp.tasks.base import Example, Task
from interp.tasks.tokenizer import BOS, EOS, PAD, SEP, CharCodec

PAD_ID = CharCodec().pad


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


class _Source:
    """What every source of patterns offers: sides, kinds, masks and batches of patterns.

    batches() yields (index, {kind: [layer, b, head, q, k]}): index holds the examples' places
    in the dataset; q and k are the longest real query/key lengths in that batch (the patterns
    are zero on padding)."""

    family: str
    sides: dict[str, Side]

    def query(self, kind: str) -> Side:
        return self.sides[KINDS[kind].query_side]

    def key(self, kind: str) -> Side:
        return self.sides[KINDS[kind].key_side]

    def mask(self, kind: str, index: torch.Tensor | None = None, q: int | None = None,
             k: int | None = None) -> torch.Tensor:
        """[batch, query, key] True where both positions are real (and, if causal, k <= q);
        for the examples in `index` (default all) cut to widths q, k."""
        qs, ks = self.query(kind), self.key(kind)
        qv, kv = qs.valid, ks.valid
        if index is not None:
            qv, kv = qv[index], kv[index]
        qv, kv = qv[:, :q], kv[:, :k]
        m = qv[:, :, None] & kv[:, None, :]
        if KINDS[kind].causal:
            m = m & torch.ones(m.shape[1], m.shape[2], dtype=torch.bool).tril()[None]
        return m


@dataclass
class AttentionCache(_Source):
    """Attention patterns over a dataset in memory. patterns[kind]: [layer, batch, head,
    query, key], padded to the longest example."""

    family: str
    patterns: dict[str, torch.Tensor]
    sides: dict[str, Side]
    examples: list = field(default_factory=list)

    @property
    def kinds(self) -> tuple[str, ...]:
        return tuple(self.patterns)

    def batches(self, batch_size: int = 64) -> Iterator[tuple[torch.Tensor, dict]]:
        n = next(iter(self.patterns.values())).shape[1]
        for start in range(0, n, batch_size):
            index = torch.arange(start, min(start + batch_size, n))
            out = {}
            for kind, P in self.patterns.items():
                q = int(self.query(kind).lengths[index].max())
                k = int(self.key(kind).lengths[index].max())
                out[kind] = P[:, index, :, :q, :k]
            yield index, out


class AttentionStream(_Source):
    """Patterns computed batch by batch as they are read, never all held: memory stays flat
    however many examples there are. One pass only (batches() runs the model)."""

    def __init__(self, bridge, family, sides, kinds, examples, batch_size, progress):
        self.bridge, self.family, self.sides, self.kinds = bridge, family, sides, tuple(kinds)
        self.examples, self.batch_size, self.progress = list(examples), batch_size, progress

    def batches(self) -> Iterator[tuple[torch.Tensor, dict]]:
        yield from _forward(self.bridge, self.family, self.sides, self.kinds, self.batch_size,
                            self.progress)


class ShardedCache(_Source):
    """Patterns saved as safetensors shards (one per batch) in a folder; read back a shard at
    a time. Made by `save_shards`, reopened with `ShardedCache(folder)`."""

    def __init__(self, folder: str | Path):
        import json

        self.folder = Path(folder)
        meta_path = self.folder / "cache.json"
        if not meta_path.is_file():
            raise InterpError(f"{folder} is not an attention cache folder (no cache.json); "
                              "make one with interp.cache.save_shards")
        meta = json.loads(meta_path.read_text())
        self.family, self.kinds = meta["family"], tuple(meta["kinds"])
        self.n_shards = meta["shards"]
        self.sides = {name: Side(pad_rows(s["ids"], PAD_ID), torch.tensor(s["lengths"]),
                                 s["tokens"], s["roles"]) for name, s in meta["sides"].items()}

    def batches(self) -> Iterator[tuple[torch.Tensor, dict]]:
        from safetensors.torch import load_file

        for i in range(self.n_shards):
            t = load_file(str(self.folder / f"shard-{i:05d}.safetensors"))
            yield t.pop("index"), t


def save_shards(source: _Source, folder: str | Path) -> ShardedCache:
    """Write every batch of `source` (a stream, usually) to `folder` as one safetensors shard
    each, plus cache.json with the tokens and roles. The folder appears whole or not at all."""
    import json

    from safetensors.torch import save_file

    from interp.models.checkpoint import replace_dir_atomic

    def fill(tmp: Path) -> None:
        n = 0
        for index, pats in source.batches():
            save_file({"index": index.contiguous(), **{k: v.contiguous() for k, v in pats.items()}},
                      str(tmp / f"shard-{n:05d}.safetensors"))
            n += 1
        sides = {name: {"ids": [row[:int(length)] for row, length in zip(s.ids.tolist(),
                                                                        s.lengths)],
                        "lengths": s.lengths.tolist(), "tokens": s.tokens, "roles": s.roles}
                 for name, s in source.sides.items()}
        (tmp / "cache.json").write_text(json.dumps({"family": source.family,
                                                    "kinds": list(source.kinds),
                                                    "shards": n, "sides": sides}))

    replace_dir_atomic(fill, Path(folder))
    return ShardedCache(folder)


def prompt_ids(family: str, tokenizer, text: str) -> list[int]:
    """The token ids of a raw text prompt: the tokenizer's own specials, and a decoder's BOS
    in front unless the tokenizer already put it there."""
    ids = tokenizer(text, add_special_tokens=True).input_ids
    bos = tokenizer.bos_token_id
    if family == "decoder" and bos is not None and ids[:1] != [bos]:
        ids = [bos] + ids
    return ids


def build_sides(family: str, task: Task | None, examples: Sequence, tokenizer=None
                ) -> dict[str, Side]:
    """Token ids, strings and roles of each side for a list of Examples (or raw strings)."""
    codec = CharCodec()
    if examples and isinstance(examples[0], str):
        if family == "t5" or tokenizer is None:
            raise InterpError("raw text prompts need a decoder or encoder model with a "
                              "tokenizer; give task examples for T5 models")
        enc = [prompt_ids(family, tokenizer, t) for t in examples]
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


def _check(bridge, examples, kinds):
    if not examples:
        raise InterpError("no examples to cache; give at least one")
    allowed = kinds_of(bridge)
    kinds = tuple(kinds or allowed)
    bad = [k for k in kinds if k not in allowed]
    if bad:
        raise InterpError(f"attention kinds {bad} do not exist in this model; its kinds are "
                          f"{', '.join(allowed)}")
    return kinds


class _Enough(Exception):
    """Raised inside the last wanted hook: the rest of the forward pass is not needed."""


def hook_values(bridge, ids, wanted: set[str], kw: dict) -> dict[str, torch.Tensor]:
    """The wanted hook activations of one forward pass, which stops as soon as the last of
    them is seen (the later MLPs, attention outputs and the unembedding are skipped)."""
    store: dict[str, torch.Tensor] = {}

    def keeper(name):
        def keep(tensor, hook):
            store[name] = tensor.detach()
            if len(store) == len(wanted):
                raise _Enough
            return tensor
        return keep

    try:
        with bridge.hooks(fwd_hooks=[(name, keeper(name)) for name in sorted(wanted)]):
            bridge(ids, **kw)
    except _Enough:
        pass
    missing = wanted - set(store)
    if missing:
        raise InterpError(f"the model never ran the hooks {sorted(missing)}")
    return store


def length_batches(lengths: torch.Tensor, batch_size: int) -> Iterator[torch.Tensor]:
    """Indices of examples in batches of similar length (sorted, stable): less padding."""
    order = torch.argsort(lengths, stable=True)
    for start in range(0, len(order), batch_size):
        yield order[start:start + batch_size]


@torch.no_grad()
def _forward(bridge, family, sides, kinds, batch_size, progress=False):
    """Run the model over batches of similar length; yield (index, {kind: patterns})."""
    import sys

    from tqdm.auto import tqdm

    main = sides["src" if family != "decoder" else "seq"]
    names = {(k, l): hook_name(bridge, k, l) for k in kinds for l in range(n_layers(bridge, k))}
    wanted = set(names.values())
    was_training = bridge.training
    bridge.eval()
    try:
        for index in tqdm(list(length_batches(main.lengths, batch_size)), desc="attention",
                          leave=False, disable=not progress or not sys.stderr.isatty()):
            w = int(main.lengths[index].max())
            kw = {"attention_mask": main.valid[index, :w].long()}
            if family == "t5":
                tgt = sides["tgt"]
                kw["decoder_input"] = tgt.ids[index, :int(tgt.lengths[index].max())]
            cache = hook_values(bridge, main.ids[index, :w], wanted, kw)
            out = {}
            for k in kinds:
                P = torch.stack([cache[names[(k, l)]] for l in range(n_layers(bridge, k))])
                q, kk = (int(sides[s].lengths[index].max())
                         for s in (KINDS[k].query_side, KINDS[k].key_side))
                P = P[..., :q, :kk].float()
                qv = sides[KINDS[k].query_side].valid[index, :q]
                kv = sides[KINDS[k].key_side].valid[index, :kk]
                out[k] = P.mul_((qv[:, :, None] & kv[:, None, :])[None, :, None].to(P.dtype))
            del cache
            yield index, out
    finally:
        bridge.train(was_training)


def stream_attention(bridge, task: Task | None, examples: Sequence,
                     kinds: Sequence[str] | None = None, batch_size: int = 64,
                     progress: bool = False) -> AttentionStream:
    """Like `cache_attention`, but nothing is kept: batches are computed as they are read
    (pass the result to `interp.attention.stats.collect_stats`, or to `save_shards`)."""
    kinds = _check(bridge, examples, kinds)
    family = model_family(bridge)
    sides = build_sides(family, task, examples, getattr(bridge, "tokenizer", None))
    return AttentionStream(bridge, family, sides, kinds, examples, batch_size, progress)


def cache_attention(bridge, task: Task | None, examples: Sequence, kinds: Sequence[str] | None
                    = None, batch_size: int = 64, progress: bool = False) -> AttentionCache:
    """Attention patterns of every layer for the chosen kinds (default: all of the model's).

    examples: task Examples (teacher-forced with their solution) or, for decoder/encoder
    models, raw strings (roles are then the token strings).
    Returns an AttentionCache with patterns[kind]: [layer, batch, head, query, key] float32,
    in the order of `examples`.
    """
    stream = stream_attention(bridge, task, examples, kinds, batch_size, progress)
    n = len(examples)
    out = AttentionCache(stream.family, {}, stream.sides, list(examples))
    for index, pats in stream.batches():
        for k, P in pats.items():
            if k not in out.patterns:
                qw = out.query(k).ids.shape[1]
                kw = out.key(k).ids.shape[1]
                out.patterns[k] = torch.zeros(P.shape[0], n, P.shape[2], qw, kw)
            out.patterns[k][:, index, :, :P.shape[-2], :P.shape[-1]] = P
    return out


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


@torch.no_grad()
def induction_scores(bridge, n: int = 32, half: int | None = None, seed: int = 0
                     ) -> tuple[torch.Tensor, float]:
    """Induction score per head of a decoder-only model ([layer, head]) and the uniform
    head's score, on `repeated_random_tokens(bridge, n, half, seed)`: the attention a
    second-half token pays to the token after its first copy, on the scale of
    TransformerLens's head detector ("mul", BOS kept)."""
    from interp.attention.scores import detection_score, induction_pattern, uniform_like

    if model_family(bridge) != "decoder":
        raise InterpError("the induction score needs a decoder-only (causal) model")
    ids = repeated_random_tokens(bridge, n, half, seed)
    name = [hook_name(bridge, "self", l) for l in range(n_layers(bridge, "self"))]
    was_training = bridge.training
    bridge.eval()
    try:
        cache = hook_values(bridge, ids, set(name), {})
    finally:
        bridge.train(was_training)
    P = torch.stack([cache[x].float() for x in name])
    width = ids.shape[1]
    mask = torch.ones(width, width, dtype=torch.bool).tril().expand(n, width, width)
    detect = induction_pattern(ids) * mask
    score = detection_score(P, mask, detect)
    uniform = float(detection_score(uniform_like(mask), mask, detect)[0, 0])
    return score, uniform
