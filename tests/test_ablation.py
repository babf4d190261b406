"""Token ablation against oracles: HF's own attention mask, identity cases, a naive decoder."""

import json
import re

import numpy as np
import pytest
import torch

from circuits import ablation as A
from circuits.stats import bootstrap_ci, rank_p_value
from clihelp import one_line_error, run, run_here
from interp.errors import InterpError
from interp.models import load_checkpoint
from interp.tasks.quadratic import format_input, format_output
from interp.tasks.base import Example
from interp.tasks.tokenizer import CharCodec


@pytest.fixture(scope="module", params=["decoder", "t5"])
def model(request, tiny_checkpoints):
    ckpt = load_checkpoint(tiny_checkpoints[request.param])
    return ckpt, ckpt.bridge()


def examples(task, n=12, seed=0):
    return task.generate(n, seed=seed)


def whole_batch(prep, masks):
    w = {k: int(s.lengths.max()) for k, s in prep.sides.items()}
    ids = {k: s.ids[:, :w[k]] for k, s in prep.sides.items()}
    valid = {k: s.valid[:, :w[k]] for k, s in prep.sides.items()}
    return ids, valid, {k: m[:, :w[k]] for k, m in masks.items()}


@pytest.mark.parametrize("scope", ["input", "all"])
def test_knockout_at_every_layer_equals_masking_the_keys_in_hf(model, scope):
    """Zero weight on the target keys, rows renormalised == HF's attention mask on them."""
    ckpt, bridge = model
    prep = A.prepare(bridge, ckpt.task, examples(ckpt.task))
    targets = A.target_masks(prep, A.token_ids(bridge, ["x", "^", "="]), scope)
    ids, valid, m = whole_batch(prep, targets)
    layers = list(range(ckpt.config.n_layers))
    with torch.no_grad():
        got = A.forward(bridge, prep.arch, ids, valid,
                        A.build_hooks(bridge, prep.arch, "knockout", layers, m, None, valid))
        clean = A.forward(bridge, prep.arch, ids, valid)
        if prep.arch == "decoder":
            ref = ckpt.model(input_ids=ids["seq"],
                             attention_mask=(valid["seq"] & ~m["seq"]).long()).logits
            where = valid["seq"]
        else:
            ref = ckpt.model(input_ids=ids["src"], attention_mask=(valid["src"] & ~m["src"]).long(),
                             decoder_input_ids=ids["tgt"],
                             decoder_attention_mask=(valid["tgt"] & ~m["tgt"]).long()
                             if scope == "all" else None).logits
            where = valid["tgt"]
    assert (got - ref)[where].abs().max() < 1e-4
    assert (got - clean)[where].abs().max() > 1e-2     # the knockout did something


def test_no_targets_or_no_layers_change_nothing_exactly(model):
    ckpt, bridge = model
    prep = A.prepare(bridge, ckpt.task, examples(ckpt.task))
    clean = A.run_condition(bridge, prep)
    empty = {k: torch.zeros_like(v) for k, v in prep.input_region.items()}
    layers = list(range(ckpt.config.n_layers))
    for mode in A.MODES:
        values = None
        if mode in ("mean", "resample"):
            resid = A.clean_residuals(bridge, prep, layers)
            values, _ = A.replacement_values(prep, resid, mode)
        r = A.run_condition(bridge, prep, mode, layers, empty, values)
        assert torch.equal(r.loss, clean.loss) and torch.equal(r.exact, clean.exact)
    targets = A.target_masks(prep, A.token_ids(bridge, ["x"]))
    r = A.run_condition(bridge, prep, "knockout", [], targets)
    assert torch.equal(r.loss, clean.loss)


