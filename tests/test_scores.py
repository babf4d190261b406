"""Pattern scores on hand-built patterns with known answers, and against TransformerLens."""

import math

import pytest
import torch

from interp.attention import scores as S


def causal_mask(b, n):
    return torch.ones(b, n, n, dtype=torch.bool).tril()


def as_pattern(mat, b=1):
    """[q, k] -> [layer 1, batch b, head 1, q, k]"""
    return mat[None, None, None].expand(1, b, 1, *mat.shape).clone()


def test_previous_token_head_puts_its_attention_at_offset_one():
    n = 8
    mat = torch.diag(torch.ones(n - 1), -1)
    mat[0, 0] = 1
    P, M = as_pattern(mat), causal_mask(1, n)
    prof = S.offset_profile(P, M, range(0, n))
    # shares of all attention: every query but the first sits at offset 1
    assert prof[0, 0, 1] == pytest.approx((n - 1) / n)
    assert prof[0, 0, 0] == pytest.approx(1 / n)  # only the first query looks at itself
    assert prof[0, 0].sum() == pytest.approx(1.0)
    ids = torch.arange(n)[None]
    assert S.detection_score(P, M, S.previous_token_pattern(ids))[0, 0] == pytest.approx((n - 1) / n)


def test_uniform_head_scores_its_own_baseline():
    n = 10
    M = causal_mask(2, n)
    U = S.uniform_like(M)
    # entropy of uniform over q+1 keys is log(q+1)
    want = sum(math.log(q + 1) for q in range(n)) / n
    assert S.entropy(U, M)[0, 0] == pytest.approx(want, rel=1e-5)
    # mass at offset 0 averages 1/(q+1)
    prof = S.offset_profile(U, M, range(0, 3))
    assert prof[0, 0, 0] == pytest.approx(sum(1 / (q + 1) for q in range(n)) / n, rel=1e-5)


def test_perfect_induction_pattern_scores_one_with_bos_excluded():
    torch.manual_seed(0)
    n = 12
    seq = torch.randperm(50)[:n]
    ids = torch.cat([torch.tensor([99]), seq, seq])[None]  # BOS + random + repeat
    T = ids.shape[1]
    mat = torch.zeros(T, T)
    mat[:, 0] = 1  # first half: park on BOS
    for q in range(n + 1, T):
        mat[q] = 0
        mat[q, q - n + 1] = 1  # the token after the earlier copy
    P, M = as_pattern(mat), causal_mask(1, T)
    det = S.induction_pattern(ids)
    assert S.detection_score(P, M, det, exclude_bos=True)[0, 0] == pytest.approx(1.0)
    # without excluding BOS the first half's parking halves the score, as in TransformerLens
    assert S.detection_score(P, M, det)[0, 0] == pytest.approx(n / T, rel=1e-5)


def test_role_mass_finds_a_vertical_stripe():
    n = 6
    roles = [["<bos>", "a", "x", "b", "=", "c"]]
    mat = torch.zeros(n, n)
    mat[:, 0] = 1
    mat[4:, :] = 0
    mat[4:, 4] = 1          # queries from '=' on look at '='
    P, M = as_pattern(mat), causal_mask(1, n)
    names, mass = S.role_mass(P, M, roles)
    got = dict(zip(names, mass[0, 0].tolist()))
    assert got["<bos>"] == pytest.approx(4 / 6) and got["="] == pytest.approx(2 / 6)


def test_segment_share_of_a_block_diagonal_head_is_one():
    n = 6
    seg = torch.tensor([[0, 0, 0, 1, 1, 1]])
    mat = torch.zeros(n, n)
    for q in range(n):
        lo = 0 if q < 3 else 3
        mat[q, lo:q + 1] = 1 / (q + 1 - lo)
    P, M = as_pattern(mat), causal_mask(1, n)
    assert S.segment_share(P, M, seg, seg)[0, 0] == pytest.approx(1.0)
    base = S.segment_share(S.uniform_like(M), M, seg, seg)[0, 0]
    assert base < 0.8


def test_scores_match_transformer_lens_detect_head(tiny_checkpoints):
    from transformer_lens.head_detector import detect_head

    from interp.cache import cache_attention
    from interp.models import load_model

    bridge, _ = load_model(tiny_checkpoints["decoder"])
    torch.manual_seed(1)
    prompts = ["".join("0123456789x^=+-"[i] for i in torch.randint(0, 15, (k,)))
               for k in (9, 14, 11)]
    prompts = [p + p for p in prompts]  # repeats, so duplicate and induction scores are nonzero
    ac = cache_attention(bridge, None, prompts, kinds=["self"])
    P, M = ac.patterns["self"], ac.mask("self")
    ids = ac.query("self").ids
    # TransformerLens pads nothing: compare prompt by prompt and average
    ours = {"previous_token_head": S.previous_token_pattern(ids),
            "duplicate_token_head": S.duplicate_token_pattern(ids),
            "induction_head": S.induction_pattern(ids)}
    for name, det in ours.items():
        for opts in ({}, {"exclude_bos": True}, {"exclude_bos": True, "exclude_current": True}):
            tl_opts = {("exclude_current_token" if k == "exclude_current" else k): v
                       for k, v in opts.items()}
            want = detect_head(bridge, prompts, name, **tl_opts)
            got = S.detection_score(P, M, det * M, **opts)
            assert torch.allclose(got, want.float(), atol=1e-5), (name, opts, got, want)
