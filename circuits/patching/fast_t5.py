"""The exact fast path of patching on an HF T5 (as wrapped by the bridge).

Decoder-side patches (`dec.*`, `cross.*`) leave the encoder as it is: its output, and so the
cross-attention keys and values of every decoder layer, are computed once from the receiving
run. The decoder is causal, so a patch at position p changes nothing before p: each layer
from the patched one on computes positions p.. only, with the receiving run's self-attention
keys and values for the positions before p, and the last layer computes only the answer
query. Head patches over every position start at p = 0.

Encoder patches (`enc.*`) skip the encoder layers below the patched one (they start from the
receiving run's residual there), recompute the layers above on every position (the encoder
is bidirectional), then run the decoder on its teacher-forced input, which ends at the answer
position: its first self-attention (which does not read the encoder) is taken from the
receiving run, the cross-attention keys and values are recomputed per patch, batched, and
the last layer computes only the answer query.

T5's relative position bias depends on the absolute query and key positions: it is computed
once for the whole sequence with layer 0's bias table (as HF does, and reused by every
layer) and sliced at the queries actually computed. The patched residual is written as HF
writes it (the residual before the sublayer plus the patched output; a head's output is
HF's output projection of the receiving z with that head's slice replaced), so the results
equal the batched path's within float rounding. Only the HF T5 modules and weights that the
bridge wraps are used; any other layout raises NotImplementedError (the batched path then
runs instead). Attention patterns are not covered (the batched path).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from circuits.patching.pairs import Pairs, metric_values_last
from circuits.patching.sites import Site
from interp.hooks import capture, layer_hooks

#: the layouts the T5 fast path writes
LAYOUTS = ("pos", "z")


def _orig(m):
    return getattr(m, "original_component", m)


def _clamp(r):
    """HF's float16 clamp after each sublayer (infinities to the largest finite value)."""
    if r.dtype != torch.float16:
        return r
    top = torch.finfo(r.dtype).max
    top = torch.where(torch.isinf(r).any(), top - 1000, top)
    return torch.clamp(r, min=-top, max=top)


@dataclass
class _Attn:
    q: torch.nn.Module
    k: torch.nn.Module
    v: torch.nn.Module
    o: torch.nn.Module


@dataclass
class _Layer:
    norms: list          # the layer norm before each sublayer (attention(s), then the MLP)
    attns: list          # _Attn of each attention (self; the decoder's cross second)
    ff: torch.nn.Module  # HF's DenseReluDense (plain or gated)


