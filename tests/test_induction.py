"""Induction scores on hand-built patterns with known answers."""

import pytest
import torch

from circuits.induction import (induction_score, prefix_matching_score, repeated_tokens,
                                scores_from_patterns)


def causal_uniform(width: int, batch: int = 2) -> torch.Tensor:
    P = torch.ones(width, width).tril()
    return (P / P.sum(-1, keepdim=True)).expand(1, batch, 1, width, width).clone()


def perfect_induction(ids: torch.Tensor, half: int) -> torch.Tensor:
    """First half (and BOS) attends to BOS; second half to the token after its first copy."""
    b, w = ids.shape
    P = torch.zeros(1, b, 1, w, w)
    P[..., :half + 1, 0] = 1
    for q in range(half + 1, w):
        P[..., q, q - half + 1] = 1
    return P


def test_a_perfect_induction_head_scores_one_and_no_previous_token():
    half = 10
    ids = repeated_tokens(50, 3, half, 2, bos=0, special={0}, seed=1)
    P = perfect_induction(ids, half)
    assert induction_score(P, half).item() == pytest.approx(1.0)
    s = scores_from_patterns(P, ids, half, causal_uniform(41, 3), repeated_tokens(
        50, 3, 10, 4, bos=0, special={0}), 10)
    assert s["previous_token"].item() < 0.1


def test_a_uniform_head_scores_its_closed_form_baseline():
    half = 8
    P = causal_uniform(2 * half + 1)
    # BOS excluded: query q spreads over keys 1..q, so 1/q lands on the induction key
    want = sum(1 / q for q in range(half + 1, 2 * half + 1)) / half
    assert induction_score(P, half).item() == pytest.approx(want)
    # BOS kept: 1/(q + 1)
    want_bos = sum(1 / (q + 1) for q in range(half + 1, 2 * half + 1)) / half
    assert induction_score(P, half, exclude_bos=False).item() == pytest.approx(want_bos)


def test_prefix_matching_counts_every_earlier_copy():
    length, reps = 5, 4
    block = torch.tensor([[3, 7, 1, 9, 4], [5, 2, 8, 6, 11]])     # distinct within a block
    ids = torch.cat([torch.zeros(2, 1, dtype=torch.long), block.repeat(1, reps)], 1)
    w = ids.shape[1]
    P = torch.zeros(1, 2, 1, w, w)
    P[..., 0] = 1
    for q in range(length + 1, w):
        keys = [k for k in range(2, q + 1) if (k - 1 - q) % length == 0 and k - 1 < q]
        P[..., q, keys] = 1 / len(keys)            # spread over every earlier copy's successor
    for q in range(1, length + 1):
        P[..., q, :] = 0
        P[..., q, 0] = 1
    assert prefix_matching_score(P, ids, length).item() == pytest.approx(1.0)
    half = P.clone()
    half[..., length + 1:, :] *= 0.5
    half[..., length + 1:, 0] += 0.5                # half the attention parked on BOS
    assert prefix_matching_score(half, ids, length).item() == pytest.approx(1.0)
    assert prefix_matching_score(half, ids, length, exclude_bos=False).item() == \
        pytest.approx(0.5)


def test_repeated_tokens_are_seeded_repeats_without_specials():
    a = repeated_tokens(20, 4, 6, 3, bos=1, special={0, 1, 2}, seed=5)
    assert torch.equal(a, repeated_tokens(20, 4, 6, 3, bos=1, special={0, 1, 2}, seed=5))
    assert a.shape == (4, 1 + 18) and (a[:, 0] == 1).all()
    assert torch.equal(a[:, 1:7], a[:, 7:13]) and torch.equal(a[:, 1:7], a[:, 13:19])
    assert not torch.isin(a[:, 1:], torch.tensor([0, 1, 2])).any()


def test_width_mismatch_is_a_clear_error():
    from interp.errors import InterpError

    with pytest.raises(InterpError, match="do not fit"):
        induction_score(causal_uniform(10), 8)


def test_random_composition_baseline_is_seeded_and_shrinks_with_width():
    from circuits.induction import random_composition_baseline

    a = random_composition_baseline(64, 16, "K", n=100, seed=1)
    assert a == random_composition_baseline(64, 16, "K", n=100, seed=1)
    wide = random_composition_baseline(256, 16, "K", n=100, seed=1)
    assert 0 < wide[0] < a[0] < 1 and a[1] > 0
    for mode in "QV":
        m, sd = random_composition_baseline(64, 16, mode, n=100)
        assert 0 < m < 1 and sd > 0


def test_composition_of_aligned_rank_one_heads_is_one_and_of_orthogonal_ones_zero():
    from transformer_lens import FactoredMatrix
    from transformer_lens.utilities.matrix import composition_scores

    e = torch.eye(8)
    left = FactoredMatrix(e[:, :1], e[1:2, :])          # writes along e1
    reads = FactoredMatrix(e[:, 1:2], e[2:3, :])        # reads e1
    ignores = FactoredMatrix(e[:, 3:4], e[2:3, :])      # reads e3
    assert composition_scores(left, reads, broadcast_dims=False).item() == pytest.approx(1.0)
    assert composition_scores(left, ignores, broadcast_dims=False).item() == 0.0
