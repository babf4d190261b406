"""The model as a graph of senders and receivers, and one forward pass in which any set of
edges takes a reference value (the corrupted run's, or the mean).

Why a forward pass of its own: an edge intervention gives every receiver (each head's query,
key and value input, each MLP input, the logits) its own copy of the residual stream, in
which some senders' outputs are replaced. The model's own forward computes one residual per
layer and cannot express that. This pass computes the same function from the same weights
(the HF / TransformerLens modules' parameters; norms and MLPs are the modules themselves) and
is checked against the bridge's and HF's logits in the tests.

    gm = GraphModel(bridge)                 # decoder-only (GPT-2, native) or T5
    outs = gm.outputs(ids)                  # every sender's output, the clean run
    logits = gm.forward(ids, ref=outs_corrupt, keep=keep)   # edges with keep 0 take ref

Sizes: b pairs, K copies (K masks evaluated in one batched pass), S senders of a side, R
receivers of a step, p positions, d d_model.
The receiver input under a mask w (1 = kept) is
    x_r = resid + sum_s (1 - w[s, r, pos]) * (ref_s - out_s)
which is the clean residual where every edge is kept, and the sender's reference output
where an edge is cut. `delta` replaces (ref_s - out_s) by a fixed difference: attribution
(EAP, EAP-IG) differentiates the metric with respect to w at w = 1, which then gives
-(delta_s . grad x_r), the first-order effect of cutting the edge."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from interp.errors import InterpError
from interp.hooks import arch_of, capture, device_of, hook_name


def _orig(m):
    while hasattr(m, "original_component"):
        m = m.original_component
    return m


@dataclass
class Attn:
    """One attention layer's weights in head form."""

    W_Q: torch.Tensor      # [H, d, dh]
    b_Q: torch.Tensor      # [H, dh]
    W_K: torch.Tensor
    b_K: torch.Tensor
    W_V: torch.Tensor
    b_V: torch.Tensor
    W_O: torch.Tensor      # [H, dh, d]
    b_O: torch.Tensor      # [d]
    scale: float           # scores are multiplied by this
    causal: bool
    bias: torch.Tensor | None = None   # [H, q, k] added to the scores (T5's relative bias)
    smear: torch.Tensor | None = None  # [H] weight on the current key (smeared keys)


@dataclass
class Step:
    """One stage of the forward pass in order: `input`, `attn`, `mlp` or `logits`.

    `groups` are its receiver groups: (side read, receiver names, norm applied to the
    receiver's input); `senders` the outputs it adds to the residual stream of `side`."""

    kind: str
    side: str
    name: str
    groups: list = field(default_factory=list)
    senders: list = field(default_factory=list)
    attn: Attn | None = None
    norm: object = None
    fn: object = None


def _heads(W: torch.Tensor, H: int) -> torch.Tensor:
    """[d, H * dh] (x @ W) -> [H, d, dh]."""
    d = W.shape[0]
    return W.reshape(d, H, -1).permute(1, 0, 2).contiguous()


def _linear_heads(lin: nn.Linear, H: int):
    """A Linear's weight and bias in head form: W [H, d, dh], b [H, dh]."""
    W = lin.weight.detach().T
    b = lin.bias.detach() if lin.bias is not None else torch.zeros(W.shape[1], dtype=W.dtype,
                                                                   device=W.device)
    return _heads(W, H), b.reshape(H, -1)


def _out_heads(lin: nn.Linear, H: int):
    """W_O [H, dh, d] and b_O [d] of an output projection z_flat @ W.T + b."""
    W = lin.weight.detach().T                         # [H * dh, d]
    b = lin.bias.detach() if lin.bias is not None else torch.zeros(W.shape[1], dtype=W.dtype,
                                                                   device=W.device)
    return W.reshape(H, -1, W.shape[1]).contiguous(), b


