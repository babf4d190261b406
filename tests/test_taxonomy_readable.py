"""Readable head tables: quoted labels read back, what main_score measures, a stability column
checked against a binomial oracle, no `nan` group, token classes of a real tokenizer against
its own decoder, terminal tables that fit, and verify_heads' progress."""

import io
import math
import string

import numpy as np
import pandas as pd
import pytest
import torch

from clihelp import one_line, run, run_here
from interp.attention.groups import (TOKEN_CLASSES, quote_group, read_groups, token_classes)
from interp.attention.routes import Route, route_text, split_route
from interp.attention.stats import collect_stats
from interp.attention.taxonomy import (LABEL_SCORE, SCORE_KINDS, classify, head_table, legend,
                                       parse_label)
from interp.cache import AttentionCache
from interp.tokens import Side

GROUPS = list(string.punctuation) + ["D_value", "x1", "0", "<bos>", "a b", "it's", "\\",
                                     "->", "'->'"]


# -- labels ---------------------------------------------------------------------------------
def test_plain_names_stay_bare_and_everything_else_is_quoted():
    assert quote_group("D_value") == "D_value" and quote_group("0") == "0"
    assert quote_group("-") == "'-'" and quote_group("<bos>") == "'<bos>'"
    assert route_text("-", ["D_value"]) == "routed('-'->D_value)"[7:-1]
    assert route_text("x1", ["Dexpr_c", ")"]) == "x1->Dexpr_c,')'"


@pytest.mark.parametrize("q", GROUPS)
def test_every_group_reads_back_from_its_label(q):
    keys = [q, "b", ","]
    assert split_route(route_text(q, keys)) == ([q], keys)
    assert parse_label(f"routed({route_text(q, keys)})") == ("routed", ([q], keys))
    assert parse_label(f"vertical({quote_group(q)})") == ("vertical", (q,))
    assert read_groups(",".join(quote_group(g) for g in GROUPS)) == GROUPS


def _route(q, k, share):
    return Route(q, k, share, 0.05, 0.05, 0.3, share, share / 2)


def test_the_issue_labels_are_written_unambiguously():
    """The two clashes of the issue, from planted route features."""
    f = {"entropy": torch.tensor([[1.0]]), "entropy_uniform": torch.tensor([[3.0]]),
         "vertical_share": torch.tensor([[0.1]]), "vertical_uniform": torch.tensor([[0.1]]),
         "vertical_roles": [[["="]]]}
    assert classify({**f, "routes": [[[_route("-", "D_value", 0.5)]]]}, 0, 0) == \
        ["routed('-'->D_value)"]
    assert classify({**f, "routes": [[[_route("x1", "Dexpr_c", 0.3),
                                       _route("x1", ")", 0.2)]]]}, 0, 0) == \
        ["routed(x1->Dexpr_c,')')"]
    g = {**f, "vertical_share": torch.tensor([[0.8]]), "vertical_roles": [[["=", "x"]]]}
    assert classify(g, 0, 0) == ["vertical('=')"]


def test_verify_reads_the_quoted_labels():
    from circuits.ablation import routes as R

    head = {"kind": "self", "layer": 1, "head": 2, "band_centre": 0.0}

    def ko(label):
        return R.label_knockout({"labels": [label], **head}, groups={"-", ")", "=", "D_value",
                                                                      "Dexpr_c", "x1"})

    assert ko("routed('-'->D_value)") == R.HeadKnockout("self", 1, 2, ("-",), ("D_value",))
    assert ko("routed(x1->Dexpr_c,')')") == R.HeadKnockout("self", 1, 2, ("x1",),
                                                            ("Dexpr_c", ")"))
    assert ko("routed(x1->',',b)") == R.HeadKnockout("self", 1, 2, ("x1",), (",", "b"))
    assert ko("vertical('=')") == R.HeadKnockout("self", 1, 2, token="=")
    assert ko("vertical(',')").grouping == "fine"          # no group: cut as a fine role


# -- planted heads: score kinds and stability ------------------------------------------------
T, N = 12, 32