class T5Tail:
    """The layers of an HF T5 (as wrapped by the bridge), run from a patched layer on, on
    the positions a patch can change (why this is exact: the module docstring)."""

    def __init__(self, bridge):
        try:
            self.enc = [self._layer(b, ("attn",)) for b in bridge.encoder_blocks]
            self.dec = [self._layer(b, ("self_attn", "cross_attn")) for b in bridge.decoder_blocks]
            self.enc_ln = _orig(bridge.encoder_ln_final)
            self.dec_ln = _orig(bridge.decoder_ln_final)
            self.head = _orig(bridge.unembed)
            self.enc_rel = _orig(bridge.encoder_blocks[0].attn)
            self.dec_rel = _orig(bridge.decoder_blocks[0].self_attn)
            hf = bridge.original_model
            self.scale = bool(getattr(hf.config, "scale_decoder_outputs", False))
            self.d_model = int(hf.config.d_model)
        except AttributeError:
            raise NotImplementedError from None  # not an HF T5: the batched path instead
        if not all(hasattr(m, "relative_attention_bias") for m in (self.enc_rel, self.dec_rel)) \
                or getattr(hf.config, "_attn_implementation", "eager") not in ("eager", "sdpa"):
            raise NotImplementedError
        self.H = int(self.enc_rel.n_heads)
        self.dh = int(self.enc_rel.key_value_proj_dim)
        self._bias: dict = {}

    @staticmethod
    def _layer(block, attn_names) -> _Layer:
        oc = _orig(block)
        layers = getattr(oc, "layer", None)
        if layers is None or len(layers) != len(attn_names) + 1:
            raise NotImplementedError
        attns = []
        for name in attn_names:
            a = getattr(block, name)
            attns.append(_Attn(*(_orig(getattr(a, x)) for x in "qkvo")))
        norms = [_orig(l.layer_norm) for l in layers]
        ff = _orig(layers[-1].DenseReluDense)
        if not (hasattr(ff, "wo") and (hasattr(ff, "wi") or hasattr(ff, "wi_0"))):
            raise NotImplementedError
        return _Layer(norms, attns, ff)

    # -- pieces ---------------------------------------------------------------------------
    def bias(self, attn, n: int, causal: bool) -> torch.Tensor:
        """The relative position bias [1, head, n, n] of queries 0..n-1 against keys 0..n-1
        from `attn`'s bias table (HF's buckets); -inf on the keys after each query when
        `causal`."""
        key = (id(attn), n, causal)
        if key in self._bias:
            return self._bias[key]
        w = _orig(attn.relative_attention_bias).weight
        pos = torch.arange(n, device=w.device)
        rel = pos[None, :] - pos[:, None]                       # key - query
        buckets = attn._relative_position_bucket(
            rel, bidirectional=not causal, num_buckets=attn.relative_attention_num_buckets,
            max_distance=attn.relative_attention_max_distance)
        b = torch.nn.functional.embedding(buckets, w).permute(2, 0, 1)[None]
        if causal:
            b = b.masked_fill(rel > 0, float("-inf"))
        self._bias[key] = b
        return b

    def _heads(self, x):
        b, t, _ = x.shape
        return x.view(b, t, self.H, self.dh).transpose(1, 2)

    def _attend(self, q, k, v, bias):
        """HF's eager attention (no scaling: T5 folds it into the weights)."""
        s = q @ k.transpose(-1, -2)
        if bias is not None:
            s = s + bias
        z = torch.softmax(s, -1) @ v                            # [b, head, q, d_head]
        return z.transpose(1, 2).reshape(z.shape[0], z.shape[2], self.H * self.dh)

    def ff(self, layer: _Layer, r):
        """The MLP sublayer's output for the residual r (HF's DenseReluDense after its norm)."""
        x = layer.norms[-1](r)
        f = layer.ff
        if hasattr(f, "wi_0"):
            h = f.act(_orig(f.wi_0)(x)) * _orig(f.wi_1)(x)
        else:
            h = f.act(_orig(f.wi)(x))
        wo = _orig(f.wo)
        if h.dtype != wo.weight.dtype:
            h = h.to(wo.weight.dtype)
        return wo(h)

    def kv(self, attn: _Attn, x):
        """Keys and values [b, head, pos, d_head] of `attn` for its (normed) input x."""
        return self._heads(attn.k(x)), self._heads(attn.v(x))

    def project(self, attn: _Attn, z):
        """HF's output projection of z [..., head, d_head]."""
        return attn.o(z.flatten(-2))

    # -- the encoder ----------------------------------------------------------------------
    def encode(self, layer: int, stage: int, r):
        """The encoder's output (after its final norm) from the residual r [b, src, d] of
        encoder layer `layer` before its attention (stage 0) or before its MLP (stage 1)."""
        bias = self.bias(self.enc_rel, r.shape[1], causal=False)
        for j in range(layer, len(self.enc)):
            lay, first = self.enc[j], j == layer
            if stage == 0 or not first:
                a = lay.attns[0]
                x = lay.norms[0](r)
                k, v = self.kv(a, x)
                r = _clamp(r + a.o(self._attend(self._heads(a.q(x)), k, v, bias)))
            r = _clamp(r + self.ff(lay, r))
        return self.enc_ln(r)

    # -- the decoder ----------------------------------------------------------------------
    def decode(self, layer: int, stage: int, r, p: int, self_kv, cross_kv, n_tgt: int):
        """Logits [b, vocab] at the answer position (the last of n_tgt) from the residual
        r [b, n_tgt - p, d] of positions p.. of decoder layer `layer`: before its
        self-attention (stage 0), its cross-attention (1) or its MLP (2).

        self_kv[j]: the receiving run's self-attention keys and values of layer j
        [b0, head, n_tgt, d_head] (those before p are used); cross_kv(j): the cross-attention
        keys and values of layer j for these rows."""
        n = len(self.dec)
        bias = self.bias(self.dec_rel, n_tgt, causal=True)
        for j in range(layer, n):
            lay, first, last = self.dec[j], j == layer, j == n - 1
            if not first or stage == 0:
                a = lay.attns[0]
                x = lay.norms[0](r)
                k, v = self.kv(a, x)
                if p:
                    rep = r.shape[0] // self_kv[j][0].shape[0]
                    k0, v0 = (t[:, :, :p].repeat(rep, 1, 1, 1) for t in self_kv[j])
                    k, v = torch.cat([k0, k], 2), torch.cat([v0, v], 2)
                if last:
                    x, r = x[:, -1:], r[:, -1:]
                q = self._heads(a.q(x))
                qpos = n_tgt - q.shape[2]
                r = _clamp(r + a.o(self._attend(q, k, v, bias[:, :, qpos:])))
            elif last:
                r = r[:, -1:]
            if not first or stage <= 1:
                c = lay.attns[1]
                k, v = cross_kv(j)
                r = _clamp(r + c.o(self._attend(self._heads(c.q(lay.norms[1](r))), k, v, None)))
            r = _clamp(r + self.ff(lay, r))
        return self.logits(r[:, -1])

    def logits(self, r):
        """The unembedding of final residuals r [b, d]."""
        x = self.dec_ln(r)
        if self.scale:
            x = x * (self.d_model ** -0.5)
        return self.head(x)


