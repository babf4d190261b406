"""Probes: the batched estimators against scikit-learn cell by cell, planted signal and pure
noise, the split by equation, the control map, and activations collected on tiny models
against HF's own hidden states."""

import numpy as np
import pytest
import torch

import probes
from interp.errors import InterpError
from interp.models import load_checkpoint, load_model
from interp.tasks import get_task
from probes.activations import Activations
from probes.controls import control_labels, split_groups


def synthetic(X: torch.Tensor, groups=None, types=None, present=None) -> Activations:
    """Activations of one site/stack/layer from X [n, P, d] (keys p0, p1 ...)."""
    n, P, d = X.shape
    keys = [f"in:p{j}#0" for j in range(P)]
    present = torch.ones(n, P, dtype=torch.bool) if present is None else present
    ti = torch.where(present, torch.arange(P).expand(n, P), torch.tensor(-1))
    types = (torch.randint(0, 10, (n, P), generator=torch.Generator().manual_seed(n * 31 + P))
             if types is None else types)
    groups = torch.arange(n) if groups is None else groups
    acts = Activations(keys, ["decoder"] * P, ("resid_pre",), {"decoder": [0]}, ("decoder",),
                       present, ti, torch.where(present, types, -1), groups,
                       [f"ex{i}" for i in range(n)], {"decoder": [["t"] * P] * n}, d)
    acts.store = {("resid_pre", "decoder", 0): X * present[..., None]}
    return acts


def sk_features(X, y, part):
    ok = ~np.isnan(y)
    tr = ok & (part == 0)
    mean, std = X[tr].mean(0), X[tr].std(0)
    return (X - mean) / std, tr, ok & (part == 2), mean, std


def test_logistic_probes_match_sklearn_cell_by_cell():
    from sklearn.linear_model import LogisticRegression

    g = torch.Generator().manual_seed(0)
    n, P, d = 1000, 3, 12
    X = torch.randn(n, P, d, generator=g)
    y = (X[:, 0, 0] + 0.7 * X[:, 1, 1] + 0.8 * torch.randn(n, generator=g) > 0).long() + \
        (X[:, 2, 2] > 0.9).long()
    acts = synthetic(X)
    res = probes.fit(acts, y.numpy(), kind="class", alphas=[3.0], control=False)
    part = res.parts.numpy()
    for j, row in enumerate(res.frame().itertuples()):
        Xs, tr, te, mean, std = sk_features(X[:, j].double().numpy(), y.double().numpy(), part)
        m = LogisticRegression(C=1 / 3.0, max_iter=5000, tol=1e-10).fit(Xs[tr], y.numpy()[tr])
        acc = (m.predict(Xs[te]) == y.numpy()[te]).mean()
        assert abs(row.score - acc) <= 0.01, (row.position, row.score, acc)
        W, b = res.weights[("resid_pre", "decoder", 0, row.position)]
        # sklearn's weights in raw space: coef / std, intercept - coef . mean / std
        np.testing.assert_allclose(W.numpy(), m.coef_ / std, atol=2e-3, rtol=1e-2)
        np.testing.assert_allclose(b.numpy(), m.intercept_ - (m.coef_ * mean / std).sum(1),
                                   atol=2e-3)


def test_logistic_probes_fit_the_classes_the_training_rows_hold_as_sklearn_does():
    """Oracle: scikit-learn, which fits a cell over the classes of its training rows: a
    binary model (one weight vector) where they hold two, no logit for a class they lack.
    Cell p0 stands only where the label is 0 or 1 (of 4), cell p1 where it is not 3."""
    from sklearn.linear_model import LogisticRegression

    g = torch.Generator().manual_seed(3)
    n, d, alpha = 900, 10, 2.0
    X = torch.randn(n, 2, d, generator=g)
    y = torch.randint(0, 4, (n,), generator=g)
    X[torch.arange(n), :, y] += 1.2                      # feature k carries class k
    present = torch.stack([y <= 1, y != 3], 1)
    res = probes.fit(synthetic(X, present=present), y.numpy(), kind="class", alphas=[alpha],
                     control=False)
    part = res.parts.numpy()
    for j, row in enumerate(res.frame().itertuples()):
        yj = np.where(present[:, j].numpy(), y.numpy(), np.nan)
        Xs, tr, te, mean, std = sk_features(X[:, j].double().numpy(), yj, part)
        m = LogisticRegression(C=1 / alpha, max_iter=5000, tol=1e-10).fit(Xs[tr], yj[tr])
        assert abs(row.score - (m.predict(Xs[te]) == yj[te]).mean()) <= 0.01
        W, b = res.weights[("resid_pre", "decoder", 0, row.position)]
        held = m.classes_.astype(int)
        assert (b[[k for k in range(4) if k not in held]] < -1e8).all()   # never predicted
        Wr = W[held] - W[held].mean(0)
        if len(held) == 2:       # binary: sklearn's v = our w1 - w0, at the same penalty
            np.testing.assert_allclose((Wr[1] - Wr[0]).numpy(), m.coef_[0] / std, atol=2e-3,
                                       rtol=1e-2)
        else:
            np.testing.assert_allclose(Wr.numpy(), m.coef_ / std, atol=2e-3, rtol=1e-2)
        assert res.direction("resid_pre", 0, row.position).shape == (len(held) - 1, d)