def test_mean_ablation_of_identical_examples_changes_nothing(model):
    """The dataset mean of one repeated equation is its own residual: no effect."""
    ckpt, bridge = model
    ex = examples(ckpt.task, 1) * 4
    prep = A.prepare(bridge, ckpt.task, ex)
    layers = list(range(ckpt.config.n_layers))
    resid = A.clean_residuals(bridge, prep, layers)
    values, _ = A.replacement_values(prep, resid, "mean")
    targets = A.target_masks(prep, A.token_ids(bridge, ["x", "^", "="]), "all")
    clean = A.run_condition(bridge, prep)
    r = A.run_condition(bridge, prep, "mean", layers, targets, values)
    assert torch.allclose(r.loss, clean.loss, atol=1e-5)
    z = A.run_condition(bridge, prep, "zero", layers, targets)
    assert (z.loss - clean.loss).abs().max() > 1e-3


def test_resample_at_layer_0_equals_running_the_donors_token(tiny_checkpoints):
    """Replacing the embedding of b's digit by the donor's (same position) == typing it."""
    ckpt = load_checkpoint(tiny_checkpoints["decoder"])
    bridge, task = ckpt.bridge(), ckpt.task
    ex = [Example(format_input(*c)[0], format_output(*c)[0], "two")
          for c in ((1, -5, 6), (1, -3, 2))]           # same length, b digit 5 vs 3
    prep = A.prepare(bridge, task, ex)
    resid = A.clean_residuals(bridge, prep, [0])
    values, _ = A.replacement_values(prep, resid, "resample", seed=0)
    targets = A.target_masks(prep, A.token_ids(bridge, ["5"]))
    assert int(targets["seq"].sum()) == 1              # only in the first equation's input
    ids, valid, m = whole_batch(prep, targets)
    with torch.no_grad():
        got = A.forward(bridge, "decoder", ids, valid,
                        A.build_hooks(bridge, "decoder", "resample", [0], m,
                                      {"seq": values["seq"]}, valid))
        typed = ids["seq"].clone()
        typed[m["seq"]] = A.token_ids(bridge, ["3"])[0]
        ref = A.forward(bridge, "decoder", {"seq": typed}, valid)
    assert torch.allclose(got, ref, atol=1e-5)


def test_derangement_has_no_fixed_point():
    for n in (2, 3, 10, 101):
        d = A.derangement(n, seed=n)
        assert sorted(d) == list(range(n)) and all(d[i] != i for i in range(n))


def test_knocking_out_every_key_is_an_error_not_nan(model):
    ckpt, bridge = model
    prep = A.prepare(bridge, ckpt.task, examples(ckpt.task, 4))
    ids, valid, _ = whole_batch(prep, {})
    everything = {k: v.clone() for k, v in valid.items()}
    with pytest.raises(InterpError, match="every key"):
        A.forward(bridge, prep.arch, ids, valid,
                  A.build_hooks(bridge, prep.arch, "knockout", [0], everything, None, valid))


def test_controls_match_the_target_count_per_region_and_never_hit_a_target(model):
    ckpt, bridge = model
    prep = A.prepare(bridge, ckpt.task, examples(ckpt.task, 30, seed=4))
    for scope in ("input", "all"):
        targets = A.target_masks(prep, A.token_ids(bridge, ["x", "^", "="]), scope)
        ctl = A.control_masks(prep, targets, 5, seed=1, scope=scope)
        for c in ctl:
            for side, m in c.items():
                assert not (m & targets[side]).any()
                for region in (prep.input_region, prep.solution_region):
                    assert torch.equal((m & region[side]).sum(1),
                                       (targets[side] & region[side]).sum(1))
                if scope == "input":
                    assert not (m & prep.solution_region[side]).any()
        assert not torch.equal(ctl[0][prep.main_side], ctl[1][prep.main_side])


