"""Token ablation: does the model's answer depend on what is stored at some input tokens?

    bridge, task = interp.load_model("quadratic-small")
    examples = task.generate(500, seed=12345, heldout=True)
    res = ablate_tokens(bridge, task, examples, ["x", "^", "="], mode="knockout")
    res.summary      # one row per metric: clean, target, controls, difference [CI], p
    res.sweep        # ablate from layer l on, for each l
    res.decoded      # free-running greedy decoding, clean and target, checker per step

Modes (REFERENCE §5; seed 001's hypothesis that `x ^ =` store intermediate results):

- `knockout`: at the chosen layers no head may read the target positions: their attention
  weight is set to 0 and each row renormalised (T5: encoder self attention and cross
  attention; with scope `all` also the decoder's self attention). A query row whose every key
  is knocked out is an error, not a NaN.
- `mean` / `zero` / `resample`: at each chosen layer the residual stream entering the block
  (`hook_resid_pre`) at the target positions is replaced by its dataset mean, by zero, or by
  its value in another equation of the dataset. Positions are matched across equations of
  different lengths by key: role and occurrence for input positions (`in:x#1` is the second
  `x` of the equation, `in:b_digit#0` the first digit of b), token and occurrence for
  solution positions (`out:=#3`). `mean` writes the dataset mean of the key; `resample` the
  value at the same key in a donor equation (donors: a random derangement of the dataset),
  or the key's mean when the donor lacks it.

Scope `input` touches the equation's tokens only, `all` also their occurrences in the solution.

Every condition is measured teacher-forced against the clean run of the same examples:
answer loss, exact match (identical to greedy decoding's exact match: greedy decoding
reproduces the solution iff the argmax is right at every answer position given the right
prefix), token accuracy, and the share of examples whose every token of a solution field
(`D_value`, `x1`, ...) is right. Controls ablate as many positions, chosen at random among
the other tokens of the same region, `n_controls` times; the difference between the target's
damage and the controls' comes with a bootstrap interval over examples and a control-rank
permutation p-value (`circuits.stats`). Free-running greedy decoding (clean and target) adds
character accuracy and the task checker's verdict per step.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

from circuits.stats import bootstrap_ci, rank_p_value
from interp.errors import InterpError
from interp.hooks import arch_of, n_layers as kind_layers
from interp.tasks.base import Example, Task
from interp.tasks.tokenizer import CharCodec
from interp.tokens import IGNORE, Side, build_sides, length_batches

MODES = ("knockout", "mean", "zero", "resample")
SCOPES = ("input", "all")
#: metrics whose damage is "ablated minus clean"; the others are "clean minus ablated"
HIGHER_IS_WORSE = {"answer_loss"}
#: free-running decoding stops at <eos> or this many tokens past the solution's length
EXTRA_TOKENS = 16


# ---------------------------------------------------------------------------------------
# the dataset, prepared once
@dataclass
class Prepared:
    """Examples as padded tensors with their regions and answer labels.

    sides: "seq" (decoder-only) or "src" and "tgt" (T5), as in `interp.cache.build_sides`.
    input_region / solution_region: side -> [N, W] bool, where the equation's tokens and the
    solution's tokens stand. keys: side -> per example, per position, the key that `mean` and
    `resample` match on ("in:<role>#<k>" or "out:<token>#<k>", None elsewhere).
    labels: [N, Wout] the answer token each logit position must predict (IGNORE elsewhere),
    on the side that carries the logits ("seq" or "tgt"); fields: [N, Wout] index into
    `field_names` of the solution field of that answer token, -1 for literals and <eos>.
    """

    family: str
    examples: list[Example]
    sides: dict[str, Side]
    input_region: dict[str, torch.Tensor]
    solution_region: dict[str, torch.Tensor]
    keys: dict[str, list[list[str | None]]]
    labels: torch.Tensor
    fields: torch.Tensor
    field_names: list[str]

    @property
    def n(self) -> int:
        return len(self.examples)

    @property
    def out_side(self) -> str:
        return "seq" if self.family == "decoder" else "tgt"

    @property
    def main_side(self) -> str:
        return "seq" if self.family == "decoder" else "src"


def field_of(role: str) -> str | None:
    """The solution field a role belongs to (`D_value_digit` -> `D_value`), None for literals."""
    for suffix in ("_digit", "_sign"):
        if role.endswith(suffix):
            return role[: -len(suffix)]
    return "nan" if role == "nan" else None


def prepare(bridge, task: Task, examples: Sequence[Example]) -> Prepared:
    family = arch_of(bridge)
    if family not in ("decoder", "t5"):
        raise InterpError("token ablation needs a model that writes the answer (decoder-only "
                          f"or T5); this one is {family!r}")
    if not examples:
        raise InterpError("no examples to ablate; give at least one (e.g. --n 500)")
    sides = build_sides(family, task, examples)
    n_ctx = int(getattr(bridge.cfg, "n_ctx", 0) or 0)
    inp, sol, keys = {}, {}, {}
    for name, s in sides.items():
        inp[name] = torch.zeros_like(s.ids, dtype=torch.bool)
        sol[name] = torch.zeros_like(s.ids, dtype=torch.bool)
        keys[name] = [[None] * s.ids.shape[1] for _ in examples]
    out = "seq" if family == "decoder" else "tgt"
    width = sides[out].ids.shape[1]
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    field_idx = torch.full((len(examples), width), -1, dtype=torch.long)
    names: list[str] = []
    for i, ex in enumerate(examples):
        ns, nt = len(ex.src), len(ex.tgt)
        if family == "decoder":
            s = sides["seq"]
            if n_ctx and int(s.lengths[i]) > n_ctx:
                raise InterpError(f"the sequence for {ex.src!r} is {int(s.lengths[i])} tokens "
                                  f"long but the model's context is {n_ctx}")
            in_pos, sol_pos = range(1, 1 + ns), range(ns + 2, ns + 2 + nt)
            _mark(inp["seq"], sol["seq"], keys["seq"][i], s, i, in_pos, sol_pos)
            for t in range(ns + 1, ns + 2 + nt):  # logits at t predict the token at t + 1
                labels[i, t] = s.ids[i, t + 1]
                _set_field(field_idx, names, i, t, s.roles[i][t + 1])
        else:
            src, tgt = sides["src"], sides["tgt"]
            _mark(inp["src"], sol["src"], keys["src"][i], src, i, range(ns), range(0))
            _mark(inp["tgt"], sol["tgt"], keys["tgt"][i], tgt, i, range(0), range(1, 1 + nt))
            answer = tgt.ids[i, 1:1 + nt].tolist() + [CharCodec().eos]
            for t, tok in enumerate(answer):
                labels[i, t] = tok
                _set_field(field_idx, names, i, t, tgt.roles[i][t + 1] if t < nt else "")
    return Prepared(family, list(examples), sides, inp, sol, keys, labels, field_idx, names)


def _mark(inp, sol, keys, side: Side, i, in_pos, sol_pos) -> None:
    seen: dict[str, int] = {}
    for region, positions, prefix, names in ((inp, in_pos, "in:", side.roles[i]),
                                             (sol, sol_pos, "out:", side.tokens[i])):
        for p in positions:
            region[i, p] = True
            keys[p] = occurrence_key(prefix + names[p], seen)


def occurrence_key(base: str, seen: dict[str, int]) -> str:
    """`base#k` for the k-th occurrence of `base` (counted in `seen`): the second `x` of an
    equation is matched with second `x`s only."""
    k = seen.get(base, 0)
    seen[base] = k + 1
    return f"{base}#{k}"


def _set_field(field_idx, names, i, t, role) -> None:
    f = field_of(role)
    if f is None:
        return
    if f not in names:
        names.append(f)
    field_idx[i, t] = names.index(f)


# ---------------------------------------------------------------------------------------
# which positions to ablate
def token_ids(bridge, tokens: Sequence[str]) -> list[int]:
    """Ids of tokens named as a user types them; an unknown token lists the vocabulary."""
    vocab = _vocab(bridge)
    if not tokens:
        raise InterpError("no tokens to ablate; name at least one, e.g. --tokens 'x,^,='")
    bad = [t for t in tokens if t not in vocab]
    if bad:
        shown = " ".join(sorted((t for t in vocab if not t.startswith("<")),
                                key=lambda t: vocab[t]))
        raise InterpError(f"unknown token{'s' if len(bad) > 1 else ''} "
                          f"{', '.join(repr(t) for t in bad)}; the vocabulary is: {shown} "
                          "(separate tokens with commas, e.g. 'x,^,=')")
    return sorted({vocab[t] for t in tokens})


def _vocab(bridge) -> dict[str, int]:
    tok = getattr(bridge, "tokenizer", None)
    return dict(tok.get_vocab()) if tok is not None else dict(CharCodec().vocab)


def target_masks(prep: Prepared, ids: Sequence[int], scope: str = "input"
                 ) -> dict[str, torch.Tensor]:
    """side -> [N, W] True at the positions holding one of `ids` in the chosen scope."""
    if scope not in SCOPES:
        raise InterpError(f"unknown scope {scope!r}; choose one of {', '.join(SCOPES)}")
    want = torch.tensor(list(ids))
    out = {}
    for name, s in prep.sides.items():
        region = prep.input_region[name] | (prep.solution_region[name] if scope == "all" else
                                            torch.zeros_like(prep.input_region[name]))
        out[name] = torch.isin(s.ids, want) & region
    return out


def control_masks(prep: Prepared, targets: dict[str, torch.Tensor], n_controls: int,
                  seed: int = 0, scope: str = "input") -> list[dict[str, torch.Tensor]]:
    """`n_controls` position sets: per example and region as many positions as the targets
    have there, drawn uniformly among that region's other positions (never a target)."""
    regions = [prep.input_region] + ([prep.solution_region] if scope == "all" else [])
    out = []
    for j in range(n_controls):
        rng = np.random.default_rng([seed, j])
        masks = {}
        for name, tmask in targets.items():
            m = torch.zeros_like(tmask)
            for region in regions:
                r = region[name]
                for i in range(prep.n):
                    k = int((tmask[i] & r[i]).sum())
                    if k == 0:
                        continue
                    pool = torch.nonzero(r[i] & ~tmask[i]).flatten().numpy()
                    if len(pool) < k:
                        raise InterpError(
                            f"example {prep.examples[i].src!r} has {k} target positions but "
                            f"only {len(pool)} other positions to draw controls from; ablate "
                            "fewer tokens or use --controls 0")
                    m[i, torch.from_numpy(rng.choice(pool, size=k, replace=False))] = True
            masks[name] = m
        out.append(masks)
    return out


