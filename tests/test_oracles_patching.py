"""The patching metrics and setters on synthetic tensors, against values written out here:
no model, so these run in milliseconds and say exactly which number is wrong."""

import math

import pytest
import torch

from circuits import patching as P
from circuits.patching import sites as S


def fake_pairs(clean, corrupt, answer_pos=2):
    return P.Pairs("decoder", {}, {}, answer_pos, torch.tensor(clean), torch.tensor(corrupt),
                   {}, {})


def test_metrics_by_hand_with_repeats():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 4, 7, generator=g)           # 3 repeats x 2 pairs, 4 positions
    pairs = fake_pairs([1, 5], [3, 0])
    ld = P.metric_values(logits, pairs, "logit_diff", repeats=3)
    lp = P.metric_values(logits, pairs, "logprob", repeats=3)
    for row in range(6):
        i = row % 2                                        # copy k of the batch: rows k*2 + i
        good, bad = [1, 5][i], [3, 0][i]
        v = logits[row, 2].tolist()
        assert float(ld[row]) == pytest.approx(v[good] - v[bad], abs=1e-6)
        lse = math.log(sum(math.exp(x) for x in v))
        assert float(lp[row]) == pytest.approx(v[good] - lse, abs=1e-5)
    at = P.metric_values(logits, pairs, "logit_diff", repeats=3, pos=0)
    assert float(at[0]) == pytest.approx(float(logits[0, 0, 1] - logits[0, 0, 3]))


def site(name, layout):
    return P.Site(name, "self", "x", ("layer", "head", "pos") if name.endswith("pos") else
                  ("layer", "pos") if layout == "pos" else ("layer", "head"), "seq", layout)


def test_setters_write_exactly_their_cell_in_their_copy():
    B, T, H, D = 2, 5, 3, 4
    g = torch.Generator().manual_seed(1)
    cases = [(site("resid_pre", "pos"), [(0, 1), (0, 3)], (B, T, 6)),
             (site("head", "z"), [(0, 0), (0, 2)], (B, T, H, D)),
             (site("head_pos", "z"), [(0, 2, 1), (0, 0, 4)], (B, T, H, D)),
             (site("pattern", "pattern"), [(0, 1), (0, 2)], (B, H, T, T))]
    for s, cells, shape in cases:
        src = torch.randn(*shape, generator=g)
        act = torch.randn(len(cells) * B, *shape[1:], generator=g)
        before = act.clone()  # the oracle starts from the activation as it was
        out = S.setter(s, cells, src, B)(act, None)
        for k, cell in enumerate(cells):
            want = before[k * B:(k + 1) * B].clone()
            if s.name == "resid_pre":
                want[:, cell[1]] = src[:, cell[1]]
            elif s.name == "head":
                want[:, :, cell[1]] = src[:, :, cell[1]]
            elif s.name == "head_pos":
                want[:, cell[2], cell[1]] = src[:, cell[2], cell[1]]
            else:
                want[:, cell[1]] = src[:, cell[1]]
            assert torch.equal(out[k * B:(k + 1) * B], want), (s.name, cell)
