"""AtP* (Kramár et al. 2024): attribution patching with the attention softmax recomputed for
the keys and queries a patch moves (the QK fix) and with GradDrop, on an HF GPT-2 decoder.

Plain attribution patching (AtP) estimates the effect of patching a cell as
(source - receiving activation) . d metric / d activation: every path from the cell to the
metric is linearised. Two failures follow (the paper's analysis):

* **Attention saturation.** A patch that moves a key or query of a later head can flip a
  saturated softmax (all weight on one key -> all on another); the gradient of a saturated
  softmax is ~0, so the linear estimate misses the effect. The QK fix: for every attention
  layer whose keys and queries read the residual stream the cell writes to, the change of
  that layer's pattern is computed EXACTLY (the patched residual through ln_1, the key and
  query weights, the scaled, causally masked softmax) and pushed through the rest of the
  model linearly, with the gradient of the metric with respect to the pattern
  (d metric / d A[t, s] = d metric / d z[t] . v[s]). Our sites are not keys or queries
  themselves: a cell writes a vector into the residual stream at its position (resid_pre:
  the patched difference itself, from its own layer on; attn_out, mlp_out: the output's
  difference, from the next layer on; head_pos / head: the head's z difference through its
  rows of W_O, at its position / every position, from the next layer on), and that vector
  reaches every later layer's ln_1 unchanged along the residual (skip) path. That direct
  path into each later layer's keys and queries is the part recomputed exactly: its linear
  term (d/d residual of sum(dmetric/dA * A), times the vector) is subtracted from AtP and the
  exact term added. Paths through intermediate layers stay linear, as in the paper.
* **Cancellation.** A cell whose direct and indirect effects cancel in the gradient gets a
  small AtP estimate although each path alone is large. GradDrop: the gradient is computed
  once per layer l with the gradient flow through layer l's residual contribution (its
  attention and MLP outputs together) dropped; the estimate is the mean over layers of the
  absolute per-layer estimates, over the L - 1 layers that leave the cell its own path (all
  L for resid_pre). The L + 1 gradients come from ONE forward and backward pass of L + 1
  copies of the batch (copy 0 undropped, copy l + 1 with layer l dropped).

GradDrop's estimate is a magnitude; to keep the signed scale of a `PatchResult` each example's
estimate takes the sign of its undropped (QK-fixed) estimate. The estimates are per example
and averaged over the pairs like exact patching's.

Cost: one forward of the source input, one forward and one backward of L + 1 copies of the
receiving input, and per reading layer the key/query/softmax part of one attention layer
for every cell with a nonzero patch (no MLP, no later layer).
"""

from __future__ import annotations

import torch

from circuits.patching.fast import GPT2Tail
from circuits.patching.pairs import Pairs, metric_values
from circuits.patching.sites import Site, forward, grad_keeper
from interp.errors import InterpError
from interp.hooks import layer_hooks

#: `attribute(method=...)` -> (qk_fix, graddrop): plain AtP; the paper's QK fix alone (values
#: held); the fix with the values recomputed too; GradDrop alone; AtP* (QK fix and GradDrop)
METHODS = {"atp": (False, False), "atp+qk": (True, False), "atp+qkv": ("qkv", False),
           "atp+graddrop": (False, True), "atp*": (True, True)}
#: rows of (cell, example) pushed through one reading layer's softmax at once
CHUNK_ROWS = 2048


def _tail(bridge) -> GPT2Tail:
    if getattr(bridge.cfg, "n_devices", 1) > 1:
        raise InterpError("AtP*'s QK fix and GradDrop run on a model on one device; this one "
                          "is split across devices (--device-map): use method='atp' "
                          "(--attribution atp)")
    try:
        return GPT2Tail(bridge)
    except NotImplementedError:
        raise InterpError("AtP*'s QK fix and GradDrop need an HF GPT-2 decoder; on this "
                          "model use method='atp' (--attribution atp)") from None


def qkv(tail: GPT2Tail, layer: int, x: torch.Tensor):
    """Queries, keys and values [n, head, pos, d_head] of `layer` for residual x [n, pos, d]
    (ln_1 and the joint q/k/v weights, as HF's GPT-2)."""
    ln1, c_attn = tail.blocks[layer][:2]
    return tail._split(c_attn(ln1(x)))


def read(tail: GPT2Tail, layer: int, q, k, v, rows=None) -> torch.Tensor:
    """z [n, head, query, d_head] of `layer`: the scaled, causally masked softmax of q.k
    times v (as HF's GPT-2); `rows`: the query positions q holds (default all)."""
    scores = q @ k.transpose(-1, -2)
    if tail.blocks[layer][-1]:
        scores = scores / (tail.dh ** 0.5)
    t = k.shape[-2]
    rows = torch.arange(t, device=q.device) if rows is None else rows.to(q.device)
    future = torch.arange(t, device=q.device)[None, :] > rows[:, None]
    return torch.softmax(scores.masked_fill(future, float("-inf")), -1) @ v


