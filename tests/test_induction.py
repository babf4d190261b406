"""Induction scores on hand-built patterns with known answers."""

import pytest
import torch

from interp.attention.induction import induction_score, prefix_matching_score, scores_from_patterns
from interp.tokens import repeated_tokens
from interp.errors import InterpError


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


# ------------------------------------------------------------ copying, ICL, composition

def test_copying_is_one_for_an_identity_ov_circuit_and_minus_one_for_its_negative():
    from circuits.induction import copying_from_weights

    d, v = 16, 12
    W_E = torch.linalg.qr(torch.randn(d, d, generator=torch.Generator().manual_seed(0)))[0][:v]
    W_U = W_E.T                                         # logits of token t = e_t . x
    tokens = torch.arange(v)
    ov = torch.stack([torch.eye(d), -torch.eye(d)])     # [2 heads, d, d]
    got = copying_from_weights(W_E, ov, W_U, tokens)
    assert got[0].item() == pytest.approx(1.0, abs=1e-5)
    assert got[1].item() == pytest.approx(-1.0, abs=1e-5)
    # a head that writes the same vector whatever it reads copies nothing: its centred logits
    # are the same for every source token, so token t gets a share only if it is the winner
    const = torch.zeros(d, d)
    const[:, 0] = 1.0
    assert copying_from_weights(W_E, const, W_U, tokens).item() < -0.5


def test_icl_score_is_the_late_minus_early_loss_with_its_standard_error():
    from interp.attention.induction import icl_positions, icl_score

    losses = torch.tensor([[5.0, 4.0, 3.0, 2.0], [6.0, 4.0, 2.0, 1.0]])
    # token p's loss is column p - 1: token 1 -> 5/6, token 4 -> 2/1
    score, se = icl_score(losses, 1, 4)
    assert score == pytest.approx(-4.0)
    assert se == pytest.approx(torch.tensor([-3.0, -5.0]).std().item() / 2 ** 0.5)
    assert icl_positions(512) == (50, 500)
    early, late = icl_positions(128)
    assert (early, late) == (12, 125)
    with pytest.raises(InterpError, match="ICL positions"):
        icl_score(losses, 3, 2)


def test_token_losses_are_the_model_cross_entropy_per_position():
    from interp.attention.induction import token_losses

    b = tiny_native(layers=1)
    x = torch.randint(3, 300, (3, 12), generator=torch.Generator().manual_seed(1))
    got = token_losses(b, x, batch_size=2)
    logits = b(x)
    want = torch.stack([torch.nn.functional.cross_entropy(logits[i, :-1], x[i, 1:],
                                                          reduction="none") for i in range(3)])
    assert torch.allclose(got, want, atol=1e-5)


def tiny_native(layers=2, seed=1):
    from interp.models.native import NativeSpec, build_native

    return build_native(NativeSpec(n_layers=layers, d_model=32, n_heads=4, n_ctx=64,
                                   d_vocab=300), seed=seed)


def test_composition_table_is_the_frobenius_formula_with_a_z_against_random_heads():
    from circuits.induction import composition_table, random_composition_baseline

    b = tiny_native()
    table = composition_table(b, n_random=50)
    W_Q, W_K, W_V, W_O = (w.detach() for w in (b.W_Q, b.W_K, b.W_V, b.W_O))

    def score(L, R):
        return (torch.linalg.norm(L @ R) / (torch.linalg.norm(L) * torch.linalg.norm(R))).item()
    for h0, h1 in ((0, 0), (1, 3), (3, 2)):
        L = W_V[0, h0] @ W_O[0, h0]
        qk = W_Q[1, h1] @ W_K[1, h1].T
        want = {"Q": score(L, qk), "K": score(L, qk.T),
                "V": score(L, W_V[1, h1] @ W_O[1, h1])}
        for mode, w in want.items():
            row = table[(table["mode"] == mode) & (table.head_from == h0) &
                        (table.head_to == h1)].iloc[0]
            assert row.score == pytest.approx(w, rel=1e-4), (mode, h0, h1)
            mean, sd = random_composition_baseline(32, 8, mode, 50, 0)
            assert row.z == pytest.approx((w - mean) / sd, rel=1e-4)
    assert len(table) == 3 * 4 * 4


def test_zero_ablating_a_head_equals_removing_its_output_weights():
    from circuits.induction import ablation_hooks

    b = tiny_native(layers=1)
    x = torch.randint(3, 300, (2, 10), generator=torch.Generator().manual_seed(2))
    got = b.run_with_hooks(x, fwd_hooks=ablation_hooks(b, [(0, 2)]))
    W = b.native_params["layers.0.attn.o.weight"]
    with torch.no_grad():
        W[:, 16:24] = 0                                 # head 2's columns of W_O
    assert torch.allclose(got, b(x), atol=1e-5)
    with pytest.raises(InterpError, match="no head L0H4"):
        ablation_hooks(b, [(0, 4)])


