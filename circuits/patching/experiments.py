"""The experiments: exact activation patching (`patch`) and attribution patching
(`attribute`) of every cell of one site, and their result (`PatchResult`).

How `patch` is fast: the patches of one layer run together as one batch (each copy of the
dataset carries one patch), each patched run of a decoder starts at the patched layer from
the cached residual stream (`start_at_layer`) instead of recomputing the layers below, a
patch that writes what is already there is not run (its effect is exactly zero), and on an
HF GPT-2 or a causal native decoder the position-wise sites run only the positions and
layers a patch can change (`circuits.patching.fast`, `circuits.patching.fast_native`). On an
HF T5 every site but the patterns runs from the patched layer on, decoder-side patches only
from the patched position on with the encoder's output reused (`circuits.patching.fast_t5`);
T5 patterns and bidirectional native models (tracr) are batched over full forwards.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch

import interp.distributed as dist
from circuits.patching.fast import fast_patch
from circuits.patching.fast_native import native_patch
from circuits.patching.fast_t5 import fast_patch_t5
from circuits.patching.fast_t5 import units as t5_units
from circuits.patching.pairs import Pairs, metric_values
from circuits.patching.sites import (
    Site,
    cell_slice,
    cells,
    forward,
    forward_keep,
    grad_keeper,
    setter,
    site,
    t5_attention,
    t5_pattern_hook,
)
from interp.errors import InterpError
from interp.hooks import layer_hooks, run
from interp.models.native import is_native

DIRECTIONS = ("denoise", "noise")


@dataclass
class PatchResult:
    """The result of patching (or attributing) every cell of one site.

    Attributes
    ----------
    site : str
    axes : tuple of str
        The axes of a cell, e.g. ("layer", "head", "pos").
    values : Tensor
        Mean metric over the pairs for each cell, shaped by `axes` ([layer, head, pos] ...),
        float32 on the CPU.
    per_example : Tensor
        The same with a last axis over the pairs, [*axes, batch].
    clean, corrupt : float
        The unpatched metric (mean over the pairs) of each input.
    metric : str
    direction : str
        "denoise" (clean activations into the corrupted run) or "noise" (the reverse).
    labels : dict of str to list of str
        axis -> the names of its cells (positions as "role token" strings).
    method : str
        "exact" (`patch`), "attribution" (`attribute`, plain AtP), or the AtP* variants
        of `attribute`: "atp+qk", "atp+qkv", "atp+graddrop", "atp*", "atp*+qkv".
    """

    site: str
    axes: tuple[str, ...]
    values: torch.Tensor
    per_example: torch.Tensor
    clean: float
    corrupt: float
    metric: str
    direction: str
    labels: dict[str, list[str]]
    method: str = "exact"

    def normalised(self) -> torch.Tensor:
        """Share of the clean-corrupt gap the patch restores (denoise) or removes (noise),
        shaped like `values` (NaN where the gap is 0)."""
        gap = self.clean - self.corrupt
        if gap == 0:
            return torch.full_like(self.values, float("nan"))
        if self.direction == "denoise":
            return (self.values - self.corrupt) / gap
        return (self.clean - self.values) / gap

    def frame(self):
        """A tidy pandas DataFrame, one row per cell: the axes (`layer`, `head`, `pos` as
        integers), `role` (the position's label, position-wise sites only), `value` (the
        mean metric) and `normalised` (its share of the gap)."""
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

    def figure(self, title: str | None = None):
        """The normalised values as a plotly heatmap (`interp.viz.figures.patch_heatmap`):
        [layer, pos] and [layer, head] directly, [layer, head, pos] one row per head."""
        from interp.viz.figures import patch_heatmap

        return patch_heatmap(self.normalised(), self.axes, self.labels,
                             title or f"{self.site}: {self.method} patching")


def _inputs(pairs: Pairs, direction: str) -> tuple[dict, dict]:
    """(receiving, source) inputs: denoising runs the corrupted input with clean patches."""
    if direction not in DIRECTIONS:
        raise InterpError(f"unknown direction {direction!r}; choose one of "
                          f"{', '.join(DIRECTIONS)}")
    return (pairs.corrupt, pairs.clean) if direction == "denoise" else \
        (pairs.clean, pairs.corrupt)


def _result(bridge, pairs: Pairs, s: Site, per: torch.Tensor, recv_m: torch.Tensor,
            src_m: torch.Tensor, metric: str, direction: str, method: str) -> PatchResult:
    """The PatchResult of `per` [*axes, batch], with the cells' labels; recv_m / src_m: the
    unpatched metric [batch] of the receiving and source runs."""
    width = pairs.clean[s.side].shape[1]
    labels = {"layer": [str(l) for l in range(per.shape[0])],
              "head": [str(h) for h in range(int(bridge.cfg.n_heads))],
              "pos": [f"{r} {t}" if r != t else r
                      for r, t in zip(pairs.roles[s.side], pairs.tokens[s.side])][:width]}
    clean_m, corrupt_m = (src_m, recv_m) if direction == "denoise" else (recv_m, src_m)
    return PatchResult(s.name, s.axes, per.mean(-1), per, float(clean_m.mean()),
                       float(corrupt_m.mean()), metric, direction,
                       {a: labels[a] for a in s.axes}, method)


@torch.no_grad()
def patch(bridge, pairs: Pairs, what: str = "resid_pre", direction: str = "denoise",
          metric: str = "logit_diff", max_rows: int = 64, fast: bool = True,
          progress=None) -> PatchResult:
    """Exact activation patching of every cell of site `what`.

    Parameters
    ----------
    bridge : TransformerBridge
        A decoder-only (HF or native) or T5 model, on any device and dtype.
    pairs : Pairs
        From `corrupt_pairs` for this model (`induction_pairs` for a native language model).
    what : str
        A site of `DECODER_SITES` or `T5_SITES`.
    direction : {"denoise", "noise"}
    metric : {"logit_diff", "logprob"}
    max_rows : int
        How many (patch, example) rows run in one forward pass of the batched path.
    fast : bool
        Position-wise sites of an HF GPT-2 or a causal native decoder run only the positions
        and layers a patch can change (`GPT2Tail`, `NativeTail`), and every T5 site but the
        patterns too (`T5Tail`); False uses the batched path for every site.
    progress : callable, optional
        Called with a short message as each layer starts.

    Returns
    -------
    PatchResult
        values [*axes] (e.g. [layer, head, pos] for `head_pos`), per_example [*axes, batch].
    """
    recv, src = _inputs(pairs, direction)
    s = site(bridge, what)
    names = s.names(bridge)
    L, H, B = len(names), int(bridge.cfg.n_heads), pairs.n
    width = pairs.clean[s.side].shape[1]
    starts = layer_hooks(bridge, "self", "hook_resid_pre") if pairs.arch == "decoder" else []
    src_logits, src_acts = forward_keep(bridge, src, names)
    recv_logits, recv_acts = forward_keep(bridge, recv, names + starts)
    base = metric_values(recv_logits, pairs, metric)                      # [batch]
    shape = {"layer": L, "head": H, "pos": width}
    per = base.repeat(*[shape[a] for a in s.axes], 1).clone()            # [*axes, batch]
    # a patch that writes what is already there changes nothing: not run, exactly base
    same = {cell: (cell_slice(s, src_acts[names[l]], cell) ==
                   cell_slice(s, recv_acts[names[l]], cell)).flatten(1).all(1).cpu()
            for l in range(L) for cell in cells(s, H, width, l)}
    todo = [c for c in same if not bool(same[c].all())]
    use_fast = fast and s.layout in ("pos", "z") and (pairs.arch == "t5" or (
        pairs.arch == "decoder" and "pos" in s.axes and pairs.answer_pos == width - 1)) and \
        getattr(bridge.cfg, "n_devices", 1) == 1       # split across devices: batched path
    if use_fast:
        # a unit: the cells one batch of GPT2Tail / NativeTail / T5Tail runs together
        if pairs.arch == "t5":
            run_fast, units_fast = fast_patch_t5, t5_units(s, todo)
        else:
            run_fast = native_patch if is_native(bridge) else fast_patch
            groups: dict = {}
            for cell in todo:
                groups.setdefault((cell[0], cell[-1]), []).append(cell)
            units_fast = [groups[k] for k in sorted(groups)]
        # early layers cost most: the units are dealt out in turn (gathered by cell below)
        done = dist.shard(units_fast, f"{what} batches", interleave=True)
        try:
            run_fast(bridge, pairs, s, recv, src, recv_acts, src_acts, metric,
                     [c for g in done for c in g], per, progress)
        except NotImplementedError:  # not an HF GPT-2 / T5 / causal native layout: batched
            use_fast = False
    chunk = max(1, max_rows // B)
    units = [] if use_fast else [
        part for l in range(L) for layer_cells in [[c for c in todo if c[0] == l]]
        for part in (layer_cells[k:k + chunk] for k in range(0, len(layer_cells), chunk))]
    shown = None
    if not use_fast:
        done = dist.shard(units, f"{what} batches")
    for part in [] if use_fast else done:   # a unit: one batched forward pass of patches
        l = part[0][0]
        if progress and l != shown:
            progress(f"{what} layer {l}: {sum(len(u) for u in units if u[0][0] == l)} patches")
            shown = l
        repeated = {side: ids.repeat(len(part), 1) for side, ids in recv.items()}
        if s.layout == "t5_pattern":
            hook = t5_pattern_hook(part, src_acts[names[l]], B)
            logits = forward(bridge, repeated, module_hooks=[(t5_attention(bridge, s, l),
                                                              hook)])
        else:
            hooks = [(names[l], setter(s, part, src_acts[names[l]], B))]
            logits = run(bridge, recv_acts[starts[l]].repeat(len(part), 1, 1),
                         hooks=hooks, start_at_layer=l) if pairs.arch == "decoder" else \
                forward(bridge, repeated, hooks)
        vals = metric_values(logits, pairs, metric, len(part)).view(len(part), B)
        for cell, v in zip(part, vals):
            per[cell] = v
    dist.gather_into(per, [c for u in done for c in u])   # launched: every process's cells
    for cell in todo:
        per[cell] = torch.where(same[cell], base, per[cell])
    return _result(bridge, pairs, s, per, base, metric_values(src_logits, pairs, metric),
                   metric, direction, "exact")


def attribute(bridge, pairs: Pairs, what: str = "head_pos", direction: str = "denoise",
              metric: str = "logit_diff", method: str = "atp", qk_fix: bool | None = None,
              graddrop: bool | None = None) -> PatchResult:
    """Attribution patching: the first-order estimate (source - receiving activation) x
    d metric / d activation of every cell at once, from a forward pass of each input and one
    backward pass of the receiving one (Nanda 2023; Syed et al. 2023); with method="atp*"
    AtP* (Kramár et al. 2024, `circuits.patching.atp`): the attention softmax of the later
    layers recomputed for the keys and queries a cell moves (the QK fix) and GradDrop.

    Parameters are those of `patch`, and
    method : {"atp", "atp+qk", "atp+qkv", "atp+graddrop", "atp*"}
        Plain AtP (any decoder or T5); on an HF GPT-2 decoder also the paper's QK fix alone
        (values held), the fix with the values recomputed too ("qkv"), GradDrop alone, or
        AtP* (the QK fix and GradDrop).
    qk_fix : bool or "qkv", optional
    graddrop : bool, optional
        Override the method's halves (e.g. method="atp*", qk_fix="qkv").
    Attention patterns are not covered.

    Returns
    -------
    PatchResult
        The same cells and layout as `patch`; values are estimated metric values (the
        receiving run's metric plus the estimate), float32 on the CPU.
    """
    from circuits.patching.atp import METHODS, attribute_star

    if method not in METHODS:
        raise InterpError(f"unknown attribution method {method!r}; choose one of "
                          f"{', '.join(METHODS)}")
    qk_fix = METHODS[method][0] if qk_fix is None else qk_fix
    graddrop = METHODS[method][1] if graddrop is None else graddrop
    recv, src = _inputs(pairs, direction)
    s = site(bridge, what)
    if "pattern" in s.layout:
        raise InterpError("attribution patching covers residual, output and head sites, not "
                          "attention patterns")
    names = s.names(bridge)
    src_logits, src_acts = forward_keep(bridge, src, names)
    src_m = metric_values(src_logits, pairs, metric)
    if qk_fix or graddrop:
        if pairs.arch != "decoder":
            raise InterpError("AtP*'s QK fix and GradDrop need an HF GPT-2 decoder; on this "
                              "model use method='atp' (--attribution atp)")
        delta, vals = attribute_star(bridge, pairs, s, recv, src_acts, metric, qk_fix,
                                     graddrop)
        name = ("atp*" if graddrop else "atp") if qk_fix else "atp+graddrop"
        name += {True: "" if graddrop else "+qk", "qkv": "+qkv", False: ""}[qk_fix]
        return _result(bridge, pairs, s, delta + vals[(None,) * len(s.axes)], vals, src_m,
                       metric, direction, name)
    acts = {}
    keeper = grad_keeper(acts)
    try:
        with torch.enable_grad():
            logits = forward(bridge, recv, [(n, keeper(n)) for n in names], grad=True)
            vals = metric_values(logits, pairs, metric)                   # [batch]
            vals.sum().backward()
    finally:
        bridge.zero_grad(set_to_none=True)
    per = []
    for n in names:
        a, g = acts[n].detach(), acts[n].grad
        if g is None:  # the metric does not depend on this activation
            g = torch.zeros_like(a)
        d = ((src_acts[n] - a) * g).to("cpu", torch.float32)              # [b, pos, ...]
        if s.layout == "pos":
            per.append(d.sum(-1).T)               # [pos, b]
        elif s.axes == ("layer", "head"):
            per.append(d.sum((1, 3)).T)           # [head, b]
        else:
            per.append(d.sum(-1).permute(2, 1, 0))  # [head, pos, b]
    vals = vals.detach()
    est = torch.stack(per) + vals[(None,) * len(s.axes)]
    return _result(bridge, pairs, s, est, vals, src_m, metric, direction, "attribution")