@pytest.mark.parametrize("layout", ["one group", "two groups"])
def test_batched_logistic_fits_every_problem_as_sklearn_fits_it_alone(layout, monkeypatch):
    """Oracle: scikit-learn, one problem at a time. The batch holds 3 cells (their own rows)
    x 4 problems (their own labels and penalties), which finish at different iterations, so
    the batch is laid out again while problems are still running: as one group, or (a group
    costing nothing of its own) cut into groups that go on apart."""
    from sklearn.linear_model import LogisticRegression

    import probes.estimators as E
    from probes.estimators import logistic

    runs, selects = [], []
    run, select = E._run, E._select
    monkeypatch.setattr(E, "_run", lambda st, *a: runs.append(st["theta"].shape) or run(st, *a))
    monkeypatch.setattr(E, "_select", lambda *a: selects.append(a[3]) or select(*a))
    # any saving lays the batch out again: in one group when a group's own cost (1.3e5)
    # exceeds what a second group could save (12 problems x 3 classes x <= 500 rows x 7)
    monkeypatch.setattr(E, "GROUP_COST", 1.3e5 if layout == "one group" else 0.0)
    monkeypatch.setattr(E, "COMPACT", 0.99)
    g = torch.Generator().manual_seed(11)
    C, n, d, K = 3, 500, 6, 3
    alphas = torch.tensor([0.05, 1.0, 20.0, 300.0])
    X = torch.randn(C, n, d, generator=g)
    w = (torch.rand(C, n, generator=g) < torch.tensor([[0.9], [0.7], [0.5]])).float()
    y = torch.stack([torch.stack([torch.bucketize(
        X[c, :, j] + X[c, :, (j + 1) % d] * (a - 1.5) + 0.7 * torch.randn(n, generator=g),
        torch.tensor([-0.6, 0.6])) for a, j in enumerate((0, 2, 4, 1))]) for c in range(C)])
    Xs = (X - (X * w[..., None]).sum(1, keepdim=True) / w.sum(1)[:, None, None])
    W, b = logistic(Xs, y, w, alphas, K)
    for c in range(C):
        rows = w[c] > 0
        for a in range(len(alphas)):
            yc = y[c, a][rows].numpy()
            assert len(np.unique(yc)) == K
            m = LogisticRegression(C=1 / float(alphas[a]), max_iter=10_000, tol=1e-10).fit(
                Xs[c][rows].double().numpy(), yc)
            coef = W[c, a].T.double().numpy()
            np.testing.assert_allclose(coef - coef.mean(0), m.coef_ - m.coef_.mean(0),
                                       atol=2e-3, rtol=1e-2, err_msg=f"cell {c} problem {a}")
            bb = b[c, a].double().numpy()
            np.testing.assert_allclose(bb - bb.mean(), m.intercept_ - m.intercept_.mean(),
                                       atol=2e-3, rtol=1e-2)
    # the layout under test happened: one call laid out again, or groups going on apart
    assert selects and (len(runs) == 1) == (layout == "one group"), (runs, selects)


