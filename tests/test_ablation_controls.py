"""Token ablation's controls (#22) against oracles that do not use the code under test: the
task's own `roles()` read character by character, sign patterns enumerated with itertools,
and planted models whose answer depends on known positions only (the ablation is applied by
the code under test to a synthetic residual; what the model does with it is written here)."""

import itertools
import math

import numpy as np
import pytest
import torch

from circuits import ablation as A
from circuits.ablation.experiment import sign_flip_p
from circuits.ablation.positions import donor_indices, role_masks, role_sets
from interp.models import load_checkpoint
from interp.tasks.tokenizer import CharCodec
from interp.viz.reports.ablate import format_summary, to_json, controls_frame

TOKENS = ["x", "^", "="]


@pytest.fixture(scope="module")
def decoder(tiny_checkpoints):
    ckpt = load_checkpoint(tiny_checkpoints["decoder"])
    return ckpt, ckpt.bridge()


@pytest.fixture(scope="module")
def t5(tiny_checkpoints):
    ckpt = load_checkpoint(tiny_checkpoints["t5"])
    return ckpt, ckpt.bridge()


def unique_examples(task, n=40, seed=3):
    return task.generate(n, seed=seed, unique=True)


def src_offset(prep):
    """Where src character 0 sits on the main side: after <bos> for a decoder."""
    return 1 if prep.arch == "decoder" else 0


# ---------------------------------------------------------------- same-layout donors
@pytest.mark.parametrize("which", ["decoder", "t5"])
def test_layout_donors_have_the_examples_roles_position_by_position(which, decoder, t5):
    ckpt, bridge = decoder if which == "decoder" else t5
    task = ckpt.task
    ex = unique_examples(task)
    prep = A.prepare(bridge, task, ex)
    donor = donor_indices(prep, seed=0, donors="layout")
    roles = [task.roles(e.src)[0] for e in ex]              # the oracle: the task itself
    shares = [sum(r == q for q in roles) for r in roles]    # examples of each one's layout
    assert any(s == 1 for s in shares) and any(s > 2 for s in shares)   # both cases occur
    for i, d in enumerate(donor):
        if shares[i] == 1:
            assert d == -1, ex[i].src                       # alone: no donor, never another
            continue
        assert d != i and roles[d] == roles[i], (ex[i].src, ex[d].src)
    # a derangement within each layout: every example of a group donates exactly once
    used = [d for d in donor if d >= 0]
    assert len(used) == len(set(used))
    # the old rule stays reachable, and it does take donors of other layouts
    anyd = donor_indices(prep, seed=0, donors="any")
    assert np.array_equal(anyd, A.derangement(len(ex), 0))
    assert any(roles[int(anyd[i])] != roles[i] for i in range(len(ex)))


def test_layout_resample_writes_the_donors_value_at_the_same_position(decoder):
    ckpt, bridge = decoder
    task = ckpt.task
    ex = [e for e in unique_examples(task, 60, seed=5)]
    roles = [task.roles(e.src)[0] for e in ex]
    ex = [e for e, r in zip(ex, roles) if roles.count(r) > 1]      # every one has a donor
    prep = A.prepare(bridge, task, ex)
    W = prep.sides["seq"].ids.shape[1]
    resid = {"seq": torch.randn(2, len(ex), W, 3, generator=torch.Generator().manual_seed(1))}
    values, _ = A.replacement_values(prep, resid, "resample", seed=4, donors="layout")
    donor = donor_indices(prep, seed=4, donors="layout")
    for i, e in enumerate(ex):
        d = int(donor[i])
        assert ex[d].src != e.src and len(ex[d].src) == len(e.src)
        for j in range(len(e.src)):                         # src char j sits at 1 + j
            assert torch.equal(values["seq"][:, i, 1 + j], resid["seq"][:, d, 1 + j])
    # the default of replacement_values is still the old rule (other callers keep it)
    old, _ = A.replacement_values(prep, resid, "resample", seed=4)
    anyd = A.derangement(len(ex), 4)
    i = next(i for i in range(len(ex)) if roles[anyd[i]] != roles[i])
    j = next(j for j, ch in enumerate(ex[i].src) if ch == "=")
    key = prep.keys["seq"][i][1 + j]
    p = prep.keys["seq"][anyd[i]].index(key)          # "=" of the other layout: elsewhere
    assert p != 1 + j and torch.equal(old["seq"][:, i, 1 + j], resid["seq"][:, anyd[i], p])


