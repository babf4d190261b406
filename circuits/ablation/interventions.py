"""Running the model under an intervention: the knockout and replacement hooks, one forward
pass through `interp.hooks.run`, the teacher-forced run of a whole condition, and the clean
residual stream with the values `mean` and `resample` write. (Just over 400 lines: the pattern
cut that route knockout and its equal-mass controls share, `cut_renormalised`, lives here.)"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from interp.errors import InterpError
from interp.hooks import capture, hook_name, module_at, run
from interp.tokens import IGNORE, length_batches

from .positions import Prepared, donor_indices

MODES = ("knockout", "mean", "zero", "resample")
#: the attention kind whose block holds a side's residual stream
SIDE_KIND = {"seq": "self", "src": "encoder", "tgt": "decoder_self"}


def check_mode(mode: str) -> None:
    """Raise `InterpError` unless `mode` is one of `MODES`."""
    if mode not in MODES:
        raise InterpError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")


def _knock(mask: torch.Tensor):
    """A pattern hook: zero the key columns in mask `[batch, key]` and renormalise each row
    of `pattern: [batch, head, query, key]`."""
    def hook(pattern, hook):
        keep = (~mask[:, : pattern.shape[-1]]).to(pattern.device, pattern.dtype)
        before = pattern.sum(-1, keepdim=True)
        out = pattern * keep[:, None, None, :]
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
    """A residual hook: positions in mask `[batch, pos]` of `resid: [batch, pos, d]` take
    `values: [batch, pos, d]` (zero when None), in the residual's device and dtype."""
    def hook(resid, hook):
        m = mask[:, : resid.shape[1]].to(resid.device)
        if not bool(m.any()):
            return resid
        resid = resid.clone()
        if values is None:
            resid[m] = 0
        else:
            resid[m] = values[:, : resid.shape[1]].to(resid.device)[m].to(resid.dtype)
        return resid
    return hook


def _t5_knock(mask: torch.Tensor):
    """A forward pre-hook for HF's T5Attention: keys in mask `[batch, key]` get -inf added to
    their scores at this layer only (the attention mask is passed to each layer afresh).

    TransformerLens 4.3 fires T5's hook_pattern after the HF module has used the weights, so
    an edited pattern would be discarded; masking the scores gives the same renormalised
    weights: softmax over the remaining keys."""
    def hook(module, args, kwargs):
        m = kwargs.get("mask")
        hidden = args[0] if args else kwargs["hidden_states"]
        keys = mask[:, None, None, :].to(hidden.device)
        if m is None:
            m = torch.zeros(keys.shape, dtype=hidden.dtype, device=hidden.device)
        if m.dtype == torch.bool:  # True = may attend
            m = m & ~keys[..., : m.shape[-1]]
        else:
            m = m.masked_fill(keys[..., : m.shape[-1]], float("-inf"))
        kwargs["mask"] = m
        return args, kwargs
    return hook


def _head_cut(heads: torch.Tensor, cut: torch.Tensor, n_heads: int, device) -> torch.Tensor:
    """`[rows, head, Q, K]` bool: `cut[r]` in head `heads[r]` of row r (no head where -1)."""
    rows = torch.nonzero(heads >= 0).flatten()
    sel = torch.zeros(len(heads), n_heads, *cut.shape[1:], dtype=torch.bool)
    sel[rows, heads[rows]] = cut[rows]
    return sel.to(device)


def _head_knock(heads: torch.Tensor, cut: torch.Tensor):
    """A pattern hook: in row r of `pattern: [rows, head, Q, K]`, head `heads[r]` (-1: none),
    zero the entries in `cut: [rows, Q, K]` and renormalise the rows that lost any; every
    other entry is returned as it was (bit for bit)."""
    def hook(pattern, hook):
        return cut_renormalised(pattern, _head_cut(heads, cut, pattern.shape[1], pattern.device),
                                hook.name)
    return hook


def cut_renormalised(pattern: torch.Tensor, sel: torch.Tensor, name: str) -> torch.Tensor:
    """`pattern` with the entries `sel` (both `[rows, head, Q, K]`) zeroed and the rows that
    lost any renormalised (others bit for bit); a row left with nothing to read is an error."""
    touched = sel.any(-1, keepdim=True)
    out = pattern.masked_fill(sel, 0)
    total = out.sum(-1, keepdim=True)
    if bool((touched & (total <= 0)).any()):
        b, h, q, _ = torch.nonzero(touched & (total <= 0))[0].tolist()
        raise InterpError(f"route knockout removes every key that position {q} may attend "
                          f"to (row {b} of the batch, head {h}, {name}); cut fewer keys")
    return torch.where(touched, out / torch.where(total > 0, total, torch.ones_like(total)),
                       pattern)