def naive_greedy(bridge, prep, tokens, i, layers):
    """Decode example i from its prompt, one full forward per token, knockout on the input."""
    codec = CharCodec()
    ex = prep.examples[i]
    want = torch.tensor(A.token_ids(bridge, tokens))
    if prep.arch == "decoder":
        seq = [codec.bos] + codec.encode(ex.src) + [codec.sep]
        start = len(seq)
    else:
        src = torch.tensor([codec.encode(ex.src) + [codec.eos]])
        seq, start = [codec.pad], 1
    limit = start + len(ex.tgt) + A.EXTRA_TOKENS
    while seq[-1] != codec.eos and len(seq) < limit:
        cur = torch.tensor([seq])
        if prep.arch == "decoder":
            ids = {"seq": cur}
            masks = {"seq": torch.isin(cur, want) & (torch.arange(len(seq)) < start)
                     & (torch.arange(len(seq)) > 0)}
        else:
            ids = {"src": src, "tgt": cur}
            masks = {"src": torch.isin(src, want), "tgt": torch.zeros_like(cur, dtype=torch.bool)}
        valid = {k: torch.ones_like(v, dtype=torch.bool) for k, v in ids.items()}
        with torch.no_grad():
            logits = A.forward(bridge, prep.arch, ids, valid,
                               A.build_hooks(bridge, prep.arch, "knockout", layers, masks,
                                             None, valid))
        seq.append(int(logits[0, -1].argmax()))
    return codec.decode(seq[start:])


def test_decoding_from_the_first_error_equals_naive_greedy_decoding(model):
    """The shortcut (teacher-forced up to the first wrong token, then decode) gives the same
    outputs as decoding every token from the prompt, clean and under knockout; and the
    teacher-forced exact match equals the decoded one."""
    from interp.models.generate import greedy_decode

    ckpt, bridge = model
    ex = examples(ckpt.task, 6, seed=2)
    prep = A.prepare(bridge, ckpt.task, ex)
    ids = A.token_ids(bridge, ["x", "^", "="])
    clean = A.run_condition(bridge, prep)
    outs = A.decode_condition(bridge, prep, clean, "knockout", [], None, None, {}, ids, "input")
    hf = greedy_decode(ckpt.model, ckpt.arch, [e.src for e in ex], ckpt.config.n_ctx,
                       max_new_tokens=max(len(e.tgt) for e in ex) + A.EXTRA_TOKENS)
    for o, h, e in zip(outs, hf, ex):
        assert o == h[:len(e.tgt) + A.EXTRA_TOKENS]
    layers = [0, 1]
    targets = A.target_masks(prep, ids)
    run_t = A.run_condition(bridge, prep, "knockout", layers, targets)
    outs_t = A.decode_condition(bridge, prep, run_t, "knockout", layers, targets, None, {},
                                ids, "input")
    naive = [naive_greedy(bridge, prep, ["x", "^", "="], i, layers) for i in range(len(ex))]
    assert outs_t == naive
    assert [o == e.tgt for o, e in zip(outs_t, ex)] == run_t.exact.tolist()


def test_ablate_tokens_reports_target_controls_and_sweep(model):
    ckpt, bridge = model
    res = A.ablate_tokens(bridge, ckpt.task, examples(ckpt.task, 10), ["x", "^", "="],
                          n_controls=3, decode=True)
    s = res.summary.set_index("metric")
    assert {"answer_loss", "exact_match", "token_accuracy", "field:D_value"} <= set(s.index)
    loss = s.loc["answer_loss"]
    assert loss.ci_low <= loss.difference <= loss.ci_high
    ctl = res.control_damage[res.control_damage.metric == "answer_loss"].damage
    assert len(ctl) == 3 and loss.control_damage_mean == pytest.approx(ctl.mean())
    assert loss.p_value == pytest.approx(rank_p_value(loss.target_damage, ctl))
    sweep = res.sweep[res.sweep.metric == "answer_loss"]
    assert sweep.from_layer.tolist() == list(range(ckpt.config.n_layers))
    # ablating from layer 0 on is the main run
    assert sweep.iloc[0].target_damage == pytest.approx(loss.target_damage)
    assert res.decoded["target"]["exact_match"] == pytest.approx(s.loc["exact_match"].ablated)