def pattern(tail: GPT2Tail, layer: int, x: torch.Tensor) -> torch.Tensor:
    """The attention pattern [n, head, query, key] of `layer` for residual x [n, pos, d]."""
    q, k, _ = qkv(tail, layer, x)
    eye = torch.eye(q.shape[-2], dtype=q.dtype, device=q.device).expand(*q.shape[:2], -1, -1)
    return read(tail, layer, q, k, eye)


def _writes(tail: GPT2Tail, s: Site, layer: int, delta: torch.Tensor):
    """What each cell of `s` at `layer` writes into the residual stream, from the site's
    patched difference `delta` (the site's layout): (cells, positions, writes). Position-wise
    cells write one vector each at its position: positions [cells], writes [cells, b, d];
    `head` cells write at every position: positions None, writes [cells, b, pos, d]."""
    t = delta.shape[1]
    if s.layout == "pos":
        return ([(layer, p) for p in range(t)], torch.arange(t, device=delta.device),
                delta.transpose(0, 1))
    c_proj = tail.blocks[layer][2]
    w = c_proj.weight.view(tail.H, tail.dh, -1)                     # Conv1D: x @ W
    per_head = torch.einsum("bphd,hdm->hbpm", delta, w)             # [head, b, pos, d]
    if s.axes == ("layer", "head"):
        return [(layer, h) for h in range(tail.H)], None, per_head
    return ([(layer, h, p) for h in range(tail.H) for p in range(t)],
            torch.arange(t, device=delta.device).repeat(tail.H),
            per_head.permute(0, 2, 1, 3).flatten(0, 1))


