"""Activations at aligned positions over a dataset: collected once, in memory or on disk.

    acts = collect(bridge, task, examples, sites=("resid_pre",), positions="input")
    X = acts.get("resid_pre", 2)              # [n_examples, n_positions, d_model] float32
    acts.keys[3], acts.present[:, 3]          # 'in:x#0', [n_examples] bool
    acts.token_index[:, 3]                    # where that key stands in each sequence

Positions and stacks are those of `probes.positions`. Examples run in contiguous batches of
`batch_size` (the batch is padded to its longest example); the model may sit on any device
and dtype, activations come back as float32 on the CPU.

On disk (`folder=`): one safetensors file per (site, stack, layer) holding one tensor
`acts: [n_examples, n_positions_of_stack, d_model]` F32, plus `acts.json` (keys, token
indices, types, tokens, examples). Why safetensors and not Arrow: the package already reads
and writes only safetensors; a probe reads one whole (site, layer) matrix at a time, which is
one contiguous array in a safetensors file and can be memory-mapped as it is (Arrow would
store rows of lists, read back through a conversion). The header is written first, for the
known shape, then each batch is written at its offset, so memory stays flat in the number of
examples; reading maps the file (`numpy.memmap`, copy-on-write) instead of loading it.
`safetensors.torch.load_file` reads the same files.

Under a launcher (`interp.distributed`) the batches are shared out, one a process per round,
and every process receives every batch in order; only the main process writes the folder,
the others wait for it and map the same files.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from interp.distributed import barrier, in_rounds, is_main
from interp.errors import InterpError
from interp.hooks import arch_of, capture, eval_mode, hook_name, n_layers
from interp.tasks.base import Example
from interp.tokens import build_sides
from probes.positions import STACKS, control_types, order_keys, select, side_keys

SITES = ("resid_pre", "resid_post", "attn_out", "mlp_out")


@dataclass
class Activations:
    """Activations of `sites` x `stacks` x layers at aligned positions.

    Attributes
    ----------
    keys : list[str]
        The aligned positions (`probes.positions`), P of them, stack by stack.
    key_stack : list[str]
        The stack each key lives in.
    sites : tuple[str, ...]
    layers : dict[str, list[int]]
        stack -> the layer indices held (the same for every site).
    stacks : tuple[str, ...]
    present : Tensor
        `[n_examples, P]` bool, True where the example has that key.
    token_index : Tensor
        `[n_examples, P]` long, the key's position in that example's sequence of its stack's
        side (`interp.tokens.build_sides`: `seq`, `src` or `tgt`), -1 where absent.
    types : Tensor
        `[n_examples, P]` long, the control task's type (`positions.control_types`: the
        token and its role, one id space for every key), -1 absent.
    groups : Tensor
        `[n_examples]` long, the equation (input string) id: splits never cut a group.
    examples : list
        The task Examples (or raw strings) in order.
    tokens : dict[str, list[list[str]]]
        stack -> per example, the tokens of its side.
    d_model : int
    task : Task | None
    embed : dict
        stack -> `[n_examples, P_stack, d_model]` float32: what the model has at each
        position before any attention, the embedding of the current token plus that of
        its position (`W_E[token] + W_pos[index]`; T5, with relative positions only:
        `W_E[token]`). The positional baseline of `probes.fit` is a probe on it.
    """

    keys: list[str]
    key_stack: list[str]
    sites: tuple[str, ...]
    layers: dict[str, list[int]]
    stacks: tuple[str, ...]
    present: torch.Tensor
    token_index: torch.Tensor
    types: torch.Tensor
    groups: torch.Tensor
    examples: list
    tokens: dict[str, list[list[str]]]
    d_model: int
    task: object = None
    store: dict = field(default_factory=dict, repr=False)   # (site, stack, layer) -> [n, Ps, d]
    folder: Path | None = None
    embed: dict = field(default_factory=dict, repr=False)

    @property
    def n(self) -> int:
        return len(self.examples)

    def columns(self, stack: str) -> list[int]:
        """Indices into `keys` of the positions of `stack`."""
        return [p for p, s in enumerate(self.key_stack) if s == stack]

    def position_index(self, key: str) -> int:
        """The column of `key` in `keys`; an unknown key lists the keys."""
        try:
            return self.keys.index(key)
        except ValueError:
            raise InterpError(f"no position {key!r}; the positions are {', '.join(self.keys)}"
                              ) from None

    def stack_or_default(self, stack: str | None) -> str:
        if stack is None:
            if len(self.stacks) > 1:
                raise InterpError(f"this model has stacks {', '.join(self.stacks)}; name one "
                                  "(stack=...)")
            return self.stacks[0]
        if stack not in self.stacks:
            raise InterpError(f"unknown stack {stack!r}; this model has {', '.join(self.stacks)}")
        return stack

    def get(self, site: str, layer: int, stack: str | None = None) -> torch.Tensor:
        """`[n_examples, P, d_model]` float32 at `site`, `layer` of `stack` (default: the only
        one); zeros where a key is absent and at the other stacks' keys. Memory-mapped (no
        copy) when read from a folder and the model has one stack."""
        stack = self.stack_or_default(stack)
        check_site(site, self.sites)
        if layer not in self.layers[stack]:
            raise InterpError(f"layer {layer} was not collected for stack {stack!r}; layers "
                              f"held: {self.layers[stack]}")
        part = self.store[(site, stack, layer)]
        cols = self.columns(stack)
        if len(cols) == len(self.keys):
            return part
        out = torch.zeros(self.n, len(self.keys), self.d_model)
        out[:, cols] = part
        return out

    def mask(self, stack: str | None = None) -> torch.Tensor:
        """`[n_examples, P]` bool: present and a key of `stack`."""
        stack = self.stack_or_default(stack)
        own = torch.tensor([s == stack for s in self.key_stack])
        return self.present & own[None, :]


def check_site(site: str, sites: Sequence[str] = SITES) -> None:
    if site not in sites:
        raise InterpError(f"unknown site {site!r}; choose from {', '.join(sites)}")


def _groups(examples: Sequence) -> torch.Tensor:
    ids: dict[str, int] = {}
    text = [ex.src if isinstance(ex, Example) else str(ex) for ex in examples]
    return torch.tensor([ids.setdefault(t, len(ids)) for t in text], dtype=torch.long)


def plan(bridge, task, examples: Sequence, positions="input"):
    """(arch, sides, keys, key_stack, token_index) without running the model."""
    if not examples:
        raise InterpError("no examples to probe; give at least one (e.g. --n 2000)")
    arch = arch_of(bridge)
    sides = build_sides(arch, task, examples, getattr(bridge, "tokenizer", None))
    raw = not isinstance(examples[0], Example)
    ns = None if raw else [len(ex.src) for ex in examples]
    per_stack = {st: side_keys(arch, side, sides[side], ns)
                 for st, (_, side) in STACKS[arch].items()}
    everything = sorted({k for ks in per_stack.values() for row in ks for k in row})
    wanted = select(everything, positions, has_roles=not raw)
    keys, key_stack = [], []
    for st, rows in per_stack.items():
        ordered = order_keys(rows, wanted)
        keys += ordered
        key_stack += [st] * len(ordered)
    if not keys:
        raise InterpError(f"the positions {positions!r} select nothing in this model's "
                          "sequences; try 'input' or 'all'")
    col = {k: p for p, k in enumerate(keys)}
    token_index = torch.full((len(examples), len(keys)), -1, dtype=torch.long)
    for st, rows in per_stack.items():
        for i, row in enumerate(rows):
            for t, k in enumerate(row):
                if k in col and key_stack[col[k]] == st:
                    token_index[i, col[k]] = t
    return arch, sides, keys, key_stack, token_index


def collect(bridge, task, examples: Sequence, sites: Sequence[str] = ("resid_pre",),
            layers: Sequence[int] | None = None, positions="input", batch_size: int = 64,
            folder: str | Path | None = None, progress: bool = False) -> Activations:
    """Activations of `sites` at every layer (or `layers`) of every stack, at the aligned
    `positions` ("input", "all", or roles/keys: `probes.positions.select`).

    Examples are teacher-forced with their exact solution (task Examples), or raw strings for
    HF decoder/encoder models. With `folder` the activations stream to safetensors files
    there (the folder appears whole or not at all) and come back memory-mapped.
    Returns an `Activations`; `.get(site, layer, stack)` is `[n_examples, P, d_model]`.
    """
    import sys

    from tqdm.auto import tqdm

    sites = tuple(sites)
    if not sites:
        raise InterpError(f"no sites to collect; choose from {', '.join(SITES)}")
    for s in sites:
        check_site(s)
    arch, sides, keys, key_stack, token_index = plan(bridge, task, examples, positions)
    stacks = tuple(dict.fromkeys(key_stack))
    kinds = {st: STACKS[arch][st][0] for st in stacks}
    held = {}
    for st in stacks:
        total = n_layers(bridge, kinds[st])
        held[st] = list(range(total)) if layers is None else sorted({int(x) for x in layers})
        bad = [x for x in held[st] if not 0 <= x < total]
        if bad:
            raise InterpError(f"layers {bad} out of range; stack {st!r} has layers 0-{total - 1}")
    d = int(bridge.cfg.d_model)
    n = len(examples)
    cols = {st: [p for p, s in enumerate(key_stack) if s == st] for st in stacks}
    names = {(site, st, l): hook_name(bridge, kinds[st], l, f"hook_{site}")
             for site in sites for st in stacks for l in held[st]}
    tokens = {st: sides[STACKS[arch][st][1]].tokens for st in stacks}
    acts = Activations(keys, key_stack, sites, held, stacks, token_index >= 0, token_index,
                       torch.zeros(0), _groups(examples), list(examples), tokens, d, task)
    acts.types = control_types_all(acts)
    acts.embed = embedding_features(bridge, acts, {st: sides[STACKS[arch][st][1]].ids
                                                   for st in stacks})
    main = sides["seq" if arch == "decoder" else "src"]

    def one(start):
        idx = torch.arange(start, min(start + batch_size, n))
        w = int(main.lengths[idx].max())
        kw = {"attention_mask": main.valid[idx, :w].long()}
        if arch == "t5":
            kw["decoder_input"] = sides["tgt"].ids[idx, :int(sides["tgt"].lengths[idx].max())]
        cache = capture(bridge, main.ids[idx, :w], names=set(names.values()), **kw)
        out = {}
        for cell, name in names.items():
            st = cell[1]
            ti = token_index[idx][:, cols[st]]
            A = cache[name].to("cpu", torch.float32)
            g = A[torch.arange(len(idx))[:, None], ti.clamp(min=0)]
            out[cell] = g * (ti >= 0)[..., None]
        return out

    def batches():
        # launched (`interp.distributed.in_rounds`): each process runs its batches, one a
        # round, and every process receives every batch, in order
        starts = range(0, n, batch_size)
        with eval_mode(bridge):
            yield from tqdm(in_rounds(starts, one), total=len(starts), desc="activations",
                            leave=False, disable=not progress or not sys.stderr.isatty())

    if folder is None:
        acts.store = {cell: torch.zeros(n, len(cols[cell[1]]), d) for cell in names}
        for start, out in batches():
            for cell, g in out.items():
                acts.store[cell][start:start + len(g)] = g
        return acts
    from interp.io import replace_dir_atomic

    def fill(tmp: Path) -> None:
        handles = {cell: _open_shard(tmp / _file(cell), (n, len(cols[cell[1]]), d))
                   for cell in names}
        try:
            for start, out in batches():
                for cell, g in out.items():
                    f, offset = handles[cell]
                    f.seek(offset + start * g.shape[1] * d * 4)
                    f.write(g.contiguous().numpy().astype("<f4").tobytes())
        finally:
            for f, _ in handles.values():
                f.close()
        for st, E in acts.embed.items():
            f, offset = _open_shard(tmp / _embed_file(st), tuple(E.shape))
            with f:
                f.seek(offset)
                f.write(E.contiguous().numpy().astype("<f4").tobytes())
        (tmp / "acts.json").write_text(json.dumps(_meta(acts)))

    if is_main():                 # the only writer; launched, the others run their batches
        replace_dir_atomic(fill, Path(folder))
    else:
        for _ in batches():
            pass
    barrier()                     # the store is whole before any process reads it
    return load(folder, task)


def control_types_all(acts: Activations) -> torch.Tensor:
    """[n, P] control types of every key (token + role), one id space over all stacks."""
    types = torch.full(acts.token_index.shape, -1, dtype=torch.long)
    offset = 0
    for st in acts.stacks:          # raw text: the key `in:<token>#k` makes the role the token
        c = acts.columns(st)
        t, table = control_types(acts.tokens[st], acts.token_index[:, c],
                                 [acts.keys[p] for p in c])
        types[:, c] = torch.where(t >= 0, t + offset, t)
        offset += len(table)
    return types


def embedding_features(bridge, acts: Activations, ids: dict) -> dict:
    """stack -> [n, P_stack, d] float32: W_E of the token at each key plus W_pos of its index
    (the model's learned absolute positions; none for T5, whose positions enter only as
    attention biases), zeros where the key is absent. `ids`: stack -> [n, len] token ids of
    the stack's side. Read from the bridge's own matrices (TransformerLens names)."""
    W_E = bridge.W_E.detach().to("cpu", torch.float32)
    try:
        W_pos = bridge.W_pos.detach().to("cpu", torch.float32)
    except AttributeError:        # relative positions (T5): no absolute position embedding
        W_pos = None
    out = {}
    for st in acts.stacks:
        ti = acts.token_index[:, acts.columns(st)]
        safe = ti.clamp(min=0)
        tok = ids[st].gather(1, safe.clamp(max=ids[st].shape[1] - 1))
        E = W_E[tok]
        if W_pos is not None:
            E = E + W_pos[safe]
        out[st] = E * (ti >= 0)[..., None]
    return out


def _embed_file(stack: str) -> str:
    return f"embed.{stack}.safetensors"


def _file(cell) -> str:
    site, stack, layer = cell
    return f"{site}.{stack}.{layer}.safetensors"


def _open_shard(path: Path, shape: tuple[int, ...]):
    """Write a safetensors header for one F32 tensor `acts` of `shape`, size the file, and
    return (open file, offset of the data)."""
    nbytes = int(np.prod(shape)) * 4
    header = json.dumps({"acts": {"dtype": "F32", "shape": list(shape),
                                  "data_offsets": [0, nbytes]}}).encode()
    header += b" " * (-(8 + len(header)) % 8)
    f = open(path, "wb+")  # noqa: SIM115 -- closed by collect's fill() after the last batch
    f.write(struct.pack("<Q", len(header)) + header)
    f.truncate(8 + len(header) + nbytes)
    return f, 8 + len(header)


def _map_shard(path: Path) -> torch.Tensor:
    with open(path, "rb") as f:
        (hlen,) = struct.unpack("<Q", f.read(8))
        meta = json.loads(f.read(hlen))["acts"]
    shape = tuple(meta["shape"])
    if 0 in shape:
        return torch.zeros(shape)
    arr = np.memmap(path, dtype="<f4", mode="c", offset=8 + hlen, shape=shape)
    return torch.from_numpy(arr)


def _meta(acts: Activations) -> dict:
    exs = [[ex.src, ex.tgt, ex.cls] if isinstance(ex, Example) else ex for ex in acts.examples]
    return {"keys": acts.keys, "key_stack": acts.key_stack, "sites": list(acts.sites),
            "layers": acts.layers, "stacks": list(acts.stacks), "d_model": acts.d_model,
            "token_index": acts.token_index.tolist(), "types": acts.types.tolist(),
            "groups": acts.groups.tolist(), "examples": exs, "tokens": acts.tokens}


def load(folder: str | Path, task=None) -> Activations:
    """Activations saved by `collect(..., folder=)`, memory-mapped."""
    folder = Path(folder)
    meta_path = folder / "acts.json"
    if not meta_path.is_file():
        raise InterpError(f"{folder} holds no collected activations (no acts.json); make them "
                          "with probes.collect(..., folder=...)")
    m = json.loads(meta_path.read_text())
    exs = [Example(*e) if isinstance(e, list) else e for e in m["examples"]]
    ti = torch.tensor(m["token_index"], dtype=torch.long).reshape(len(exs), len(m["keys"]))
    acts = Activations(m["keys"], m["key_stack"], tuple(m["sites"]),
                       {k: list(v) for k, v in m["layers"].items()}, tuple(m["stacks"]),
                       ti >= 0, ti, torch.tensor(m["types"], dtype=torch.long).reshape(ti.shape),
                       torch.tensor(m["groups"], dtype=torch.long), exs, m["tokens"],
                       int(m["d_model"]), task, folder=folder)
    acts.store = {(s, st, l): _map_shard(folder / _file((s, st, l)))
                  for s in acts.sites for st in acts.stacks for l in acts.layers[st]}
    acts.embed = {st: _map_shard(folder / _embed_file(st)) for st in acts.stacks
                  if (folder / _embed_file(st)).is_file()}      # older folders have none
    return acts
