"""Free-running greedy decoding with an intervention active.

This is the package's second greedy decoder, and it must stay:
`interp.models.generate.greedy_decode` runs HF `generate` on the plain model, which cannot
carry the ablation's hooks (knockout patterns, replaced residuals, T5 pre-hooks) nor extend
them to the positions it generates. Here every step is one `interp.hooks.run` through the
bridge with the intervention rebuilt for the grown sequence.
"""

from __future__ import annotations

from typing import Sequence

import torch

from interp.errors import InterpError
from interp.hooks import KINDS
from interp.tasks.tokenizer import CharCodec
from interp.tokens import pad_rows

from .interventions import Run, build_hooks, forward, head_hooks
from .masscut import cut_hooks
from .positions import Prepared, occurrence_key

#: free-running decoding stops at <eos> or this many tokens past the solution's length
EXTRA_TOKENS = 16


def check_decodable(mode: str, scope: str) -> None:
    """Raise `InterpError` for `resample` with scope `all`: a generated target token has no
    donor to take its residual from."""
    if scope == "all" and mode == "resample":
        raise InterpError("free-running decoding with resample and scope 'all' is not defined "
                          "(a generated token has no donor); add --no-decode")


def decode_condition(bridge, prep: Prepared, run: Run, mode: str, layers: Sequence[int],
                     masks: dict[str, torch.Tensor] | None, values, means, target_ids,
                     scope: str, batch_size: int = 128, route=None) -> list[str]:
    """Greedy outputs of every example under the same intervention as `run`.

    Up to the first wrong answer token the greedy output is the solution itself (the model
    is causal), so decoding starts there, from the token `run` predicted; examples `run`
    found exact are not decoded again; decoding stops at <eos> or `EXTRA_TOKENS` past the
    solution's length. Target positions in generated text are found by token (scope `all`);
    `mean` writes the mean of the same token occurrence there (zero if the solutions never
    had that many).

    Parameters
    ----------
    masks : side -> `[N, W]` the teacher-forced target positions (None: the clean run)
    values : side -> `[layer, N, W, d_model]` replacement residuals (`mean`, `resample`)
    means : side -> {key: `[layer, d_model]`} per-key means, for generated positions
    route : (kind, layer, head, cut `[N, Wq, Wk]`, or `[N, H, Wq, Wk]` entries of any heads of
        the layer) a route knockout (`circuits.ablation.routes`)
        instead of `mode`/`masks`: a generated position keeps the cut row of the solution
        position it stands at (its teacher-forced role), positions past the solution cut nothing
    """
    if layers:
        check_decodable(mode, scope)
    codec = CharCodec()
    n_ctx = int(getattr(bridge.cfg, "n_ctx", 0) or 10_000) if prep.arch == "decoder" \
        else 10_000
    outs: list[str | None] = [None] * prep.n
    seqs: dict[int, list[int]] = {}
    for i, ex in enumerate(prep.examples):
        t = int(run.first_wrong[i])
        if t < 0:
            outs[i] = ex.tgt
            continue
        full = prep.sides[prep.out_side].ids[i].tolist()
        seqs[i] = full[: t + 1] + [int(run.first_pred[i])]
    start = {i: (len(prep.examples[i].src) + 2 if prep.arch == "decoder" else 1) for i in seqs}
    # an output already longer than the solution is wrong; a margin keeps later statements
    # readable by the checker without decoding runaway text to the end of the context
    limit = {i: min(n_ctx, start[i] + len(prep.examples[i].tgt) + EXTRA_TOKENS) for i in seqs}
    want = torch.tensor(list(target_ids))
    active = [i for i in seqs if seqs[i][-1] != codec.eos and len(seqs[i]) < limit[i]]
    while active:
        for k in range(0, len(active), batch_size):
            chunk = active[k:k + batch_size]
            _step(bridge, prep, chunk, seqs, start, mode, layers, masks, values, means, want,
                  scope, route)
        active = [i for i in active if seqs[i][-1] != codec.eos and len(seqs[i]) < limit[i]]
    for i, seq in seqs.items():
        outs[i] = codec.decode(seq[start[i]:])
    return outs  # type: ignore[return-value]


