"""The causal check of probes (probes.causal) against oracles built here: numpy's projection,
the HF model run on its own with the projected embedding written by hand, activations read
with and without the hook, a probe refitted after removing a planted direction, and the
comparison table recomputed from the per-example values."""

import numpy as np
import pytest
import torch

from circuits import ablation as A
from interp.hooks import capture
from interp.models import load_checkpoint
from interp.tasks.base import Example
from interp.tasks.quadratic import format_input, format_output
from interp.tasks.tokenizer import CharCodec
from probes import causal as C

# a < 0 in two of them: the key in:a_sign#0 is absent from the others
COEFS = [(1, -5, 6), (-2, 1, -3), (1, 1, 1), (3, 3, -6), (-1, 2, -5), (2, 8, 6)]


@pytest.fixture(scope="module")
def decoder(tiny_checkpoints):
    ckpt = load_checkpoint(tiny_checkpoints["decoder"])
    ex = [Example(format_input(*c)[0], format_output(*c)[0], "?") for c in COEFS]
    return ckpt, ckpt.bridge(), ex


@pytest.fixture(scope="module")
def t5(tiny_checkpoints):
    ckpt = load_checkpoint(tiny_checkpoints["t5"])
    ex = [Example(format_input(*c)[0], format_output(*c)[0], "?") for c in COEFS]
    return ckpt, ckpt.bridge(), ex


def numpy_projector(D: np.ndarray) -> np.ndarray:
    """I - P with P the orthogonal projector onto the row space of D (SVD)."""
    _, s, vt = np.linalg.svd(D, full_matrices=False)
    V = vt[s > 1e-8 * s.max()]
    return np.eye(D.shape[1]) - V.T @ V


def test_projection_equals_numpy_and_a_dependent_row_adds_no_rank():
    rng = np.random.default_rng(0)
    D = rng.standard_normal((2, 16))
    D = np.vstack([D, 2 * D[0] - 0.5 * D[1]])          # rank 2, not 3
    V = C.orthonormal(torch.tensor(D))
    assert V.shape == (2, 16)
    np.testing.assert_allclose(V.numpy() @ V.numpy().T, np.eye(2), atol=1e-6)
    x = rng.standard_normal((5, 16))
    got = C.project_out(torch.tensor(x, dtype=torch.float32), V).numpy()
    np.testing.assert_allclose(got, x @ numpy_projector(D), atol=1e-5)
    c = rng.standard_normal(16)                         # with a centre: x - P (x - c)
    got = C.project_out(torch.tensor(x, dtype=torch.float32), V,
                        torch.tensor(c, dtype=torch.float32)).numpy()
    np.testing.assert_allclose(got, x - (x - c) @ (np.eye(16) - numpy_projector(D)), atol=1e-5)
    assert C.orthonormal(torch.zeros(2, 16)).shape == (0, 16)
    R = C.random_basis(3, 16, np.random.default_rng(1)).numpy()
    np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-6)


def test_random_bases_are_uniform_on_the_sphere():
    """Oracle: the sphere's symmetry. Each row of a uniformly random orthonormal basis is a
    uniform unit vector, so over many draws every coordinate has mean 0 and is positive half
    the time (5 standard errors: 600 draws in d = 4)."""
    rng = np.random.default_rng(0)
    B = np.stack([C.random_basis(2, 4, rng).numpy() for _ in range(600)])     # [600, 2, 4]
    assert np.abs(B.mean(0)).max() < 0.1
    assert np.abs((B > 0).mean(0) - 0.5).max() < 0.1


def test_removal_in_the_forward_pass_equals_hf_run_on_the_hand_projected_embedding(decoder):
    ckpt, bridge, ex = decoder
    D = torch.randn(2, bridge.cfg.d_model, generator=torch.Generator().manual_seed(3))
    res = C.remove_direction(bridge, ckpt.task, ex, "resid_pre", 0, "in:=#0", D, n_controls=0)
    P = torch.tensor(numpy_projector(D.double().numpy()), dtype=torch.float64)
    hf, codec = ckpt.model, CharCodec()
    wte, wpe = hf.transformer.wte.weight.double(), hf.transformer.wpe.weight.double()
    for i, e in enumerate(ex):
        seq = [codec.bos] + codec.encode(e.src) + [codec.sep] + codec.encode(e.tgt) + [codec.eos]
        p = 1 + e.src.index("=")                       # <bos> src: the input's '='
        resid = wte[seq] + wpe[: len(seq)]            # hook_resid_pre of layer 0
        resid[p] = resid[p] @ P
        with torch.no_grad():
            logits = hf.double()(inputs_embeds=(resid - wpe[: len(seq)])[None]).logits[0]
        hf.float()
        start = len(e.src) + 1
        answer = seq[start + 1:]
        rows = logits[start:start + len(answer)]
        ce = [float(torch.logsumexp(r, 0) - r[t]) for r, t in zip(rows, answer)]
        assert res.per_example.loss_target[i] == pytest.approx(np.mean(ce), rel=1e-4), e.src
    assert not np.allclose(res.per_example.loss_target, res.per_example.loss_clean)