def _entry(stack: str, part: str) -> tuple[str, str | None, int | None]:
    """Where a patch of `part` in `stack` enters: (the residual it writes into, the residual
    its sublayer reads, the stage of the layer the run starts at: 0 before the
    self-attention, 1 before the cross-attention (encoder: the MLP), 2 before the decoder's
    MLP, None at the next layer)."""
    if part == "resid_pre":
        return "pre", None, 0
    if part == "mlp_out":
        return "post", "mid" if stack == "enc" else "mid2", None
    if stack == "cross" or part == "cross_attn_out":
        return "mid2", "mid", 2
    return "mid", "pre", 1


def _attn_of(tail: T5Tail, stack: str, layer: int) -> _Attn:
    return (tail.enc if stack == "enc" else tail.dec)[layer].attns[int(stack == "cross")]


def units(s: Site, todo) -> list[list[tuple]]:
    """The cells the T5 fast path runs together, in order: those of one layer and one
    position (every head of a head x position site at once); a head site's cells of one
    layer (they all start at position 0)."""
    groups: dict = {}
    for cell in todo:
        groups.setdefault((cell[0], cell[-1] if "pos" in s.axes else 0), []).append(cell)
    return [groups[k] for k in sorted(groups)]


def fast_patch_t5(bridge, pairs: Pairs, s: Site, recv: dict, src: dict, rc: dict, sc: dict,
                  metric, todo, per, progress) -> None:
    """Exact patching of a T5 site via `T5Tail`: fills `per` [cells..., batch] for the
    cells in `todo`. recv / src: the receiving and source inputs; rc / sc: their
    activations at the site's hooks (the receiving residuals are captured here)."""
    if s.layout not in LAYOUTS:
        raise NotImplementedError
    tail = T5Tail(bridge)
    n_tgt, B = recv["tgt"].shape[1], pairs.n
    if pairs.answer_pos != n_tgt - 1:
        raise NotImplementedError
    stack, part = s.name.split(".", 1)
    names = s.names(bridge)
    kind = "encoder" if stack == "enc" else "decoder_self"
    hooks = {h: layer_hooks(bridge, kind, h) for h in
             ("hook_resid_pre", "hook_resid_mid", "hook_resid_post",
              *(("hook_cross_attn_out",) if stack != "enc" else ()))}
    want = [n for v in hooks.values() for n in v]
    enc_last = layer_hooks(bridge, "encoder", "hook_resid_post")[-1]
    dec_mid0 = layer_hooks(bridge, "decoder_self", "hook_resid_mid")[0]
    acts = capture(bridge, recv["src"], names=want + [enc_last, dec_mid0],
                   decoder_input=recv["tgt"])
    res = dict(zip(("pre", "mid", "post"), ([acts[n] for n in hooks[h]] for h in
                   ("hook_resid_pre", "hook_resid_mid", "hook_resid_post"))))
    if stack != "enc":
        # the decoder's residual before its MLP: exactly HF's sum
        res["mid2"] = [m + acts[c] for m, c in zip(res["mid"], hooks["hook_cross_attn_out"])]
        enc_out = tail.enc_ln(acts[enc_last])       # unchanged by a decoder-side patch
        self_kv = [tail.kv(lay.attns[0], lay.norms[0](res["pre"][j]))
                   for j, lay in enumerate(tail.dec)]
        cross = [tail.kv(lay.attns[1], enc_out) for lay in tail.dec]
        reps: dict = {}

        def cross_of(rows):
            if rows not in reps:
                reps.clear()
                reps[rows] = [tuple(t.repeat(rows // B, 1, 1, 1) for t in kv) for kv in cross]
            return lambda j: reps[rows][j]
    L = len(names)
    shown = None
    for cells in units(s, todo):
        l = cells[0][0]
        p = cells[0][-1] if "pos" in s.axes else 0
        if progress and l != shown:
            progress(f"{s.name} layer {l}")
            shown = l
        k = len(cells)
        base, before, stage = _entry(stack, part)
        lo = 0 if stack == "enc" else p                             # first position run
        r = res[base][l][:, lo:].repeat(k, 1, 1)
        at = slice(p - lo, p - lo + 1) if "pos" in s.axes else slice(None)
        src_at = slice(p, p + 1) if "pos" in s.axes else slice(None)
        if part == "resid_pre":
            r[:, at] = sc[names[l]][:, src_at].repeat(k, 1, 1)
        else:  # HF's sum: the residual before the sublayer plus the patched output
            if s.layout == "z":  # the receiving z with each cell's head from the source
                z = rc[names[l]][:, src_at].repeat(k, 1, 1, 1)
                for i, c in enumerate(cells):
                    z[i * B:(i + 1) * B, :, c[1]] = sc[names[l]][:, src_at, c[1]]
                out = tail.project(_attn_of(tail, stack, l), z)
            else:
                out = sc[names[l]][:, src_at].repeat(k, 1, 1)
            r[:, at] = res[before][l][:, src_at].repeat(k, 1, 1) + out
            r = _clamp(r)
        start = (l, stage) if stage is not None else (l + 1, 0)
        if stack == "enc" and stage == 1 and "pos" in s.axes:
            # the encoder's MLP is position-wise: in the patched layer only p changes
            m = r[:, at]
            r = res["post"][l].repeat(k, 1, 1)
            r[:, at] = _clamp(m + tail.ff(tail.enc[l], m))
            start = (l + 1, 0)
        if stack == "enc":
            enc_out = tail.enc_ln(r) if start[0] == len(tail.enc) else tail.encode(*start, r)
            ckv = [tail.kv(lay.attns[1], enc_out) for lay in tail.dec]
            r0 = acts[dec_mid0].repeat(k, 1, 1)
            out = tail.decode(0, 1, r0, 0, None, ckv.__getitem__, n_tgt)
        elif start[0] == L:
            out = tail.logits(r[:, -1])
        else:
            out = tail.decode(*start, r, p, self_kv, cross_of(r.shape[0]), n_tgt)
        vals = metric_values_last(out, pairs, metric, k).view(k, B)
        for cell, v in zip(cells, vals):
            per[cell] = v