def _t5_head_knock(heads: torch.Tensor, cut: torch.Tensor):
    """A forward pre-hook for HF's T5Attention: the scores of the entries in `cut: [rows, Q,
    K]` get -inf in head `heads[r]` of row r only (softmax over the remaining keys, the same
    renormalised weights as `_head_knock`; see `_t5_knock` for why T5 needs scores)."""
    def hook(module, args, kwargs):
        hidden = args[0] if args else kwargs["hidden_states"]
        q, k = cut.shape[1:]
        sel = _head_cut(heads, cut, module.n_heads, hidden.device)
        m = kwargs.get("mask")
        if m is None:
            m = torch.zeros((1, 1, q, k), dtype=hidden.dtype, device=hidden.device)
            if getattr(module, "is_causal", False):  # None stood for "causal" in sdpa
                m = m.masked_fill(torch.ones(q, k, dtype=torch.bool,
                                             device=hidden.device).triu(1), float("-inf"))
        m = m[..., :k].expand(sel.shape)
        kwargs["mask"] = m & ~sel if m.dtype == torch.bool else m.masked_fill(sel, float("-inf"))
        return args, kwargs
    return hook


def head_hooks(bridge, arch: str, cuts: dict[tuple[str, int], tuple[torch.Tensor, torch.Tensor]]
               ) -> tuple[list, list]:
    """Route knockout hooks of one batch for `interp.hooks.run`: (hook name, fn) pairs
    (decoder) or (T5 attention module, pre-hook) pairs.

    Parameters
    ----------
    cuts : (kind, layer) -> (heads `[rows]`, the head each row knocks out there or -1;
        cut `[rows, Q, K]` bool, the (query, key) entries to cut, Q and K the batch's widths)
    """
    tl, pre = [], []
    for (kind, layer), (heads, cut) in cuts.items():
        if not bool(cut[heads >= 0].any()):
            continue                            # nothing to cut: no hook, the clean pass
        if arch == "decoder":
            tl.append((hook_name(bridge, kind, layer, "hook_pattern"), _head_knock(heads, cut)))
        else:
            pre.append((_attention(bridge, kind, layer), _t5_head_knock(heads, cut)))
    return tl, pre


def _check_alive(mask: torch.Tensor, valid: torch.Tensor, what: str) -> None:
    """Every query must keep at least one key it may read (no all-masked softmax row)."""
    left = (valid[:, : mask.shape[1]] & ~mask).sum(1)
    if bool((left == 0).any()):
        b = int(torch.nonzero(left == 0)[0])
        raise InterpError(f"knockout removes every key of example {b} of the batch in {what}; "
                          "leave at least one readable position, e.g. ablate fewer tokens")


def _attention(bridge, kind: str, layer: int) -> torch.nn.Module:
    """The HF attention module that TransformerLens wraps for `kind` at `layer`."""
    name = hook_name(bridge, kind, layer, "hook_pattern").rsplit(".", 1)[0]
    return module_at(bridge, name).original_component


def build_hooks(bridge, arch: str, mode: str, layers: Sequence[int],
                masks: dict[str, torch.Tensor], values: dict[str, torch.Tensor] | None = None,
                valid: dict[str, torch.Tensor] | None = None) -> tuple[list, list]:
    """The interventions of one batch: TransformerLens (hook name, fn) pairs and, for T5
    knockout, (torch module, forward pre-hook) pairs, for `interp.hooks.run`.

    Parameters
    ----------
    masks : side -> `[batch, W]` positions to ablate
    values : side -> `[layer, batch, W, d_model]` the replacement residuals for `mean` and
        `resample`, indexed by position in `layers`
    valid : side -> `[batch, W]` real tokens (to catch a knockout that leaves a query nothing)
    """
    check_mode(mode)
    tl, pre_hooks = [], []
    if mode == "knockout" and arch == "t5" and valid is not None and bool(masks["src"].any()):
        _check_alive(masks["src"], valid["src"], "the input")
    for j, l in enumerate(layers):
        if mode == "knockout":
            if arch == "decoder":
                tl.append((hook_name(bridge, "self", l, "hook_pattern"), _knock(masks["seq"])))
                continue
            if bool(masks["src"].any()):
                hook = _t5_knock(masks["src"])
                pre_hooks.append((_attention(bridge, "encoder", l), hook))
                pre_hooks.append((_attention(bridge, "cross", l), hook))
            if bool(masks["tgt"].any()):
                pre_hooks.append((_attention(bridge, "decoder_self", l), _t5_knock(masks["tgt"])))
            continue
        for side, m in masks.items():
            if not bool(m.any()):
                continue
            v = None if mode == "zero" else values[side][j]
            tl.append((hook_name(bridge, SIDE_KIND[side], l, "hook_resid_pre"), _replace(m, v)))
    return tl, pre_hooks