def _gpt2_steps(bridge) -> list[Step]:
    hf = bridge.original_model
    tr = hf.transformer
    H = int(hf.config.n_head)
    steps = [Step("input", "seq", "input", senders=["input"])]
    for l, blk in enumerate(tr.h):
        blk = _orig(blk)
        at = _orig(blk.attn)
        if getattr(at, "reorder_and_upcast_attn", False) or \
                getattr(at, "scale_attn_by_inverse_layer_idx", False):
            raise InterpError("circuit discovery supports GPT-2 blocks without "
                              "reorder_and_upcast_attn / scale_attn_by_inverse_layer_idx")
        W = _orig(at.c_attn).weight.detach()          # Conv1D: x @ W + b, [d, 3d]
        b = _orig(at.c_attn).bias.detach()
        d = W.shape[0]
        Wq, Wk, Wv = W.split(d, 1)
        bq, bk, bv = b.split(d, 0)
        proj = _orig(at.c_proj)
        W_O = proj.weight.detach().reshape(H, -1, d).contiguous()
        dh = d // H
        attn = Attn(_heads(Wq, H), bq.reshape(H, -1), _heads(Wk, H), bk.reshape(H, -1),
                    _heads(Wv, H), bv.reshape(H, -1), W_O, proj.bias.detach(),
                    1 / math.sqrt(dh) if at.scale_attn_weights else 1.0, True)
        steps.append(_attn_step("seq", "", l, H, attn, _orig(blk.ln_1)))
        steps.append(_mlp_step("seq", "", l, _orig(blk.ln_2), _orig(blk.mlp)))
    steps.append(Step("logits", "seq", "logits", groups=[("seq", ["logits"], _orig(tr.ln_f))],
                      fn=_orig(hf.lm_head)))
    return steps


def _native_steps(bridge) -> list[Step]:
    m = bridge.original_model
    cfg = bridge.cfg
    H = int(cfg.n_heads)
    steps = [Step("input", "seq", "input", senders=["input"])]
    for l, blk in enumerate(m.layers):
        blk = _orig(blk)
        at = _orig(blk.attn)
        k = _orig(at.k)
        smear = None
        if hasattr(k, "alpha") and hasattr(k, "lin"):           # interp's smeared keys
            smear = torch.sigmoid(k.alpha.detach())
            k = _orig(k.lin)
        W_Q, b_Q = _linear_heads(_orig(at.q), H)
        W_K, b_K = _linear_heads(k, H)
        W_V, b_V = _linear_heads(_orig(at.v), H)
        W_O, b_O = _out_heads(_orig(at.o), H)
        if getattr(at, "rotary", None) is not None or getattr(at, "kv_repeats", 1) != 1:
            raise InterpError("circuit discovery supports native models with learned "
                              "positions and one key per head")
        attn = Attn(W_Q, b_Q, W_K, b_K, W_V, b_V, W_O, b_O, 1.0 / float(at.scale),
                    bool(at.causal), smear=smear)
        steps.append(_attn_step("seq", "", l, H, attn, _orig(blk.ln1)))
        if hasattr(blk, "mlp") and not cfg.attn_only:
            steps.append(_mlp_step("seq", "", l, _orig(blk.ln2), _orig(blk.mlp)))
    steps.append(Step("logits", "seq", "logits", groups=[("seq", ["logits"], _orig(m.ln_out))],
                      fn=_orig(m.head)))
    return steps


def _t5_attn(sa, H: int, causal: bool, bias) -> Attn:
    W_Q, b_Q = _linear_heads(sa.q, H)
    W_K, b_K = _linear_heads(sa.k, H)
    W_V, b_V = _linear_heads(sa.v, H)
    W_O, b_O = _out_heads(sa.o, H)
    return Attn(W_Q, b_Q, W_K, b_K, W_V, b_V, W_O, b_O,
                float(getattr(sa, "scaling", 1.0) or 1.0), causal, bias=bias)