# ---------------------------------------------------------------------------------------
# running the model under an intervention
def parse_layers(spec: str | Sequence[int] | None, n_layers: int) -> list[int]:
    """'0-3', '1,3', '2-' or a list -> sorted layer indices, checked against the model."""
    if spec is None or spec == "" or spec == "all":
        return list(range(n_layers))
    if isinstance(spec, str):
        layers: set[int] = set()
        try:
            for part in spec.split(","):
                part = part.strip()
                if "-" in part:
                    lo, hi = part.split("-", 1)
                    layers.update(range(int(lo), (int(hi) if hi else n_layers - 1) + 1))
                else:
                    layers.add(int(part))
        except ValueError:
            raise InterpError(f"cannot read layers {spec!r}; write e.g. '0-3', '1,3' or '2-'"
                              ) from None
    else:
        layers = {int(x) for x in spec}
    bad = sorted(l for l in layers if not 0 <= l < n_layers)
    if bad or not layers:
        raise InterpError(f"layers {bad or spec!r} out of range; this model has layers "
                          f"0-{n_layers - 1}")
    return sorted(layers)


def _knock(mask: torch.Tensor):
    """A pattern hook: zero the key columns in mask [batch, key] and renormalise each row."""
    def hook(pattern, hook):
        keep = (~mask[:, : pattern.shape[-1]]).to(pattern.dtype)[:, None, None, :]
        before = pattern.sum(-1, keepdim=True)
        out = pattern * keep
        total = out.sum(-1, keepdim=True)
        dead = (total <= 0) & (before > 0)
        if bool(dead.any()):
            b, h, q, _ = torch.nonzero(dead)[0].tolist()
            raise InterpError(f"knockout removes every key that position {q} may attend to "
                              f"(example {b} of the batch, head {h}, {hook.name}); leave at "
                              "least one readable position, e.g. ablate fewer tokens")
        return out / torch.where(total > 0, total, torch.ones_like(total))
    return hook