def test_ablate_tokens_leaves_out_and_counts_examples_without_a_layout_donor(decoder):
    ckpt, bridge = decoder
    task = ckpt.task
    ex = unique_examples(task, 30, seed=7)
    roles = [tuple(task.roles(e.src)[0]) for e in ex]
    alone = [e.src for e, r in zip(ex, roles) if roles.count(r) == 1]
    assert alone
    res = A.ablate_tokens(bridge, task, ex, TOKENS, mode="resample", n_controls=2,
                          sweep=False, decode=False)
    assert res.meta["no_donor"] == len(alone) and res.meta["n"] == len(ex) - len(alone)
    assert sorted(res.meta["no_donor_examples"]) == sorted(alone)
    assert set(res.per_example.src) == {e.src for e in ex} - set(alone)
    assert res.meta["distinct"] == res.meta["n"] and res.meta["donors"] == "layout"
    old = A.ablate_tokens(bridge, task, ex, TOKENS, mode="resample", n_controls=2,
                          sweep=False, decode=False, donors="any")
    assert old.meta["no_donor"] == 0 and old.meta["n"] == len(ex)


# ---------------------------------------------------------------- role-matched controls
@pytest.mark.parametrize("which,scope", [("decoder", "input"), ("decoder", "all"),
                                         ("t5", "input")])
def test_role_matched_controls_are_structural_non_targets_of_the_targets_size(which, scope,
                                                                              decoder, t5):
    ckpt, bridge = decoder if which == "decoder" else t5
    task = ckpt.task
    ex = unique_examples(task, 24, seed=11)
    prep = A.prepare(bridge, task, ex)
    targets = A.target_masks(prep, A.token_ids(bridge, TOKENS), scope)
    sets = role_masks(prep, targets, 6, seed=2, scope=scope)
    side = prep.main_side
    off = src_offset(prep)
    for i, e in enumerate(ex):
        src_roles, tgt_roles = task.roles(e.src)
        # the oracle, character by character: structural = a role that is no number digit
        allowed = {off + j for j, (ch, r) in enumerate(zip(e.src, src_roles))
                   if not r.endswith("_digit") and ch not in TOKENS}
        n_target = sum(ch in TOKENS for ch in e.src)
        if scope == "all":
            start = len(e.src) + 2                      # <bos> src <sep> tgt
            allowed |= {start + j for j, (ch, r) in enumerate(zip(e.tgt, tgt_roles))
                        if not r.endswith("_digit") and ch not in TOKENS}
            n_target += sum(ch in TOKENS for ch in e.tgt)
        for m in sets:
            got = set(torch.nonzero(m[side][i]).flatten().tolist())
            assert got <= allowed, (e.src, sorted(got - allowed))
            assert len(got) == n_target, e.src
        if which == "t5":
            assert not any(bool(m["tgt"].any()) for m in sets)
    # distinct sets per example: C(pool, k) counted from the role strings (input scope)
    if scope == "input":
        want = [math.comb(sum(1 for ch, r in zip(e.src, task.roles(e.src)[0])
                              if not r.endswith("_digit") and ch not in TOKENS),
                          sum(ch in TOKENS for ch in e.src)) for e in ex]
        assert role_sets(prep, targets, scope).tolist() == want


def test_too_few_structural_positions_means_no_role_control_not_a_smaller_one(decoder):
    ckpt, bridge = decoder
    ex = unique_examples(ckpt.task, 8, seed=1)
    # x, ^, =, + and - take 5-6 positions; the structure left (2, 0, a's sign) is smaller
    res = A.ablate_tokens(bridge, ckpt.task, ex, ["x", "^", "=", "+", "-"], mode="zero",
                          n_controls=2, sweep=False, decode=False)
    assert res.meta["role"]["drawn"] == 0 and "structural" in res.meta["role"]["why"]
    assert "role_difference" not in res.summary.columns and len(res.role_damage) == 0
    assert "role-matched controls: none" in format_summary(res, "t")