def _t5_steps(bridge, n_src: int, n_tgt: int) -> list[Step]:
    hf = bridge.original_model
    H = int(hf.config.num_heads)
    enc, dec = hf.encoder, hf.decoder
    with torch.no_grad():
        enc_bias = enc.block[0].layer[0].SelfAttention.compute_bias(n_src, n_src)[0]
        dec_bias = dec.block[0].layer[0].SelfAttention.compute_bias(n_tgt, n_tgt)[0]
    steps = [Step("input", "src", "enc.input", senders=["enc.input"])]
    for l, blk in enumerate(enc.block):
        sa = blk.layer[0]
        steps.append(_attn_step("src", "enc", l, H, _t5_attn(sa.SelfAttention, H, False,
                                                             enc_bias), sa.layer_norm))
        ff = blk.layer[-1]
        steps.append(_mlp_step("src", "enc", l, ff.layer_norm, ff.DenseReluDense))
    steps.append(Step("input", "tgt", "dec.input", senders=["dec.input"]))
    for l, blk in enumerate(dec.block):
        sa, ca, ff = blk.layer[0], blk.layer[1], blk.layer[-1]
        steps.append(_attn_step("tgt", "dec", l, H, _t5_attn(sa.SelfAttention, H, True,
                                                             dec_bias), sa.layer_norm))
        steps.append(_attn_step("tgt", "cross", l, H,
                                _t5_attn(ca.EncDecAttention, H, False, None), ca.layer_norm,
                                kv_side="src", kv_norm=enc.final_layer_norm))
        steps.append(_mlp_step("tgt", "dec", l, ff.layer_norm, ff.DenseReluDense))
    scale = hf.model_dim ** -0.5 if getattr(hf.config, "scale_decoder_outputs", False) else 1.0
    head = hf.lm_head
    steps.append(Step("logits", "tgt", "logits",
                      groups=[("tgt", ["logits"], dec.final_layer_norm)],
                      fn=(lambda x: head(x * scale))))
    return steps