def planted_cache(n_diag: int, n: int = N) -> AttentionCache:
    """Three heads on n prompts of T tokens: head 0 attends to the previous token in every
    prompt, head 1 in the first `n_diag` prompts and uniformly in the others, head 2
    uniformly everywhere."""
    prev = torch.zeros(T, T)
    prev[0, 0] = 1.0
    prev[torch.arange(1, T), torch.arange(T - 1)] = 1.0
    uni = torch.ones(T, T).tril()
    uni = uni / uni.sum(-1, keepdim=True)
    P = torch.zeros(1, n, 3, T, T)
    P[0, :, 0] = prev
    P[0, :, 1] = uni
    P[0, :n_diag, 1] = prev
    P[0, :, 2] = uni
    roles = [["t"] * T for _ in range(n)]
    side = Side(torch.zeros(n, T, dtype=torch.long), torch.full((n,), T), roles, roles)
    return AttentionCache("decoder", {"self": P}, {"seq": side})


def test_score_kind_says_what_main_score_is():
    """Closed forms: a previous-token head puts (T-1)/T of its attention at offset 1 (the
    first query can only see itself); the uniform head's entropy ratio is exactly 1."""
    t = head_table(planted_cache(N), resamples=0)
    assert set(LABEL_SCORE.values()) == set(SCORE_KINDS)
    assert list(t["label"]) == ["sharp_diagonal(1)", "sharp_diagonal(1)", "broad"]
    assert list(t["score_kind"]) == ["offset_share", "offset_share", "entropy_ratio"]
    assert t["main_score"].tolist() == pytest.approx([(T - 1) / T, (T - 1) / T, 1.0], abs=1e-5)
    lines = legend(t)
    assert sum("offset_share" in l for l in lines) == 1
    assert sum("entropy_ratio" in l for l in lines) == 1
    assert not any("route_share" in l for l in lines)        # only the kinds present
    assert any("x4.6, x5.0 offset" in l and "uniform head" in l for l in lines)
    for meaning in SCORE_KINDS.values():                      # range and direction
        assert "(0" in meaning and ("higher" in meaning or "lower" in meaning)


def test_stability_against_a_binomial_oracle():
    """A head that is a diagonal in every example keeps its label in every resample; one
    that is a diagonal in 10 of 32 examples and uniform in the rest sits at the threshold:
    its share at offset 1 is (k (T-1)/T + (32-k) u) / 32 with u = sum_{q=1}^{T-1} 1/(q+1) / T,
    >= 0.4 iff k >= 10, so its stability is P(Binomial(32, 10/32) >= 10)."""
    u = sum(1 / (q + 1) for q in range(1, T)) / T
    need = min(k for k in range(N + 1) if (k * (T - 1) / T + (N - k) * u) / N >= 0.4)
    assert need == 10
    p = 10 / N
    oracle = sum(math.comb(N, k) * p ** k * (1 - p) ** (N - k) for k in range(need, N + 1))
    t = head_table(planted_cache(10), resamples=400)
    assert t["label"][1] == "sharp_diagonal(1)"
    assert t["stability"][0] == 1.0 and t["stability"][2] == 1.0
    assert abs(t["stability"][1] - oracle) < 0.1, (t["stability"][1], oracle)
    assert t.attrs["stability"] == {"resamples": 400, "parts": 32, "examples": 32}
    assert any("400 bootstrap resamples of the 32 examples" in l for l in legend(t))


def test_stability_compares_what_the_labels_claim():
    from interp.attention.readout import _claim

    assert _claim(["routed(x1->Dexpr_c,')')"]) == _claim(["routed(x1->')',Dexpr_c)"])
    assert _claim(["routed(x1->Dexpr_c,')')"]) != _claim(["routed(x1->Dexpr_c)"])
    assert _claim(["routed(x1->c)"]) != _claim(["routed(x2->c)"])
    assert _claim(["vertical('=')", "routed(a->b)"]) != _claim(["routed(a->b)"])