def test_bad_tokens_and_layers_are_clear_errors(model):
    ckpt, bridge = model
    with pytest.raises(InterpError, match="vocabulary is: .*x"):
        A.ablate_tokens(bridge, ckpt.task, examples(ckpt.task, 2), ["y"])
    with pytest.raises(InterpError, match="layers 0-1"):
        A.ablate_tokens(bridge, ckpt.task, examples(ckpt.task, 2), ["x"], layers="0-5")
    with pytest.raises(InterpError, match="no examples"):
        A.ablate_tokens(bridge, ckpt.task, [], ["x"])


def test_parse_layers():
    assert A.parse_layers("0-3", 4) == [0, 1, 2, 3]
    assert A.parse_layers("1,3", 4) == [1, 3]
    assert A.parse_layers("2-", 4) == [2, 3]
    assert A.parse_layers(None, 3) == [0, 1, 2]
    for bad in ("4", "a", "-1", "2-9"):
        with pytest.raises(InterpError):
            A.parse_layers(bad, 4)


def test_rank_p_value_and_bootstrap_interval():
    assert rank_p_value(5.0, [1, 2, 3, 4]) == pytest.approx(1 / 5)
    assert rank_p_value(2.5, [1, 2, 3, 4]) == pytest.approx(3 / 5)
    assert rank_p_value(0.0, [1, 2, 3, 4]) == 1.0
    x = np.random.default_rng(0).normal(1.0, 1.0, 400)
    lo, hi = bootstrap_ci(x, seed=0)
    se = x.std(ddof=1) / np.sqrt(len(x))
    assert lo < x.mean() < hi
    assert hi - lo == pytest.approx(2 * 1.96 * se, rel=0.15)


def test_cli_writes_tables_json_and_a_self_contained_page(tiny_checkpoints, tmp_path):
    out = tmp_path / "abl"
    proc = run("circuits.ablate", str(tiny_checkpoints["decoder"]), "--tokens", "x,^,=",
               "--n", "8", "--controls", "2", "--out", str(out), "--json",
               str(tmp_path / "a.json"), "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert "target - random" in proc.stdout and "target - role" in proc.stdout  # two kinds (#22)
    assert "sweep" in proc.stdout
    for f in ("summary.csv", "sweep.csv", "controls.csv", "per_example.csv", "ablation.json",
              "report.html"):
        assert (out / f).is_file()
    data = json.loads((tmp_path / "a.json").read_text())
    assert data["meta"]["tokens"] == ["x", "^", "="] and data["meta"]["controls"] == 2
    page = (out / "report.html").read_text()
    assert page.count("Plotly.newPlot") >= 2 and page.count("plotly.js v") == 1
    assert not re.search(r"<script[^>]+src=\"https?://", page)  # nothing from a CDN


def test_cli_errors_are_one_line(tiny_checkpoints, tmp_path):
    ck = str(tiny_checkpoints["decoder"])
    one_line_error(run_here("circuits.ablate", ck, "--tokens", "x,y"), "unknown token 'y'",
                   "vocabulary")
    one_line_error(run_here("circuits.ablate", ck, "--tokens", "x,,="), "empty name")
    one_line_error(run_here("circuits.ablate", ck, "--tokens", "x", "--layers", "0-7"),
                   "out of range", "0-1")
    one_line_error(run_here("circuits.ablate", ck, "--tokens", "x", "--n", "0"), "--n")
    # 'n' is in the vocabulary (of "nan") but never in an equation: nothing to ablate
    one_line_error(run_here("circuits.ablate", ck, "--tokens", "n", "--n", "3"), "none of the tokens")
    (tmp_path / "keep.txt").write_text("mine")
    one_line_error(run_here("circuits.ablate", ck, "--tokens", "x", "--out", str(tmp_path)),
                   "other files")
    assert (tmp_path / "keep.txt").read_text() == "mine"