def _replace(mask: torch.Tensor, values: torch.Tensor | None):
    """A residual hook: positions in mask [batch, pos] take `values` [batch, pos, d] (zero
    when None)."""
    def hook(resid, hook):
        m = mask[:, : resid.shape[1]]
        if not bool(m.any()):
            return resid
        resid = resid.clone()
        if values is None:
            resid[m] = 0
        else:
            resid[m] = values[:, : resid.shape[1]][m].to(resid.dtype)
        return resid
    return hook


def _t5_knock(mask: torch.Tensor):
    """A forward pre-hook for HF's T5Attention: keys in mask [batch, key] get -inf added to
    their scores at this layer only (the attention mask is passed to each layer afresh).

    TransformerLens 4.3 fires T5's hook_pattern after the HF module has used the weights, so
    an edited pattern would be discarded; masking the scores gives the same renormalised
    weights: softmax over the remaining keys."""
    def hook(module, args, kwargs):
        m = kwargs.get("mask")
        keys = mask[:, None, None, :]
        if m is None:
            hidden = args[0] if args else kwargs["hidden_states"]
            m = torch.zeros(keys.shape, dtype=hidden.dtype)
        if m.dtype == torch.bool:  # True = may attend
            m = m & ~keys[..., : m.shape[-1]]
        else:
            m = m.masked_fill(keys[..., : m.shape[-1]], float("-inf"))
        kwargs["mask"] = m
        return args, kwargs
    return hook