def _project(x: torch.Tensor, W: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-head projection [B, H, p, dh] of per-head inputs x [B, H, p, d] (or one shared
    input [B, 1, p, d])."""
    if x.shape[1] == 1:
        return torch.einsum("bpd,hde->bhpe", x[:, 0], W) + b[None, :, None]
    return torch.einsum("bhpd,hde->bhpe", x, W) + b[None, :, None]


def _attn_step(side, stack, l, H, attn, norm, kv_side=None, kv_norm=None) -> Step:
    pre = f"{stack}." if stack else ""
    heads = [f"{pre}L{l}H{h}" for h in range(H)]
    if kv_side is None:
        groups = [(side, [f"{n}.{x}" for x in "qkv" for n in heads], norm)]
    else:
        groups = [(side, [f"{n}.q" for n in heads], norm),
                  (kv_side, [f"{n}.{x}" for x in "kv" for n in heads], kv_norm)]
    return Step("attn", side, f"{pre}L{l}", groups=groups, senders=heads, attn=attn)


def _mlp_step(side, stack, l, norm, mlp) -> Step:
    name = f"{stack}.MLP{l}" if stack else f"MLP{l}"
    return Step("mlp", side, name, groups=[(side, [name], norm)], senders=[name], fn=mlp)


class GraphModel:
    """A decoder-only or T5 bridge as an ordered list of `Step`s over senders and receivers.

    Parameters
    ----------
    bridge : TransformerBridge
        An HF GPT-2 decoder, an interp native model, or an HF T5.
    lengths : dict of str to int, optional
        T5 only: the src and tgt lengths (the relative position bias is computed for them).
    """

    def __init__(self, bridge, lengths: dict | None = None):
        self.bridge = bridge
        self.arch = arch_of(bridge)
        self.device = device_of(bridge)
        if self.arch == "t5":
            if not lengths:
                raise InterpError("a T5 graph needs the src and tgt lengths of its pairs")
            self.steps = _t5_steps(bridge, lengths["src"], lengths["tgt"])
            self.sides = ("src", "tgt")
        elif self.arch == "decoder":
            native = hasattr(bridge, "native_params") or \
                type(bridge.original_model).__name__ == "NativeModel"
            self.steps = _native_steps(bridge) if native else _gpt2_steps(bridge)
            self.sides = ("seq",)
        else:
            raise InterpError(f"circuit discovery needs a decoder-only or T5 model; this one "
                              f"is {self.arch!r}")
        self.senders = {s: [n for st in self.steps if st.side == s and st.kind != "logits"
                            for n in st.senders] for s in self.sides}
        self.answer_pos = -1

    def made_before(self, t: int) -> dict:
        """{side: how many senders the steps before step t have made}."""
        made = {s: 0 for s in self.sides}
        for st in self.steps[:t]:
            if st.kind != "logits":
                made[st.side] += len(st.senders)
        return made

    # ----------------------------------------------------------------- the input nodes
    def embed(self, ids: dict) -> dict:
        """The input senders' outputs {side: [b, p, d]} (embeddings, with positions)."""
        if self.arch == "t5":
            emb = self.bridge.original_model.shared
            return {s: emb(ids[s].to(self.device)).detach() for s in ("src", "tgt")}
        name = hook_name(self.bridge, "self", 0, "hook_resid_pre")
        seq = ids["seq"].to(self.device)
        return {"seq": capture(self.bridge, seq, names=[name])[name]}

    # ----------------------------------------------------------------- the forward pass
    def forward(self, inputs: dict, ref: dict | None = None, weights=None,
                delta: dict | None = None, K: int = 1, answer_pos: int | None = None,
                record: bool = False, start: int = 0, prefix: dict | None = None):
        """Run the graph.

        Parameters
        ----------
        inputs : {side: [b, p, d]}
            The input senders' outputs (`embed`), the same for each of the K copies.
        ref : {side: [b or 1, S, p, d]}
            Every sender's reference output (cut edges take it).
        weights : callable (step index, group index) -> Tensor [K, S, R, p] or None
            The edge weights of a receiver group (1 kept, 0 cut; None: all kept).
        delta : {side: [b, S, p, d]}, optional
            A fixed (ref - out) for attribution; default: ref minus this run's outputs.
        K : int
            Copies of the b pairs evaluated at once (rows k * b ... of the result).
        answer_pos : int
            The output side's position whose logits are returned.
        record : bool
            Also return every sender's output {side: [K * b, S, p, d]}.
        start, prefix : int, {side: [b, S, p, d]}
            Begin at step `start`, the senders made before it taking `prefix` (a run whose
            steps before `start` are the same: only later receivers are cut).

        Returns
        -------
        Tensor [K * b, vocab] (and the outputs if `record`).
        """
        pos = self.answer_pos if answer_pos is None else answer_pos
        outs = {s: [] for s in self.sides}
        resid = {}
        logits = None
        if start:
            for side, n in self.made_before(start).items():
                if n:
                    pre = prefix[side][:, :n]
                    pre = pre.repeat(K, 1, 1, 1) if K > 1 else pre
                    outs[side] = list(pre.unbind(1))
                    resid[side] = pre.sum(1)
        for t, st in enumerate(self.steps):
            if t < start:
                continue
            if st.kind == "input":
                x = inputs[st.side]
                x = x.repeat(K, 1, 1) if K > 1 else x
                outs[st.side].append(x)
                resid[st.side] = x
                continue
            xs = [self._receiver_inputs(t, g, side, resid, outs, ref, weights, delta, K)
                  for g, (side, _names, _norm) in enumerate(st.groups)]
            if st.kind == "attn":
                heads = self._attention(st, xs)                   # [B, H, p, d]
                outs[st.side].extend(heads.unbind(1))
                resid[st.side] = resid[st.side] + heads.sum(1)
            elif st.kind == "mlp":
                y = st.fn(st.groups[0][2](xs[0][:, 0]))
                outs[st.side].append(y)
                resid[st.side] = resid[st.side] + y
            else:
                x = xs[0][:, 0, pos]
                logits = st.fn(st.groups[0][2](x))
        if record:
            return logits, {s: torch.stack(o, 1) for s, o in outs.items()}
        return logits

    def _receiver_inputs(self, t, g, side, resid, outs, ref, weights, delta, K):
        """[K * b, R, p, d]: the residual of `side` as each receiver of group g sees it
        ([K * b, 1, p, d] when nothing is cut there: one residual for all)."""
        names = self.steps[t].groups[g][1]
        base = resid[side]
        B, p, d = base.shape
        w = weights(t, g) if weights is not None else None
        if w is None:
            return base[:, None]              # [B, 1, p, d]: every receiver reads it
        S = w.shape[1]
        if delta is not None:
            diff = delta[side][:, :S]
            diff = diff.repeat(K, 1, 1, 1) if diff.shape[0] * K == B else diff.expand(
                B, *diff.shape[1:])
        else:
            cur = torch.stack(outs[side][:S], 1)                  # [B, S, p, d]
            r = ref[side][:, :S]
            r = r.repeat(K, 1, 1, 1) if r.shape[0] * K == B else r
            diff = r - cur
        diff = diff.reshape(K, B // K, S, p, d)
        cut = (1 - w).to(diff.dtype)
        if cut.shape[-1] != p:
            cut = cut.expand(*cut.shape[:3], p)
        R = len(names)
        active = (cut != 0).flatten(3).any(3).any(1).any(0).nonzero()[:, 0]   # receivers cut
        if w.requires_grad or len(active) == R:       # attribution: every receiver
            return base[:, None] + torch.einsum("kbspd,ksrp->kbrpd", diff, cut).reshape(
                B, R, p, d)
        x = base[:, None].repeat(1, R, 1, 1)
        add = torch.einsum("kbspd,ksrp->kbrpd", diff, cut[:, :, active])
        x[:, active] += add.reshape(B, len(active), p, d)
        return x

    def _attention(self, st: Step, xs: list) -> torch.Tensor:
        a = st.attn
        H = a.W_Q.shape[0]

        def part(x, i):          # receivers i*H..(i+1)*H of x, or the one shared residual
            return x if x.shape[1] == 1 else x[:, i * H:(i + 1) * H]
        if len(xs) == 1:
            q_in, k_in, v_in = part(xs[0], 0), part(xs[0], 1), part(xs[0], 2)
            norm_q = norm_kv = st.groups[0][2]
        else:
            q_in, k_in, v_in = xs[0], part(xs[1], 0), part(xs[1], 1)
            norm_q, norm_kv = st.groups[0][2], st.groups[1][2]
        q = _project(norm_q(q_in), a.W_Q, a.b_Q)
        k = _project(norm_kv(k_in), a.W_K, a.b_K)
        v = _project(norm_kv(v_in), a.W_V, a.b_V)
        if a.smear is not None:
            s = a.smear[None, :, None, None]
            k = torch.cat([k[:, :, :1], s * k[:, :, 1:] + (1 - s) * k[:, :, :-1]], 2)
        scores = q @ k.transpose(-1, -2) * a.scale
        if a.bias is not None:
            scores = scores + a.bias[None]
        if a.causal:
            nq, nk = scores.shape[-2:]
            future = torch.ones(nq, nk, dtype=torch.bool, device=scores.device).triu(1)
            scores = scores.masked_fill(future, float("-inf"))
        z = torch.softmax(scores.float(), -1).to(v.dtype) @ v      # [b, H, q, dh]
        return torch.einsum("bhpe,hed->bhpd", z, a.W_O) + a.b_O / H
