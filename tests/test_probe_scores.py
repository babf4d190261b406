"""Probe scores without artifacts (issue #22): the control task by token and role, the
positional baseline, within-class metrics, coinciding targets, distinct equations and the
equation bootstrap. Oracles: scikit-learn on the same features, the HF model's own embedding
matrices, numpy by hand, sets of the inputs, and brute-force resampling."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

import probes
from circuits.stats import bootstrap_ci
from interp.models import load_checkpoint, load_model
from interp.tasks import get_task
from interp.tasks.base import Example
from probes.activations import Activations, control_types_all
from probes.controls import control_labels, split_groups
from probes.fitting import LOGISTIC_ALPHAS, RIDGE_ALPHAS
from probes.scores import coincide, coinciding, r2_interval


def sk_score(X, y, part, kind, alphas):
    """scikit-learn: standardise on train, fit each penalty, pick on validation (accuracy,
    ties to the lower log-loss; R^2), score on test. X [n, d] float64; y [n], NaN missing."""
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.metrics import log_loss, r2_score

    ok = ~np.isnan(y)
    tr, va, te = (ok & (part == j) for j in range(3))
    mean, std = X[tr].mean(0), X[tr].std(0)
    std[std <= 1e-6 * (1 + np.abs(mean))] = 1.0
    Xs = (X - mean) / std
    if kind == "class" and len(np.unique(y[tr])) < 2:
        return float((y[te] == y[tr][0]).mean())
    best = None
    for a in alphas:
        if kind == "regression":
            m = Ridge(alpha=a).fit(Xs[tr], y[tr])
            crit = (r2_score(y[va], m.predict(Xs[va])), 0.0)
        else:
            m = LogisticRegression(C=1.0 / a, max_iter=10_000, tol=1e-8).fit(Xs[tr],
                                                                             y[tr].astype(int))
            p = m.predict_proba(Xs[va])
            crit = (float((m.classes_[p.argmax(1)] == y[va]).mean()),
                    -log_loss(y[va].astype(int), p, labels=m.classes_))
        if best is None or crit > best[0]:
            best = (crit, m)
    m = best[1]
    if kind == "regression":
        return float(r2_score(y[te], m.predict(Xs[te])))
    return float((m.predict(Xs[te]) == y[te]).mean())


def built(X, tokens, keys, examples=None, groups=None) -> Activations:
    """Activations of one layer from X [n, P, d] whose key p stands at token p of `tokens`
    (per example), with the control types computed from those tokens."""
    n, P, d = X.shape
    ti = torch.arange(P).expand(n, P).clone()
    examples = examples if examples is not None else [f"ex{i}" for i in range(n)]
    groups = torch.arange(n) if groups is None else groups
    acts = Activations(keys, ["decoder"] * P, ("resid_pre",), {"decoder": [0]}, ("decoder",),
                       ti >= 0, ti, torch.zeros(0), groups, examples, {"decoder": tokens}, d)
    acts.types = control_types_all(acts)
    acts.store = {("resid_pre", "decoder", 0): X}
    return acts


# ------------------------------------------------------------------ the control task


def test_one_token_in_one_role_has_one_control_label_at_every_occurrence(tiny):
    """Real sequences of the quadratic task: wherever a (role, token) pair occurs, at any
    key, its control label is the same; the control labels keep the target's distribution
    over all occurrences within the largest type's share."""
    bridges, task = tiny
    examples = task.generate(80, seed=3, unique=True)
    acts = probes.collect(bridges["decoder"], task, examples, positions="input")
    y = np.array([task.probe_targets(ex)["D_sign"] for ex in examples], dtype=float) + 1
    ctrl = control_labels(acts.types, acts.keys, y, seed=2)
    seen: dict = {}
    toks = acts.tokens["decoder"]
    for i in range(acts.n):
        for p, key in enumerate(acts.keys):
            t = int(acts.token_index[i, p])
            if t < 0:
                continue
            ident = (key.rsplit("#", 1)[0], toks[i][t])       # the role and the token, by hand
            assert seen.setdefault(ident, ctrl[i, p]) == ctrl[i, p], ident
    assert any(k[0] == "in:a_digit" for k in seen)            # digits of a at several keys
    occ = ~np.isnan(ctrl)
    counts = np.bincount(acts.types[occ.nonzero()].numpy())
    pooled = np.broadcast_to(y[:, None], ctrl.shape)[occ]
    for k in np.unique(y):
        assert abs((ctrl[occ] == k).mean() - (pooled == k).mean()) <= counts.max() / occ.sum()


