"""python -m interp.classify_heads: files, columns, every attention kind, clear errors."""

import json

import pandas as pd
import pytest

from interp.attention.taxonomy import label_counts
from interp.classify_heads import _main


@pytest.mark.parametrize("arch,kinds", [("decoder", {"self"}),
                                        ("t5", {"encoder", "decoder_self", "cross"})])
def test_classify_heads_writes_table_csv_json_and_report(tiny_checkpoints, tmp_path, arch,
                                                         kinds, capsys):
    out = tmp_path / "o"
    assert _main([str(tiny_checkpoints[arch]), "--n", "6", "--out", str(out), "--quiet"]) == 0
    table = pd.read_csv(out / "heads.csv")
    assert set(table.kind) == kinds
    assert len(table) == 2 * 4 * len(kinds)  # 2 layers x 4 heads per kind
    assert {"layer", "head", "label", "main_score", "detail", "entropy",
            "entropy_uniform", "vertical_share", "vertical_uniform"} <= set(table.columns)
    rows = json.loads((out / "heads.json").read_text())
    assert len(rows) == len(table)
    html = (out / "report.html").read_text()
    assert html.count("var CircuitsVis=") == 1
    printed = capsys.readouterr().out
    assert "label" in printed and "main_score" in printed
    if arch == "t5":  # no diagonal for cross attention: queries and keys are other sequences
        assert table[table.kind == "cross"]["sharp_mass"].isna().all()


def test_label_counts_per_layer():
    t = pd.DataFrame({"kind": ["self"] * 3, "layer": [0, 0, 1],
                      "labels": [["sharp_diagonal(1)"], ["vertical(=)", "sharp_diagonal(0)"],
                                 ["sparse_block"]]})
    c = label_counts(t)
    assert c.loc[("self", 0), "sharp_diagonal"] == 2 and c.loc[("self", 1), "sparse_block"] == 1


def test_unknown_kind_is_one_clear_error(tiny_checkpoints, tmp_path):
    from interp.errors import InterpError

    with pytest.raises(InterpError, match="kinds are self"):
        _main([str(tiny_checkpoints["decoder"]), "--n", "2", "--kinds", "cross",
               "--out", str(tmp_path / "x"), "--quiet"])


def test_plain_hf_bert_directory_is_classified_on_text(tiny_bert_dir, tmp_path):
    d = tiny_bert_dir
    prompts = tmp_path / "p.txt"
    prompts.write_text("a b c\nd e f g h\n\ni j\n")
    out = tmp_path / "o"
    assert _main([str(d), "--prompts", str(prompts), "--out", str(out), "--quiet"]) == 0
    table = pd.read_csv(out / "heads.csv")
    assert set(table.kind) == {"encoder"} and len(table) == 8
    assert (table.entropy <= table.entropy_uniform + 1e-6).all()  # uniform is the maximum


def test_hf_directory_with_only_pickled_weights_is_refused(tmp_path):
    from interp.errors import InterpError

    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "config.json").write_text("{}")
    (ckpt / "pytorch_model.bin").write_bytes(b"x")
    with pytest.raises(InterpError, match="never loads"):
        _main([str(ckpt), "--out", str(tmp_path / "o"), "--quiet"])


def test_save_cache_writes_shards_that_reproduce_the_table(tiny_checkpoints, tmp_path):
    from interp.attention.taxonomy import head_table
    from interp.cache import ShardedCache
    from interp.errors import InterpError

    out, cache = tmp_path / "o", tmp_path / "cache"
    assert _main([str(tiny_checkpoints["decoder"]), "--n", "10", "--batch-size", "4",
                  "--out", str(out), "--save-cache", str(cache), "--quiet"]) == 0
    assert len(list(cache.glob("shard-*.safetensors"))) == 3
    table = pd.read_csv(out / "heads.csv")
    again = head_table(ShardedCache(cache))
    assert list(again.label) == list(table.label)
    assert (again.entropy - table.entropy).abs().max() < 1e-5
    # decoder-only models also get the three TransformerLens detector scores
    for col in ("previous_token", "duplicate_token", "induction_detector",
                "induction_detector_uniform"):
        assert table[col].between(0, 1).all(), col
    html = (out / "report.html").read_text()
    assert "Operations" in html and "rollout" in html and "query role x key role" in html
    # a folder of other files is never replaced
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(InterpError, match="holds other files"):
        _main([str(tiny_checkpoints["decoder"]), "--n", "2", "--out", str(out),
               "--save-cache", str(other), "--quiet"])
    assert (other / "notes.txt").read_text() == "keep me"