def _check_alive(mask: torch.Tensor, valid: torch.Tensor, what: str) -> None:
    """Every query must keep at least one key it may read (no all-masked softmax row)."""
    left = (valid[:, : mask.shape[1]] & ~mask).sum(1)
    if bool((left == 0).any()):
        b = int(torch.nonzero(left == 0)[0])
        raise InterpError(f"knockout removes every key of example {b} of the batch in {what}; "
                          "leave at least one readable position, e.g. ablate fewer tokens")


def build_hooks(bridge, family: str, mode: str, layers: Sequence[int],
                masks: dict[str, torch.Tensor], values: dict[str, torch.Tensor] | None = None,
                valid: dict[str, torch.Tensor] | None = None) -> tuple[list, list]:
    """The interventions of one batch: TransformerLens (hook name, fn) pairs and, for T5
    knockout, (torch module, forward pre-hook) pairs.

    masks: side -> [batch, W] positions to ablate; values: side -> [layer, batch, W, d] the
    replacement residuals for `mean`/`resample`, indexed by position in `layers`; valid:
    side -> [batch, W] real tokens (to catch a knockout that leaves a query nothing)."""
    if mode not in MODES:
        raise InterpError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")
    tl, torch_hooks = [], []
    if mode == "knockout" and family == "t5" and valid is not None and bool(masks["src"].any()):
        _check_alive(masks["src"], valid["src"], "the input")
    for j, l in enumerate(layers):
        if mode == "knockout":
            if family == "decoder":
                tl.append((f"blocks.{l}.attn.hook_pattern", _knock(masks["seq"])))
                continue
            if bool(masks["src"].any()):
                hook = _t5_knock(masks["src"])
                torch_hooks.append((bridge.encoder_blocks[l].attn.original_component, hook))
                torch_hooks.append((bridge.decoder_blocks[l].cross_attn.original_component,
                                    hook))
            if bool(masks["tgt"].any()):
                torch_hooks.append((bridge.decoder_blocks[l].self_attn.original_component,
                                    _t5_knock(masks["tgt"])))
            continue
        for side, m in masks.items():
            if not bool(m.any()):
                continue
            name = {"seq": "blocks", "src": "encoder_blocks", "tgt": "decoder_blocks"}[side]
            v = None if mode == "zero" else values[side][j]
            tl.append((f"{name}.{l}.hook_resid_pre", _replace(m, v)))
    return tl, torch_hooks


def _logits(bridge, family, ids: dict[str, torch.Tensor], valid: dict[str, torch.Tensor],
            hooks=((), ())) -> torch.Tensor:
    """Logits on the output side ([batch, pos, vocab]) of one forward with hooks attached."""
    tl, torch_hooks = hooks
    handles = [mod.register_forward_pre_hook(fn, with_kwargs=True) for mod, fn in torch_hooks]
    try:
        with bridge.hooks(fwd_hooks=list(tl)):
            if family == "decoder":
                return bridge(ids["seq"], attention_mask=valid["seq"].long())
            return bridge(ids["src"], attention_mask=valid["src"].long(),
                          decoder_input=ids["tgt"])
    finally:
        for h in handles:
            h.remove()


def _batches(prep: Prepared, batch_size: int):
    """(index, widths) of batches of similar length; widths: side -> max length there."""
    for index in length_batches(prep.sides[prep.main_side].lengths, batch_size):
        yield index, {k: int(s.lengths[index].max()) for k, s in prep.sides.items()}


def _batch(prep, index, widths, masks, values):
    ids = {k: s.ids[index, :widths[k]] for k, s in prep.sides.items()}
    valid = {k: s.valid[index, :widths[k]] for k, s in prep.sides.items()}
    m = {k: v[index, :widths[k]] for k, v in masks.items()}
    vals = None if values is None else {k: v[:, index, :widths[k]] for k, v in values.items()}
    return ids, valid, m, vals


@dataclass
class Run:
    """Per-example teacher-forced results of one condition ([N] each).

    fields: [N, n_fields] 1.0 if every answer token of that field is right, NaN where the
    example has no such field. first_wrong: index of the first wrong answer position (-1 if
    none) and its argmax token."""

    loss: torch.Tensor
    exact: torch.Tensor
    token_acc: torch.Tensor
    fields: torch.Tensor
    first_wrong: torch.Tensor
    first_pred: torch.Tensor

    def metrics(self, field_names: Sequence[str]) -> dict[str, torch.Tensor]:
        out = {"answer_loss": self.loss, "exact_match": self.exact.float(),
               "token_accuracy": self.token_acc}
        for j, f in enumerate(field_names):
            out[f"field:{f}"] = self.fields[:, j]
        return out