# ---------------------------------------------------------------- planted models
def planted_forward(task, margin_of):
    """A decoder "model" for `interventions.forward`: the residual stream is 1 at every
    position; the hooks the code under test built (zero ablation) are applied to it; the
    logits give the right next token a margin `margin_of(src, alive)`, where alive[j] says
    whether src character j survived. Its loss per example is known in closed form."""
    codec = CharCodec()
    vocab = len(codec.vocab)

    def forward(bridge, arch, ids, valid, hooks=((), ())):
        seq = ids["seq"]
        resid = torch.ones(*seq.shape, 1)
        for _name, fn in hooks[0]:
            resid = fn(resid, None)
        out = torch.zeros(*seq.shape, vocab)
        for r in range(seq.shape[0]):
            toks = seq[r].tolist()
            n_src = toks.index(codec.sep) - 1
            src = codec.decode(toks[1:1 + n_src])
            alive = (resid[r, 1:1 + n_src, 0] != 0).tolist()
            m = margin_of(src, alive)
            nxt = torch.tensor(toks[1:] + [codec.pad])
            out[r] = torch.nn.functional.one_hot(nxt, vocab).float() * m
        return out
    return forward


def structure_matters(task):
    """Every structural position counts the same; digits barely count (weights exact in binary,
    so sums do not depend on their order)."""
    def margin(src, alive):
        roles = task.roles(src)[0]
        return 1.0 + sum(1.0 if not r.endswith("_digit") else 0.0625
                         for r, a in zip(roles, alive) if a)
    return margin


def xeq_matters(task):
    """Only x, ^ and = count (everything else a little)."""
    def margin(src, alive):
        return 1.0 + sum(1.0 if ch in TOKENS else 0.0625 for ch, a in zip(src, alive) if a)
    return margin


def planted_run(decoder, monkeypatch, margin, n_controls=20):
    ckpt, bridge = decoder
    monkeypatch.setattr(A.interventions, "forward", planted_forward(ckpt.task, margin))
    ex = unique_examples(ckpt.task, 30, seed=21)
    return A.ablate_tokens(bridge, ckpt.task, ex, TOKENS, mode="zero", n_controls=n_controls,
                           sweep=False, decode=False)


def test_planted_structure_beats_random_digits_but_not_role_matched(decoder, monkeypatch):
    ckpt, _ = decoder
    res = planted_run(decoder, monkeypatch, structure_matters(ckpt.task))
    loss = res.summary.set_index("metric").loc["answer_loss"]
    assert loss.verdict == "confirmed" and loss.ci_low > 0
    assert loss.p_value == pytest.approx(1 / 21)
    # as many structural positions cost exactly what the target costs, example by example
    assert loss.role_difference == pytest.approx(0.0, abs=1e-6)
    assert loss.role_verdict == "not confirmed"
    text = format_summary(res, "t")
    assert "the target beats: random positions" in text


def test_planted_x_eq_beats_both_controls(decoder, monkeypatch):
    ckpt, _ = decoder
    res = planted_run(decoder, monkeypatch, xeq_matters(ckpt.task))
    loss = res.summary.set_index("metric").loc["answer_loss"]
    assert loss.verdict == "confirmed" and loss.role_verdict == "confirmed"
    assert loss.role_ci_low > 0 and loss.role_p_value <= 0.05
    assert "the target beats: random positions and role-matched positions" in \
        format_summary(res, "t")
    # each control kind is in the JSON and the CSV frame
    data = to_json(res)
    assert len(data["role_controls"]) and len(data["controls"])
    assert set(controls_frame(res).kind) == {"random", "role"}


def test_ten_controls_are_untestable_not_a_silent_no(decoder, monkeypatch):
    ckpt, _ = decoder
    res = planted_run(decoder, monkeypatch, xeq_matters(ckpt.task), n_controls=10)
    loss = res.summary.set_index("metric").loc["answer_loss"]
    # the target beats every one of the 10 controls: p = 1/11, the floor, above 0.05
    assert loss.p_value == pytest.approx(1 / 11) and loss.ci_low > 0
    assert loss.verdict == "untestable"
    text = format_summary(res, "t")
    assert "untestable at 10 controls" in text and "NOT more than as many random" not in text


