"""Erasure (probes.erasure, probes.causal.erasure_check) against oracles that do not share its
code: LEACE against a numpy closed form written here from the paper's whitening formula and
against its defining properties (zero cross-covariance; the least movement among valid
erasures); scikit-learn probes refitted on planted data (a concept spread over several
dimensions that one INLP step does not remove); the power check on planted signals that
survive a linear erasure; and the next-layer activations under erasure recomputed by running
the HF model alone with the erasure written by hand."""

import numpy as np
import pytest
import torch

from circuits.stats import min_controls
from interp.models import load_checkpoint
from interp.tasks.base import Example
from interp.tasks.quadratic import format_input, format_output
from interp.tasks.tokenizer import CharCodec
from probes import causal as C
from probes import erasure as E

sk_linear = pytest.importorskip("sklearn.linear_model")


def planted(n=1500, d=12, k=4, seed=0, kind="regression"):
    """A concept z written into k dimensions with very unequal noise, plus d - k noise
    dimensions, rotated at random: a probe weights the cleanest copies, so removing its one
    direction leaves the noisier copies' combination, still correlated with z."""
    rng = np.random.default_rng(seed)
    z = rng.standard_normal(n)
    noise = np.geomspace(0.1, 2.0, k)
    X = np.concatenate([z[:, None] + rng.standard_normal((n, k)) * noise,
                        rng.standard_normal((n, d - k))], 1)
    R, _ = np.linalg.qr(rng.standard_normal((d, d)))
    y = z if kind == "regression" else np.digitize(z, [-0.5, 0.5]).astype(float)
    parts = np.arange(n) % 5
    parts = np.where(parts < 3, 0, np.where(parts == 3, 1, 2))
    return X @ R, y, parts


def sk_score(X, y, parts, kind):
    """A fresh scikit-learn probe: fitted on parts 0, scored on parts 2, and its baseline."""
    tr, te = parts == 0, parts == 2
    if kind == "regression":
        m = sk_linear.RidgeCV(alphas=np.geomspace(1e-3, 1e3, 13)).fit(X[tr], y[tr])
        return m.score(X[te], y[te]), 1 - np.mean((y[te] - y[tr].mean()) ** 2) / np.var(y[te])
    m = sk_linear.LogisticRegression(C=1.0, max_iter=2000).fit(X[tr], y[tr])
    major = np.bincount(y[tr].astype(int)).argmax()
    return m.score(X[te], y[te]), np.mean(y[te] == major)


def numpy_leace(X, Z):
    """The paper's formula, written here: r(x) = x - W^+ P_{W S_xz} W (x - mu), W = S^{-1/2}."""
    mu = X.mean(0)
    Xc, Zc = X - mu, Z - Z.mean(0)
    S = Xc.T @ Xc / len(X)
    Sxz = Xc.T @ Zc / len(X)
    e, V = np.linalg.eigh(S)
    W = V @ np.diag(e ** -0.5) @ V.T
    Wp = V @ np.diag(e ** 0.5) @ V.T
    A = W @ Sxz
    P = A @ np.linalg.pinv(A)                       # orthogonal projector onto col(W S_xz)
    return lambda x: x - (x - mu) @ (Wp @ P @ W).T


@pytest.mark.parametrize("kind", ["regression", "class"])
def test_leace_equals_the_numpy_formula_and_zeroes_the_cross_covariance(kind):
    X, y, parts = planted(kind=kind)
    tr = parts == 0
    er = E.leace(torch.tensor(X[tr]), y[tr], kind)
    Z = y[tr, None] if kind == "regression" else np.eye(3)[y[tr].astype(int)]
    want = numpy_leace(X[tr], Z)
    np.testing.assert_allclose(er.apply(torch.tensor(X)).numpy(), want(X), atol=1e-8)
    assert er.rank == (1 if kind == "regression" else 2)
    Xe = er.apply(torch.tensor(X[tr])).numpy()
    cross = (Xe - Xe.mean(0)).T @ (Z - Z.mean(0)) / tr.sum()
    assert np.abs(cross).max() < 1e-10
    assert np.abs(((X[tr] - X[tr].mean(0)).T @ (Z - Z.mean(0)) / tr.sum())).max() > 0.1