@torch.no_grad()
def run_condition(bridge, prep: Prepared, mode: str = "knockout", layers: Sequence[int] = (),
                  masks: dict[str, torch.Tensor] | None = None,
                  values: dict[str, torch.Tensor] | None = None, batch_size: int = 128) -> Run:
    """Teacher-forced run of every example with the positions in `masks` ablated at `layers`
    (no masks or no layers: the clean run)."""
    n, nf = prep.n, len(prep.field_names)
    loss, tacc = torch.zeros(n), torch.zeros(n)
    exact = torch.zeros(n, dtype=torch.bool)
    fields = torch.full((n, nf), float("nan"))
    first = torch.full((n,), -1, dtype=torch.long)
    pred_at = torch.full((n,), -1, dtype=torch.long)
    masks = masks or {k: torch.zeros_like(v) for k, v in prep.input_region.items()}
    was_training = bridge.training
    bridge.eval()
    try:
        for index, widths in _batches(prep, batch_size):
            ids, valid, m, vals = _batch(prep, index, widths, masks, values)
            hooks = build_hooks(bridge, prep.family, mode, layers, m, vals, valid) \
                if layers else ((), ())
            logits = _logits(bridge, prep.family, ids, valid, hooks).float()
            w = widths[prep.out_side]
            lab = prep.labels[index, :w]
            fld = prep.fields[index, :w]
            keep = lab != IGNORE
            ce = torch.nn.functional.cross_entropy(logits.transpose(1, 2), lab.clamp_min(0),
                                                   reduction="none")
            pred = logits.argmax(-1)
            right = (pred == lab) & keep
            wrong = keep & ~right
            loss[index] = (ce * keep).sum(1) / keep.sum(1)
            tacc[index] = right.sum(1).float() / keep.sum(1)
            exact[index] = ~wrong.any(1)
            has_wrong = wrong.any(1)
            fw = torch.where(has_wrong, wrong.float().argmax(1), torch.full_like(index, -1))
            first[index] = fw
            pred_at[index] = torch.where(has_wrong, pred.gather(1, fw.clamp_min(0)[:, None])[:, 0],
                                         torch.full_like(index, -1))
            for j in range(nf):
                fm = fld == j
                val = (~(fm & wrong).any(1)).float()
                fields[index, j] = torch.where(fm.any(1), val, torch.full_like(val, float("nan")))
    finally:
        bridge.train(was_training)
    return Run(loss, exact, tacc, fields, first, pred_at)


@torch.no_grad()
def clean_residuals(bridge, prep: Prepared, layers: Sequence[int], batch_size: int = 128
                    ) -> dict[str, torch.Tensor]:
    """side -> [len(layers), N, W, d_model]: the clean residual stream entering each layer."""
    out: dict[str, torch.Tensor] = {}
    names = {"seq": "blocks", "src": "encoder_blocks", "tgt": "decoder_blocks"}
    was_training = bridge.training
    bridge.eval()
    try:
        for index, widths in _batches(prep, batch_size):
            store = {}

            def keep(side, j):
                def fn(resid, hook):
                    store[(side, j)] = resid.detach().float()
                    return resid
                return fn
            hooks = [(f"{names[s]}.{l}.hook_resid_pre", keep(s, j))
                     for s in prep.sides for j, l in enumerate(layers)]
            ids, valid, _, _ = _batch(prep, index, widths, {}, None)
            _logits(bridge, prep.family, ids, valid, (hooks, ()))
            for s, side in prep.sides.items():
                if s not in out:
                    d = store[(s, 0)].shape[-1]
                    out[s] = torch.zeros(len(layers), prep.n, side.ids.shape[1], d)
                for j in range(len(layers)):
                    r = store[(s, j)]
                    out[s][j, index, : r.shape[1]] = r
    finally:
        bridge.train(was_training)
    return out


def replacement_values(prep: Prepared, resid: dict[str, torch.Tensor], mode: str,
                       seed: int = 0) -> tuple[dict[str, torch.Tensor] | None, dict]:
    """side -> [layer, N, W, d] what `mean` or `resample` writes at each position, and
    side -> {key: [layer, d]} the per-key means (also used for generated tokens)."""
    if mode not in ("mean", "resample"):
        return None, {}
    means: dict[str, dict[str, torch.Tensor]] = {}
    for s, R in resid.items():
        sums: dict[str, torch.Tensor] = {}
        counts: dict[str, int] = {}
        for i in range(prep.n):
            for p, key in enumerate(prep.keys[s][i]):
                if key is None:
                    continue
                sums[key] = sums.get(key, 0) + R[:, i, p]
                counts[key] = counts.get(key, 0) + 1
        means[s] = {k: v / counts[k] for k, v in sums.items()}
    values = {}
    if mode == "mean":
        for s, R in resid.items():
            V = torch.zeros_like(R)
            for i in range(prep.n):
                for p, key in enumerate(prep.keys[s][i]):
                    if key is not None:
                        V[:, i, p] = means[s][key]
            values[s] = V
        return values, means
    donors = derangement(prep.n, seed)
    for s, R in resid.items():
        V = torch.zeros_like(R)
        for i in range(prep.n):
            d = int(donors[i])
            where = {key: p for p, key in enumerate(prep.keys[s][d]) if key is not None}
            for p, key in enumerate(prep.keys[s][i]):
                if key is None:
                    continue
                # the donor lacks this occurrence (e.g. a shorter number): the dataset mean
                V[:, i, p] = R[:, d, where[key]] if key in where else means[s][key]
        values[s] = V
    return values, means