def forward(bridge, arch: str, ids: dict[str, torch.Tensor], valid: dict[str, torch.Tensor],
            hooks=((), ())) -> torch.Tensor:
    """Logits on the output side, `[batch, pos, vocab]` float32 on the CPU, of one forward
    pass with `hooks` (as `build_hooks` returns them) attached; `ids`, `valid`: side ->
    `[batch, W]`."""
    tl, pre_hooks = hooks
    if arch == "decoder":
        out = run(bridge, ids["seq"], hooks=tl, pre_hooks=pre_hooks,
                  attention_mask=valid["seq"].long())
    else:
        out = run(bridge, ids["src"], hooks=tl, pre_hooks=pre_hooks,
                  attention_mask=valid["src"].long(), decoder_input=ids["tgt"])
    return out.float().cpu()


def batches(prep: Prepared, batch_size: int, masks=None, values=None):
    """Batches of examples of similar length: (index `[batch]`, widths side -> W, ids,
    valid, masks, values), each cut to its batch and width."""
    for index in length_batches(prep.sides[prep.main_side].lengths, batch_size):
        widths = {k: int(s.lengths[index].max()) for k, s in prep.sides.items()}
        ids = {k: s.ids[index, :widths[k]] for k, s in prep.sides.items()}
        valid = {k: s.valid[index, :widths[k]] for k, s in prep.sides.items()}
        m = {k: v[index, :widths[k]] for k, v in (masks or {}).items()}
        vals = None if values is None else {k: v[:, index, :widths[k]]
                                            for k, v in values.items()}
        yield index, widths, ids, valid, m, vals


@dataclass
class Run:
    """Per-example teacher-forced results of one condition (`[N]` each).

    fields: `[N, n_fields]` 1.0 if every answer token of that field is right, NaN where the
    example has no such field; field_loss: `[N, n_fields]` the mean answer loss over that
    field's tokens (NaN likewise). first_wrong: index of the first wrong answer position (-1 if
    none) and first_pred its argmax token."""

    loss: torch.Tensor
    exact: torch.Tensor
    token_acc: torch.Tensor
    fields: torch.Tensor
    first_wrong: torch.Tensor
    first_pred: torch.Tensor
    field_loss: torch.Tensor | None = None

    def metrics(self, field_names: Sequence[str], field_loss: bool = False
                ) -> dict[str, torch.Tensor]:
        """metric name -> `[N]` float values (`field:<name>` per solution field; with
        `field_loss` also `loss:<name>`, the mean answer loss over that field's tokens)."""
        out = {"answer_loss": self.loss, "exact_match": self.exact.float(),
               "token_accuracy": self.token_acc}
        for j, f in enumerate(field_names):
            out[f"field:{f}"] = self.fields[:, j]
        if field_loss and self.field_loss is not None:
            for j, f in enumerate(field_names):
                out[f"loss:{f}"] = self.field_loss[:, j]
        return out


def run_condition(bridge, prep: Prepared, mode: str = "knockout", layers: Sequence[int] = (),
                  masks: dict[str, torch.Tensor] | None = None,
                  values: dict[str, torch.Tensor] | None = None, batch_size: int = 128) -> Run:
    """Teacher-forced run of every example with the positions in `masks` (side -> `[N, W]`)
    ablated at `layers` (no masks or no layers: the clean run)."""
    acc = Scores(prep)
    masks = masks or {k: torch.zeros_like(v) for k, v in prep.input_region.items()}
    for index, widths, ids, valid, m, vals in batches(prep, batch_size, masks, values):
        hooks = build_hooks(bridge, prep.arch, mode, layers, m, vals, valid) \
            if layers else ((), ())
        acc.add(index, forward(bridge, prep.arch, ids, valid, hooks))
    return acc.run()