def test_leace_moves_x_least_among_valid_erasures():
    """Oracle: any projection that kills the cross-covariance is a valid erasure (orthogonal
    projection off S_xz's columns; a random larger orthogonal projection containing them;
    LEACE's form along random extra whitened directions). LEACE moves x least (mean squared
    Euclidean distance), as the paper proves for every inner-product norm."""
    X, y, parts = planted(kind="class", seed=3)
    tr = parts == 0
    Z = np.eye(3)[y[tr].astype(int)]
    Xt = X[tr]
    er = E.leace(torch.tensor(Xt), y[tr], "class")
    cost = np.mean(np.sum((er.apply(torch.tensor(Xt)).numpy() - Xt) ** 2, 1))
    mu = Xt.mean(0)
    Sxz = (Xt - mu).T @ (Z - Z.mean(0)) / len(Xt)
    rng = np.random.default_rng(0)
    others = []
    U, s, _ = np.linalg.svd(Sxz, full_matrices=False)
    U = U[:, s > 1e-9]
    others.append(U @ U.T)
    for _ in range(5):
        B, _ = np.linalg.qr(np.concatenate([U, rng.standard_normal((12, 2))], 1))
        others.append(B @ B.T)
    for Q in others:
        Xo = Xt - (Xt - mu) @ Q.T
        assert np.abs((Xo - Xo.mean(0)).T @ (Z - Z.mean(0))).max() < 1e-8   # valid
        assert cost < np.mean(np.sum((Xo - Xt) ** 2, 1)) - 1e-9


@pytest.mark.parametrize("kind", ["regression", "class"])
def test_one_inlp_step_leaves_a_planted_concept_but_leace_and_iterated_inlp_remove_it(kind):
    X, y, parts = planted(kind=kind, seed=1, d=24)
    tr = parts == 0
    clean, base = sk_score(X, y, parts, kind)
    assert clean - base > 0.3
    # one INLP step: the (rank 1 / K - 1) direction of a fresh probe, projected out
    d1 = E.fresh_probe(torch.tensor(X), y, kind, parts)["direction"]
    one = E.orthogonal(C.orthonormal(d1), torch.tensor(X[tr].mean(0)), "inlp")
    after_one, _ = sk_score(one.apply(torch.tensor(X)).numpy(), y, parts, kind)
    assert after_one - base > 0.1, "the planted concept should survive one step"
    lea = E.leace(torch.tensor(X[tr]), y[tr], kind)
    s, _ = sk_score(lea.apply(torch.tensor(X)).numpy(), y, parts, kind)
    assert s - base <= E.MARGIN
    it, steps = E.inlp(torch.tensor(X), y, kind, parts)
    s, _ = sk_score(it.apply(torch.tensor(X)).numpy(), y, parts, kind)
    assert it.method == "inlp" and it.rank > one.rank and len(steps) > 2
    assert s - base <= E.MARGIN + 0.01