def qk_correction(tail: GPT2Tail, s: Site, layer: int, delta: torch.Tensor,
                  resid: list[torch.Tensor], grad_z: list[torch.Tensor],
                  lin_grad: list[torch.Tensor], with_values: bool = False
                  ) -> tuple[list, torch.Tensor]:
    """The QK fix of every cell of `s` at `layer`: (cells, [cells, copies, b]) = sum over the
    reading layers r of (exact - linearised) change of r's attention read (z) from the cell's
    residual write, times d metric / d z. The values stay the receiving run's unless
    `with_values` (then the write's change of the values is recomputed too, so the pattern x
    value cross term is exact). resid[r]: the receiving residual entering r [b, pos, d];
    grad_z[r]: d metric / d z [copies, b, head, q, d_head]; lin_grad[r]: d/d residual of
    sum(grad_z * z) [copies, b, pos, d]."""
    cells, pos, w = _writes(tail, s, layer, delta)
    first = layer if s.name == "resid_pre" else layer + 1
    copies, b = grad_z[0].shape[:2]
    out = w.new_zeros(len(cells), copies, b)
    idx = (w.flatten(1).abs().amax(1) > 0).nonzero().flatten()   # a zero write: no change
    step = max(1, CHUNK_ROWS // b)
    for r in range(first, len(tail.blocks)):
        # only the query rows the metric depends on (the last layer: the answer's alone)
        rows = (grad_z[r].abs().amax((0, 1, 2, 4)) > 0).nonzero().flatten()
        at = torch.full((grad_z[r].shape[3],), -1, dtype=torch.long, device=rows.device)
        at[rows] = torch.arange(len(rows), device=rows.device)   # position -> index in rows
        q0, k0, v0 = qkv(tail, r, resid[r])                              # [b, h, pos, dh]
        q0 = q0[:, :, rows]
        z0 = read(tail, r, q0, k0, v0, rows)                             # [b, h, rows, dh]
        gz = grad_z[r][:, :, :, rows]
        for i in range(0, len(idx) if len(rows) else 0, step):
            part = idx[i:i + step]
            c = len(part)
            if pos is None:
                x = (resid[r][None] + w[part]).flatten(0, 1)
                q, k, v = (y.unflatten(0, (c, b)) for y in qkv(tail, r, x))
                q = q[:, :, :, rows]
                lin = torch.einsum("cbtm,nbtm->cnb", w[part], lin_grad[r])
            else:
                ps = pos[part]
                x = resid[r][:, ps].transpose(0, 1) + w[part]               # [c, b, d]
                nq, nk, nv = [y.view(c, b, y.shape[1], y.shape[-1]) for y in  # [c, b, h, dh]
                              qkv(tail, r, x.reshape(c * b, 1, -1))]
                q, k, v = (y0.expand(c, *y0.shape).clone() for y0 in (q0, k0, v0))
                ci = torch.arange(c, device=part.device)
                k[ci, :, :, ps] = nk
                v[ci, :, :, ps] = nv
                read_by = at[ps] >= 0                  # the cell's own query row is read
                q[ci[read_by], :, :, at[ps[read_by]]] = nq[read_by]
                lin = torch.einsum("cbm,ncbm->cnb", w[part],
                                   lin_grad[r][:, :, ps].transpose(1, 2))
            if not with_values:
                v = v0.expand(c, *v0.shape)
            z = read(tail, r, q.flatten(0, 1), k.flatten(0, 1), v.flatten(0, 1), rows)
            exact = torch.einsum("cbhtd,nbhtd->cnb", z.view(c, *z0.shape) - z0, gz)
            out[part] += exact - lin
    return cells, out.float()


def _reduce(s: Site, d: torch.Tensor) -> torch.Tensor:
    """(source - receiving) x gradient [b, pos, ...] summed to the site's cells of one layer:
    [pos, b], [head, b] or [head, pos, b]."""
    if s.layout == "pos":
        return d.sum(-1).T
    if s.axes == ("layer", "head"):
        return d.sum((1, 3)).T
    return d.sum(-1).permute(2, 1, 0)


def attribute_star(bridge, pairs: Pairs, s: Site, recv: dict, src_acts: dict, metric: str,
                   qk_fix: bool = True, graddrop: bool = True
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """AtP with the QK fix and/or GradDrop of every cell of site `s` (a decoder site of an HF
    GPT-2): (estimated change of the metric [*axes, b], the receiving run's metric [b]),
    float32 on the CPU. `src_acts`: the source run's activations at the site's hooks."""
    tail = _tail(bridge)
    with_values = qk_fix == "qkv"
    names = s.names(bridge)
    L, B = len(names), pairs.n
    K = L + 1 if graddrop else 1
    pre, post, zs = (layer_hooks(bridge, "self", h) for h in
                     ("hook_resid_pre", "hook_resid_post", "hook_z"))
    acts, pres = {}, {}
    keeper = grad_keeper(acts)

    def keep_pre(l):
        def keep(t, hook):
            pres[l] = t
            return t
        return keep

    def drop(l):
        rows = torch.zeros(K * B, dtype=torch.bool)
        rows[(l + 1) * B:(l + 2) * B] = True

        def dropped(t, hook):
            kept = pres[l] + (t - pres[l]).detach()      # the skip path only
            return torch.where(rows.to(t.device)[:, None, None], kept, t)
        return dropped
    hooks = [(n, keeper(n)) for n in dict.fromkeys(names + (zs if qk_fix else []))]
    hooks += [(pre[l], keep_pre(l)) for l in range(L)]
    if graddrop:
        hooks += [(post[l], drop(l)) for l in range(L)]
    ids = {"seq": recv["seq"].repeat(K, 1)}
    try:
        with torch.enable_grad():
            logits = forward(bridge, ids, hooks, grad=True)
            vals = metric_values(logits, pairs, metric, K).view(K, B)
            vals.sum().backward()
    finally:
        bridge.zero_grad(set_to_none=True)
    per = []
    for n in names:
        a = acts[n].detach()
        g = acts[n].grad if acts[n].grad is not None else torch.zeros_like(a)
        a, g = a[:B], g.view(K, B, *a.shape[1:])
        per.append(torch.stack([_reduce(s, ((src_acts[n] - a) * g[k]).float())
                                for k in range(K)], -2))                 # [..., K, b]
    est = torch.stack(per).to("cpu", torch.float32)                      # [L, ..., K, b]
    if qk_fix:
        resid = [pres[r].detach()[:B] for r in range(L)]     # the same in every copy
        grad_z, lin_grad = [], []
        for r in range(L):
            z = acts[zs[r]]
            gz = (z.grad if z.grad is not None else torch.zeros_like(z)).detach()
            gz = gz.view(K, B, *z.shape[1:]).transpose(2, 3)              # [K, b, h, q, dh]
            x = resid[r].repeat(K, 1, 1).requires_grad_(True)
            with torch.enable_grad():
                q, k, v = qkv(tail, r, x)
                if not with_values:
                    v = v.detach()
                f = (read(tail, r, q, k, v).view(gz.shape) * gz).sum()
                (gx,) = torch.autograd.grad(f, x)
            grad_z.append(gz)
            lin_grad.append(gx.view(K, B, *gx.shape[1:]))
        bridge.zero_grad(set_to_none=True)
        with torch.no_grad():
            for l, n in enumerate(names):
                cells, corr = qk_correction(tail, s, l, src_acts[n] - acts[n].detach()[:B],
                                            resid, grad_z, lin_grad, with_values)
                for cell, c in zip(cells, corr.cpu()):
                    est[cell] += c
    if not graddrop:
        return est[..., 0, :], vals[0].detach().float().cpu()
    own = torch.ones(L, K, dtype=torch.bool)       # drop copies that keep the cell's path
    own[:, 0] = False
    if s.name != "resid_pre":
        own[torch.arange(L), torch.arange(L) + 1] = False    # its own layer's output dropped
    mask = own.view(L, *[1] * (est.dim() - 3), K, 1).float()
    n = mask.sum(-2)             # 0 only in a 1-layer model: no drop leaves the cell a path
    mag = torch.where(n > 0, (est.abs() * mask).sum(-2) / n.clamp(min=1), est[..., 0, :].abs())
    sign = torch.where(est[..., 0, :] < 0, -1.0, 1.0)
    return sign * mag, vals[0].detach().float().cpu()
