"""The exact fast path of position-wise patching on a causal native decoder
(`interp.models.native`: TransformerLens's NativeModel, plain, smeared-key or conv).

A patch at position p changes nothing before p (causal attention), and only the logits at
the answer position (the last) are needed. So after the patch each layer computes positions
p.. only, with the receiving run's keys and values for the positions before p, and the last
layer computes only the answer position's query (and MLP). The layers below the patched one
are not run at all.

Key mixing: smeared keys (k'_j = s k_j + (1 - s) k_{j-1}) read the raw key of position p - 1,
which a patch at p leaves as it was: it is taken from the receiving run, and the smeared key
of p (and every later one) is recomputed from the patched keys. The conv model mixes token
embeddings, below every patchable site (the first is layer 0's `resid_pre`), so it changes
nothing here.

The same module weights and the same operations as NativeAttention / NativeBlock, so the
results equal the batched path's (the tests compare both with a plain TransformerLens run
per patch). Not handled (NotImplementedError, and `patch` takes the batched path):
bidirectional attention (tracr models: a patch at p changes every position), rotary
positions, grouped keys, soft caps, gated or SoLU MLPs, and any model that is not native.
"""

from __future__ import annotations

import torch

from circuits.patching.pairs import Pairs, metric_values_last
from circuits.patching.sites import Site
from interp.hooks import capture, layer_hooks


def _orig(m):
    return getattr(m, "original_component", m)


class _Layer:
    """One native block's modules, unwrapped from the bridge (calls skip its hooks)."""

    def __init__(self, block):
        oc = _orig(block)
        attn = _orig(oc.attn)
        if not getattr(attn, "causal", False) or getattr(attn, "rotary", None) is not None \
                or getattr(attn, "kv_repeats", 1) != 1 \
                or float(getattr(attn, "attn_scores_soft_cap", 0.0) or 0.0) > 0:
            raise NotImplementedError   # bidirectional, rotary, GQA, soft cap: batched path
        self.ln1 = _orig(oc.ln1)
        self.q, self.v, self.o = _orig(attn.q), _orig(attn.v), _orig(attn.o)
        k = _orig(attn.k)
        self.alpha = getattr(k, "alpha", None)          # SmearedKey: one alpha per head
        self.k = _orig(k.lin) if self.alpha is not None else k
        self.scale = attn.scale
        mlp = getattr(oc, "mlp", None)
        if mlp is not None:
            mlp = _orig(mlp)
            if not hasattr(mlp, "fc_in") or getattr(mlp, "ln", None) is not None:
                raise NotImplementedError   # gated or SoLU-LN MLP: batched path
            self.ln2, self.fc_in, self.act, self.fc_out = \
                _orig(oc.ln2), _orig(mlp.fc_in), mlp.act, _orig(mlp.fc_out)
        self.has_mlp = mlp is not None

    def mlp(self, x):
        return self.fc_out(self.act(self.fc_in(self.ln2(x))))


class NativeTail:
    """The layers of a causal native model run on the positions a patch can change, with the
    receiving run's keys and values for the positions before it (module docstring)."""

    def __init__(self, bridge):
        from interp.models.native import is_native

        if not is_native(bridge):      # causal or not: read from each attention module
            raise NotImplementedError
        model = _orig(bridge)
        if float(getattr(getattr(model, "cfg", None), "output_logits_soft_cap", 0.0)
                 or 0.0) > 0:
            raise NotImplementedError
        self.layers = [_Layer(blk) for blk in bridge.blocks]
        self.ln_f, self.head = _orig(bridge.ln_final), _orig(bridge.unembed)
        self.H, self.dh = int(bridge.cfg.n_heads), int(bridge.cfg.d_head)
        self.cache: list[tuple] = []

    def _heads(self, x):
        n, t, _ = x.shape
        return x.view(n, t, self.H, self.dh).transpose(1, 2)

    def _keys(self, lay: _Layer, raw, prev):
        """Keys [n, head, t, d_head] from raw keys [n, t, H * d_head] of positions p..;
        prev: the raw key of position p - 1 [n, 1, H * d_head] (None when p = 0)."""
        if lay.alpha is None:
            return self._heads(raw)
        n, t, _ = raw.shape
        full = raw if prev is None else torch.cat([prev, raw], 1)
        k = full.view(n, full.shape[1], self.H, self.dh)
        w = torch.sigmoid(lay.alpha)[:, None]                      # [head, 1]
        smeared = w * k[:, 1:] + (1 - w) * k[:, :-1]
        if prev is None:
            smeared = torch.cat([k[:, :1], smeared], 1)
        return smeared.transpose(1, 2)

    def fill(self, pre: list[torch.Tensor]) -> None:
        """Cache the receiving run's raw keys, keys and values of every layer from its
        residual entering each layer, pre[l] [b, pos, d]."""
        self.cache = []
        for lay, r in zip(self.layers, pre):
            x = lay.ln1(r)
            raw = lay.k(x)
            self.cache.append((raw, self._keys(lay, raw, None), self._heads(lay.v(x))))

    def attn(self, j: int, r: torch.Tensor, p: int, last: bool) -> torch.Tensor:
        """Attention output of layer j for positions p.. (r [n, t - p, d], n a multiple of
        the batch); only the last position's query when `last`."""
        lay = self.layers[j]
        raw_c, k_c, v_c = self.cache[j]
        rep = r.shape[0] // k_c.shape[0]
        x = lay.ln1(r)
        q = self._heads(lay.q(x))
        prev = raw_c[:, p - 1:p].repeat(rep, 1, 1) if p > 0 else None
        k = torch.cat([k_c[:, :, :p].repeat(rep, 1, 1, 1), self._keys(lay, lay.k(x), prev)], 2)
        v = torch.cat([v_c[:, :, :p].repeat(rep, 1, 1, 1), self._heads(lay.v(x))], 2)
        if last:
            q = q[:, :, -1:]
        scores = torch.matmul(q, k.transpose(-2, -1)) / lay.scale
        n_q, n_k = q.shape[2], k.shape[2]
        qpos = torch.arange(n_k - n_q, n_k, device=scores.device)[:, None]
        future = torch.arange(n_k, device=scores.device)[None, :] > qpos
        pattern = torch.softmax(scores.masked_fill(future, float("-inf")), -1)
        z = torch.matmul(pattern, v).transpose(1, 2).contiguous()
        return lay.o(z.view(z.shape[0], n_q, -1))

    def logits_from(self, layer: int, r: torch.Tensor, p: int, mid: bool = False):
        """Logits at the last position after running layers `layer`.. on r [n, t - p, d]
        (positions p..). mid: r is already past `layer`'s attention, which is skipped."""
        n = len(self.layers)
        for j in range(layer, n):
            lay, last = self.layers[j], j == n - 1
            if not (mid and j == layer):
                a = self.attn(j, r, p, last)
                r = (r[:, -1:] if last else r) + a
            elif last:
                r = r[:, -1:]
            if lay.has_mlp:
                r = r + lay.mlp(r)
        return self.head(self.ln_f(r[:, -1]))