def test_the_power_check_fails_when_the_concept_survives_and_passes_when_it_is_gone():
    """Planted: a concept in 4 dimensions that INLP may remove only 1 of (too small a rank),
    and a concept that is a nonlinear function of a kept direction (an erasure of its linear
    part leaves |z| readable as a square): the fresh probe stays above baseline and the check
    says the erasure failed; LEACE on the linear concept reaches baseline."""
    X, y, parts = planted(seed=2)
    capped, _ = E.inlp(torch.tensor(X), y, "regression", parts, max_rank=1)
    assert capped.method == "inlp (failed)" and capped.rank == 1
    p = E.fresh_probe(capped.apply(torch.tensor(X)), y, "regression", parts)
    assert not E.at_baseline(p)
    sk, base = sk_score(capped.apply(torch.tensor(X)).numpy(), y, parts, "regression")
    assert sk - base > 0.1                                   # sklearn agrees: still there
    rng = np.random.default_rng(5)
    Xn = X
    # nonlinear: the label is z^2 > 1 (two classes), z read linearly from the features;
    # erasing the class linearly leaves z, and z^2 as an added feature reads the class
    z = y
    cls = (z ** 2 > 0.8).astype(float)
    Xq = np.concatenate([Xn, z[:, None] ** 2 + 0.05 * rng.standard_normal((len(z), 1))], 1)
    lin = E.leace(torch.tensor(Xq[parts == 0]), cls[parts == 0], "class")
    after = lin.apply(torch.tensor(Xq)).numpy()
    assert E.at_baseline(E.fresh_probe(torch.tensor(after), cls, "class", parts))
    # the model one step on: a nonlinearity re-derives it from what the erasure kept
    nxt = np.concatenate([after, after ** 2], 1)
    assert not E.at_baseline(E.fresh_probe(torch.tensor(nxt), cls, "class", parts))
    # and the decision: only a check where both places are at baseline gets a use verdict
    import pandas as pd
    rows = pd.DataFrame({"at": ["L1", "L2"], "position": ["in:=#0"] * 2,
                         "score": [0.5, 0.9], "baseline": [0.5, 0.5],
                         "excess": [0.0, 0.4], "at_baseline": [True, False]})
    for v in ("confirmed", "not confirmed"):
        conclusion, note = C._conclude(False, v, 19, rows, E.MARGIN)
        assert conclusion not in ("used", "not shown to be used")
        assert "erasure failed" in note and "no verdict from erasure" in note
    assert C._conclude(True, "not confirmed", 19, rows.iloc[:1], E.MARGIN)[0] == \
        "not shown to be used"
    assert C._conclude(True, "confirmed", 19, rows.iloc[:1], E.MARGIN)[0] == "used"
    assert C._conclude(True, "untestable", 10, rows.iloc[:1], E.MARGIN)[0] == "untestable"


def test_a_random_control_has_the_targets_rank_and_removes_the_same_whitened_variance():
    X, y, parts = planted(kind="class", seed=4)
    tr = parts == 0
    er = E.leace(torch.tensor(X[tr]), y[tr], "class")
    Xc = X[tr] - X[tr].mean(0)
    S = Xc.T @ Xc / tr.sum()
    e, V = np.linalg.eigh(S)
    W = V @ np.diag(e ** -0.5) @ V.T

    def whitened_removed(Q):                 # variance removed, measured after whitening
        D = (Xc @ Q.T) @ W.T
        return np.trace(D.T @ D) / tr.sum()

    for j in range(5):
        ctl = E.random_like(er, np.random.default_rng(j))
        assert ctl.rank == er.rank
        Q = ctl.Q.numpy()
        np.testing.assert_allclose(Q @ Q, Q, atol=1e-8)                # a projection
        assert np.linalg.matrix_rank(Q, tol=1e-8) == er.rank
        assert whitened_removed(Q) == pytest.approx(er.rank, rel=1e-6)
    assert whitened_removed(er.Q.numpy()) == pytest.approx(er.rank, rel=1e-6)
    o = E.orthogonal(C.random_basis(2, 12, np.random.default_rng(0)), torch.zeros(12))
    assert E.random_like(o, np.random.default_rng(1)).rank == 2


COEFS = [(1, -5, 6), (-2, 1, -3), (1, 1, 1), (3, 3, -6), (-1, 2, -5), (2, 8, 6),
         (1, 2, 1), (1, -2, -8), (2, -2, 5), (1, -4, 4), (1, 3, 2), (1, -1, -6)]