def derangement(n: int, seed: int = 0) -> np.ndarray:
    """A random permutation with no fixed point (n >= 2): donor[i] != i."""
    if n < 2:
        raise InterpError("resampling needs at least two examples (one donates to the other)")
    order = np.random.default_rng(seed).permutation(n)
    donor = np.empty(n, dtype=int)
    donor[order] = np.roll(order, -1)
    return donor


# ---------------------------------------------------------------------------------------
# free-running greedy decoding under an intervention
@torch.no_grad()
def decode_condition(bridge, prep: Prepared, run: Run, mode: str, layers: Sequence[int],
                     masks: dict[str, torch.Tensor] | None, values, means, target_ids,
                     scope: str, batch_size: int = 128) -> list[str]:
    """Greedy outputs of every example under the same intervention as `run`.

    Up to the first wrong answer token the greedy output is the solution itself (the model
    is causal), so decoding starts there, from the token `run` predicted; examples `run`
    found exact are not decoded again; decoding stops at <eos> or `EXTRA_TOKENS` past the
    solution's length. Target positions in generated text are found by token (scope `all`);
    `mean` writes the mean of the same token occurrence there (zero if the solutions never
    had that many)."""
    if scope == "all" and mode == "resample" and layers:
        raise InterpError("free-running decoding with resample and scope 'all' is not "
                          "defined (a generated token has no donor); use --no-decode")
    codec = CharCodec()
    n_ctx = int(getattr(bridge.cfg, "n_ctx", 0) or 10_000) if prep.family == "decoder" \
        else 10_000
    outs: list[str | None] = [None] * prep.n
    seqs: dict[int, list[int]] = {}
    out_side = prep.out_side
    for i, ex in enumerate(prep.examples):
        t = int(run.first_wrong[i])
        if t < 0:
            outs[i] = ex.tgt
            continue
        full = prep.sides[out_side].ids[i].tolist()
        seqs[i] = full[: t + 1] + [int(run.first_pred[i])]
    start = {i: (len(prep.examples[i].src) + 2 if prep.family == "decoder" else 1) for i in seqs}
    # an output already longer than the solution is wrong; a margin keeps later statements
    # readable by the checker without decoding runaway text to the end of the context
    limit = {i: min(n_ctx, start[i] + len(prep.examples[i].tgt) + EXTRA_TOKENS) for i in seqs}
    want = torch.tensor(list(target_ids))
    was_training = bridge.training
    bridge.eval()
    try:
        active = [i for i in seqs if seqs[i][-1] != codec.eos and len(seqs[i]) < limit[i]]
        while active:
            for k in range(0, len(active), batch_size):
                chunk = active[k:k + batch_size]
                _step(bridge, prep, chunk, seqs, start, mode, layers, masks, values, means,
                      want, scope)
            active = [i for i in active if seqs[i][-1] != codec.eos and len(seqs[i]) < limit[i]]
    finally:
        bridge.train(was_training)
    for i, seq in seqs.items():
        outs[i] = codec.decode(seq[start[i]:])
    return outs  # type: ignore[return-value]