def test_a_problem_s_iterates_do_not_depend_on_how_the_batch_is_laid_out(monkeypatch):
    """Problems are independent: stopped after 15 iterations (far from converged), each
    problem's weights are the same whether the batch is never laid out again or is cut into
    groups as soon as any problem stops (what a relayout must carry: the L-BFGS pairs, their
    scaling, the curvature, the running probabilities)."""
    import probes.estimators as E

    g = torch.Generator().manual_seed(4)
    C, n, d, K = 4, 400, 8, 4
    alphas = torch.tensor([0.01, 0.3, 10.0, 1000.0])
    X = torch.randn(C, n, d, generator=g)
    w = (torch.rand(C, n, generator=g) < torch.tensor([[0.9], [0.6], [0.8], [0.5]])).float()
    y = (X[..., :K] * torch.randn(C, 1, K, generator=g) + torch.randn(C, n, K, generator=g)
         ).argmax(-1)
    Xs = X - (X * w[..., None]).sum(1, keepdim=True) / w.sum(1)[:, None, None]
    fits = []
    for compact, cost in ((0.0, 1e7), (0.99, 0.0)):
        monkeypatch.setattr(E, "COMPACT", compact)
        monkeypatch.setattr(E, "GROUP_COST", cost)
        W, b = E.logistic(Xs, y, w, alphas, K, max_iter=15, tol=1e-3)
        fits.append(torch.cat([W.flatten(2), b], 2))
    assert not torch.allclose(fits[0], torch.zeros_like(fits[0]))
    torch.testing.assert_close(fits[1], fits[0], rtol=1e-4, atol=1e-4 * fits[0].abs().max())


def test_logistic_follows_large_changes_of_separable_labels_as_sklearn_does():
    """Oracle: scikit-learn (float64, tol 1e-10). Ten classes, each a tight cluster (as a
    layer-0 residual at a digit, where a control label is a function of the token): at a
    weak penalty the weights grow large, and single steps move a row's probabilities from one
    class to another (the line search's large-change path). The optimum is flat (the logits
    of classes far from a row barely matter), so the objectives are compared, and the
    predictions."""
    from sklearn.linear_model import LogisticRegression

    from probes.estimators import logistic

    g = torch.Generator().manual_seed(5)
    n, d, K, alpha = 600, 12, 10, 0.01
    y = torch.arange(n) % K
    X = 3 * torch.randn(K, d, generator=g)[y] + 0.3 * torch.randn(n, d, generator=g)
    Xs = (X - X.mean(0)) / X.std(0, unbiased=False)
    W, b = logistic(Xs[None], y[None], torch.ones(1, n), torch.tensor([alpha]), K)
    m = LogisticRegression(C=1 / alpha, max_iter=100_000, tol=1e-10).fit(
        Xs.double().numpy(), y.numpy())
    Xd = Xs.double().numpy()

    def objective(coef, bias):          # sklearn's: summed cross-entropy + alpha/2 |W|^2
        z = Xd @ coef + bias
        z = z - z.max(1, keepdims=True)
        ce = np.log(np.exp(z).sum(1)) - z[np.arange(n), y.numpy()]
        return ce.sum() + alpha / 2 * (coef ** 2).sum()

    ours = objective(W[0, 0].double().numpy(), b[0, 0].double().numpy())
    best = objective(m.coef_.T, m.intercept_)
    assert np.isfinite(ours) and ours >= best * (1 - 1e-9)
    # within the stopping rule's reach (largest gradient entry 3e-6 of the mean objective):
    # measured 8e-7 per row; a broken large-change step gives nan or stops far off
    assert (ours - best) / n <= 1e-5, (ours, best)
    pred = (Xs @ W[0, 0] + b[0, 0]).argmax(1).numpy()
    assert (pred == m.predict(Xd)).all()


