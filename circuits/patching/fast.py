"""The exact fast path of position-wise patching on an HF GPT-2 decoder.

A patch at position p changes nothing before p (causal attention), and only the logits at
the answer position are needed, so after the patch each layer computes positions p.. only,
reusing the receiving run's keys and values for the positions before p, and the last layer
computes only the answer position's query and MLP. The same HF modules and weights as the
bridge's own forward: the results equal the batched path's (tests compare both with
TransformerLens).
"""

from __future__ import annotations

import torch

from circuits.patching.pairs import Pairs, metric_values_last
from circuits.patching.sites import Site
from interp.hooks import capture, layer_hooks


def _orig(m):
    return getattr(m, "original_component", m)


class GPT2Tail:
    """The layers of an HF GPT-2 (as wrapped by the bridge) run on the positions a patch can
    change, with the receiving run's keys and values reused for the positions before it (why
    this is exact: the module docstring)."""

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
        qpos = torch.arange(n_k - n_q, n_k, device=scores.device)[:, None]
        future = torch.arange(n_k, device=scores.device)[None, :] > qpos
        scores = scores.masked_fill(future, float("-inf"))
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


def fast_patch(bridge, pairs: Pairs, s: Site, recv: dict, src: dict, rc: dict, sc: dict,
               metric, todo, per, progress) -> None:
    """Exact position-wise patching of a GPT-2 decoder via `GPT2Tail`: fills `per`
    [cells..., batch] for the cells in `todo`. recv / src: the receiving and source inputs;
    rc / sc: their activations at the site's hooks (the residuals are captured here)."""
    tail = GPT2Tail(bridge)
    L, H, B = len(tail.blocks), tail.H, pairs.n
    pre, mid, post, names = (layer_hooks(bridge, "self", h) for h in (
        "hook_resid_pre", "hook_resid_mid", "hook_resid_post", s.hook))
    rc = {**rc, **capture(bridge, recv["seq"], names=pre + mid + post)}
    sc = {**sc, **capture(bridge, src["seq"], names=pre + mid + post)}
    kv = [tail.kv(l, rc[pre[l]]) for l in range(L)]
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
            per[l, p] = metric_values_last(tail.logits_from(l, r, p, kv), pairs, metric)
            continue
        if s.name == "mlp_out":
            name = names[l]
            r = rc[post[l]][:, p:].clone()
            r[:, 0] += sc[name][:, p] - rc[name][:, p]
            out = tail.logits_from(l + 1, r, p, kv) if l + 1 < L else tail.head(tail.ln_f(r[:, -1]))
            per[l, p] = metric_values_last(out, pairs, metric)
            continue
        r_mid = rc[mid[l]][:, p:]
        if s.name == "attn_out":
            name = names[l]
            r = r_mid.clone()
            r[:, 0] += sc[name][:, p] - rc[name][:, p]
            per[l, p] = metric_values_last(tail.logits_from(l, r, p, kv, after_attn=True),
                                           pairs, metric)
            continue
        # one head's z at position p: its change enters through c_proj's rows of that head
        heads = [c[1] for c in cells]
        c_proj = tail.blocks[l][2]
        zname = names[l]
        dz = (sc[zname][:, p] - rc[zname][:, p])[:, heads]               # [b, h, d_head]
        w = c_proj.weight.view(H, tail.dh, -1)[heads]                    # Conv1D: x @ W
        delta = torch.einsum("bhd,hdm->hbm", dz, w)                      # [h, b, d]
        r = r_mid.repeat(len(heads), 1, 1)
        r[:, 0] += delta.reshape(len(heads) * B, -1)
        vals = metric_values_last(tail.logits_from(l, r, p, kv, after_attn=True), pairs,
                                  metric, len(heads)).view(len(heads), B)
        for h, v in zip(heads, vals):
            per[l, h, p] = v