def test_grouped_statistics_add_up_to_the_plain_ones():
    """More examples than groups: the statistics of 7 groups, added, are the statistics of
    all 50 examples, and the resamples run on those groups."""
    ac = planted_cache(20, n=50)
    whole = collect_stats(ac)["self"].features()
    st = collect_stats(ac, parts=7)["self"]
    assert len(st.parts) == 7 and sum(p.n_queries for p in st.parts) == 50 * T
    split = st.features()
    for k in ("sharp_mass", "band_mass", "entropy", "vertical_share", "block_share"):
        assert torch.allclose(whole[k], split[k], atol=1e-5), k
    t = head_table(ac, resamples=20)
    assert t.attrs["stability"]["parts"] == 32 and t["stability"][0] == 1.0


# -- no nan group ---------------------------------------------------------------------------
def test_no_group_reads_back_as_a_missing_value():
    """Equations without a real root answer `x=nan;`; the letters' role enters as `no_root`,
    and every name survives a round trip through pandas' CSV reader (which reads `nan` as a
    missing value)."""
    import interp
    from interp.tokens import build_sides

    _, task = interp.load_model("quadratic-small")
    src = "1x^2+1x+1=0"
    ex = [e for e in task.generate(40, seed=0) if e.tgt.endswith("x=nan;")][:2]
    assert ex and src
    sides = build_sides("decoder", task, ex)
    s = sides["seq"]
    W = s.ids.shape[1]
    g = torch.Generator().manual_seed(0)
    P = torch.rand(1, len(ex), 2, W, W, generator=g) * torch.ones(W, W).tril()
    P = P / P.sum(-1, keepdim=True)
    ac = AttentionCache("decoder", {"self": P}, sides)
    stats = collect_stats(ac)
    from interp.attention.taxonomy import route_maps

    for grouping in ("fine", "field"):
        m = route_maps(stats, grouping=grouping)
        assert "no_root" in set(m["key"]) and "nan" not in set(m["key"]) | set(m["query"])
        back = pd.read_csv(io.StringIO(m.to_csv(index=False)))
        assert back[["query", "key"]].notna().all().all()
    assert "nan" not in stats["self"].key_names


# -- token classes of a real tokenizer ------------------------------------------------------
TEXT = ("def main(argv=None):\n    total = 0\n    for x1 in range(1984):\n"
        "        total += x1 * 2  # add it\n    return defaultdict(list), 'done.'\n")


def oracle_classes(tok, ids):
    """Each token's class from its own decoded text with str methods."""
    out, prev = [], ""
    special = set(tok.all_special_ids)
    for i in ids:
        text = tok.decode([i])
        core = text.strip()
        if i in special:
            c, prev = "special", ""
            out.append(c)
            continue
        if not core:
            c = "whitespace"
        elif core.isdigit():
            c = "digit"
        elif not any(ch.isalnum() for ch in core):
            c = "punctuation"
        elif text[0].isalnum() and prev[-1:].isalnum():
            c = "subword"
        else:
            c = "word"
        out.append(c)
        prev = text
    return out


@pytest.mark.parametrize("name", ["induction-attn1l", "induction-attn2l"])
def test_token_classes_of_a_shipped_tokenizer_match_its_decoded_text(name):
    from pathlib import Path

    from transformers import PreTrainedTokenizerFast

    import interp

    tok = PreTrainedTokenizerFast(tokenizer_file=str(Path(interp.__file__).parent /
                                                     "checkpoints" / name / "tokenizer.json"))
    tok.add_special_tokens({"pad_token": "<pad>", "bos_token": "<bos>", "eos_token": "<eos>"})
    ids = [tok.bos_token_id] + tok(TEXT).input_ids
    tokens = tok.convert_ids_to_tokens(ids)
    got = token_classes(tokens)
    assert got == oracle_classes(tok, ids), list(zip(tokens, got, oracle_classes(tok, ids)))
    assert {"special", "word", "subword", "digit", "punctuation", "whitespace"} <= set(got)
    assert set(got) <= set(TOKEN_CLASSES)


