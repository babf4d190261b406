"""Token ablation's targets, teacher-forced metrics, replacement means and comparison table
against oracles built here: positions found in the strings by hand, losses and argmaxes from
the HF model run on its own, means and differences by plain loops."""

import itertools

import numpy as np
import pytest
import torch

from circuits import ablation as A
from interp.models import load_checkpoint
from interp.tasks.base import Example
from interp.tasks.quadratic import format_input, format_output
from interp.tasks.tokenizer import CharCodec

COEFS = [(1, -5, 6), (2, -2, -12), (1, 1, 1), (3, 3, -6)]


@pytest.fixture(scope="module")
def decoder(tiny_checkpoints):
    ckpt = load_checkpoint(tiny_checkpoints["decoder"])
    ex = [Example(format_input(*c)[0], format_output(*c)[0], "?") for c in COEFS]
    return ckpt, ckpt.bridge(), ex


def test_targets_are_the_token_positions_found_in_the_strings(decoder):
    ckpt, bridge, ex = decoder
    prep = A.prepare(bridge, ckpt.task, ex)
    ids = A.token_ids(bridge, ["x", "="])
    for scope in ("input", "all"):
        got = A.target_masks(prep, ids, scope)["seq"]
        for i, e in enumerate(ex):
            # <bos> src <sep> tgt <eos>: the input at 1.., the solution after <sep>
            want = [1 + j for j, ch in enumerate(e.src) if ch in "x="]
            if scope == "all":
                want += [len(e.src) + 2 + j for j, ch in enumerate(e.tgt) if ch in "x="]
            assert torch.nonzero(got[i]).flatten().tolist() == want, (scope, e.src)


def test_teacher_forced_metrics_equal_the_hf_model_run_on_its_own(decoder):
    ckpt, bridge, ex = decoder
    prep = A.prepare(bridge, ckpt.task, ex)
    run = A.run_condition(bridge, prep)
    codec = CharCodec()
    for i, e in enumerate(ex):
        seq = [codec.bos] + codec.encode(e.src) + [codec.sep] + codec.encode(e.tgt) + [codec.eos]
        with torch.no_grad():
            logits = ckpt.model(input_ids=torch.tensor([seq])).logits[0].double()
        start = len(e.src) + 1                     # the logits at <sep> predict the answer
        answer = seq[start + 1:]
        rows = logits[start:start + len(answer)]
        ce = [float(torch.logsumexp(r, 0) - r[t]) for r, t in zip(rows, answer)]
        right = [int(r.argmax()) == t for r, t in zip(rows, answer)]
        assert float(run.loss[i]) == pytest.approx(sum(ce) / len(ce), rel=1e-4)
        assert float(run.token_acc[i]) == pytest.approx(sum(right) / len(right))
        assert bool(run.exact[i]) == all(right)
        # a solution field is right when every one of its tokens is
        roles = ckpt.task.roles(e.src, e.tgt)[1]
        for j, name in enumerate(prep.field_names):
            toks = [k for k, r in enumerate(roles) if A.field_of(r) == name]
            got = float(run.fields[i, j])
            if not toks:
                assert np.isnan(got)
            else:
                assert got == float(all(right[k] for k in toks)), (e.src, name)


def test_mean_replacement_is_the_mean_of_each_key_by_loops(decoder):
    ckpt, bridge, ex = decoder
    prep = A.prepare(bridge, ckpt.task, ex)
    W = prep.sides["seq"].ids.shape[1]
    resid = {"seq": torch.randn(2, len(ex), W, 3, generator=torch.Generator().manual_seed(0))}
    values, means = A.replacement_values(prep, resid, "mean")
    keys = prep.keys["seq"]
    for i in range(len(ex)):
        for p, key in enumerate(keys[i]):
            if key is None:
                continue
            same = [(j, q) for j in range(len(ex)) for q, k in enumerate(keys[j]) if k == key]
            want = sum(resid["seq"][:, j, q] for j, q in same) / len(same)
            assert torch.allclose(values["seq"][:, i, p], want, atol=1e-6), key
    # keys that only some equations have (a longer number) exist: the division is per key
    counts = {}
    for row in keys:
        for k in row:
            if k is not None:
                counts[k] = counts.get(k, 0) + 1
    assert min(counts.values()) < len(ex)


