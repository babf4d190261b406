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
`keep_first(source, n)` passes a source on and keeps its first n examples in memory (a
report's examples, drawn from the one pass). The model may sit on any device and dtype:
patterns come back on the CPU as float32.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import torch

from interp.errors import InterpError
from interp.hooks import (
    KINDS,
    arch_of,
    capture,
    eval_mode,
    hook_name,
    kinds_of,
    n_layers,
)
from interp.tasks.base import Task
from interp.tasks.tokenizer import CharCodec
from interp.tokens import Side, build_sides, length_batches, pad_rows

PAD_ID = CharCodec().pad



class _Source:
    """What every source of patterns offers: sides, kinds, masks and batches of patterns.

    batches() yields (index, {kind: [layer, b, head, q, k]}): index holds the examples' places
    in the dataset; q and k are the longest real query/key lengths in that batch (the patterns
    are zero on padding)."""

    arch: str
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

    arch: str
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

    def __init__(self, bridge, arch, sides, kinds, examples, batch_size, progress):
        self.bridge, self.arch, self.sides, self.kinds = bridge, arch, sides, tuple(kinds)
        self.examples, self.batch_size, self.progress = list(examples), batch_size, progress

    def batches(self) -> Iterator[tuple[torch.Tensor, dict]]:
        yield from _forward(self.bridge, self.arch, self.sides, self.kinds, self.batch_size,
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
        # "family" in shards saved by older versions
        self.arch, self.kinds = meta.get("arch", meta.get("family")), tuple(meta["kinds"])
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

    from interp.io import replace_dir_atomic

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
        (tmp / "cache.json").write_text(json.dumps({"arch": source.arch,
                                                    "kinds": list(source.kinds),
                                                    "shards": n, "sides": sides}))

    replace_dir_atomic(fill, Path(folder))
    return ShardedCache(folder)


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


def _forward(bridge, arch, sides, kinds, batch_size, progress=False):
    """Run the model over batches of similar length; yield (index, {kind: patterns})."""
    import sys

    from tqdm.auto import tqdm

    main = sides["src" if arch != "decoder" else "seq"]
    names = {(k, l): hook_name(bridge, k, l) for k in kinds for l in range(n_layers(bridge, k))}
    with eval_mode(bridge):
        for index in tqdm(list(length_batches(main.lengths, batch_size)), desc="attention",
                          leave=False, disable=not progress or not sys.stderr.isatty()):
            w = int(main.lengths[index].max())
            kw = {"attention_mask": main.valid[index, :w].long()}
            if arch == "t5":
                tgt = sides["tgt"]
                kw["decoder_input"] = tgt.ids[index, :int(tgt.lengths[index].max())]
            cache = capture(bridge, main.ids[index, :w], names=names.values(), **kw)
            out = {}
            for k in kinds:
                q, kk = (int(sides[s].lengths[index].max())
                         for s in (KINDS[k].query_side, KINDS[k].key_side))
                # any device and dtype in (layers split across devices too); CPU float32 out
                P = torch.stack([cache[names[(k, l)]][..., :q, :kk].to("cpu", torch.float32)
                                 for l in range(n_layers(bridge, k))])
                qv = sides[KINDS[k].query_side].valid[index, :q]
                kv = sides[KINDS[k].key_side].valid[index, :kk]
                out[k] = P.mul_((qv[:, :, None] & kv[:, None, :])[None, :, None].to(P.dtype))
            del cache
            yield index, out


def stream_attention(bridge, task: Task | None, examples: Sequence,
                     kinds: Sequence[str] | None = None, batch_size: int = 64,
                     progress: bool = False) -> AttentionStream:
    """Like `cache_attention`, but nothing is kept: batches are computed as they are read
    (pass the result to `interp.attention.stats.collect_stats`, or to `save_shards`)."""
    kinds = _check(bridge, examples, kinds)
    arch = arch_of(bridge)
    sides = build_sides(arch, task, examples, getattr(bridge, "tokenizer", None))
    return AttentionStream(bridge, arch, sides, kinds, examples, batch_size, progress)


def cache_attention(bridge, task: Task | None, examples: Sequence, kinds: Sequence[str] | None
                    = None, batch_size: int = 64, progress: bool = False) -> AttentionCache:
    """Attention patterns of every layer for the chosen kinds (default: all of the model's).

    examples: task Examples (teacher-forced with their solution) or, for decoder/encoder
    models, raw strings (roles are then the token strings).
    Returns an AttentionCache with patterns[kind]: [layer, batch, head, query, key] float32,
    in the order of `examples`.
    """
    stream = keep_first(stream_attention(bridge, task, examples, kinds, batch_size, progress),
                        len(examples))
    for _ in stream.batches():
        pass
    return stream.kept


def _first(sides: dict[str, Side], n: int) -> dict[str, Side]:
    """The first n examples of each side, padded to the longest of them."""
    out = {}
    for name, s in sides.items():
        w = int(s.lengths[:n].max()) if n else 0
        out[name] = Side(s.ids[:n, :w], s.lengths[:n], s.tokens[:n], s.roles[:n])
    return out


class KeepFirst(_Source):
    """Passes the batches of `source` on unchanged and keeps the patterns of its first `n`
    examples (in dataset order) as they go by: `kept`, an AttentionCache, is complete once
    `batches()` has been read to the end. One pass over a stream both feeds the statistics
    and gives a report its examples."""

    def __init__(self, source: _Source, n: int):
        self.source, self.arch, self.sides = source, source.arch, source.sides
        self.kinds = tuple(source.kinds)
        n = min(n, len(next(iter(source.sides.values())).lengths))
        self.kept = AttentionCache(source.arch, {}, _first(source.sides, n),
                                   list(getattr(source, "examples", []))[:n])
        self.n = n

    def batches(self) -> Iterator[tuple[torch.Tensor, dict]]:
        for index, pats in self.source.batches():
            sel = index < self.n
            if sel.any():
                for k, P in pats.items():
                    qw, kw = self.kept.query(k).ids.shape[1], self.kept.key(k).ids.shape[1]
                    if k not in self.kept.patterns:
                        self.kept.patterns[k] = torch.zeros(P.shape[0], self.n, P.shape[2],
                                                            qw, kw)
                    P = P[:, sel, :, :qw, :kw]
                    self.kept.patterns[k][:, index[sel], :, :P.shape[-2], :P.shape[-1]] = P
            yield index, pats


def keep_first(source: _Source, n: int) -> KeepFirst:
    """`source` passed through, keeping the patterns of its first `n` examples (`.kept`)."""
    return KeepFirst(source, n)