def test_wordpiece_continuations_are_subwords():
    assert token_classes(["[CLS]", "the", "cat", "##s", "sat", ".", "[SEP]"]) == \
        ["special", "word", "word", "subword", "word", "punctuation", "special"]


def test_a_native_text_model_reads_by_token_class():
    """The shipped text model's table: roles are token classes, so its maps have a handful
    of columns and its heads read routes between classes."""
    import interp
    from interp.attention import head_taxonomy
    from interp.tasks.text import validation_snippets

    bridge, _ = interp.load_model("induction-attn2l")
    texts = validation_snippets(bridge.tokenizer, 4, 48, seed=0)
    r = head_taxonomy(bridge, None, texts, resamples=0)
    names = set(r.stats["self"].key_names)
    assert names <= set(TOKEN_CLASSES) and len(names) >= 4
    assert set(r.maps()["key"]) <= set(TOKEN_CLASSES)
    assert (r.table["reads"] != "").any()


# -- terminal ---------------------------------------------------------------------------------
def verified_table():
    """A head table as --verify leaves it: one confirmed small effect, one unchecked head."""
    t = pd.DataFrame({
        "kind": ["self", "self"], "layer": [0, 1], "head": [3, 2],
        "label": ["routed('-'->D_value)", "heterogeneous"],
        "labels": [["routed('-'->D_value)"], ["heterogeneous"]],
        "score_kind": ["route_share", "entropy"], "main_score": [0.42, 2.9],
        "stability": [0.62, 1.0], "detail": ["", ""],
        "reads": ["'-'->D_value 0.42 (x16.6, x12.1 offset); '('->'=' 0.28 (x2.7, x2.2 "
                  "offset); x1->Dexpr_c 0.34 (x7.0, x7.3 offset)", ""],
        "vertical_roles": [["="], ["x"]],
        "verify_knockout": ["L0H3:'-'->D_value", None], "verify_measure": ["loss:D_value", None],
        "verify_effect": [0.00042, np.nan], "verify_ci_lo": [0.00011, np.nan],
        "verify_ci_hi": [0.00093, np.nan], "verify_p": [0.01, np.nan],
        "verify_verdict": ["confirmed", None], "verified": [True, None],
        "verify_target_mass": [0.41, np.nan], "verify_control_mass": [0.40, np.nan],
        "verify_mass_ratio": [1.02, np.nan], "verify_control_rule": ["same-head", None],
        "verify_reads_verdict": ["not confirmed", None], "verify_reads_effect": [0.1, np.nan],
        "verify_reads_ci_lo": [-0.1, np.nan], "verify_reads_ci_hi": [0.2, np.nan],
        "verify_reads_p": [0.3, np.nan]})
    t.attrs["verify"] = {"n": 70, "distinct": 70, "controls": 20, "note": ""}
    t.attrs["stability"] = {"resamples": 50, "parts": 32, "examples": 256}
    return t


@pytest.mark.parametrize("width", [80, 120])
def test_verify_table_fits_and_prints_small_effects_and_unchecked_heads(width):
    from interp.classify_heads import text

    out = text(verified_table(), width=width)
    assert max(map(len, out.splitlines())) <= width
    import re

    assert re.search(r"\+0\.00042 +\+0\.00011 +\+0\.00093", out) and "+0.000 " not in out
    assert "NaN" not in out and "nan" not in out
    row = [l for l in out.splitlines() if l.startswith("L1H2")][0]
    assert row.split()[2:7] == ["-"] * 5                       # unchecked: '-'
    wide = text(verified_table(), wide=True)
    assert verified_table()["reads"][0] in wide                # the full row
    assert "--wide" in out or max(map(len, wide.splitlines())) <= width


