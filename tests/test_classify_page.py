"""The classify page's parts on planted tables (no model): the findings, the verification
table, the score legend, the equation order of groups, the panel titles."""

import math

import pandas as pd

from interp.viz.reports import classify as report


def planted(verify: bool = True) -> pd.DataFrame:
    t = pd.DataFrame({
        "kind": ["self", "self", "cross"], "layer": [0, 1, 0], "head": [0, 2, 1],
        "label": ["routed(b->a)", "broad", "heterogeneous"],
        "labels": [["routed(b->a)", "vertical(=)"], ["broad"], ["heterogeneous"]],
        "main_score": [0.61234, 0.97, 2.81], "reads": ["b->a 0.61 (x4.6, x5.0 offset)", "", ""]})
    if verify:
        t["verified"] = [True, None, False]
        t["verify_knockout"] = ["route", None, "stripe"]
        t["verify_effect"] = [0.00042, math.nan, -0.25]
        t["verify_ci_lo"] = [0.00011, math.nan, -0.4]
        t["verify_ci_hi"] = [0.00077, math.nan, 0.01]
        t["verify_p"] = [0.01, math.nan, 0.6]
        t["verify_verdict"] = ["confirmed", None, "not confirmed"]
        t.attrs["verify"] = {"n": 70, "distinct": 70, "controls": 20, "note": ""}
    return t


def test_findings_count_labels_per_kind_and_give_each_verdict_its_interval():
    lines = report.findings(planted())
    assert lines[1:3] == ["  self: vertical 1, routed 1, broad 1", "  cross: heterogeneous 1"]
    assert ("Verification on 70 held-out examples (70 distinct equations), 20 equal-mass "
            "controls per head: 1 labels confirmed, 1 not confirmed, 0 untestable, 1 heads not "
            "checked.") in lines
    i = lines.index("  confirmed:")
    # a small effect keeps its significant digits; never +0.000
    assert lines[i + 1] == ("    self L0H0 routed(b->a): effect +0.00042 [+0.00011, +0.00077], "
                            "p=0.010")
    j = lines.index("  not confirmed:")
    assert lines[j + 1] == "    cross L0H1 heterogeneous: effect -0.250 [-0.400, +0.010], p=0.600"
    assert not any("Verification" in x for x in report.findings(planted(False)))


def test_the_verification_table_says_not_checked_and_holds_no_nan():
    v = report._verify_table(planted())
    assert list(v["check"]) == ["yes", "not checked", "NOT CONFIRMED"]
    assert list(v["effect [95% CI]"]) == ["+0.00042 [+0.00011, +0.00077]", "-",
                                          "-0.250 [-0.400, +0.010]"]
    assert list(v["p"]) == ["0.010", "-", "0.600"]
    assert not v.astype(str).apply(lambda c: c.str.lower().isin(["nan", "none"])).any().any()


def test_the_legend_explains_each_first_label_or_each_score_kind(monkeypatch):
    from interp.attention import taxonomy

    lines = report.legend(planted())
    assert [x.split(":")[0] for x in lines[1:-1]] == ["routed", "broad", "heterogeneous"]
    assert "nats" in lines[3] and "(x4.6, x5.0 offset)" in lines[-1]
    monkeypatch.setattr(taxonomy, "SCORE_KINDS", {"share": "a share 0-1", "entropy": "nats"},
                        raising=False)
    t = planted().assign(score_kind=["share", "share", "entropy"])
    assert report.legend(t)[1:-1] == ["share: a share 0-1", "entropy: nats"]


def test_equation_order_merges_examples_and_keeps_each_examples_order():
    none = ["a", "x", "=", "0", ";", "D", "=", "D_value", ";", "x", "=", "nan", ";"]
    two = ["a", "x", "=", "0", ";", "D", "=", "D_value", ";", "x1", "=", "x2", ";"]
    order = report.equation_order([none, two], names=["zz", "a", "D"])
    assert order == ["a", "x", "=", "0", ";", "D", "D_value", "x1", "x2", "nan", "zz"] or \
        order == ["a", "x", "=", "0", ";", "D", "D_value", "nan", "x1", "x2", "zz"]
    for seq in (none, two):                      # each example's order is kept
        first = list(dict.fromkeys(seq))
        assert [g for g in order if g in first] == first
    assert report._reordered(["b", "a", "c"], ["a", "b"]) == [1, 0, 2]


def test_panel_titles_name_the_attention_kind():
    titles = report.head_titles(planted())
    assert titles[("self", 0, 0)].startswith("self L0H0: routed(b->a) | b->a 0.61")
    assert "confirmed +0.00042 [+0.00011, +0.00077] p=0.010" in titles[("self", 0, 0)]
    assert titles[("cross", 0, 1)].startswith("cross L0H1: heterogeneous")


def test_equation_order_puts_a_later_examples_group_where_that_example_has_it():
    assert report.equation_order([["a", "c"], ["a", "b", "c"]]) == ["a", "b", "c"]
    assert report.shown_name("nan") == "nan (no root)" and report.shown_name("nan", False) == "nan"


def test_route_maps_label_every_group_in_the_given_order_with_axis_titles():
    from interp.viz.figures import TICK_FONT, route_maps_figure

    groups = ["<bos>", "a", "x", "^", "b", "=", "D", "D_value", ";", "x1"]
    rows = [("cross", 0, 1, q, k, 1.0 / len(groups)) for q in sorted(groups)
            for k in sorted(groups)]
    maps = pd.DataFrame(rows, columns=["kind", "layer", "head", "query", "key", "share"])
    fig = route_maps_figure(maps, [("cross", 0, 1)], order={"cross": (groups, groups[::-1])})
    esc = [g.replace("<", "&lt;").replace(">", "&gt;") for g in groups]
    assert list(fig.data[0].y) == esc and list(fig.data[0].x) == esc[::-1]
    ax, ay = fig.layout.xaxis, fig.layout.yaxis
    assert ax.tickmode == ay.tickmode == "array"
    assert list(ax.tickvals) == list(ax.ticktext) == esc[::-1] and list(ay.tickvals) == esc
    assert ax.tickfont.size >= 10 and ay.tickfont.size >= 10 and TICK_FONT >= 10
    assert ax.title.text == "key group" and ay.title.text == "query group"
    assert "(cross attention)" in fig.layout.title.text
    assert fig.layout.annotations[0].text == "cross L0H1"