def test_compare_table_by_hand():
    t = lambda *v: torch.tensor(v, dtype=torch.float32)  # noqa: E731
    clean = {"answer_loss": t(1.0, 2.0, 3.0), "exact_match": t(1.0, 1.0, 0.0)}
    target = {"answer_loss": t(2.0, 4.0, 3.0), "exact_match": t(0.0, 1.0, 0.0)}
    controls = [{"answer_loss": t(1.0, 2.5, 3.0), "exact_match": t(1.0, 1.0, 0.0)},
                {"answer_loss": t(1.5, 2.0, 4.0), "exact_match": t(1.0, 0.0, 0.0)},
                {"answer_loss": t(3.0, 2.0, 3.0), "exact_match": t(1.0, 1.0, 0.0)}]
    rows = A.compare(clean, target, controls, seed=0).set_index("metric")
    loss = rows.loc["answer_loss"]
    # loss damage = ablated - clean: target (1, 2, 0) -> 1; controls (0, .5, 0), (.5, 0, 1),
    # (2, 0, 0) -> 1/6, 1/2, 2/3
    assert loss.target_damage == pytest.approx(1.0)
    assert loss.control_damage_mean == pytest.approx((1 / 6 + 1 / 2 + 2 / 3) / 3)
    assert loss.control_damage_sd == pytest.approx(float(np.std([1 / 6, 1 / 2, 2 / 3], ddof=1)))
    assert (loss.control_damage_min, loss.control_damage_max) == pytest.approx((1 / 6, 2 / 3))
    # per example: target damage minus the mean control damage there
    diff = [1 - 2.5 / 3, 2 - 0.5 / 3, 0 - 1 / 3]
    assert loss.difference == pytest.approx(np.mean(diff))
    # the bootstrap distribution of these three differences (27 equally likely resamples):
    # its 2.5% and 97.5% quantiles are its extreme atoms, each of probability 1/27
    means = [sum(c) / 3 for c in itertools.product(diff, repeat=3)]
    lo, hi = np.quantile(means, [0.025, 0.975], method="inverted_cdf")
    assert (lo, hi) == pytest.approx((min(diff), max(diff)))
    assert (loss.ci_low, loss.ci_high) == pytest.approx((lo, hi), abs=1e-6)
    assert loss.p_value == pytest.approx(1 / 4)          # larger than every control
    # exact match damage = clean - ablated: target (1, 0, 0); controls 0, 1/3, 0
    em = rows.loc["exact_match"]
    assert em.target_damage == pytest.approx(1 / 3)
    assert em.control_damage_mean == pytest.approx(1 / 9)
    assert em.p_value == pytest.approx((1 + 1) / 4)       # one control ties it


def test_fields_are_judged_separately_on_planted_logits(decoder, monkeypatch):
    """Logits whose argmax is the label everywhere except at example 0's D value: only that
    field of that example is wrong."""
    ckpt, bridge, ex = decoder
    prep = A.prepare(bridge, ckpt.task, ex)
    vocab = len(CharCodec().vocab)

    def planted(bridge, arch, ids, valid, hooks=((), ())):
        n, w = ids["seq"].shape
        index = [next(i for i in range(prep.n)
                      if torch.equal(prep.sides["seq"].ids[i, :w], ids["seq"][r]))
                 for r in range(n)]
        lab = prep.labels[index, :w].clamp_min(0)
        out = torch.nn.functional.one_hot(lab, vocab).float()
        d = prep.field_names.index("D_value")
        for r, i in enumerate(index):
            if i == 0:
                wrong = prep.fields[0, :w] == d
                out[r, wrong] = out[r, wrong].roll(1, -1)
        return out
    monkeypatch.setattr(A.interventions, "forward", planted)
    run = A.run_condition(bridge, prep, batch_size=len(ex))
    d = prep.field_names.index("D_value")
    assert run.fields[0, d] == 0 and not bool(run.exact[0]) and bool(run.exact[1:].all())
    others = [j for j in range(len(prep.field_names)) if j != d]
    assert all(float(run.fields[0, j]) in (1.0,) or np.isnan(float(run.fields[0, j]))
               for j in others)
    assert bool((run.fields[1:].nan_to_num(1.0) == 1).all())