def test_control_labels_follow_the_labels_of_every_occurrence():
    """A key present only where the label is 2 (as `in:a_sign#0` only where a < 0) doubles
    label 2's occurrences: the control labels, over all occurrences, follow that pooled
    distribution (label 2: 1/2), not the examples' (1/3), within the widest type's share."""
    g = np.random.default_rng(7)
    n = 600
    labels = np.repeat([0.0, 1.0, 2.0], n // 3)
    types = torch.tensor(g.integers(0, 40, (n, 2)))
    types[:, 1] += 40
    types[labels != 2, 1] = -1
    for seed in range(3):
        c = control_labels(types, ["in:u#0", "in:v#0"], labels, seed)
        occ = ~np.isnan(c)
        pooled = np.broadcast_to(labels[:, None], c.shape)[occ]
        assert (pooled == 2).mean() == pytest.approx(0.5)
        widest = np.bincount(types[types >= 0].numpy()).max() / occ.sum()
        assert abs((c[occ] == 2).mean() - 0.5) <= widest + 1e-12


def test_selectivity_of_a_planted_signal_is_the_same_whatever_the_context():
    """Two positions generated alike (token from 6 values, features = its embedding + the
    label's direction + noise), one after a context that varies (all distinct prefixes) and
    one after a constant context. The control task by token and role gives both the same
    kind of control, so their selectivities agree (a window of preceding tokens would make
    the first position's type the whole prefix). Each cell's score and control equal
    scikit-learn's on the same features and labels; the control is floored at its majority
    baseline; the constant position `=` has no control."""
    g = np.random.default_rng(0)
    ALPHA = 0.01                       # weak: a probe on noise overfits its random labels
    n, d = 600, 16
    y = g.integers(0, 2, n).astype(float)
    E = g.normal(size=(6, d))
    direction = g.normal(size=d)
    tok = g.integers(0, 6, (n, 2))
    X = np.zeros((n, 4, d))
    for p in (1, 3):
        X[:, p] = E[tok[:, p // 2]] + 0.6 * np.outer(2 * y - 1, direction) \
            + g.normal(size=(n, d))
    X[:, 0] = g.normal(size=(n, d))
    X[:, 2] = g.normal(size=(n, d))
    tokens = [[f"c{i}", str(tok[i, 0]), "=", str(tok[i, 1])] for i in range(n)]
    acts = built(torch.tensor(X, dtype=torch.float32), tokens,
                 ["in:ctx#0", "in:d#0", "in:=#0", "in:e#0"])
    res = probes.fit(acts, y, kind="class", seed=1, alphas=[ALPHA], positional=False)
    f = res.frame().set_index("position")
    part = res.parts.numpy()
    ctrl = control_labels(acts.types, acts.keys, y, seed=1)
    for p, key in ((1, "in:d#0"), (3, "in:e#0")):
        Xp = acts.store[("resid_pre", "decoder", 0)][:, p].double().numpy()
        s = sk_score(Xp, y, part, "class", [ALPHA])
        c = sk_score(Xp, ctrl[:, p], part, "class", [ALPHA])
        train = ctrl[part == 0, p]
        major = np.bincount(train.astype(int)).argmax()
        floor = float((ctrl[part == 2, p] == major).mean())
        assert f.loc[key, "score"] == pytest.approx(s, abs=0.01)
        assert f.loc[key, "control"] == pytest.approx(max(c, floor), abs=0.01)
        assert f.loc[key, "selectivity"] == pytest.approx(s - max(c, floor), abs=0.02)
    assert abs(f.loc["in:d#0", "selectivity"] - f.loc["in:e#0", "selectivity"]) < 0.1
    assert np.isnan(f.loc["in:=#0", "control"]) and np.isnan(f.loc["in:=#0", "selectivity"])
    # the varying context: 600 types, a label each, none seen in training, noise features:
    # scikit-learn's control falls below the control's majority baseline; ours is floored
    X0 = acts.store[("resid_pre", "decoder", 0)][:, 0].double().numpy()
    c = sk_score(X0, ctrl[:, 0], part, "class", [ALPHA])
    major = np.bincount(ctrl[part == 0, 0].astype(int)).argmax()
    floor = float((ctrl[part == 2, 0] == major).mean())
    assert c < floor - 0.02
    assert f.loc["in:ctx#0", "control"] == pytest.approx(floor)
    assert res.raw_control[("resid_pre", "decoder", 0, "in:ctx#0")] == pytest.approx(c, abs=0.01)


# ------------------------------------------------------------------ the positional baseline


def test_the_positional_baseline_is_sklearn_on_the_hf_embeddings(tiny, tiny_checkpoints):
    """Oracle: the HF GPT-2's own wte + wpe at each key's token and index (ids from the
    task's codec), a scikit-learn probe on them with the same split and penalties. At layer
    0 of a decoder, resid_pre is that same sum: the probe there scores as the baseline."""
    from interp.tokens import build_sides

    bridges, task = tiny
    examples = task.generate(200, seed=5, unique=True)
    acts = probes.collect(bridges["decoder"], task, examples, positions="x,^,=,a_digit",
                          layers=[0, 1])
    res = probes.fit(acts, "D_value", seed=0)
    f = res.frame()
    hf = load_checkpoint(tiny_checkpoints["decoder"]).model
    wte = hf.transformer.wte.weight.detach().double().numpy()
    wpe = hf.transformer.wpe.weight.detach().double().numpy()
    ids = build_sides("decoder", task, examples)["seq"].ids.numpy()
    y = np.array([task.probe_targets(ex)["D_value"] for ex in examples], dtype=float)
    part = res.parts.numpy()
    checked = 0
    for p, key in enumerate(acts.keys):
        ti = acts.token_index[:, p].numpy()
        has = ti >= 0
        feats = np.zeros((acts.n, wte.shape[1]))
        feats[has] = wte[ids[has, ti[has]]] + wpe[ti[has]]
        want = sk_score(feats, np.where(has, y, np.nan), part, "regression", RIDGE_ALPHAS)
        rows = f[f.position == key]
        assert np.allclose(rows.positional, want, atol=1e-6), key
        l0 = rows[rows.layer == 0].iloc[0]
        assert l0.score == pytest.approx(l0.positional, abs=1e-6)
        checked += 1
    assert checked == len(acts.keys) >= 4


def test_t5_s_positional_baseline_is_the_token_embedding_alone(tiny, tiny_checkpoints):
    bridges, task = tiny
    examples = task.generate(150, seed=6, unique=True)
    acts = probes.collect(bridges["t5"], task, examples, positions="x,=,b", layers=[0])
    hf = load_checkpoint(tiny_checkpoints["t5"]).model
    shared = hf.shared.weight.detach().double().numpy()
    from interp.tokens import build_sides

    ids = build_sides("t5", task, examples)["src"].ids.numpy()
    res = probes.fit(acts, "D_sign", seed=0)
    f = res.frame()
    y = np.array([task.probe_targets(ex)["D_sign"] for ex in examples], dtype=float)
    y = np.searchsorted(np.unique(y), y).astype(float)
    part = res.parts.numpy()
    for p in acts.columns("encoder"):
        key = acts.keys[p]
        ti = acts.token_index[:, p].numpy()
        has = ti >= 0
        feats = np.zeros((acts.n, shared.shape[1]))
        feats[has] = shared[ids[has, ti[has]]]
        want = sk_score(feats, np.where(has, y, np.nan), part, "class", LOGISTIC_ALPHAS)
        got = f[f.position == key].positional.iloc[0]
        assert got == pytest.approx(want, abs=0.01), key


# ------------------------------------------------------------------ within-class metrics


def test_within_class_and_class_mean_r2_against_numpy():
    """A target = class offset + a small planted signal: the class-mean oracle's R^2 is the
    R^2 of each test row's class training mean (numpy by hand), the within-class R^2 is the
    probe's residual against the class means of the test rows (pooled and per class). A
    target that is a function of the class alone is flagged as class-explained."""
    from interp.viz.reports.probe import with_flags

    g = np.random.default_rng(1)
    n, d = 900, 8
    cls = np.array(["two", "one", "none"])[g.integers(0, 3, n)]
    offset = {"two": 3.0, "one": 0.0, "none": -3.0}
    X = g.normal(size=(n, 2, d))
    X[:, :, 0] = np.array([offset[c] for c in cls])[:, None] + 0.05 * X[:, :, 0]
    signal = X[:, 0, 1]
    for planted, expect_flag in ((0.5, False), (0.0, True)):
        y = np.array([offset[c] for c in cls]) + planted * signal + 0.3 * g.normal(size=n)
        if planted == 0.0:
            y = np.array([offset[c] for c in cls])       # the class alone
        exs = [Example(f"e{i}", "", c) for i, c in enumerate(cls)]
        acts = built(torch.tensor(X, dtype=torch.float32), [["u", "v"]] * n,
                     ["in:u#0", "in:v#0"], examples=exs)
        res = probes.fit(acts, y, kind="regression", seed=0, positional=False)
        f = with_flags(res.frame())
        part = res.parts.numpy()
        tr, te = part == 0, part == 2
        for c, key in enumerate(acts.keys):
            W, b = res.weights[("resid_pre", "decoder", 0, key)]
            pred = (torch.tensor(X[:, c]) @ W.T + b)[:, 0].numpy()
            yt, pt, ct = y[te], pred[te], cls[te]
            means = {k: y[tr & (cls == k)].mean() for k in offset}
            oracle = np.array([means[k] for k in ct])
            want_class = 1 - ((yt - oracle) ** 2).sum() / ((yt - yt.mean()) ** 2).sum()
            res_ss = within_ss = 0.0
            for k in offset:
                m = ct == k
                res_ss += ((yt[m] - pt[m]) ** 2).sum()
                within_ss += ((yt[m] - yt[m].mean()) ** 2).sum()
            row = f.iloc[c]
            assert row.class_r2 == pytest.approx(want_class, rel=1e-9)
            if planted == 0.0:                  # no variance within a class: undefined
                assert np.isnan(row.within_r2) or row.within_r2 < 0.05
                assert row.class_r2 == pytest.approx(1.0)
                continue
            assert row.within_r2 == pytest.approx(1 - res_ss / within_ss, rel=1e-6)
            by = dict(kv.split(":") for kv in row.within_r2_by_class.split())
            m = ct == "two"
            want_two = 1 - ((yt[m] - pt[m]) ** 2).sum() / ((yt[m] - yt[m].mean()) ** 2).sum()
            assert float(by["two"]) == pytest.approx(want_two, abs=1e-4)
        if planted:
            assert not f.class_only.iloc[0] and f.within_r2.iloc[0] > 0.3   # reads the signal
            assert f.class_only.iloc[1]              # position v: noise plus the class
        else:
            assert f.class_only.all() or f.within_r2.isna().all()


def test_a_target_of_the_class_alone_is_flagged_when_rows_vary_within_classes():
    """y = class offset + noise unrelated to the features: the probe's R^2 is high (the
    class is readable) but its within-class R^2 is <= 0.05, and the row says so."""
    from interp.viz.reports.probe import format_table, with_flags

    g = np.random.default_rng(2)
    n, d = 900, 8
    cls = np.array(["a", "b", "c"])[g.integers(0, 3, n)]
    off = {"a": 4.0, "b": 0.0, "c": -4.0}
    X = g.normal(size=(n, 1, d))
    X[:, 0, 0] += np.array([off[c] for c in cls])
    y = np.array([off[c] for c in cls]) + g.normal(size=n)
    exs = [Example(f"e{i}", "", c) for i, c in enumerate(cls)]
    acts = built(torch.tensor(X, dtype=torch.float32), [["u"]] * n, ["in:u#0"], examples=exs)
    res = probes.fit(acts, y, kind="regression", seed=0, positional=False)
    f = with_flags(res.frame())
    assert f.score.iloc[0] > 0.8 and f.within_r2.iloc[0] < 0.05 and f.class_only.iloc[0]
    assert f.class_r2.iloc[0] >= f.score.iloc[0] - 0.02
    text = format_table(res.frame(), None, "t")
    assert "c: explained by the class" in text


# ------------------------------------------------------------------ coinciding targets


def test_d_sign_and_class_coincide_on_real_examples_and_independent_targets_do_not():
    task = get_task("quadratic", "small")
    examples = task.generate(300, seed=4, unique=True)
    sign = [task.probe_targets(ex)["D_sign"] for ex in examples]
    cls = [task.probe_targets(ex)["class"] for ex in examples]
    # by hand: D > 0 two roots, D = 0 one, D < 0 none; the pairs seen form a bijection
    assert len(set(zip(sign, cls))) == len(set(sign)) == len(set(cls)) == 3
    assert coincide(sign, cls)
    assert coinciding(task, examples, ["D_sign", "D_value", "class", "a_digit_0"]) == {
        "class": "D_sign"}
    g = np.random.default_rng(0)
    a, b = g.integers(0, 3, 500), g.integers(0, 3, 500)
    assert not coincide(a, b)
    assert coincide(a, (a + 1) % 3) and not coincide(a, a % 2)
    a_missing = a.astype(float)
    a_missing[::5] = np.nan
    assert not coincide(a_missing, a.astype(float))     # missing on other examples


# ------------------------------------------------------------------ distinct equations


def test_distinct_test_equations_and_the_equation_bootstrap_in_the_probe_output():
    """Rows repeat equations (each equation 1-8 times): n_eq_test is the size of the set of
    the test rows' inputs; the accuracy interval is circuits.stats.bootstrap_ci of the test
    rows' correctness grouped by equation (wider than the row bootstrap); the R^2 interval
    equals a brute-force cluster bootstrap of R^2 (numpy)."""
    g = np.random.default_rng(3)
    reps = g.integers(1, 9, 150)
    groups = np.repeat(np.arange(150), reps)
    n, d = len(groups), 6
    base = g.normal(size=(150, d))
    X = base[groups][:, None, :] + 0.01 * g.normal(size=(n, 1, d))
    yv = base[:, 0] + 0.8 * g.normal(size=150)
    srcs = [f"{k}x^2=0" for k in groups]
    acts = built(torch.tensor(X, dtype=torch.float32), [["u"]] * n, ["in:u#0"],
                 examples=srcs, groups=torch.tensor(groups))
    yc = (yv > 0).astype(float)[groups]
    res = probes.fit(acts, yc, kind="class", seed=0, positional=False)
    row = res.frame().iloc[0]
    part = res.parts.numpy()
    test = part == 2
    assert row.n_eq_test == len({srcs[i] for i in np.nonzero(test)[0]}) < row.n_test
    W, b = res.weights[("resid_pre", "decoder", 0, "in:u#0")]
    correct = ((torch.tensor(X[:, 0]).double() @ W.T + b).argmax(-1).numpy() == yc)[test]
    assert correct.mean() == pytest.approx(row.score)
    lo, hi = bootstrap_ci(correct, n_boot=1000, seed=0, groups=groups[test])
    assert (row.score_lo, row.score_hi) == pytest.approx((lo, hi))
    rlo, rhi = bootstrap_ci(correct, n_boot=1000, seed=0)
    assert hi - lo > rhi - rlo
    # regression: the cluster bootstrap of R^2 against brute force
    yr = yv[groups]
    res = probes.fit(acts, yr, kind="regression", seed=0, positional=False)
    row = res.frame().iloc[0]
    W, b = res.weights[("resid_pre", "decoder", 0, "in:u#0")]
    pred = (torch.tensor(X[:, 0]).double() @ W.T + b)[:, 0].numpy()[test]
    yt, gt = yr[test], groups[test]
    uniq = np.unique(gt)
    codes = {u: j for j, u in enumerate(pd.factorize(pd.Series(gt.astype(str)))[1])}
    rng = np.random.default_rng(0)
    pick = rng.integers(0, len(uniq), size=(1000, len(uniq)))
    order = list(codes)
    r2s = []
    for draw in pick:
        rows = np.concatenate([np.nonzero(gt.astype(str) == order[j])[0] for j in draw])
        yy, pp = yt[rows], pred[rows]
        r2s.append(1 - ((yy - pp) ** 2).sum() / ((yy - yy.mean()) ** 2).sum())
    want = np.quantile(r2s, [0.025, 0.975])
    assert (row.score_lo, row.score_hi) == pytest.approx(tuple(want), abs=1e-6)
    assert r2_interval(yt, pred, gt, n_boot=1000, seed=0) == pytest.approx(tuple(want),
                                                                          abs=1e-6)


def test_the_command_probes_distinct_equations_and_names_coinciding_targets(tiny_checkpoints,
                                                                           tmp_path, capsys):
    from probes import __main__ as cli

    out = tmp_path / "out"
    assert cli.main([str(tiny_checkpoints["decoder"]), "--target", "D_sign,D_value,class",
                     "--n", "120", "--positions", "x,=,c", "--layers", "1", "--out", str(out),
                     "--quiet"]) == 0
    printed = capsys.readouterr().out
    data = json.loads((out / "probes.json").read_text())
    task = get_task("quadratic", "small")
    examples = task.generate(120, seed=12345, unique=True)       # the command's draw
    assert data["meta"]["distinct_equations"] == len({ex.src for ex in examples}) == 120
    assert data["meta"]["coincide"] == {"class": "D_sign"}
    assert "class coincides with D_sign" in printed and "120 distinct equations" in printed
    frame = pd.read_csv(out / "probes.csv")
    assert set(frame.target) == {"D_sign", "D_value"}
    part = split_groups(torch.arange(120), seed=0).numpy()
    assert (frame.n_eq_test <= int((part == 2).sum())).all()
    assert frame.n_eq_test.equals(frame.n_test)       # distinct equations: one row each
    reg = frame[frame.target == "D_value"]
    several = reg.within_r2_by_class.str.count(":") >= 2     # test rows of two classes or more
    assert several.sum() >= 4 and reg[several].class_r2.notna().all()
    assert reg.positional.notna().sum() >= len(reg) - 1 and reg[several].positional.notna().all()
    ok = frame.dropna(subset=["score"])
    assert len(ok) >= len(frame) - 1
    assert ((ok.score_lo <= ok.score + 1e-12) & (ok.score <= ok.score_hi + 1e-12)).all()
    html = (out / "report.html").read_text()
    assert "coincides with D_sign" in html and "positional" in html
    # held out: 18 one-root equations of the 21 there; drawn with replacement they repeat
    js = tmp_path / "h.json"
    assert cli.main([str(tiny_checkpoints["decoder"]), "--target", "D_sign", "--n", "60",
                     "--heldout", "--positions", "=", "--layers", "0", "--json", str(js),
                     "--quiet"]) == 0
    meta = json.loads(js.read_text())["meta"]
    assert meta["heldout"] and meta["distinct_equations"] == 60
    drawn = task.generate(60, seed=12345, heldout=True)            # with replacement
    assert len({ex.src for ex in drawn}) < 60


@pytest.fixture(scope="module")
def tiny(tiny_checkpoints):
    task = get_task("quadratic", "small")
    return {arch: load_model(path)[0] for arch, path in tiny_checkpoints.items()}, task