@pytest.mark.parametrize("arch", ["decoder", "t5"])
def test_classify_heads_runs_in_bfloat16_on_the_cpu_and_writes_float_tables(tiny_checkpoints,
                                                                            tmp_path, arch):
    out = tmp_path / "o"
    assert _main([str(tiny_checkpoints[arch]), "--n", "5", "--out", str(out), "--quiet",
                  "--device", "cpu", "--dtype", "bfloat16", "--examples", "2"]) == 0
    table = pd.read_csv(out / "heads.csv")
    assert table["entropy"].notna().all()
    assert (table.entropy <= table.entropy_uniform + 1e-3).all()   # uniform is the maximum
    assert "Example 1" in (out / "report.html").read_text()
    if arch == "decoder":
        assert table["induction_detector"].between(0, 1).all()


def test_the_analysis_keeps_its_first_examples_as_a_cache_would(tiny_checkpoints):
    """The report's examples come from the one streamed pass: the kept patterns equal
    those of a separate cache of the same examples, and the table is the notebook's."""
    import torch

    from interp.attention import head_taxonomy, head_table
    from interp.cache import cache_attention
    from interp.models import load_model

    bridge, task = load_model(tiny_checkpoints["t5"])
    examples = task.generate(9, seed=1)
    result = head_taxonomy(bridge, task, examples, batch_size=4, keep=3)
    want = cache_attention(bridge, task, examples[:3])
    assert result.examples.kinds == want.kinds
    for kind in want.kinds:
        assert result.examples.patterns[kind].shape == want.patterns[kind].shape
        assert torch.allclose(result.examples.patterns[kind], want.patterns[kind], atol=1e-5)
        assert result.examples.query(kind).tokens == want.query(kind).tokens
    assert result.frame() is result.table and len(result.figure().data) >= 1
    again = head_table(cache_attention(bridge, task, examples))
    assert list(again.label) == list(result.table.label)
    assert list(again.detail) == list(result.table.detail)


def test_maps_frame_holds_each_heads_query_role_by_key_role_shares(tiny_checkpoints):
    """`.maps()` is the role map as a long table: a share per (head, query role, key role)
    that, for each query role, is the mean over its queries of the attention on that key role
    (counted here by loops over a separate cache) and sums to 1."""
    from interp.attention import head_taxonomy
    from interp.cache import cache_attention
    from interp.models import load_model

    bridge, task = load_model(tiny_checkpoints["decoder"])
    examples = task.generate(5, seed=3)
    maps = head_taxonomy(bridge, task, examples, batch_size=2).maps("self")
    assert set(maps.kind) == {"self"} and len(maps) > 0
    sums = maps.groupby(["layer", "head", "query"]).share.sum()
    assert ((sums - 1).abs() < 1e-5).all()
    c = cache_attention(bridge, task, examples)
    P, side = c.patterns["self"], c.query("self")
    layer, head, q_role, k_role = 1, 2, "b_digit", "c_digit"
    total, n = 0.0, 0
    for b, roles in enumerate(side.roles):
        for q, rq in enumerate(roles):
            if rq == q_role:
                n += 1
                total += sum(float(P[layer, b, head, q, k]) for k, rk in enumerate(roles)
                             if rk == k_role)
    row = maps[(maps.layer == layer) & (maps["head"] == head) & (maps["query"] == q_role)
               & (maps["key"] == k_role)]
    assert n > 0 and abs(float(row.share.iloc[0]) - total / n) < 1e-5