def test_the_line_search_s_change_and_probabilities_match_float64_for_any_move():
    """Oracle: numpy in float64, log sum_k p_k exp(t D_k) and p exp(t D - change). Rows from
    confident to uniform, moves from tiny to past exp's range (as when a separable control
    label's row swaps its class in one step): the full step must flag every row it cannot
    compute exactly, and the recomputation (`_change`) must be right on every row."""
    from probes.estimators import _change, _full_step, _moved

    g = torch.Generator().manual_seed(3)
    R, K, n = 6, 5, 400
    spread = torch.tensor([0.0, 1.0, 5.0, 20.0, 60.0, 90.0])[:, None, None]
    p = torch.softmax(spread * torch.randn(R, K, n, generator=g), 1)
    p[:, :, :20] = 0.0                                     # rows not trained on
    w = (p.sum(1) > 0).float()
    move = torch.tensor([1e-6, 1e-3, 0.3, 5.0, 40.0, 100.0])[torch.randperm(R, generator=g)]
    D = move[:, None, None] * torch.randn(R, K, n, generator=g)
    D[1, 0, 30:40] = 95.0                                  # past exp's range
    P, Dd = p.double().numpy(), D.double().numpy()
    with np.errstate(divide="ignore"):                    # log 0 = -inf: rows not trained on
        lpd = np.log(P) + Dd
        top = lpd.max(1, keepdims=True)
        top[~np.isfinite(top)] = 0.0
        change = (top + np.log(np.exp(lpd - top).sum(1, keepdims=True)))[:, 0]
    change = np.where(w.numpy() > 0, change, 0.0)
    new = np.exp(lpd - change[:, None]) * (w.numpy() > 0)[:, None]
    tol = 1e-5 * (1 + np.abs(change))
    sp, ch, safe = _full_step(D, p)
    fp = _moved(D.clone(), p, sp).double().numpy()
    ok = safe.numpy()
    assert 0.2 < ok.mean() < 1.0                           # both kinds of rows are there
    np.testing.assert_array_less(np.abs(ch.double().numpy() - change)[ok], tol[ok])
    # the probabilities after it, each to float32's relative resolution (not only absolute)
    np.testing.assert_allclose(fp.transpose(0, 2, 1)[ok], new.transpose(0, 2, 1)[ok],
                               rtol=1e-5, atol=1e-36)
    c2, p2 = _change(D, p, w, torch.ones(R))
    np.testing.assert_array_less(np.abs(c2.double().numpy() - change), tol)
    np.testing.assert_allclose(p2.double().numpy(), new, atol=1e-5)
    half = torch.full((R,), 0.5)                           # and at another step length
    c3, _ = _change(D, p, w, half)
    lph = np.log(np.maximum(P, 1e-300)) + 0.5 * Dd
    ref = np.log(np.exp(lph - lph.max(1, keepdims=True)).sum(1)) + lph.max(1)
    ref = np.where(w.numpy() > 0, ref, 0.0)
    np.testing.assert_array_less(np.abs(c3.double().numpy() - ref), 1e-5 * (1 + np.abs(ref)))
    # two full steps: a class falls far, then rises; its small probability must survive the
    # first for the second's change to count it (float64 from the logits: the truth)
    L0 = torch.randn(1, 3, 50, generator=g, dtype=torch.float64)
    L0[0, 2] -= 3.0                      # a minor class: the fall is a safe full step
    fall = torch.zeros(1, 3, 50, dtype=torch.float64)
    fall[0, 2] = -torch.linspace(5, 60, 50, dtype=torch.float64)
    rise = -fall * 1.2
    p0 = torch.softmax(L0, 1).float()
    s1, _, ok1 = _full_step(fall.float(), p0)
    p1 = _moved(fall.float().clone(), p0, s1)
    _, c2, ok2 = _full_step(rise.float(), p1)
    truth = (torch.logsumexp(L0 + fall + rise, 1) - torch.logsumexp(L0 + fall, 1))[0].numpy()
    assert bool(ok1.all())
    got = np.where(ok2[0].numpy(), c2[0].double().numpy(),
                   _change(rise.float(), p1, torch.ones(1, 50), torch.ones(1))[0][0].numpy())
    np.testing.assert_allclose(got, truth, rtol=1e-4, atol=1e-5)


def test_logistic_probes_on_few_rows_reach_sklearn_s_flat_optimum():
    """Oracle: scikit-learn (float64, tol 1e-10) on a cell with fewer training rows than 4 x
    its width and a weak penalty: the labels are nearly separable and the optimum flat; the
    weights must still agree (the first float32 solver stopped short of it: ~1% missed)."""
    from sklearn.linear_model import LogisticRegression

    g = torch.Generator().manual_seed(8)
    n, d, alpha = 200, 40, 0.05
    X = torch.randn(n, 1, d, generator=g)
    y = (X[:, 0, :3] @ torch.tensor([1.0, -1.0, 0.5]) + 0.8 * torch.randn(n, generator=g)
         > 0).long() + (X[:, 0, 3] > 0.5).long()
    res = probes.fit(synthetic(X), y.numpy(), kind="class", alphas=[alpha], control=False)
    part = res.parts.numpy()
    Xs, tr, te, mean, std = sk_features(X[:, 0].double().numpy(), y.double().numpy(), part)
    assert tr.sum() <= 4 * d
    m = LogisticRegression(C=1 / alpha, max_iter=100_000, tol=1e-10).fit(Xs[tr], y.numpy()[tr])
    W, b = res.weights[("resid_pre", "decoder", 0, "in:p0#0")]
    coef = W.numpy() - W.numpy().mean(0)
    np.testing.assert_allclose(coef, m.coef_ / std, rtol=1e-3, atol=1e-3 * np.abs(coef).max())