class Scores:
    """Teacher-forced metrics of `prep`'s examples, filled batch by batch (`add`), read as a
    `Run` (`run`): the one scoring of every ablation's logits."""

    def __init__(self, prep: Prepared):
        n, nf = prep.n, len(prep.field_names)
        self.prep = prep
        self.loss, self.tacc = torch.zeros(n), torch.zeros(n)
        self.exact = torch.zeros(n, dtype=torch.bool)
        self.fields = torch.full((n, nf), float("nan"))
        self.field_loss = torch.full((n, nf), float("nan"))
        self.first = torch.full((n,), -1, dtype=torch.long)
        self.pred_at = torch.full((n,), -1, dtype=torch.long)

    def add(self, index: torch.Tensor, logits: torch.Tensor) -> None:
        """Score `logits: [batch, W, vocab]` of the examples `index: [batch]`."""
        prep = self.prep
        w = logits.shape[1]
        lab = prep.labels[index, :w]
        fld = prep.fields[index, :w]
        keep = lab != IGNORE
        ce = torch.nn.functional.cross_entropy(logits.transpose(1, 2), lab.clamp_min(0),
                                               reduction="none")
        pred = logits.argmax(-1)
        right = (pred == lab) & keep
        wrong = keep & ~right
        self.loss[index] = (ce * keep).sum(1) / keep.sum(1)
        self.tacc[index] = right.sum(1).float() / keep.sum(1)
        self.exact[index] = ~wrong.any(1)
        has_wrong = wrong.any(1)
        fw = torch.where(has_wrong, wrong.float().argmax(1), torch.full_like(index, -1))
        self.first[index] = fw
        self.pred_at[index] = torch.where(
            has_wrong, pred.gather(1, fw.clamp_min(0)[:, None])[:, 0], torch.full_like(index, -1))
        nan = torch.full((len(index),), float("nan"))
        for j in range(self.fields.shape[1]):
            fm = fld == j
            has = fm.any(1)
            val = (~(fm & wrong).any(1)).float()
            self.fields[index, j] = torch.where(has, val, nan)
            self.field_loss[index, j] = torch.where(
                has, (ce * fm).sum(1) / fm.sum(1).clamp_min(1), nan)

    def run(self) -> Run:
        return Run(self.loss, self.exact, self.tacc, self.fields, self.first, self.pred_at,
                   self.field_loss)


def clean_residuals(bridge, prep: Prepared, layers: Sequence[int], batch_size: int = 128
                    ) -> dict[str, torch.Tensor]:
    """side -> `[len(layers), N, W, d_model]` float32 on the CPU: the clean residual stream
    entering each layer (`hook_resid_pre`; the pass stops after the last one)."""
    out: dict[str, torch.Tensor] = {}
    names = {(s, j): hook_name(bridge, SIDE_KIND[s], l, "hook_resid_pre")
             for s in prep.sides for j, l in enumerate(layers)}
    for index, _, ids, valid, _, _ in batches(prep, batch_size):
        kw = {"attention_mask": valid[prep.main_side].long()}
        if prep.arch == "t5":
            kw["decoder_input"] = ids["tgt"]
        store = capture(bridge, ids[prep.main_side], names=names.values(), **kw)
        for s, side in prep.sides.items():
            for j in range(len(layers)):
                r = store[names[(s, j)]].float().cpu()
                if s not in out:
                    out[s] = torch.zeros(len(layers), prep.n, side.ids.shape[1], r.shape[-1])
                out[s][j, index, : r.shape[1]] = r
    return out


def replacement_values(prep: Prepared, resid: dict[str, torch.Tensor], mode: str,
                       seed: int = 0, donors: str = "any"
                       ) -> tuple[dict[str, torch.Tensor] | None, dict]:
    """side -> `[layer, N, W, d]` what `mean` or `resample` writes at each position, and
    side -> {key: `[layer, d]`} the per-key means (also used for generated tokens).
    `donors`: `positions.donor_indices`' rule ("layout" needs every example to have one)."""
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
    donor = donor_indices(prep, seed, donors) if mode == "resample" else None
    if donor is not None and bool((donor < 0).any()):
        raise InterpError(f"{int((donor < 0).sum())} examples have no same-layout donor; "
                          "leave them out first (ablate_tokens does) or use donors='any'")
    values = {}
    for s, R in resid.items():
        V = torch.zeros_like(R)
        for i in range(prep.n):
            if donor is None:
                for p, key in enumerate(prep.keys[s][i]):
                    if key is not None:
                        V[:, i, p] = means[s][key]
                continue
            d = int(donor[i])
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