# ---------------------------------------------------------------- the sign-flip test
def test_sign_flip_p_equals_enumeration_by_hand():
    d = np.array([0.5, -0.2, 0.9, 0.1, -0.4, 0.3])
    obs = d.mean()
    pats = list(itertools.product([1, -1], repeat=len(d)))
    want = sum(np.mean(np.array(s) * d) >= obs - 1e-12 for s in pats) / len(pats)
    p, tests = sign_flip_p(d)
    assert p == pytest.approx(want) and tests == 2 ** len(d) - 1
    # rows of one equation move together: the same as their means, one per equation
    rows = np.array([0.5, 0.7, -0.2, 0.9, 0.1, -0.4])
    groups = ["a", "a", "b", "c", "d", "e"]
    per_eq = np.array([0.6, -0.2, 0.9, 0.1, -0.4])
    assert sign_flip_p(rows, groups) == sign_flip_p(per_eq)
    # a NaN row (no such field) is dropped
    assert sign_flip_p(np.append(d, np.nan)) == (p, tests)
    # random patterns approach the exact value
    big = np.random.default_rng(0).normal(0.1, 1.0, 40)
    pr, n = sign_flip_p(big, n_flips=20000)
    exact_like = np.mean([np.mean(s * big) >= big.mean() for s in
                          np.random.default_rng(5).choice([-1, 1], size=(20000, 40))])
    assert n == 20000 and pr == pytest.approx(exact_like, abs=0.02)
    # five equations: 32 patterns, floor 1/32 <= 0.05; four: 16, floor 1/16 > 0.05
    assert sign_flip_p(np.ones(4))[1] == 15 and sign_flip_p(np.ones(4))[0] == 1 / 16


def test_compare_resamples_equations_not_rows():
    """Three equations, one of them repeated five times: the interval over equations is the
    exact bootstrap of the per-equation means (27 equally likely resamples of 3 equations,
    each weighted by its rows), not the row bootstrap."""
    t = lambda *v: torch.tensor(v, dtype=torch.float32)  # noqa: E731
    groups = ["a", "b", "b", "b", "b", "b", "c"]
    clean = {"answer_loss": t(*[0.0] * 7)}
    target = {"answer_loss": t(1.0, 3.0, 3.0, 3.0, 3.0, 3.0, 0.0)}
    ctl = [{"answer_loss": t(*[0.0] * 7)}]
    rows = A.compare(clean, target, ctl, seed=0, groups=groups, role=ctl, n_flips=99)
    r = rows.iloc[0]
    sums, counts = {"a": 1.0, "b": 15.0, "c": 0.0}, {"a": 1, "b": 5, "c": 1}
    means = [sum(sums[g] for g in pick) / sum(counts[g] for g in pick)
             for pick in itertools.product("abc", repeat=3)]
    lo, hi = np.quantile(means, [0.025, 0.975], method="inverted_cdf")
    # 2000 resamples of 27 atoms: the quantiles land on the extreme atoms
    assert (r.ci_low, r.ci_high) == pytest.approx((lo, hi))
    assert (r.role_ci_low, r.role_ci_high) == pytest.approx((lo, hi))
    assert (lo, hi) == pytest.approx((0.0, 3.0))
    # per equation the differences are 1, 3, 0: 8 sign patterns, 1 + 3 + 0 reached by 2
    assert r.role_tests == 7 and r.role_p_value == pytest.approx(2 / 8)


def test_controls_without_a_value_give_nan_quietly_not_warnings():
    """A field no control example has (every control NaN): the control columns are NaN and
    numpy's all-NaN warnings do not reach the user's terminal."""
    import warnings

    clean = {"m": torch.tensor([1.0, 2.0, 3.0])}
    target = {"m": torch.tensor([0.0, 1.0, 1.0])}
    ctl = [{"m": torch.full((3,), float("nan"))} for _ in range(2)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        row = A.compare(clean, target, ctl, seed=0).iloc[0]
    assert math.isnan(row["control_damage_min"]) and math.isnan(row["control_damage_max"])
