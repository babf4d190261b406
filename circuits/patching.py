"""Activation patching and attribution patching on decoder-only and T5 models.

    bridge, task = interp.load_model("quadratic-small")
    pairs = corrupt_pairs(bridge, task, n=64, field="c", answer="D_value")
    res = patch(bridge, pairs, "head_pos")              # exact: [layer, head, pos]
    att = attribute(bridge, pairs, "head_pos")          # first-order estimate of the same

A pair is a clean input and a corrupted one that differs in one digit of one coefficient
(symmetric token replacement: same length, same format, and the corrupted equation is one the
task's checker accepts). Every pair is cut just before the answer token, the first token of
the chosen solution field that differs between the two solutions, and all pairs share one
layout (the same role at every position), so positions line up across pairs.

Metrics (REFERENCE §5): `logit_diff` = logit of the clean answer token minus logit of the
corrupted one at the answer position; `logprob` = log-probability of the clean answer token.
`denoise` runs the corrupted input and patches in clean activations (is this component
sufficient to restore the answer?); `noise` runs the clean input and patches in corrupted
ones (is it necessary?).

Sites (`what`), named after the TransformerLens hooks they patch:

    decoder-only   resid_pre, attn_out, mlp_out   [layer, pos]
                   head (hook_z, every position)  [layer, head]
                   head_pos (hook_z)              [layer, head, pos]
                   pattern (hook_pattern)         [layer, head]
    T5             the same with a stack: enc.resid_pre, enc.attn_out, enc.mlp_out, enc.head,
                   enc.head_pos, enc.pattern, dec.resid_pre, dec.attn_out,
                   dec.cross_attn_out, dec.mlp_out, dec.head, dec.head_pos, dec.pattern,
                   cross.head, cross.head_pos, cross.pattern (positions are encoder positions
                   for enc.*, decoder positions otherwise)

How it is fast: the patches of one layer run together as one batch (each copy of the dataset
carries one patch), each patched run starts at the patched layer from the cached residual
stream (`start_at_layer`) instead of recomputing the layers below, and a patch at a position
after the answer position, which a causal model cannot see, is not run (its effect is exactly
zero). T5 has no `start_at_layer`; its patches are batched the same way over full forwards.
T5's patterns (`enc.pattern`, `dec.pattern`, `cross.pattern`) cannot be edited through
TransformerLens 4.3's hook (the bridge fires `hook_pattern` after HF has used the weights), so
a forward hook on HF's attention recomputes its output from the patched pattern instead.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass, field
from typing import Sequence

import torch

from interp.errors import InterpError
from interp.hooks import arch_of
from interp.tasks.base import Example, Task
from interp.tasks.tokenizer import CharCodec
from interp.tokens import decoder_prompt, encoder_input

METRICS = ("logit_diff", "logprob")
DIRECTIONS = ("denoise", "noise")
DECODER_SITES = ("resid_pre", "attn_out", "mlp_out", "head", "head_pos", "pattern")
T5_SITES = ("enc.resid_pre", "enc.attn_out", "enc.mlp_out", "enc.head", "enc.head_pos",
            "dec.resid_pre", "dec.attn_out", "dec.cross_attn_out", "dec.mlp_out", "dec.head",
            "dec.head_pos", "cross.head", "cross.head_pos", "enc.pattern", "dec.pattern",
            "cross.pattern")


# ---------------------------------------------------------------------------------------
# pairs of clean and corrupted inputs
@dataclass
class Pairs:
    """Clean and corrupted inputs cut before the answer token.

    clean / corrupt: side -> [batch, pos] ids ("seq" for decoder-only; "src" and "tgt" for
    T5, tgt being the decoder input). The logits at `answer_pos` of the output side predict
    the answer: `clean_token` / `corrupt_token` [batch]. tokens / roles: side -> labels of
    each position (the roles are shared by every pair; tokens are the first pair's)."""

    family: str
    clean: dict[str, torch.Tensor]
    corrupt: dict[str, torch.Tensor]
    answer_pos: int
    clean_token: torch.Tensor
    corrupt_token: torch.Tensor
    tokens: dict[str, list[str]]
    roles: dict[str, list[str]]
    examples: list[tuple[Example, Example]] = field(default_factory=list)

    @property
    def n(self) -> int:
        return int(self.clean_token.shape[0])

    @property
    def out_side(self) -> str:
        return "seq" if self.family == "decoder" else "tgt"


#: per task: the field corrupted and the solution field read, by default
DEFAULT_FIELDS = {"quadratic": ("c", "D_value"), "arithmetic": ("b", "result")}


def _digit_changes(v: int, rng: random.Random, allow_zero: bool = False) -> list[int]:
    """Every number made from v by changing one digit (no leading zero, same sign; 0 itself
    only if `allow_zero`), shuffled."""
    digits = str(abs(v))
    out = []
    for i, d in itertools.product(range(len(digits)), "0123456789"):
        if d == digits[i] or (i == 0 and d == "0" and (len(digits) > 1 or not allow_zero)):
            continue
        out.append(int(digits[:i] + d + digits[i + 1:]) * (-1 if v < 0 else 1))
    rng.shuffle(out)
    return out


def corrupt_equation(task: Task, ex: Example, field: str, rng: random.Random
                     ) -> Example | None:
    """The example with one digit of `field` changed (quadratic: coefficient a, b or c;
    arithmetic: operand a or b) so that the input keeps its length and format and the task
    still accepts it (integer roots or none; operands in range, b <= a for subtraction);
    None if no digit change works."""
    from interp.tasks.arithmetic import ArithmeticTask
    from interp.tasks.quadratic import (
        QuadraticTask,
        format_input,
        format_output,
        read_input,
    )

    if isinstance(task, QuadraticTask):
        coef = dict(zip("abc", read_input(ex.src)))
        if field not in coef:
            raise InterpError(f"unknown field {field!r} to corrupt; choose a, b or c")
        # no zero coefficient: the generator never writes one (it would be out of distribution)
        for w in _digit_changes(coef[field], rng):
            new = dict(coef, **{field: w})
            try:
                src = format_input(new["a"], new["b"], new["c"])[0]
                tgt = format_output(new["a"], new["b"], new["c"])[0]
            except InterpError:  # roots that are not integers, a < 0 with real roots
                continue
            if len(src) == len(ex.src):
                return Example(src, tgt, task.classify(src))
        return None
    if isinstance(task, ArithmeticTask):
        a, op, b = task._read(ex.src)
        vals = {"a": a, "b": b}
        if field not in vals:
            raise InterpError(f"unknown field {field!r} to corrupt; choose a or b")
        for w in _digit_changes(vals[field], rng, allow_zero=task.lo <= 0):
            new = dict(vals, **{field: w})
            if not all(task.lo <= x <= task.hi for x in new.values()) or \
                    (op == "-" and new["b"] > new["a"]):
                continue
            src = f"{new['a']}{op}{new['b']}="
            if len(src) == len(ex.src):
                return Example(src, task.solve(src), task.classify(src))
        return None
    raise InterpError(f"corrupted pairs are defined for the quadratic and arithmetic tasks; "
                      f"this model's task is {task.name!r}")


def corrupt_pairs(bridge, task: Task, n: int = 64, field: str | None = None,
                  answer: str | None = None, seed: int = 0, heldout: bool | None = True,
                  max_tries: int = 20_000) -> Pairs:
    """`n` clean/corrupted pairs of one layout, cut before the first token of `answer` (a
    solution field: D_value, x1, x2, ... or result); only pairs whose two solutions differ
    at that token are kept.
    field / answer default to `DEFAULT_FIELDS` of the task (quadratic: c and D_value;
    arithmetic: b and result).

    Problems are drawn from the task (held-out partition by default) until one layout has
    `n` pairs, so positions line up."""
    if task.name not in DEFAULT_FIELDS:
        raise InterpError(f"corrupted pairs are defined for the "
                          f"{' and '.join(DEFAULT_FIELDS)} tasks; this model's task is "
                          f"{task.name!r}")
    field = field or DEFAULT_FIELDS[task.name][0]
    answer = answer or DEFAULT_FIELDS[task.name][1]
    if n < 1:
        raise InterpError(f"the number of pairs must be at least 1, got {n}")
    family = arch_of(bridge)
    if family not in ("decoder", "t5"):
        raise InterpError(f"patching needs a decoder-only or T5 model; this one is {family!r}")
    rng = random.Random(seed)
    codec = CharCodec()
    by_layout: dict[tuple, list] = {}

    def pool():  # drawn in chunks until one layout has n pairs
        for chunk in range(0, max_tries, 500):
            yield from task.generate(500, seed=seed * 1_000_003 + chunk, heldout=heldout)
    for ex in pool():
        bad = corrupt_equation(task, ex, field, rng)
        if bad is None:
            continue
        roles_c = task.roles(ex.src, ex.tgt)[1]
        roles_b = task.roles(bad.src, bad.tgt)[1]
        k = next((i for i, r in enumerate(roles_c) if r.startswith(answer + "_") or r == answer),
                 None)
        if k is None or roles_b[:k + 1] != roles_c[:k + 1] or ex.tgt[k] == bad.tgt[k]:
            continue
        layout = (tuple(task.roles(ex.src, ex.tgt)[0]), tuple(roles_c[:k]))
        group = by_layout.setdefault(layout, [])
        if any(e.src == ex.src for e, _, _ in group):
            continue
        group.append((ex, bad, k))
        if len(group) >= n:
            break
    if not by_layout:
        raise InterpError(f"no equation gives a usable pair for field {field!r} and answer "
                          f"{answer!r} (the answer field must exist and differ); try another "
                          "--corrupt or --answer")
    layout, chosen = max(by_layout.items(), key=lambda kv: len(kv[1]))
    chosen = chosen[:n]
    if len(chosen) < n:
        raise InterpError(f"only {len(chosen)} pairs of one layout found for field {field!r} "
                          f"and answer {answer!r}; ask for fewer (--n {len(chosen)})")

    def seqs(ex, k):
        if family == "decoder":
            return {"seq": decoder_prompt(codec, ex.src) + codec.encode(ex.tgt[:k])}
        return {"src": encoder_input(codec, ex.src), "tgt": [codec.pad] + codec.encode(ex.tgt[:k])}

    clean = {s: torch.tensor([seqs(e, k)[s] for e, _, k in chosen]) for s in seqs(*chosen[0][::2])}
    bad = {s: torch.tensor([seqs(b, k)[s] for _, b, k in chosen]) for s in clean}
    ex0, _, k0 = chosen[0]
    in_roles, out_roles = layout
    if family == "decoder":
        roles = {"seq": ["<bos>", *in_roles, "<sep>", *out_roles]}
        tokens = {"seq": ["<bos>", *ex0.src, "<sep>", *ex0.tgt[:k0]]}
    else:
        roles = {"src": [*in_roles, "<eos>"], "tgt": ["<start>", *out_roles]}
        tokens = {"src": [*ex0.src, "<eos>"], "tgt": ["<start>", *ex0.tgt[:k0]]}
    out = "seq" if family == "decoder" else "tgt"
    return Pairs(family, clean, bad, clean[out].shape[1] - 1,
                 torch.tensor([codec.vocab[e.tgt[k]] for e, _, k in chosen]),
                 torch.tensor([codec.vocab[b.tgt[k]] for _, b, k in chosen]),
                 tokens, roles, [(e, b) for e, b, _ in chosen])


# ---------------------------------------------------------------------------------------
# metrics
def metric_values(logits: torch.Tensor, pairs: Pairs, metric: str = "logit_diff",
                  repeats: int = 1, pos: int | None = None) -> torch.Tensor:
    """Per-example metric [repeats * batch] from logits [repeats * batch, pos, vocab], read
    at the answer position (or at `pos`)."""
    if metric not in METRICS:
        raise InterpError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")
    last = logits[:, pairs.answer_pos if pos is None else pos].float()
    good = pairs.clean_token.repeat(repeats)
    rows = torch.arange(last.shape[0])
    if metric == "logit_diff":
        return last[rows, good] - last[rows, pairs.corrupt_token.repeat(repeats)]
    return torch.log_softmax(last, -1)[rows, good]


# ---------------------------------------------------------------------------------------
# sites
@dataclass(frozen=True)
class Site:
    """One patchable activation: hook name per layer, the axes of a cell, the side of its
    positions and how its tensor is laid out ("pos" [b, pos, ...], "z" [b, pos, head, d],
    "pattern" [b, head, q, k])."""

    name: str
    hook: str            # with {l}
    axes: tuple[str, ...]
    side: str
    layout: str


def site(bridge, what: str) -> Site:
    fam = arch_of(bridge)
    if fam == "decoder":
        table = {"resid_pre": ("blocks.{l}.hook_resid_pre", ("layer", "pos"), "pos"),
                 "attn_out": ("blocks.{l}.hook_attn_out", ("layer", "pos"), "pos"),
                 "mlp_out": ("blocks.{l}.hook_mlp_out", ("layer", "pos"), "pos"),
                 "head": ("blocks.{l}.attn.hook_z", ("layer", "head"), "z"),
                 "head_pos": ("blocks.{l}.attn.hook_z", ("layer", "head", "pos"), "z"),
                 "pattern": ("blocks.{l}.attn.hook_pattern", ("layer", "head"), "pattern")}
        if what not in table:
            raise InterpError(f"unknown site {what!r} for a decoder-only model; choose one of "
                              f"{', '.join(DECODER_SITES)}")
        hook, axes, layout = table[what]
        return Site(what, hook, axes, "seq", layout)
    if fam != "t5":
        raise InterpError(f"patching needs a decoder-only or T5 model; this one is {fam!r}")
    if what not in T5_SITES:
        raise InterpError(f"unknown site {what!r} for a T5 model; choose one of "
                          f"{', '.join(T5_SITES)}")
    stack, part = what.split(".", 1)
    block = {"enc": "encoder_blocks", "dec": "decoder_blocks", "cross": "decoder_blocks"}[stack]
    attn = {"enc": "attn", "dec": "self_attn", "cross": "cross_attn"}[stack]
    side = "src" if stack == "enc" else "tgt"
    if part in ("head", "head_pos"):
        axes = ("layer", "head") if part == "head" else ("layer", "head", "pos")
        return Site(what, f"{block}.{{l}}.{attn}.hook_z", axes, side, "z")
    if part == "pattern":  # read through the hook, written by `_t5_pattern_hook`
        return Site(what, f"{block}.{{l}}.{attn}.hook_pattern", ("layer", "head"), side,
                    "t5_pattern")
    return Site(what, f"{block}.{{l}}.hook_{part}", ("layer", "pos"), side, "pos")


def _n_layers(bridge, s: Site) -> int:
    if s.hook.startswith("encoder_blocks"):
        return len(bridge.encoder_blocks)
    if s.hook.startswith("decoder_blocks"):
        return len(bridge.decoder_blocks)
    return int(bridge.cfg.n_layers)


def _run(bridge, family, ids: dict[str, torch.Tensor], hooks=(), resid=None, start=None,
         module_hooks=()):
    """Logits of one forward with TransformerLens hooks and (module, fn) torch forward
    hooks attached; from `resid` at layer `start` when given."""
    handles = [m.register_forward_hook(fn, with_kwargs=True) for m, fn in module_hooks]
    try:
        with bridge.hooks(fwd_hooks=list(hooks)):
            if resid is not None:
                return bridge(resid, start_at_layer=start)
            if family == "decoder":
                return bridge(ids["seq"])
            return bridge(ids["src"], decoder_input=ids["tgt"])
    finally:
        for h in handles:
            h.remove()


def _t5_module(bridge, s: Site, layer: int):
    stack = s.name.split(".")[0]
    blocks = bridge.encoder_blocks if stack == "enc" else bridge.decoder_blocks
    attn = {"enc": "attn", "dec": "self_attn", "cross": "cross_attn"}[stack]
    return getattr(blocks[layer], attn).original_component


def _t5_pattern_hook(cells, source: torch.Tensor, batch: int):
    """A forward hook on HF's T5Attention that recomputes its output with the pattern of
    head cell[1] taken from `source` [batch, head, q, k] in copy k of the batch.

    TransformerLens 4.3 fires T5's hook_pattern after HF has used the weights, so the
    pattern is replaced here instead: output = o(pattern @ values), values recomputed from
    the same input."""
    def hook(module, args, kwargs, output):
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
        view = w.view(len(cells), batch, *w.shape[1:])
        for k, cell in enumerate(cells):
            view[k, :, cell[1]] = source[:, cell[1]]
        z = (w @ v).transpose(1, 2).reshape(b, w.shape[2], -1)
        return (module.o(z),) + tuple(output[1:2]) + (w,) + tuple(output[3:])
    return hook


def _capture(bridge, family, ids, names: Sequence[str]) -> tuple[torch.Tensor, dict]:
    store = {}

    def keeper(name):
        def keep(t, hook):
            store[name] = t.detach().clone()
            return t
        return keep
    logits = _run(bridge, family, ids, [(n, keeper(n)) for n in names])
    return logits, store


# ---------------------------------------------------------------------------------------
# exact patching
@dataclass
class PatchResult:
    """values: mean metric over pairs for each cell, shaped by `axes`; per_example: the
    same with a last axis over pairs; clean / corrupt: the unpatched metric (mean) of each
    input; labels: axis -> names of the cells (positions as `role` strings)."""

    site: str
    axes: tuple[str, ...]
    values: torch.Tensor
    per_example: torch.Tensor
    clean: float
    corrupt: float
    metric: str
    direction: str
    labels: dict[str, list[str]]

    def normalised(self) -> torch.Tensor:
        """Share of the clean-corrupt gap the patch restores (denoise) or removes (noise)."""
        gap = self.clean - self.corrupt
        if gap == 0:
            return torch.full_like(self.values, float("nan"))
        if self.direction == "denoise":
            return (self.values - self.corrupt) / gap
        return (self.clean - self.values) / gap

    def frame(self):
        """A long pandas DataFrame: one row per cell, with its labels and normalised value."""
        import pandas as pd

        idx = list(itertools.product(*[range(s) for s in self.values.shape]))
        norm = self.normalised()
        rows = []
        for cell in idx:
            row = {a: i for a, i in zip(self.axes, cell)}
            if "pos" in self.axes:
                row["role"] = self.labels["pos"][cell[self.axes.index("pos")]]
            row["value"] = float(self.values[cell])
            row["normalised"] = float(norm[cell])
            rows.append(row)
        return pd.DataFrame(rows)


def _cells(s: Site, n_layers: int, n_heads: int, width: int, layer: int):
    if s.axes == ("layer", "pos"):
        return [(layer, p) for p in range(width)]
    if s.axes == ("layer", "head"):
        return [(layer, h) for h in range(n_heads)]
    return [(layer, h, p) for h in range(n_heads) for p in range(width)]


def _slice(s: Site, act: torch.Tensor, cell) -> torch.Tensor:
    """The part of `act` [batch, ...] that patching `cell` overwrites."""
    if s.layout == "pos":
        return act[:, cell[1]]
    if s.layout == "z":
        return act[:, :, cell[1]] if len(cell) == 2 else act[:, cell[2], cell[1]]
    return act[:, cell[1]]  # patterns [batch, head, q, k]


def _setter(s: Site, cells, source: torch.Tensor, batch: int):
    """A hook writing, in copy k of the batch, cell k's slice of `source` [batch, ...]."""
    def hook(act, hook):
        act = act.clone()
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


def _orig(m):
    return getattr(m, "original_component", m)


class _GPT2Tail:
    """The layers of an HF GPT-2 (as wrapped by the bridge) run on the positions a patch can
    change, with the receiving run's keys and values reused for the positions before it.

    A patch at position p changes nothing before p (causal attention), and only the logits at
    the answer position are needed, so after the patch each layer computes positions p.. only
    and the last layer only the answer position's query and MLP. Same HF modules and
    weights as the bridge's forward."""

    def __init__(self, bridge):
        self.blocks = []
        for blk in bridge.blocks:
            oc = _orig(blk)
            attn, mlp = _orig(getattr(oc, "attn", None)), _orig(getattr(oc, "mlp", None))
            if not all(hasattr(m, a) for m, a in ((oc, "ln_1"), (oc, "ln_2"), (attn, "c_attn"),
                                                  (attn, "c_proj"), (mlp, "c_fc"))) \
                    or getattr(attn, "reorder_and_upcast_attn", False) \
                    or getattr(attn, "scale_attn_by_inverse_layer_idx", False):
                raise NotImplementedError  # not an HF GPT-2 block: the batched path instead
            self.blocks.append((_orig(oc.ln_1), _orig(attn.c_attn), _orig(attn.c_proj),
                                _orig(oc.ln_2), _orig(mlp.c_fc), mlp.act, _orig(mlp.c_proj),
                                bool(attn.scale_attn_weights)))
        self.ln_f, self.head = _orig(bridge.ln_final), _orig(bridge.unembed)
        self.H, self.dh = int(bridge.cfg.n_heads), int(bridge.cfg.d_head)

    def kv(self, layer: int, resid: torch.Tensor):
        """Keys and values [b, head, pos, d_head] of `layer` for residual [b, pos, d]."""
        ln1, c_attn = self.blocks[layer][:2]
        _, k, v = self._split(c_attn(ln1(resid)))
        return k, v

    def _split(self, qkv):
        b, t, _ = qkv.shape
        q, k, v = qkv.split(self.H * self.dh, dim=-1)
        return [x.view(b, t, self.H, self.dh).transpose(1, 2) for x in (q, k, v)]

    def attn(self, layer, resid, p, k_prev, v_prev, last_only):
        """Attention output of `layer` for positions p.. (resid [b, t - p, d]); k_prev /
        v_prev: the cached keys/values of positions < p, [b, head, p, d_head]."""
        ln1, c_attn, c_proj, *_, scale = self.blocks[layer]
        q, k, v = self._split(c_attn(ln1(resid)))
        k = torch.cat([k_prev, k], 2)
        v = torch.cat([v_prev, v], 2)
        if last_only:
            q = q[:, :, -1:]
        scores = q @ k.transpose(-1, -2)
        if scale:
            scores = scores / (self.dh ** 0.5)
        n_q, n_k = q.shape[2], k.shape[2]
        qpos = torch.arange(n_k - n_q, n_k)[:, None]
        scores = scores.masked_fill(torch.arange(n_k)[None, :] > qpos, float("-inf"))
        z = torch.softmax(scores, -1) @ v                       # [b, head, q, d_head]
        b = z.shape[0]
        return c_proj(z.transpose(1, 2).reshape(b, n_q, self.H * self.dh))

    def mlp(self, layer, x):
        *_, ln2, fc, act, proj, _scale = self.blocks[layer]
        return proj(act(fc(ln2(x))))

    def logits_from(self, layer: int, resid: torch.Tensor, p: int, kv_cache, after_attn=False):
        """Logits at the last position after running layers `layer`.. on resid [b, t - p, d]
        (positions p..). after_attn: resid is already past `layer`'s attention (the mid
        residual), so that layer only runs its MLP."""
        n = len(self.blocks)
        rep = resid.shape[0] // kv_cache[0][0].shape[0]
        for j in range(layer, n):
            last = j == n - 1
            if not (after_attn and j == layer):
                k_prev, v_prev = (x[:, :, :p].repeat(rep, 1, 1, 1) for x in kv_cache[j])
                a = self.attn(j, resid, p, k_prev, v_prev, last)
                resid = (resid[:, -1:] if last else resid) + a
            elif last:
                resid = resid[:, -1:]
            resid = resid + self.mlp(j, resid)
        return self.head(self.ln_f(resid[:, -1]))


def _fast_patch(bridge, pairs: Pairs, s: Site, recv: dict, src: dict, rc: dict, sc: dict,
                metric, todo, per, progress) -> None:
    """Exact position-wise patching of a GPT-2 decoder via `_GPT2Tail`: fills `per`
    [cells..., batch] for the cells in `todo`. recv / src: the receiving and source inputs;
    rc / sc: their activations at the site's hooks (the residuals are captured here)."""
    tail = _GPT2Tail(bridge)
    L, H, B = len(tail.blocks), tail.H, pairs.n
    want = [f"blocks.{l}.{h}" for l in range(L)
            for h in ("hook_resid_pre", "hook_resid_mid", "hook_resid_post")]
    rc = {**rc, **_capture(bridge, "decoder", recv, want)[1]}
    sc = {**sc, **_capture(bridge, "decoder", src, want)[1]}
    kv = [tail.kv(l, rc[f"blocks.{l}.hook_resid_pre"]) for l in range(L)]
    by_lp: dict[tuple[int, int], list] = {}
    for cell in todo:
        by_lp.setdefault((cell[0], cell[-1]), []).append(cell)
    shown = None
    for (l, p), cells in sorted(by_lp.items()):
        if progress and l != shown:
            progress(f"{s.name} layer {l}")
            shown = l
        if s.name == "resid_pre":
            r = rc[f"blocks.{l}.hook_resid_pre"][:, p:].clone()
            r[:, 0] = sc[f"blocks.{l}.hook_resid_pre"][:, p]
            per[l, p] = metric_values_last(tail.logits_from(l, r, p, kv), pairs, metric)
            continue
        if s.name == "mlp_out":
            name = s.hook.format(l=l)
            r = rc[f"blocks.{l}.hook_resid_post"][:, p:].clone()
            r[:, 0] += sc[name][:, p] - rc[name][:, p]
            out = tail.logits_from(l + 1, r, p, kv) if l + 1 < L else tail.head(tail.ln_f(r[:, -1]))
            per[l, p] = metric_values_last(out, pairs, metric)
            continue
        mid = rc[f"blocks.{l}.hook_resid_mid"][:, p:]
        if s.name == "attn_out":
            name = s.hook.format(l=l)
            r = mid.clone()
            r[:, 0] += sc[name][:, p] - rc[name][:, p]
            per[l, p] = metric_values_last(tail.logits_from(l, r, p, kv, after_attn=True),
                                           pairs, metric)
            continue
        # one head's z at position p: its change enters through c_proj's rows of that head
        heads = [c[1] for c in cells]
        c_proj = tail.blocks[l][2]
        zname = s.hook.format(l=l)
        dz = (sc[zname][:, p] - rc[zname][:, p])[:, heads]               # [b, h, d_head]
        w = c_proj.weight.view(H, tail.dh, -1)[heads]                    # Conv1D: x @ W
        delta = torch.einsum("bhd,hdm->hbm", dz, w)                      # [h, b, d]
        r = mid.repeat(len(heads), 1, 1)
        r[:, 0] += delta.reshape(len(heads) * B, -1)
        vals = metric_values_last(tail.logits_from(l, r, p, kv, after_attn=True), pairs,
                                  metric, len(heads)).view(len(heads), B)
        for h, v in zip(heads, vals):
            per[l, h, p] = v


def metric_values_last(last: torch.Tensor, pairs: Pairs, metric: str, repeats: int = 1
                       ) -> torch.Tensor:
    """`metric_values` from the answer position's logits alone ([repeats * batch, vocab])."""
    return metric_values(last[:, None], pairs, metric, repeats, pos=0)


@torch.no_grad()
def patch(bridge, pairs: Pairs, what: str = "resid_pre", direction: str = "denoise",
          metric: str = "logit_diff", max_rows: int = 64, fast: bool = True,
          progress=None) -> PatchResult:
    """Exact activation patching of every cell of site `what` (see the module docstring).

    max_rows: how many (patch, example) rows run in one forward pass of the batched path.
    fast: position-wise sites of a GPT-2 decoder run only the positions and layers a patch
    can change (`_GPT2Tail`); False uses the batched `start_at_layer` path for every site."""
    if direction not in DIRECTIONS:
        raise InterpError(f"unknown direction {direction!r}; choose one of "
                          f"{', '.join(DIRECTIONS)}")
    s = site(bridge, what)
    fam = pairs.family
    recv, src = (pairs.corrupt, pairs.clean) if direction == "denoise" else \
        (pairs.clean, pairs.corrupt)
    L = _n_layers(bridge, s)
    H = int(bridge.cfg.n_heads)
    width = pairs.clean[s.side].shape[1]
    names = [s.hook.format(l=l) for l in range(L)]
    was_training = bridge.training
    bridge.eval()
    starts = [f"blocks.{l}.hook_resid_pre" for l in range(L)] if fam == "decoder" else []
    B = pairs.n
    try:
        src_logits, src_acts = _capture(bridge, fam, src, names)
        recv_logits, recv_acts = _capture(bridge, fam, recv, names + starts)
        base = metric_values(recv_logits, pairs, metric)
        shape = {"layer": L, "head": H, "pos": width}
        per = base.repeat(*[shape[a] for a in s.axes], 1).clone()
        # a patch that writes what is already there changes nothing: not run, exactly base
        same = {}
        for l in range(L):
            for cell in _cells(s, L, H, width, l):
                a, b = (_slice(s, acts[names[l]], cell) for acts in (src_acts, recv_acts))
                same[cell] = (a == b).flatten(1).all(1)
        todo = [c for c in same if not bool(same[c].all())]
        use_fast = fast and fam == "decoder" and "pos" in s.axes and s.layout in ("pos", "z") \
            and pairs.answer_pos == width - 1
        if use_fast:
            try:
                _fast_patch(bridge, pairs, s, recv, src, recv_acts, src_acts, metric, todo, per,
                            progress)
            except NotImplementedError:  # not a GPT-2 layout: the general path below
                use_fast = False
        chunk = max(1, max_rows // B)
        for l in range(0 if use_fast else L):
            cells = [c for c in todo if c[0] == l]
            if progress:
                progress(f"{what} layer {l}: {len(cells)} patches")
            for k in range(0, len(cells), chunk):
                part = cells[k:k + chunk]
                hooks = [(names[l], _setter(s, part, src_acts[names[l]], B))]
                if s.layout == "t5_pattern":
                    mod = [(_t5_module(bridge, s, l), _t5_pattern_hook(part, src_acts[names[l]],
                                                                       B))]
                    ids = {k2: v.repeat(len(part), 1) for k2, v in recv.items()}
                    logits = _run(bridge, fam, ids, module_hooks=mod)
                elif fam == "decoder":
                    resid = recv_acts[starts[l]].repeat(len(part), 1, 1)
                    logits = _run(bridge, fam, None, hooks, resid=resid, start=l)
                else:
                    ids = {k2: v.repeat(len(part), 1) for k2, v in recv.items()}
                    logits = _run(bridge, fam, ids, hooks)
                vals = metric_values(logits, pairs, metric, len(part)).view(len(part), B)
                for cell, v in zip(part, vals):
                    per[cell] = v
        for cell in todo:
            per[cell] = torch.where(same[cell], base, per[cell])
    finally:
        bridge.train(was_training)
    clean_m = metric_values(src_logits if direction == "denoise" else recv_logits, pairs,
                            metric).mean()
    corrupt_m = metric_values(recv_logits if direction == "denoise" else src_logits, pairs,
                              metric).mean()
    labels = {"layer": [str(l) for l in range(L)], "head": [str(h) for h in range(H)],
              "pos": [f"{r} {t}" if r != t else r
                      for r, t in zip(pairs.roles[s.side], pairs.tokens[s.side])]}
    return PatchResult(what, s.axes, per.mean(-1), per, float(clean_m), float(corrupt_m),
                       metric, direction, {a: labels[a] for a in s.axes})


# ---------------------------------------------------------------------------------------
# attribution patching
def attribute(bridge, pairs: Pairs, what: str = "head_pos", direction: str = "denoise",
              metric: str = "logit_diff") -> PatchResult:
    """Attribution patching: the first-order estimate (source - receiving activation) x
    d metric / d activation, for every cell at once, from a forward pass of each input and one
    backward pass of the receiving one (Nanda 2023; Syed et al. 2023). Same cells and
    layout as `patch`; values are estimated metric values (receiving baseline + estimate)."""
    if direction not in DIRECTIONS:
        raise InterpError(f"unknown direction {direction!r}; choose one of "
                          f"{', '.join(DIRECTIONS)}")
    s = site(bridge, what)
    if "pattern" in s.layout:
        raise InterpError("attribution patching covers residual, output and head sites, not "
                          "attention patterns")
    fam = pairs.family
    recv, src = (pairs.corrupt, pairs.clean) if direction == "denoise" else \
        (pairs.clean, pairs.corrupt)
    L = _n_layers(bridge, s)
    names = [s.hook.format(l=l) for l in range(L)]
    was_training = bridge.training
    bridge.eval()
    try:
        with torch.no_grad():
            src_logits, src_acts = _capture(bridge, fam, src, names)
        acts = {}

        def keeper(name):
            def keep(t, hook):
                t.retain_grad()
                acts[name] = t
                return t
            return keep
        with torch.enable_grad():
            logits = _run(bridge, fam, recv, [(n, keeper(n)) for n in names])
            vals = metric_values(logits, pairs, metric)
            vals.sum().backward()
    finally:
        bridge.zero_grad(set_to_none=True)
        bridge.train(was_training)
    per = []
    for n in names:
        a, g = acts[n].detach(), acts[n].grad
        if g is None:  # the metric does not depend on this activation
            g = torch.zeros_like(a)
        d = (src_acts[n] - a) * g                 # [b, pos, ...]
        if s.layout == "pos":
            per.append(d.sum(-1).T)               # [pos, b]
        elif s.axes == ("layer", "head"):
            per.append(d.sum((1, 3)).T)           # [head, b]
        else:
            per.append(d.sum(-1).permute(2, 1, 0))  # [head, pos, b]
    est = torch.stack(per) + vals.detach()[(None,) * len(s.axes)]
    with torch.no_grad():
        other = metric_values(src_logits, pairs, metric).mean()
    base = vals.detach().mean()
    clean_m, corrupt_m = (other, base) if direction == "denoise" else (base, other)
    width = pairs.clean[s.side].shape[1]
    labels = {"layer": [str(l) for l in range(L)],
              "head": [str(h) for h in range(int(bridge.cfg.n_heads))],
              "pos": [f"{r} {t}" if r != t else r
                      for r, t in zip(pairs.roles[s.side], pairs.tokens[s.side])][:width]}
    return PatchResult(what, s.axes, est.mean(-1), est, float(clean_m), float(corrupt_m),
                       metric, direction, {a: labels[a] for a in s.axes})


__all__ = ["Pairs", "PatchResult", "Site", "METRICS", "DIRECTIONS", "DEFAULT_FIELDS",
           "DECODER_SITES",
           "T5_SITES", "corrupt_equation", "corrupt_pairs", "metric_values", "site", "patch",
           "attribute"]