def test_mean_ablation_writes_the_head_mean_over_the_given_tokens():
    from circuits.induction import ablation_hooks

    b = tiny_native(layers=1)
    x = torch.randint(3, 300, (2, 10), generator=torch.Generator().manual_seed(3))
    _, cache = b.run_with_cache(x)
    mean = cache["blocks.0.attn.hook_z"][:, :, 1].mean((0, 1))
    seen = {}

    def spy(z, hook):
        seen["z"] = z.clone()
    b.run_with_hooks(x, fwd_hooks=ablation_hooks(b, [(0, 1)], "mean", mean_over=x) +
                     [("blocks.0.attn.hook_z", spy)])
    assert torch.allclose(seen["z"][:, :, 1], mean.expand(2, 10, -1), atol=1e-6)
    assert torch.equal(seen["z"][:, :, 0], cache["blocks.0.attn.hook_z"][:, :, 0])


def test_scores_agree_with_transformer_lens_detect_head():
    """detect_head on the same prompts: previous-token, duplicate-token and induction
    ("mul", every option) equal our detection scores; the diagonal recipe with BOS kept is
    TL's score with the diagonal as detection pattern, rescaled by half / width."""
    from transformer_lens.head_detector import detect_head

    from interp.attention.induction import model_patterns
    from interp.attention.scores import (detection_score, duplicate_token_pattern,
                                         induction_pattern, previous_token_pattern)
    from interp.tasks import text as T

    from interp.models.native import NativeSpec, build_native

    files, _ = T.split_files(T.stdlib_files())
    tok = T.hf_text_tokenizer(T.train_bpe(files[:30], 300))
    b = build_native(NativeSpec(n_layers=2, d_model=32, n_heads=4, n_ctx=64, d_vocab=300),
                     seed=3, tokenizer=tok)
    line = "total = count(items) + offset\n"
    prompt = line * 2
    ids = b.to_tokens(prompt)
    half = (ids.shape[1] - 1) // 2
    assert torch.equal(ids[0, 1:half + 1], ids[0, half + 1:]), "the line must tokenize twice"
    P = model_patterns(b, ids)
    w = ids.shape[1]
    mask = torch.ones(w, w, dtype=torch.bool).tril()[None]
    for name, det in (("previous_token_head", previous_token_pattern(ids)),
                      ("duplicate_token_head", duplicate_token_pattern(ids)),
                      ("induction_head", induction_pattern(ids))):
        for opts in ({}, {"exclude_bos": True}, {"exclude_bos": True, "exclude_current": True}):
            tl = {("exclude_current_token" if k == "exclude_current" else k): v
                  for k, v in opts.items()}
            want = detect_head(b, prompt, name, **tl)
            got = detection_score(P, mask, det * mask, **opts)
            assert torch.allclose(got, want.float(), atol=1e-5), (name, opts)
    diag = torch.zeros(w, w)
    q = torch.arange(half + 1, w)
    diag[q, q - half + 1] = 1
    want = detect_head(b, prompt, diag)
    got = induction_score(P, half, exclude_bos=False) * half / w
    assert torch.allclose(got, want.float(), atol=1e-5)


def test_eigen_positivity_is_one_for_copying_and_minus_one_for_anti_copying():
    from circuits.induction import eigen_positivity

    d, v = 16, 40
    g = torch.Generator().manual_seed(0)
    W_E = torch.randn(v, d, generator=g)
    W_U = W_E.T.clone()
    ov = torch.stack([torch.eye(d), -torch.eye(d), torch.diag(torch.tensor([1.0, -1.0] * 8))])
    got = eigen_positivity(W_E, ov, W_U)
    # W_E W_U^T-style circuits are positive semi-definite: eigenvalues >= 0
    assert got[0].item() == pytest.approx(1.0, abs=1e-5)
    assert got[1].item() == pytest.approx(-1.0, abs=1e-5)
    assert -1 < got[2].item() < 1


@pytest.mark.parametrize("mixing", ["smeared", "conv"])
def test_unmixing_check_measures_the_plain_model_and_restores_the_weights(mixing):
    from circuits.induction import head_scores, unmixing_check
    from interp.attention.induction import induction_score, model_patterns, score_prompts
    from interp.models.native import NativeSpec, build_native

    b = build_native(NativeSpec(n_layers=1, d_model=32, n_heads=4, n_ctx=64, d_vocab=300,
                                mixing=mixing), seed=4)
    with torch.no_grad():
        for k, p in b.native_params.items():
            if k.endswith("alpha") or k.endswith("kernel"):
                p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(5)))
    saved = {k: p.detach().clone() for k, p in b.native_params.items()}
    heads = head_scores(b, n=8, copying=False)
    got = unmixing_check(b, heads, n=8)
    assert all(torch.equal(saved[k], p) for k, p in b.native_params.items())
    h = got["head"][1]
    with torch.no_grad():                                  # the same intervention by hand
        if mixing == "smeared":
            b.native_params["layers.0.attn.k.alpha"][h] = 50.0
        else:
            b.native_params["tok_embed.kernel"].copy_(torch.eye(3)[-1].expand(32, 3))
    ids, half, _, _ = score_prompts(b, 8, seed=0)
    want = induction_score(model_patterns(b, ids), half)[0, h].item()
    assert got["induction_unmixed"] == pytest.approx(want, abs=1e-6)
    assert got["induction_score"] == pytest.approx(heads.induction.max(), abs=1e-6)
    with pytest.raises(InterpError, match="smeared keys or conv"):
        unmixing_check(tiny_native(layers=1), heads)