def test_ridge_probes_match_sklearn_coefficients_and_r2():
    from sklearn.linear_model import Ridge

    g = torch.Generator().manual_seed(1)
    n, P, d = 300, 4, 16
    X = torch.randn(n, P, d, generator=g) * torch.linspace(0.5, 3, d)
    y = X[:, :, :3].sum((1, 2)) + 0.5 * torch.randn(n, generator=g)
    present = torch.rand(n, P, generator=g) > 0.2          # absent rows are left out
    acts = synthetic(X, present=present)
    res = probes.fit(acts, y.numpy(), kind="regression", alphas=[10.0], control=False)
    part = res.parts.numpy()
    for j, row in enumerate(res.frame().itertuples()):
        yj = np.where(present[:, j].numpy(), y.numpy(), np.nan)
        Xs, tr, te, mean, std = sk_features(X[:, j].double().numpy(), yj, part)
        m = Ridge(alpha=10.0).fit(Xs[tr], yj[tr])
        W, b = res.weights[("resid_pre", "decoder", 0, row.position)]
        np.testing.assert_allclose(W[0].numpy(), m.coef_ / std, rtol=1e-6, atol=1e-9)
        assert float(b[0]) == pytest.approx(m.intercept_ - (m.coef_ * mean / std).sum(),
                                            abs=1e-6)
        assert row.n_train == tr.sum() and row.n_test == te.sum()
        r2 = 1 - ((yj[te] - m.predict(Xs[te])) ** 2).sum() / ((yj[te] - yj[te].mean()) ** 2).sum()
        assert row.score == pytest.approx(r2, abs=1e-6)


def test_a_planted_direction_is_read_selectively_and_noise_is_not():
    g = torch.Generator().manual_seed(2)
    n, d = 1500, 24
    y = torch.randint(0, 3, (n,), generator=g)
    X = torch.randn(n, 2, d, generator=g)
    X[:, 0, :3] += 2.5 * torch.nn.functional.one_hot(y, 3)   # position 0 carries y; 1 is noise
    types = torch.randint(0, 10, (n, 2), generator=g)         # seeded: the control task is too
    res = probes.fit(synthetic(X, types=types), y.numpy(), kind="class")
    df = res.frame().set_index("position")
    signal, noise = df.loc["in:p0#0"], df.loc["in:p1#0"]
    assert signal.score > 0.9 and signal.selectivity > 0.45     # control: chance, ~1/3
    assert abs(noise.score - 1 / 3) < 0.07                      # chance with 3 balanced classes
    assert abs(noise.selectivity) < 0.08
    assert res.direction("resid_pre", 0, "in:p0#0").shape == (2, d)