def test_csv_and_json_keep_every_column_in_full():
    from interp.classify_heads import text

    t = verified_table()
    back = pd.read_csv(io.StringIO(text(t, "csv")), keep_default_na=False)
    for c in ("label", "score_kind", "main_score", "stability", "reads", "verify_ci_hi",
              "verify_p"):
        assert c in back.columns, c
    assert back["reads"][0] == t["reads"][0]
    import json

    rec = json.loads(text(t, "json"))
    assert rec[0]["stability"] == 0.62 and rec[0]["score_kind"] == "route_share"


@pytest.mark.parametrize("columns", [80, 120])
def test_command_fits_the_terminal_and_wide_prints_full_rows(columns, tmp_path):
    import os

    env_cols = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = str(columns)
    try:
        # in process (COLUMNS is read when the table is printed): no interpreter start-up
        p = run_here("interp.classify_heads", "--n", "6", "--no-report", "--resamples", "4",
                     "--out", str(tmp_path / "o"), "--quiet")
        w = run_here("interp.classify_heads", "--n", "6", "--no-report", "--resamples", "4",
                     "--out", str(tmp_path / "o"), "--quiet", "--wide")
    finally:
        if env_cols is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = env_cols
    assert p.returncode == 0 and w.returncode == 0, p.stderr + w.stderr
    assert max(map(len, p.stdout.splitlines())) <= columns
    assert "stability" in p.stdout.splitlines()[0]
    heads = pd.read_csv(tmp_path / "o" / "heads.csv", keep_default_na=False)
    longest = max(heads["reads"], key=len)
    assert longest in w.stdout and longest not in p.stdout     # --wide: the full reads
    assert max(map(len, w.stdout.splitlines())) > columns


def test_resamples_out_of_range_is_one_line(tmp_path):
    p = run("interp.classify_heads", "--resamples", "-1", "--out", str(tmp_path / "o"))
    one_line(p.returncode, p.stderr, "--resamples", "between 0 and")
    assert not (tmp_path / "o").exists()


# -- progress ---------------------------------------------------------------------------------
def test_verify_heads_reports_progress_unless_quiet(tiny_checkpoints, capsys):
    from circuits.ablation import verify_heads
    from interp.models import load_checkpoint

    ckpt = load_checkpoint(tiny_checkpoints["decoder"])
    bridge, task = ckpt.bridge(), ckpt.task
    ex = task.generate(3, seed=0, unique=True)
    table = pd.DataFrame([{"kind": "self", "layer": 0, "head": 0,
                           "labels": ["sharp_diagonal(1)"], "band_centre": 0.0}])
    said = []
    verify_heads(bridge, task, ex, table, n_controls=1, progress=said.append, reads=False)
    assert said[0].startswith("verify_heads: 1 labels to check on 3 examples")
    assert any("conditions at layer" in s for s in said)
    capsys.readouterr()
    verify_heads(bridge, task, ex, table, n_controls=1, reads=False)
    err = capsys.readouterr().err
    assert "verify_heads: 1 labels" in err and err.startswith("[")
    verify_heads(bridge, task, ex, table, n_controls=1, reads=False, quiet=True)
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("columns", [80, 120])
def test_t5_table_fits_and_names_the_kind(columns, tiny_checkpoints, tmp_path, capsys,
                                          monkeypatch):
    from interp.classify_heads import _main

    monkeypatch.setenv("COLUMNS", str(columns))
    args = [str(tiny_checkpoints["t5"]), "--n", "4", "--no-report", "--resamples", "3",
            "--quiet", "--out", str(tmp_path / "t")]
    capsys.readouterr()
    assert _main(args) == 0
    out = capsys.readouterr().out
    assert max(map(len, out.splitlines())) <= columns
    assert out.splitlines()[0].split()[:3] == ["kind", "head", "label"]
    assert {"encoder", "decoder_self", "cross"} <= {l.split()[0] for l in out.splitlines()[1:]
                                                    if l.strip()}
    assert _main(args + ["--wide"]) == 0
    wide = capsys.readouterr().out
    heads = pd.read_csv(tmp_path / "t" / "heads.csv", keep_default_na=False)
    for label, reads in zip(heads["label"], heads["reads"]):
        assert label in wide and reads in wide