def test_the_next_layer_under_erasure_equals_the_hf_model_run_with_the_erasure_by_hand(
        tiny_checkpoints):
    """Two positions, each with its own eraser: the model run with the hook equals the HF
    model run alone on embeddings edited by hand at both positions."""
    ckpt = load_checkpoint(tiny_checkpoints["decoder"])
    bridge = ckpt.bridge()
    ex = [Example(format_input(*c)[0], format_output(*c)[0], "?") for c in COEFS]
    prep = C.prepare(bridge, ckpt.task, ex)
    d = bridge.cfg.d_model
    rng = np.random.default_rng(0)
    keys = ["in:x#0", "in:=#0"]
    ers = {k: E.leace(torch.tensor(rng.standard_normal((40, d))), rng.standard_normal(40),
                      "regression") for k in keys}
    _, name, at = C.locate(bridge, prep, "resid_pre", 0, keys)
    nxt = C.hook_name(bridge, "self", 0, "hook_resid_post")

    def hooks(index):
        return [(name, C._edit_hook(index, at, lambda k, gi, x: ers[k].apply(x)))]

    got = C._capture(bridge, prep, at, nxt, hooks, batch_size=5)
    clean = C._capture(bridge, prep, at, nxt, None, batch_size=5)
    hf, codec = ckpt.model.double(), CharCodec()
    wte, wpe = hf.transformer.wte.weight, hf.transformer.wpe.weight
    for i, e in enumerate(ex):
        seq = [codec.bos] + codec.encode(e.src) + [codec.sep] + codec.encode(e.tgt) + [codec.eos]
        where = {"in:x#0": 1 + e.src.index("x"), "in:=#0": 1 + e.src.index("=")}
        resid = wte[seq] + wpe[: len(seq)]
        for k, p in where.items():
            resid[p] = ers[k].apply(resid[p][None])[0]
        with torch.no_grad():
            out = hf(inputs_embeds=(resid - wpe[: len(seq)])[None], output_hidden_states=True)
        for k, p in where.items():
            want = out.hidden_states[1][0, p]              # after block 0: resid_post L0
            np.testing.assert_allclose(got[k][i].double().numpy(), want.numpy(), atol=1e-4)
            assert not np.allclose(got[k][i].numpy(), clean[k][i].numpy(), atol=1e-4)
    hf.float()


def test_the_check_gives_no_use_verdict_when_the_next_layer_still_reads_the_target(
        tiny_checkpoints):
    """Planted: whether c < 0 (the sign before c; the layout is the same either way). At
    layer 0's `x` and `=` the embedding does not hold it (LEACE has nothing to remove); one
    block on, attention at `=` has mixed the sign token in, and a fresh probe reads it. The
    check must
    say the erasure failed, give no erasure verdict and run the interchange instead, on
    examples with a same-layout donor whose label differs."""
    import probes

    ckpt = load_checkpoint(tiny_checkpoints["decoder"])
    bridge, task = ckpt.bridge(), ckpt.task
    ex = task.generate(240, seed=7)
    acts = probes.collect(bridge, task, ex, sites=("resid_pre",), positions="x,^,=")
    labels = np.array([float(e.src[e.src.rindex("x") + 1] == "-") for e in ex])
    assert 0.2 < labels.mean() < 0.8
    keys = ["in:x#0", "in:=#0"]
    res = C.erasure_check(bridge, task, acts, labels, "resid_pre", 0, keys, n_controls=2,
                          n_test=60, seed=0)
    p = res.power
    for where in ("erased", "next", "next, clean"):
        assert sorted(p[p["where"] == where].position) == sorted(keys)
    assert set(p[p["where"] == "next"]["at"]) == {"resid_post L0"}
    assert p[p["where"] == "erased"].at_baseline.all()
    nxt = p[p["where"] == "next"]
    assert (nxt.score - nxt.baseline > E.MARGIN).any()
    assert (nxt.at_baseline == (nxt.score - nxt.baseline <= E.MARGIN)).all()
    assert not res.meta["reached"]
    assert set(res.summary.test) == {"interchange"}
    assert res.meta["conclusion"] not in ("used", "not shown to be used")
    assert "erasure failed" in res.meta["note"]
    assert res.meta["rank"] == {k: 1 for k in keys}
    # the interchange ran the test examples that have a same-layout donor with another label
    parts = np.asarray(probes.controls.split_groups(acts.groups, seed=0))
    test = [i for i in range(acts.n) if parts[i] == 2][:60]
    lay = {}
    for i in test:
        lay.setdefault(tuple(ch.isdigit() for ch in ex[i].src), set()).add(labels[i])
    n_with = sum(len(lay[tuple(ch.isdigit() for ch in ex[i].src)]) > 1 for i in test)
    assert res.meta["n"] == n_with and res.meta["dropped"] == len(test) - n_with


def test_the_check_refuses_no_position_and_an_unknown_method(tiny_checkpoints):
    from interp.errors import InterpError

    with pytest.raises(InterpError, match="unknown erasure method 'pca'; choose one of"):
        C.erasure_check(None, None, None, "D_sign", "resid_pre", 0, ["in:=#0"], method="pca")
    with pytest.raises(InterpError, match="no position to erase at"):
        C.erasure_check(None, None, None, "D_sign", "resid_pre", 0, [])
    assert min_controls() == 19