def _step(bridge, prep, chunk, seqs, start, mode, layers, masks, values, means, want, scope):
    idx = torch.tensor(chunk)
    out_side = prep.out_side
    lens = torch.tensor([len(seqs[i]) for i in chunk])
    w = int(lens.max())
    cur = torch.full((len(chunk), w), CharCodec().pad, dtype=torch.long)
    for r, i in enumerate(chunk):
        cur[r, : len(seqs[i])] = torch.tensor(seqs[i])
    ids, valid = {out_side: cur}, {out_side: torch.arange(w)[None] < lens[:, None]}
    if prep.family == "t5":
        ws = int(prep.sides["src"].lengths[idx].max())
        ids["src"] = prep.sides["src"].ids[idx, :ws]
        valid["src"] = prep.sides["src"].valid[idx, :ws]
    hooks = ((), ())
    if layers and masks is not None:
        m, vals = {}, None if values is None else {}
        for s in prep.sides:
            width = ids[s].shape[1]
            base = masks[s][idx, :width] if masks[s].shape[1] >= width else torch.nn.functional.pad(
                masks[s][idx], (0, width - masks[s].shape[1]))
            # prompt positions keep the teacher-forced mask; generated ones are found by token
            gen = torch.arange(width)[None] >= torch.tensor(
                [start[i] if s == out_side else width for i in chunk])[:, None]
            mk = torch.where(gen, torch.zeros_like(base), base)
            if scope == "all" and s == out_side:
                mk = mk | (gen & valid[s] & torch.isin(ids[s], want))
            m[s] = mk
            if vals is not None:
                V = torch.zeros(values[s].shape[0], len(chunk), width, values[s].shape[-1])
                keep = min(width, values[s].shape[2])
                V[:, :, :keep] = values[s][:, idx, :keep]
                if scope == "all" and s == out_side:
                    itos = CharCodec().itos
                    for r, i in enumerate(chunk):
                        seen: dict[str, int] = {}
                        for p in range(start[i], len(seqs[i])):
                            key = occurrence_key("out:" + itos[seqs[i][p]], seen)
                            if bool(m[s][r, p]):
                                V[:, r, p] = means[s].get(key, 0)
                vals[s] = V
        hooks = build_hooks(bridge, prep.family, mode, layers, m, vals, valid)
    logits = _logits(bridge, prep.family, ids, valid, hooks)
    nxt = logits[torch.arange(len(chunk)), lens - 1].argmax(-1).tolist()
    for i, tok in zip(chunk, nxt):
        seqs[i].append(int(tok))


# ---------------------------------------------------------------------------------------
# the whole experiment
@dataclass
class AblationResult:
    """summary: one row per metric; sweep: one row per starting layer; decoded: free-running
    metrics of the clean and the target run (None without decoding); per_example: [N] rows;
    meta: what was run."""

    summary: "object"
    sweep: "object"
    decoded: dict | None
    per_example: "object"
    control_damage: "object" = None
    meta: dict = field(default_factory=dict)