def native_patch(bridge, pairs: Pairs, s: Site, recv: dict, src: dict, rc: dict, sc: dict,
                 metric, todo, per, progress) -> None:
    """Exact position-wise patching of a causal native decoder via `NativeTail`: fills `per`
    [cells..., batch] for the cells in `todo` (the arguments of `fast.fast_patch`)."""
    tail = NativeTail(bridge)
    L, H, B = len(tail.layers), tail.H, pairs.n
    pre, attn_out, post, names = (layer_hooks(bridge, "self", h) for h in (
        "hook_resid_pre", "hook_attn_out", "hook_resid_post", s.hook))
    rc = {**rc, **capture(bridge, recv["seq"], names=pre + attn_out + post)}
    if s.name == "resid_pre":
        sc = {**sc, **capture(bridge, src["seq"], names=pre)}
    tail.fill([rc[n] for n in pre])
    by_lp: dict[tuple[int, int], list] = {}
    for cell in todo:
        by_lp.setdefault((cell[0], cell[-1]), []).append(cell)
    shown = None
    for (l, p), cells in sorted(by_lp.items()):
        if progress and l != shown:
            progress(f"{s.name} layer {l}")
            shown = l
        if s.name == "resid_pre":
            r = rc[pre[l]][:, p:].clone()
            r[:, 0] = sc[pre[l]][:, p]
            per[l, p] = metric_values_last(tail.logits_from(l, r, p), pairs, metric)
            continue
        mid = rc[pre[l]][:, p:] + rc[attn_out[l]][:, p:]   # past layer l's attention
        if s.name in ("attn_out", "mlp_out"):
            name = names[l]
            delta = sc[name][:, p] - rc[name][:, p]
            if s.name == "attn_out":
                r = mid.clone()
                r[:, 0] += delta
                out = tail.logits_from(l, r, p, mid=True)
            else:  # the MLP's output at p changes: the residual leaving layer l
                r = rc[post[l]][:, p:].clone()
                r[:, 0] += delta
                out = tail.logits_from(l + 1, r, p) if l + 1 < L else \
                    tail.head(tail.ln_f(r[:, -1]))
            per[l, p] = metric_values_last(out, pairs, metric)
            continue
        # one head's z at position p: its change enters through o's columns of that head
        heads = [c[1] for c in cells]
        dz = (sc[names[l]][:, p] - rc[names[l]][:, p])[:, heads]          # [b, h, d_head]
        w = tail.layers[l].o.weight.T.reshape(H, tail.dh, -1)[heads]       # Linear: x @ W.T
        delta = torch.einsum("bhd,hdm->hbm", dz, w)                        # [h, b, d]
        r = mid.repeat(len(heads), 1, 1)
        r[:, 0] += delta.reshape(len(heads) * B, -1)
        vals = metric_values_last(tail.logits_from(l, r, p, mid=True), pairs, metric,
                                  len(heads)).view(len(heads), B)
        for h, v in zip(heads, vals):
            per[l, h, p] = v
