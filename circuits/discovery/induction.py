"""Pairs that isolate the induction mechanism, for checking a circuit finder on a model
whose circuit is known (a previous-token head in layer 0 K-composing with an induction head).

Clean: `<bos> r_1 ... r_L r_1 ... r_k` (random tokens, repeated), read at the last position,
whose answer is r_{k+1}: the induction head finds the earlier r_k by the previous-token
information at the key position k + 1 and copies r_{k+1}.

Corrupted: the same with the earlier r_k replaced by another token. The query, every value
and every token but one are unchanged; what changes is which key carries "the previous token
was r_k": exactly the information the previous-token head writes into the induction head's
keys. So resample ablation finds the K-composition edge (and the previous-token head's value
input), not only the copy path. The metric is the log-probability of r_{k+1}, or the logit
difference against the corrupted run's own top token.
"""

from __future__ import annotations

import torch

from circuits.patching.pairs import Pairs
from interp.errors import InterpError
from interp.tokens import token_pool


def induction_pairs(bridge, n: int = 32, length: int = 20, seed: int = 0) -> Pairs:
    """`n` pairs of repeated random tokens (module docstring), all of one layout: roles
    `bos`, `first` (the first copy), `prev` (the earlier r_k, the corrupted position),
    `next` (the earlier r_{k+1}), `second` (the second copy so far), `query` (the last r_k)."""
    if n < 1 or length < 4:
        raise InterpError(f"induction pairs need n >= 1 and length >= 4, got {n}, {length}")
    vocab, special, bos = token_pool(bridge)
    pool = torch.tensor([i for i in range(vocab) if i not in special])
    g = torch.Generator().manual_seed(seed)
    k = length // 2                                   # r_k is the query; r_{k+1} the answer
    clean, bad = [], []
    for _ in range(n):
        r = pool[torch.randperm(len(pool), generator=g)[:length + 1]]
        seq = torch.cat([torch.tensor([bos]), r[:length], r[:k]])
        c = seq.clone()
        c[k] = r[length]                              # an unused token in place of r_k
        clean.append(seq)
        bad.append(c)
    clean, bad = torch.stack(clean), torch.stack(bad)
    roles = (["bos"] + ["first"] * (k - 1) + ["prev", "next"] + ["first"] * (length - k - 1)
             + ["second"] * (k - 1) + ["query"])
    answer = clean[:, k + 1]
    tok = getattr(bridge, "tokenizer", None)
    shown = [tok.decode([int(t)]) if tok is not None else str(int(t)) for t in clean[0]]
    return Pairs("decoder", {"seq": clean}, {"seq": bad}, clean.shape[1] - 1, answer,
                 bad[:, k], {"seq": shown}, {"seq": roles}, [], "induction", "first", 0)


def logprob_metric(last: torch.Tensor, pairs: Pairs) -> torch.Tensor:
    """The log-probability of the clean answer token [b] (logits [b, vocab])."""
    rows = torch.arange(last.shape[0])
    return torch.log_softmax(last.float(), -1)[rows, pairs.clean_token.to(last.device)].cpu()