def _damage(metric: str, ablated: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
    return ablated - clean if metric in HIGHER_IS_WORSE else clean - ablated


def compare(clean: dict, target: dict, controls: list[dict], seed: int = 0):
    """One row per metric: clean and ablated means, control distribution, and the difference
    target damage minus mean control damage with a 95% bootstrap interval and p-value."""
    import pandas as pd

    with warnings.catch_warnings():  # a field no example of a control has: NaN, no warning
        warnings.filterwarnings("ignore", message="Mean of empty slice",
                                category=RuntimeWarning)
        return pd.DataFrame(_compare_rows(clean, target, controls, seed))


def _compare_rows(clean, target, controls, seed) -> list[dict]:
    rows = []
    for metric, c in clean.items():
        dt = _damage(metric, target[metric], c).numpy()
        dcs = np.stack([_damage(metric, ctl[metric], c).numpy() for ctl in controls]) \
            if controls else np.full((0, len(dt)), np.nan)
        ctl_means = np.array([np.nanmean(x) if np.any(~np.isnan(x)) else np.nan for x in dcs])
        row = {"metric": metric, "clean": float(np.nanmean(c.numpy())),
               "ablated": float(np.nanmean(target[metric].numpy())),
               "target_damage": float(np.nanmean(dt))}
        if controls:
            diff = dt - np.nanmean(dcs, axis=0)
            lo, hi = bootstrap_ci(diff, seed=seed)
            row.update(control_damage_mean=float(np.nanmean(ctl_means)),
                       control_damage_sd=float(np.nanstd(ctl_means, ddof=1))
                       if len(ctl_means) > 1 else 0.0,
                       control_damage_min=float(np.nanmin(ctl_means)),
                       control_damage_max=float(np.nanmax(ctl_means)),
                       difference=float(np.nanmean(diff)), ci_low=lo, ci_high=hi,
                       p_value=rank_p_value(row["target_damage"], ctl_means))
        rows.append(row)
    return rows


def ablate_tokens(bridge, task: Task, examples: Sequence[Example], tokens: Sequence[str],
                  mode: str = "knockout", layers: str | Sequence[int] | None = None,
                  scope: str = "input", n_controls: int = 20, seed: int = 0,
                  sweep: bool = True, decode: bool = True, batch_size: int = 128,
                  progress=None) -> AblationResult:
    """Ablate the positions holding `tokens` and measure what the answer loses, against
    `n_controls` random position sets of the same size. See the module docstring.

    progress: an optional callable(str) told what runs next (the CLI prints it)."""
    import pandas as pd

    say = progress or (lambda _msg: None)
    if mode not in MODES:
        raise InterpError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")
    if n_controls < 0:
        raise InterpError(f"the number of controls must be 0 or more, got {n_controls}")
    if decode and scope == "all" and mode == "resample":
        raise InterpError("free-running decoding with resample and scope 'all' is not defined "
                          "(a generated token has no donor); add --no-decode")
    ids = token_ids(bridge, tokens)
    prep = prepare(bridge, task, examples)
    n_layers = kind_layers(bridge, "encoder" if prep.family == "t5" else "self")
    chosen = parse_layers(layers, n_layers)
    targets = target_masks(prep, ids, scope)
    n_targets = sum(int(m.sum()) for m in targets.values())
    if n_targets == 0:
        raise InterpError(f"none of the tokens {', '.join(tokens)} occurs in the "
                          f"{'input' if scope == 'input' else 'input or solution'} of these "
                          "examples; nothing to ablate")
    controls = control_masks(prep, targets, n_controls, seed, scope)
    say("clean run")
    clean = run_condition(bridge, prep, batch_size=batch_size)
    values, means = None, {}
    if mode in ("mean", "resample"):
        say("clean residual stream")
        resid = clean_residuals(bridge, prep, list(range(n_layers)), batch_size)
        values, means = replacement_values(prep, resid, mode, seed)
        del resid

    def at(layer_set):
        if values is None:
            return None
        return {s: v[layer_set] for s, v in values.items()}

    names = prep.field_names
    say(f"target ({n_targets} positions), layers {chosen}")
    target = run_condition(bridge, prep, mode, chosen, targets, at(chosen), batch_size)
    ctl_runs = []
    for j, cm in enumerate(controls):
        say(f"control {j + 1}/{len(controls)}")
        ctl_runs.append(run_condition(bridge, prep, mode, chosen, cm, at(chosen), batch_size))
    cm_clean = clean.metrics(names)
    summary = compare(cm_clean, target.metrics(names), [r.metrics(names) for r in ctl_runs],
                      seed)
    control_damage = pd.DataFrame(
        [{"control": j, "metric": k, "damage": float(np.nanmean(_damage(k, v, cm_clean[k])))}
         for j, r in enumerate(ctl_runs) for k, v in r.metrics(names).items()
         if bool((~torch.isnan(v)).any())],
        columns=["control", "metric", "damage"])

    sweep_rows = []
    if sweep:
        for l in chosen:
            from_l = [x for x in chosen if x >= l]
            say(f"sweep: from layer {l} on")
            t = run_condition(bridge, prep, mode, from_l, targets, at(from_l), batch_size)
            cs = [run_condition(bridge, prep, mode, from_l, cm, at(from_l), batch_size)
                  for cm in controls]
            part = compare({k: cm_clean[k] for k in ("answer_loss", "exact_match")},
                           t.metrics(names), [c.metrics(names) for c in cs], seed)
            for _, r in part.iterrows():
                sweep_rows.append({"from_layer": l, "layers": ",".join(map(str, from_l)),
                                   **r.to_dict()})
    decoded = None
    if decode:
        from interp.metrics import score_outputs

        say("free-running decoding (clean, target)")
        outs_clean = decode_condition(bridge, prep, clean, mode, [], None, None, {}, ids, scope,
                                      batch_size)
        outs_target = decode_condition(bridge, prep, target, mode, chosen, targets, at(chosen),
                                       means_at(means, chosen), ids, scope, batch_size)
        decoded = {"clean": score_outputs(task, prep.examples, outs_clean),
                   "target": score_outputs(task, prep.examples, outs_target),
                   "outputs": {"clean": outs_clean, "target": outs_target}}
    per = pd.DataFrame({"src": [e.src for e in prep.examples],
                        "cls": [e.cls for e in prep.examples],
                        "targets": sum(m.sum(1) for m in targets.values()).numpy(),
                        "loss_clean": clean.loss.numpy(), "loss_target": target.loss.numpy(),
                        "exact_clean": clean.exact.numpy(), "exact_target": target.exact.numpy()})
    if ctl_runs:
        per["loss_controls_mean"] = torch.stack([r.loss for r in ctl_runs]).mean(0).numpy()
        per["exact_controls_mean"] = torch.stack([r.exact.float() for r in ctl_runs]
                                                 ).mean(0).numpy()
    meta = {"tokens": list(tokens), "mode": mode, "scope": scope, "layers": chosen,
            "n": prep.n, "controls": n_controls, "seed": seed, "family": prep.family,
            "target_positions": n_targets,
            "target_positions_per_example": n_targets / prep.n}
    return AblationResult(summary, pd.DataFrame(sweep_rows), decoded, per, control_damage,
                          meta)


def means_at(means: dict, layer_set: Sequence[int]) -> dict:
    return {s: {k: v[list(layer_set)] for k, v in d.items()} for s, d in means.items()}


__all__ = ["MODES", "SCOPES", "Prepared", "Run", "AblationResult", "prepare", "token_ids",
           "target_masks", "control_masks", "parse_layers", "build_hooks", "run_condition",
           "clean_residuals", "replacement_values", "derangement", "decode_condition",
           "compare", "ablate_tokens", "field_of"]