@pytest.mark.parametrize("arch, key, stack", [("decoder", "in:a_sign#0", None),
                                              ("decoder", "<sep>#0", "decoder"),
                                              ("t5", "in:a_sign#0", "encoder"),
                                              ("t5", "out:x#1", "decoder")])
def test_the_hook_changes_only_the_given_position_of_the_examples_that_have_it(
        decoder, t5, arch, key, stack):
    ckpt, bridge, ex = decoder if arch == "decoder" else t5
    prep = A.prepare(bridge, ckpt.task, ex)
    _, name, at = C.locate(bridge, prep, "resid_pre", 1, [key], stack)
    at = at[key]
    # the oracle for the index: found in the strings
    for i, e in enumerate(ex):
        if key == "<sep>#0":
            want = 1 + len(e.src)                      # <bos> src <sep>
        elif key == "in:a_sign#0":
            want = (1 if arch == "decoder" else 0) if e.src.startswith("-") else -1
        else:
            xs = [j for j, ch in enumerate(e.tgt) if ch == "x"]
            want = 1 + xs[1] if len(xs) > 1 else -1       # <start> tgt; no roots: one x
        assert int(at[i]) == want, (e.src, key)
    V = C.orthonormal(torch.randn(1, bridge.cfg.d_model))
    # one batch, its examples sorted by length: row r of the batch is example index[r]
    ((index, _, ids, valid, _, _),) = A.interventions.batches(prep, len(ex))
    assert index.tolist() != list(range(len(ex)))
    kw = {"attention_mask": valid[prep.main_side].long()}
    if arch == "t5":
        kw["decoder_input"] = ids["tgt"]
    clean = capture(bridge, ids[prep.main_side], names=[name], **kw)[name]
    hooked = capture(bridge, ids[prep.main_side], names=[name], hooks=[
        (name, C._hook(index, {key: at}, {key: V}, "remove", 0.0, {}))], **kw)[name]
    changed = (hooked != clean).any(-1)
    assert changed.sum() > 0
    for r, i in enumerate(index.tolist()):
        want = [int(at[i])] if at[i] >= 0 else []
        assert torch.nonzero(changed[r]).flatten().tolist() == want
        if want:
            x = clean[r, want[0]].double().numpy()
            np.testing.assert_allclose(hooked[r, want[0]].numpy(),
                                       x - (x @ V.double().numpy().T) @ V.double().numpy(),
                                       atol=1e-5)


@pytest.mark.parametrize("directions", [torch.zeros(1, 32), torch.zeros(0, 32)])
def test_removing_a_zero_or_rank_0_direction_changes_nothing_exactly(decoder, directions):
    ckpt, bridge, ex = decoder
    res = C.remove_direction(bridge, ckpt.task, ex, "resid_pre", 1, ["in:x#0", "in:=#0"],
                             directions, n_controls=1)
    pe = res.per_example
    assert (pe.loss_target == pe.loss_clean).all() and (pe.exact_target == pe.exact_clean).all()
    assert (res.summary.target_damage == 0).all()
    assert set(res.meta["rank"].values()) == {0}