def test_the_split_never_puts_one_equation_in_two_parts():
    groups = torch.tensor([i // 3 for i in range(300)])     # each equation three times
    part = split_groups(groups, (0.6, 0.2, 0.2), seed=5)
    for gid in range(100):
        assert len(set(part[groups == gid].tolist())) == 1
    counts = torch.bincount(part, minlength=3).tolist()
    assert counts == [180, 60, 60]
    assert not torch.equal(part, split_groups(groups, seed=6))
    with pytest.raises(InterpError, match="give at least 10"):
        split_groups(torch.arange(7))
    # ten equations: 6, 2, 2, each part at the minimum of two is enough
    assert torch.bincount(split_groups(torch.arange(10)), minlength=3).tolist() == [6, 2, 2]


def test_the_control_map_is_fixed_per_type_and_changes_with_the_seed():
    g = torch.Generator().manual_seed(3)
    types = torch.randint(0, 6, (500, 2), generator=g)
    labels = torch.randint(0, 4, (500,), generator=g).double().numpy()
    c0 = control_labels(types, ["in:a#0", "in:b#0"], labels, seed=0)
    c1 = control_labels(types, ["in:a#0", "in:b#0"], labels, seed=1)
    for p in range(2):
        for t in range(6):
            assert len(set(c0[types[:, p] == t, p])) == 1     # one label per type
        assert set(c0[:, p]) <= {0, 1, 2, 3}                  # the task's label set
    assert not np.array_equal(c0, c1)


def test_control_labels_keep_the_task_distribution_and_one_map_across_keys():
    """Stratified over every (example, key) occurrence: every label's share of the control
    labels is the task's within the largest type's share (each type takes the label at the
    middle of its share of the sorted labels); one map for every key (Hewitt & Liang: a
    type keeps its label at every occurrence); an example without a label (NaN) or without
    the key (type -1) gets none."""
    g = torch.Generator().manual_seed(4)
    types = torch.randint(0, 6, (600, 3), generator=g)
    labels = torch.randint(0, 3, (600,), generator=g).double().numpy()
    keys = ["in:a#0", "in:b#0", "in:c#0"]
    for seed in range(5):
        c = control_labels(types, keys, labels, seed)
        widest = np.bincount(types.flatten().numpy()).max() / types.numel()
        for k in range(3):
            assert abs((c == k).mean() - (labels == k).mean()) <= widest + 1e-12
    # the same 20 types at two keys: one map, the same labels at both
    same = torch.randint(0, 20, (600, 1), generator=g).repeat(1, 2)
    c = control_labels(same, ["in:a#0", "in:b#0"], labels, seed=0)
    np.testing.assert_array_equal(c[:, 0], c[:, 1])
    missing = labels.copy()
    missing[::7] = np.nan
    absent = types.clone()
    absent[::5, 0] = -1
    c = control_labels(absent, keys, missing, seed=0)
    np.testing.assert_array_equal(np.isnan(c), np.isnan(missing)[:, None] | (absent < 0).numpy())


def test_control_types_are_the_token_and_its_role():
    """Hand-built: twelve sequences `a b =`. The type is (role, token): the role is the key
    without its occurrence, so `in:d#0` and `in:d#1` share types and `7` in role d is one
    type at both; the same token in another role (`in:e#0`) is another type; at `=` every
    example has one type. An absent position stays -1."""
    from probes.positions import control_types

    tokens = [[str(i % 3), str(i % 2), "="] for i in range(12)]
    ti = torch.tensor([[0, 1, 2, 0]] * 12)
    ti[5] = torch.tensor([-1, -1, -1, -1])
    got, table = control_types(tokens, ti, ["in:d#0", "in:d#1", "in:=#0", "in:e#0"])
    assert table == sorted({("in:d", str(i % 3)) for i in range(12)}
                           | {("in:d", str(i % 2)) for i in range(12)}
                           | {("in:=", "="), ("in:e", "0"), ("in:e", "1"), ("in:e", "2")})
    for i in range(12):
        if i == 5:
            assert (got[i] == -1).all()
            continue
        for p, key in enumerate(["in:d", "in:d", "in:=", "in:e"]):
            assert table[int(got[i, p])] == (key, tokens[i][int(ti[i, p])])


def test_a_bare_role_selects_input_positions_and_fields_their_roles():
    """Hand-built keys: `=` names the input `=` only (the solution's is `out:=`), a field
    names its sign and digits, a base names every occurrence."""
    from probes.positions import select

    keys = ["<bos>#0", "in:a_sign#0", "in:a_digit#0", "in:a_digit#1", "in:x#0", "in:=#0",
            "<sep>#0", "out:=#0", "out:x#0"]
    assert select(keys, ["="], True) == {"in:=#0"}
    assert select(keys, "x,<sep>", True) == {"in:x#0", "<sep>#0"}
    assert select(keys, ["out:="], True) == {"out:=#0"}
    assert select(keys, ["a"], True) == {"in:a_sign#0", "in:a_digit#0", "in:a_digit#1"}
    assert select(keys, ["in:a_digit"], True) == {"in:a_digit#0", "in:a_digit#1"}
    assert select(keys, "input", True) == {k for k in keys if k.startswith("in:")}


def test_logistic_penalty_is_chosen_on_validation_and_the_baseline_is_the_train_majority():
    """Oracle: scikit-learn fitted at each penalty on the same standardised train rows; the
    best validation accuracy (ties: lower cross-entropy) wins and is scored on the test rows;
    the baseline predicts the majority class of the train rows."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import log_loss

    g = torch.Generator().manual_seed(6)
    n = 600
    # correlated features: the label reads x1 - x0, which a strong penalty (shrinking towards
    # the difference of the class means, x1 alone) misses
    z = torch.randn(n, 2, generator=g)
    X = torch.cat([z[:, :1], z[:, :1] + 0.3 * z[:, 1:], torch.randn(n, 4, generator=g)], 1)
    y = (z[:, 1] > -0.5).long().numpy()                  # about 70% ones
    alphas = [1e-2, 1.0, 1e4]
    res = probes.fit(synthetic(X[:, None]), y, kind="class", alphas=alphas, control=False)
    row = res.frame().iloc[0]
    part = res.parts.numpy()
    Xs, tr, te, _, _ = sk_features(X.double().numpy(), y.astype(float), part)
    va = part == 1
    fits = [LogisticRegression(C=1 / a, max_iter=5000, tol=1e-10).fit(Xs[tr], y[tr])
            for a in alphas]
    crit = [((m.predict(Xs[va]) == y[va]).mean(),
             -log_loss(y[va], m.predict_proba(Xs[va]), labels=[0, 1])) for m in fits]
    assert len({c[0] for c in crit}) == len(alphas)       # no tie: the accuracy decides
    best = max(range(len(alphas)), key=lambda i: crit[i])
    assert row.alpha == alphas[best]
    assert abs(row.score - (fits[best].predict(Xs[te]) == y[te]).mean()) <= 0.01
    majority = np.bincount(y[tr]).argmax()
    assert row.baseline == pytest.approx((y[te] == majority).mean())
    assert abs(row.baseline - 0.5) > 0.1                  # the minority would differ


def test_ridge_penalty_is_chosen_on_validation_and_the_baseline_is_the_train_mean():
    """Oracle: sklearn's Ridge at each penalty and r2_score: the best validation R^2 wins and
    is scored on the test rows; the baseline is the R^2 of the train rows' mean there."""
    from sklearn.linear_model import Ridge
    from sklearn.metrics import r2_score

    g = torch.Generator().manual_seed(7)
    n, d = 200, 10
    X = torch.randn(n, d, generator=g)
    y = (X @ torch.linspace(-1, 1, d) + 3.0 + 0.3 * torch.randn(n, generator=g)).double().numpy()
    alphas = [1e-2, 10.0, 1e4]
    res = probes.fit(synthetic(X[:, None]), y, kind="regression", alphas=alphas, control=False)
    row = res.frame().iloc[0]
    part = res.parts.numpy()
    Xs, tr, te, _, _ = sk_features(X.double().numpy(), y, part)
    va = part == 1
    fits = [Ridge(alpha=a).fit(Xs[tr], y[tr]) for a in alphas]
    best = int(np.argmax([r2_score(y[va], m.predict(Xs[va])) for m in fits]))
    assert row.alpha == alphas[best]
    assert row.score == pytest.approx(r2_score(y[te], fits[best].predict(Xs[te])), abs=1e-6)
    assert row.baseline == pytest.approx(r2_score(y[te], np.full(te.sum(), y[tr].mean())),
                                         abs=1e-9)


@pytest.fixture(scope="module")
def tiny(tiny_checkpoints):
    task = get_task("quadratic", "small")
    return {arch: load_model(path)[0] for arch, path in tiny_checkpoints.items()}, task


def test_collected_residuals_equal_hf_hidden_states(tiny, tiny_checkpoints):
    bridges, task = tiny
    examples = task.generate(12, seed=0)
    acts = probes.collect(bridges["decoder"], task, examples, sites=("resid_pre", "resid_post"),
                          positions="all", batch_size=5)
    hf = load_checkpoint(tiny_checkpoints["decoder"]).model
    from interp.tokens import build_sides

    side = build_sides("decoder", task, examples)["seq"]
    with torch.no_grad():
        hs = hf(input_ids=side.ids, attention_mask=side.valid.long(),
                output_hidden_states=True).hidden_states
    for i in range(len(examples)):
        for p in range(len(acts.keys)):
            t = int(acts.token_index[i, p])
            if t < 0:
                assert not acts.get("resid_pre", 0)[i, p].any()
                continue
            for layer in (0, 1):
                torch.testing.assert_close(acts.get("resid_pre", layer)[i, p], hs[layer][i, t],
                                           atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(acts.get("resid_post", 0)[i, p], hs[1][i, t],
                                       atol=1e-5, rtol=1e-5)


def test_t5_stacks_read_the_encoder_and_decoder_hidden_states(tiny, tiny_checkpoints):
    bridges, task = tiny
    examples = task.generate(6, seed=1)
    acts = probes.collect(bridges["t5"], task, examples, positions="all")
    assert acts.stacks == ("encoder", "decoder")
    from interp.tokens import build_sides

    sides = build_sides("t5", task, examples)
    hf = load_checkpoint(tiny_checkpoints["t5"]).model
    with torch.no_grad():
        out = hf(input_ids=sides["src"].ids, attention_mask=sides["src"].valid.long(),
                 decoder_input_ids=sides["tgt"].ids, output_hidden_states=True)
    for stack, hs in (("encoder", out.encoder_hidden_states),
                      ("decoder", out.decoder_hidden_states)):
        X = acts.get("resid_pre", 1, stack)
        for p in acts.columns(stack):
            for i in range(len(examples)):
                t = int(acts.token_index[i, p])
                if t >= 0:
                    torch.testing.assert_close(X[i, p], hs[1][i, t], atol=1e-5, rtol=1e-5)


def test_aligned_keys_put_the_named_token_at_each_position(tiny):
    bridges, task = tiny
    examples = task.generate(40, seed=2)
    acts = probes.collect(bridges["decoder"], task, examples, positions="all")
    assert acts.present.any(0).all()
    for i, ex in enumerate(examples):
        src_roles, _ = task.roles(ex.src)
        toks = acts.tokens["decoder"][i]
        for p, key in enumerate(acts.keys):
            t = int(acts.token_index[i, p])
            if t < 0:
                continue
            base = key.rsplit("#", 1)[0]
            if base.startswith("in:"):
                assert src_roles[t - 1] == base[3:]          # position 0 is <bos>
            elif base.startswith("out:"):
                assert toks[t] == base[4:] and t > len(ex.src) + 1
            else:
                assert toks[t] == base
    # the k-th occurrence: `in:x#1` is the second x of the equation
    p = acts.position_index("in:x#1")
    i = 0
    assert [j for j, r in enumerate(task.roles(examples[i].src)[0]) if r == "x"][1] + 1 == \
        acts.token_index[i, p]


def test_activations_streamed_to_disk_read_back_equal_and_memory_mapped(tiny, tmp_path):
    from safetensors.torch import load_file

    bridges, task = tiny
    examples = task.generate(30, seed=3)
    mem = probes.collect(bridges["t5"], task, examples, sites=("attn_out", "mlp_out"),
                         positions=["x", "^", "=", "out:=#0"], batch_size=7)
    disk = probes.collect(bridges["t5"], task, examples, sites=("attn_out", "mlp_out"),
                          positions=["x", "^", "=", "out:=#0"], batch_size=7,
                          folder=tmp_path / "acts")
    assert disk.keys == mem.keys and torch.equal(disk.token_index, mem.token_index)
    assert torch.equal(disk.types, mem.types)
    for cell, X in mem.store.items():
        assert torch.equal(disk.store[cell], X)
        f = tmp_path / "acts" / f"{cell[0]}.{cell[1]}.{cell[2]}.safetensors"
        assert torch.equal(load_file(str(f))["acts"], X)      # a valid safetensors file
    again = probes.load(tmp_path / "acts", task)
    assert torch.equal(again.get("mlp_out", 1, "encoder"), mem.get("mlp_out", 1, "encoder"))


def test_probe_errors_are_one_line_and_say_what_is_valid(tiny):
    bridges, task = tiny
    examples = task.generate(20, seed=4)
    acts = probes.collect(bridges["decoder"], task, examples, positions=["x", "="])
    with pytest.raises(InterpError, match="unknown target 'E'.*D_sign"):
        probes.fit(acts, "E")
    with pytest.raises(InterpError, match="no position has the role 'y'.*a_digit"):
        probes.collect(bridges["decoder"], task, examples, positions=["y"])
    with pytest.raises(InterpError, match="too few for the split.*give at least 10"):
        probes.fit(probes.collect(bridges["decoder"], task, examples[:6], positions=["x"]),
                   "D_sign")
    with pytest.raises(InterpError, match="constant"):
        probes.fit(acts, np.ones(len(examples)))
    with pytest.raises(InterpError, match="unknown site 'resid'.*resid_pre"):
        probes.collect(bridges["decoder"], task, examples, sites=("resid",))


def test_user_labels_on_raw_text_of_an_hf_bert_and_escaped_figure_labels(tiny_bert_dir):
    bridge, task = load_model(tiny_bert_dir)
    texts = ["".join("abcdefghij"[int(c)] for c in str(100 + i)) for i in range(60)]
    acts = probes.collect(bridge, task, texts, sites=("resid_post",), positions="all")
    assert acts.stacks == ("encoder",) and "in:[CLS]#0" in acts.keys
    labels = np.array([i % 2 for i in range(60)])              # the last letter's parity
    res = probes.fit(acts, labels)
    row = res.frame().query("position == 'in:[CLS]#0' and layer == 1").iloc[0]
    assert row.kind == "class" and row.metric == "accuracy"
    fig = res.figure("selectivity")
    assert "in:[CLS]#0" in list(fig.data[0].x)


def test_figure_labels_are_escaped_for_plotly(tiny):
    bridges, task = tiny
    res = probes.probe(bridges["decoder"], task, task.generate(40, seed=5), "D_sign",
                       positions=["<sep>", "="])
    labels = list(res.figure("score").data[0].x)
    assert "&lt;sep&gt;#0" in labels and not any("<" in x for x in labels)