def _step(bridge, prep, chunk, seqs, start, mode, layers, masks, values, means, want, scope,
          route=None):
    """Append the next greedy token to each sequence of `chunk`, the intervention active."""
    idx = torch.tensor(chunk)
    out_side = prep.out_side
    lens = torch.tensor([len(seqs[i]) for i in chunk])
    cur = pad_rows([seqs[i] for i in chunk], CharCodec().pad)
    w = cur.shape[1]
    ids, valid = {out_side: cur}, {out_side: torch.arange(w)[None] < lens[:, None]}
    if prep.arch == "t5":
        ws = int(prep.sides["src"].lengths[idx].max())
        ids["src"] = prep.sides["src"].ids[idx, :ws]
        valid["src"] = prep.sides["src"].valid[idx, :ws]
    hooks = ((), ())
    if layers and masks is not None:
        m = {s: _step_mask(masks[s], idx, ids[s], valid[s], want, scope,
                           [start[i] for i in chunk] if s == out_side else None)
             for s in prep.sides}
        vals = None if values is None else {
            s: _step_values(values[s], means[s], m[s], idx, chunk, seqs, start,
                            scope == "all" and s == out_side) for s in prep.sides}
        hooks = build_hooks(bridge, prep.arch, mode, layers, m, vals, valid)
    if route is not None:
        kind, layer, head, cut = route
        wq, wk = (ids[s].shape[1] for s in (KINDS[kind].query_side, KINDS[kind].key_side))
        if cut.dim() == 4:          # entries of several heads (an equal-mass control)
            c = torch.zeros(len(chunk), cut.shape[1], wq, wk, dtype=torch.bool)
            part = cut[idx, :, :wq, :wk]
            c[:, :, : part.shape[2], : part.shape[3]] = part
            hooks = cut_hooks(bridge, prep.arch, {(kind, layer): c})
        else:
            c = torch.zeros(len(chunk), wq, wk, dtype=torch.bool)
            part = cut[idx, :wq, :wk]
            c[:, : part.shape[1], : part.shape[2]] = part
            hooks = head_hooks(bridge, prep.arch,
                               {(kind, layer): (torch.full((len(chunk),), head), c)})
    logits = forward(bridge, prep.arch, ids, valid, hooks)
    nxt = logits[torch.arange(len(chunk)), lens - 1].argmax(-1).tolist()
    for i, tok in zip(chunk, nxt):
        seqs[i].append(int(tok))


def _step_mask(mask, idx, ids, valid, want, scope, starts):
    """`[batch, width]`: prompt positions keep the teacher-forced mask; generated ones
    (from `starts` on, output side only) are targets by token under scope `all`."""
    width = ids.shape[1]
    base = mask[idx, :width] if mask.shape[1] >= width else torch.nn.functional.pad(
        mask[idx], (0, width - mask.shape[1]))
    first = [width] * len(idx) if starts is None else starts
    gen = torch.arange(width)[None] >= torch.tensor(first)[:, None]
    mk = torch.where(gen, torch.zeros_like(base), base)
    if scope == "all" and starts is not None:
        mk = mk | (gen & valid & torch.isin(ids, want))
    return mk


def _step_values(values, means, mask, idx, chunk, seqs, start, generated):
    """`[layer, batch, width, d]` replacement residuals of one step; with `generated`, the
    per-key mean of each generated target token (zero for an occurrence never seen)."""
    width = mask.shape[1]
    V = torch.zeros(values.shape[0], len(chunk), width, values.shape[-1])
    keep = min(width, values.shape[2])
    V[:, :, :keep] = values[:, idx, :keep]
    if generated:
        itos = CharCodec().itos
        for r, i in enumerate(chunk):
            seen: dict[str, int] = {}
            for p in range(start[i], len(seqs[i])):
                key = occurrence_key("out:" + itos[seqs[i][p]], seen)
                if bool(mask[r, p]):
                    V[:, r, p] = means.get(key, 0)
    return V


def decode_route(bridge, prep: Prepared, task, clean: Run, kind: str, layer: int, head: int,
                 conds: Sequence[tuple[Run, torch.Tensor]], batch_size: int = 128) -> dict:
    """Greedy decoding, clean and under each (teacher-forced run, cut `[N, Wq, Wk]`) route
    knockout of one head, judged by the task's checker per example.

    Returns
    -------
    dict
        "clean": {measure: `[N]`} with `decode:exact` (1.0 if the checker accepts the output)
        and `decode:<step>` (its verdict per step, NaN where the step does not apply);
        "conditions": one such dict per condition; "outputs": the clean and the first
        condition's outputs.
    """
    def verdicts(outs):
        checks = [task.check(e.src, o) for e, o in zip(prep.examples, outs)]
        out = {"decode:exact": torch.tensor([float(c.ok) for c in checks])}
        for s in sorted({s for c in checks for s in c.steps if s != "format"}):
            out[f"decode:{s}"] = torch.tensor([float("nan") if c.steps.get(s) is None
                                               else float(c.steps[s]) for c in checks])
        return out

    outs = decode_condition(bridge, prep, clean, "knockout", [], None, None, {}, [], "input",
                            batch_size)
    res = {"clean": verdicts(outs), "conditions": [], "outputs": {"clean": outs}}
    for j, (run, cut) in enumerate(conds):
        outs = decode_condition(bridge, prep, run, "knockout", [], None, None, {}, [], "input",
                                batch_size, (kind, layer, head, cut))
        v = verdicts(outs)
        res["conditions"].append({k: v.get(k, torch.full((prep.n,), float("nan")))
                                  for k in res["clean"]})
        if j == 0:
            res["outputs"]["target"] = outs
    return res