def test_the_comparison_is_recomputed_from_the_per_example_values(decoder):
    ckpt, bridge, ex = decoder
    d = bridge.cfg.d_model
    res = C.remove_direction(bridge, ckpt.task, ex, "mlp_out", 0, ["in:^#0", "in:x#0"],
                             {"in:^#0": torch.randn(2, d), "in:x#0": torch.randn(1, d)},
                             n_controls=4, seed=2)
    pe = res.per_example
    row = res.summary.set_index("metric").loc["answer_loss"]
    assert row.target_damage == pytest.approx((pe.loss_target - pe.loss_clean).mean(), abs=1e-6)
    assert row.difference == pytest.approx((pe.loss_target - pe.loss_controls_mean).mean(),
                                           abs=1e-6)
    ctl = res.control_damage[res.control_damage.metric == "answer_loss"].damage.to_numpy()
    assert len(ctl) == 4
    assert len(np.unique(ctl)) == 4                    # four different random directions
    assert row.p_value == pytest.approx((1 + (ctl >= row.target_damage).sum()) / 5)
    assert row.control_damage_mean == pytest.approx(
        (pe.loss_controls_mean - pe.loss_clean).mean(), abs=1e-6)
    # every metric, the field losses included (loss up is damage, as for answer_loss): the
    # damages per control average to the comparison's (circuits.ablation.compare)
    assert any(m.startswith("loss:") for m in res.control_damage.metric)
    summary = res.summary.set_index("metric")
    for metric, group in res.control_damage.groupby("metric"):
        assert group.damage.mean() == pytest.approx(summary.control_damage_mean[metric],
                                                    abs=1e-9), metric
    assert res.meta["rank"] == {"in:^#0": 2, "in:x#0": 1}
    frame = res.frame()
    assert list(frame.columns[:7]) == ["site", "stack", "layer", "positions", "rank", "mode",
                                       "centered"]
    assert res.figure().data


def test_a_planted_direction_removed_drops_its_probe_to_chance_and_a_random_one_does_not():
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    n, d = 4000, 8
    y = rng.integers(0, 2, n)
    u = rng.standard_normal(d)
    u /= np.linalg.norm(u)
    X = rng.standard_normal((n, d)) + 2.0 * np.outer(2 * y - 1, u) + 5.0   # offset: raw space

    def score(Z):
        clf = LogisticRegression(C=1.0, max_iter=2000).fit(Z[:3000], y[:3000])
        return clf.score(Z[3000:], y[3000:])

    clf = LogisticRegression(C=1.0, max_iter=2000).fit(X[:3000], y[:3000])
    w = torch.tensor(clf.coef_, dtype=torch.float32)              # the probe's direction
    Xt = torch.tensor(X, dtype=torch.float32)
    assert score(X) > 0.95
    removed = C.project_out(Xt, C.orthonormal(w)).double().numpy()
    assert abs(score(removed) - 0.5) < 0.1            # chance, with 1,000 test examples
    rand = C.project_out(Xt, C.random_basis(1, d, np.random.default_rng(1))).double().numpy()
    assert score(rand) > 0.95


def test_steering_moves_one_class_mean_onto_the_other():
    rng = np.random.default_rng(0)
    X = torch.tensor(rng.standard_normal((50, 8)), dtype=torch.float32)
    y = np.array([-1, 1] * 25)
    X[y == 1] += 4.0
    v, alpha = C.steering_vector(X, y, -1, 1)
    moved = X[y == -1] + alpha * v
    torch.testing.assert_close(moved.mean(0), X[y == 1].mean(0), atol=1e-4, rtol=0)


def test_bad_requests_are_one_line_errors(decoder, t5):
    from interp.errors import InterpError

    for (ckpt, bridge, ex), kw, words in [
            (decoder, {"site": "resid", "position": "in:=#0"}, "unknown site"),
            (decoder, {"site": "resid_pre", "position": "in:nope#0"}, "no example has"),
            (t5, {"site": "resid_pre", "position": "in:=#0", "stack": "decoder"}, "decoder stack has no position"),
            (decoder, {"site": "resid_pre", "position": "in:=#0", "mode": "steer"}, "rank-1")]:
        with pytest.raises(InterpError, match=words):
            C.remove_direction(bridge, ckpt.task, ex, layer=0,
                               directions=torch.randn(2, bridge.cfg.d_model), n_controls=0,
                               **kw)


def test_steering_adds_alpha_times_the_direction_at_the_position_only(decoder):
    ckpt, bridge, ex = decoder
    prep = A.prepare(bridge, ckpt.task, ex)
    _, name, at = C.locate(bridge, prep, "resid_pre", 1, ["in:=#0"])
    v = C.orthonormal(torch.randn(1, bridge.cfg.d_model))
    ((index, _, ids, valid, _, _),) = A.interventions.batches(prep, len(ex))
    kw = {"attention_mask": valid["seq"].long()}
    clean = capture(bridge, ids["seq"], names=[name], **kw)[name]
    hooked = capture(bridge, ids["seq"], names=[name], hooks=[
        (name, C._hook(index, at, {"in:=#0": v}, "steer", 2.5, {}))], **kw)[name]
    want = torch.zeros_like(clean)
    for r, i in enumerate(index.tolist()):          # the '=' of the example in row r
        want[r, 1 + ex[i].src.index("=")] = 2.5 * v[0]
    torch.testing.assert_close(hooked - clean, want, atol=1e-5, rtol=0)