def test_verify_adds_effect_interval_and_p_columns(tiny_checkpoints, tmp_path, capsys):
    """--verify: every head gets the verification's columns; labels without a check get
    none; the terminal table marks each first label yes / NOT CONFIRMED / -."""
    out = tmp_path / "v"
    assert _main([str(tiny_checkpoints["decoder"]), "--n", "6", "--out", str(out), "--quiet",
                  "--verify", "--verify-n", "6", "--controls", "3", "--no-report"]) == 0
    table = pd.read_csv(out / "heads.csv")
    cols = ["verify_knockout", "verify_effect", "verify_ci_lo", "verify_ci_hi", "verify_p",
            "verify_target_mass", "verify_control_mass", "verified", "reads"]
    assert set(cols) <= set(table.columns)
    checked = table.verify_knockout.notna()
    masses = table.loc[checked, ["verify_target_mass", "verify_control_mass"]]
    assert (masses.ge(0) & masses.le(1 + 1e-9)).all().all()
    first = table.label.str.split(" + ", regex=False).str[0].str.split("(").str[0]
    assert (checked == first.isin(["routed", "vertical", "sharp_diagonal",
                                   "blurred_diagonal"])).all()
    assert table.loc[~checked, "verify_effect"].isna().all()
    assert (table.loc[checked, "verify_ci_lo"] <= table.loc[checked, "verify_ci_hi"]).all()
    assert ((table.loc[checked, "verify_p"] > 0) & (table.loc[checked, "verify_p"] <= 1)).all()
    rows = json.loads((out / "heads.json").read_text())
    assert all("verify_effect" in r and isinstance(r["routes"], list) for r in rows)
    printed = capsys.readouterr().out
    # the table's header, after the verification lines (wrapped to the terminal's width)
    head = next(line for line in printed.splitlines() if line.startswith("head ")).split()
    assert head[:6] == ["head", "label", "check", "effect", "ci_lo", "ci_hi"]


def test_roles_fine_keeps_the_fine_roles_in_the_reads(tiny_checkpoints):
    from interp.attention.taxonomy import head_taxonomy
    from interp.models import load_model

    bridge, task = load_model(tiny_checkpoints["decoder"])
    ex = task.generate(6, seed=0)
    fine = head_taxonomy(bridge, task, ex, grouping="fine").maps("self", "fine")
    field = head_taxonomy(bridge, task, ex).maps("self", "field")
    assert "b_digit" in set(fine["key"]) and "b_digit" not in set(field["key"])
    assert "b" in set(field["key"])
    # grouping sums the fine shares: the field share of b equals b_digit + b_sign
    f = fine[(fine.layer == 0) & (fine["head"] == 0) & (fine["query"] == "x")]
    g = field[(field.layer == 0) & (field["head"] == 0) & (field["query"] == "x")]
    want = float(f[f["key"].isin(["b_digit", "b_sign"])].share.sum())
    assert float(g[g["key"] == "b"].share.iloc[0]) == pytest.approx(want, abs=1e-5)


def test_text_models_name_routes_by_token_class(tiny_bert_dir):
    """Raw text (HF BERT here): a role is the token's class (read in context), so routes and
    maps name classes; grouping="fine" keeps the token strings."""
    from interp.attention.taxonomy import head_taxonomy
    from interp.models import load_model

    bridge, _ = load_model(tiny_bert_dir)
    tax = head_taxonomy(bridge, None, ["a b c, d", "e f 12 g h ."])
    maps = tax.maps(grouping=None)
    assert set(maps["key"]) <= {"special", "punctuation", "digit", "word", "subword",
                                "whitespace"}
    assert "special" in set(maps["query"])      # (this vocabulary reads the words as [UNK])
    assert set(tax.maps(grouping="fine")["key"]) == set(maps["key"])
    raw = head_taxonomy(bridge, None, ["a b c, d", "e f 12 g h ."], grouping="fine")
    assert set(raw.maps(grouping="fine")["key"]) >= {"[CLS]", "[SEP]"}
