"""The circuit report (circuits/discovery/figures.py, interp/viz/reports/discover.py) on
synthetic results with planted answers: a graph built from the names of the graph contract,
a planted circuit of a few large edges among many small ones, a planted faithfulness curve.
The oracles are the planted frames themselves (which edges, which signs, which inputs, which
size first reaches f >= 0.8), never the code under test.
"""

import html
import json
import math
import re
import types

import numpy as np
import pandas as pd
import pytest

from circuits.discovery.figures import (PERCENT_TICKS, circuit_figure,
                                        faithfulness_figure, parse_node)
from interp.viz.reports import discover as R

EVIL = "<script>alert(1)</script>"
# the planted circuit of the decoder (2 layers, 4 heads, MLPs): edge -> score
PLANTED = {"L1H3->logits": 2.0, "L0H1->L1H3.k": -1.5, "input->L0H1.v": 1.0,
           "input->L1H3.q": 0.6, "MLP0->logits": -0.4, "L0H2->MLP1": 0.25,
           "MLP1->logits": 0.12}
TOP_EDGE = "L1H3->logits"
F_CURVE = [0.05, 0.1, 0.3, 0.5, 0.7, 0.8, 0.9, 0.95, 1.0, 1.0]   # f >= 0.8 first at 5 %


def decoder_graph(n_layers=2, n_heads=4):
    """Every edge of the contract's decoder graph: (sender, receiver)."""
    heads = lambda l: [f"L{l}H{h}" for h in range(n_heads)]  # noqa: E731
    out = []
    for l in range(n_layers):
        ups = ["input"] + [s for j in range(l) for s in heads(j) + [f"MLP{j}"]]
        out += [(s, f"{r}.{p}") for r in heads(l) for p in "qkv" for s in ups]
        out += [(s, f"MLP{l}") for s in ups + heads(l)]
    out += [(s, "logits") for s in ["input"] + [s for j in range(n_layers)
                                                 for s in heads(j) + [f"MLP{j}"]]]
    return out


def edge_frame(pairs, planted, groups=("*",), seed=0, answer=None):
    """The result's frame: small random scores, planted ones large; in_circuit = planted.
    `planted` keys are SENDER->RECEIVER or SENDER->RECEIVER@GROUP. With positions, edges
    into the logits exist at the `answer` group only (as in the engine's graph)."""
    rng = np.random.default_rng(seed)
    rows = []
    for s, r in pairs:
        for g in (groups if r != "logits" or answer is None else (answer,)):
            e = f"{s}->{r}" + ("" if tuple(groups) == ("*",) else f"@{g}")
            score = planted.get(e, float(rng.uniform(-0.01, 0.01)))
            rows.append({"edge": e, "sender": s, "receiver": r, "group": g, "score": score,
                         "in_circuit": e in planted})
    df = pd.DataFrame(rows)
    df["abs_score"] = df.score.abs()
    df["rank"] = df.abs_score.rank(ascending=False, method="first").astype(int)
    return df


def node_frame(names, in_circuit, labels=None):
    labels = labels or {}
    rows = []
    for n in names:
        i = parse_node(n)
        kind = {"cross": "head"}.get(i["kind"], i["kind"])
        rows.append({"node": n, "kind": kind, "stack": i["stack"], "layer": i["layer"],
                     "head": i["head"], "label": labels.get(n, ""), "in_circuit": n in in_circuit})
    return pd.DataFrame(rows)


def faith_frame(n_edges, f=F_CURVE):
    df = pd.DataFrame({"percent": PERCENT_TICKS,
                       "edges": [max(1, math.ceil(p / 100 * n_edges)) for p in PERCENT_TICKS],
                       "f": f})
    df["f_lo"], df["f_hi"] = df.f - 0.05, df.f + 0.05
    return df


def endpoints(frame):
    inc = frame[frame.in_circuit]
    return set(inc.sender) | {r.rsplit(".", 1)[0] if r[-2:] in (".q", ".k", ".v") else r
                              for r in inc.receiver}


def result(positions="none", planted=PLANTED, groups=("*",), compare=True, answer=None):
    """A synthetic DiscoveryResult (the attributes the report reads)."""
    frame = edge_frame(decoder_graph(), planted, groups, answer=answer)
    names = sorted({s for s, _ in decoder_graph()} | {"logits"})
    nodes = node_frame(names, endpoints(frame), {"L1H3": "routed('-'->D_value)",
                                                  "L0H1": EVIL, "L0H0": "previous-token"})
    faith = faith_frame(len(frame))
    cmp = pd.DataFrame({"component": ["heads q/k/v", "MLPs", "embeddings"],
                        "spearman": [0.91, 0.42, np.nan], "pearson": [0.88, 0.3, 0.7],
                        "recall10": [0.9, 0.5, 1.0], "recall20": [0.85, 0.6, 1.0],
                        "worst_exact_share": [0.12, 0.3, 0.01],
                        "worst_attributed_share": [0.01, 0.02, 0.0]})
    res = types.SimpleNamespace(
        method="eap-ig", positions=positions, metric="logit_diff", ablation="resample",
        n_pairs=np.int64(32), m_full=np.float64(3.0), m_empty=-1.0, cpr=np.float64(0.81),
        cmd=float("nan"), circuit_f=(np.float64(0.9), 0.85, float("nan")),
        circuit_edges=np.int64(int(frame.in_circuit.sum())),
        compare=cmp if compare else None, answer="D_value",
        frame=lambda: frame, nodes=lambda: nodes, faithfulness=lambda: faith)
    res.figure = lambda: circuit_figure(frame, nodes, "circuit")
    return res


def edge_traces(fig):
    return [t for t in fig.data if t.meta and "edge" in t.meta]


def legend(fig, key):
    return {t.meta[key]: t for t in fig.data if t.meta and t.meta.get("legend") in
            ("sign", "input") and key in t.meta}


def strings(obj, path=""):
    if isinstance(obj, str):
        yield path, obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from strings(v, f"{path}.{k}")
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from strings(v, path)


def assert_no_markup(fig):
    """No string plotly draws holds markup except our own <br>; returns them decoded."""
    out = []
    for path, s in strings(fig.to_dict()):
        if path.startswith(".layout.template") or ".meta" in path:
            continue
        s = s.replace("<br>", "\n")
        assert "<" not in s and ">" not in s, (path, s)
        out.append(html.unescape(s))
    return "\n".join(out)


# ---------------------------------------------------------------------------------------
# the circuit figure
def test_the_figure_draws_exactly_the_circuit_edges_widths_ordered_as_the_scores():
    res = result()
    fig = circuit_figure(res.frame(), res.nodes(), "t")
    drawn = {html.unescape(t.meta["edge"]): t for t in edge_traces(fig)}
    assert set(drawn) == set(PLANTED)              # every planted edge, nothing else
    by_score = sorted(PLANTED, key=lambda e: abs(PLANTED[e]))
    widths = [drawn[e].line.width for e in by_score]
    assert all(a < b for a, b in zip(widths, widths[1:]))      # strictly ordered as |score|
    assert widths[-1] == pytest.approx(8.0)                    # the largest is the full width
    assert widths[0] == pytest.approx(1 + 7 * 0.12 / 2.0)      # scaled to the largest
    assert "7 of 7 circuit edges drawn" in html.unescape(fig.layout.title.text)


def test_colours_and_dashes_are_the_ones_the_legend_shows():
    res = result()
    fig = circuit_figure(res.frame(), res.nodes())
    signs, inputs = legend(fig, "sign"), legend(fig, "input")
    assert set(signs) == {"+", "-"} and signs["+"].line.color != signs["-"].line.color
    assert len({t.line.dash for t in inputs.values()}) == len(inputs) == 4
    for t in edge_traces(fig):
        e = html.unescape(t.meta["edge"])
        sign = "+" if PLANTED[e] > 0 else "-"
        assert t.line.color == signs[sign].line.color, e
        rec = e.split("->")[1]
        port = rec[-1] if rec[-2:] in (".q", ".k", ".v") else "mlp"
        assert t.line.dash == inputs[port].line.dash, e
    # the legend's names say what the colours and dashes mean
    assert "> 0" in html.unescape(signs["+"].name) and "< 0" in html.unescape(signs["-"].name)
    assert "(k)" in html.unescape(inputs["k"].name)
    # every colour is set by the figure, none left to plotly's cycle
    for t in fig.data:
        assert (t.line.color if t.mode == "lines" else t.marker.color) is not None


def test_at_most_max_edges_are_drawn_and_the_title_says_how_many_of_how_many():
    res = result()
    fig = circuit_figure(res.frame(), res.nodes(), max_edges=3)
    drawn = {html.unescape(t.meta["edge"]) for t in edge_traces(fig)}
    assert drawn == set(sorted(PLANTED, key=lambda e: -abs(PLANTED[e]))[:3])
    assert "3 of 7 circuit edges drawn" in html.unescape(fig.layout.title.text)


def test_with_positions_an_edge_at_several_groups_is_drawn_once_with_summed_width():
    planted = {"L1H3->logits@=": 1.0, "L1H3->logits@D_value": 0.5, "L0H1->L1H3.k@x": -0.6,
               "input->L0H1.v@b": 0.3}
    res = result("field", planted, groups=("x", "b", "=", "D_value"))
    fig = circuit_figure(res.frame(), res.nodes())
    drawn = {html.unescape(t.meta["edge"]): t for t in edge_traces(fig)}
    assert set(drawn) == {"L1H3->logits", "L0H1->L1H3.k", "input->L0H1.v"}
    w = {e: t.line.width for e, t in drawn.items()}
    assert w["L1H3->logits"] == pytest.approx(8.0)              # 1.5 summed: the largest
    assert w["L0H1->L1H3.k"] == pytest.approx(1 + 7 * 0.6 / 1.5)
    hover = html.unescape(drawn["L1H3->logits"].text[0])
    assert "=" in hover and "D_value" in hover and "2 groups" in hover
    assert "3 of 3 circuit sender->receiver pairs drawn; 4 edges over position groups" in \
        html.unescape(fig.layout.title.text)
    two = circuit_figure(res.frame(), res.nodes(), "<b>t</b>", max_edges=2)
    assert html.unescape(two.layout.title.text) == (
        "<b>t</b>\n2 of 3 circuit sender->receiver pairs drawn (largest |score|); 4 edges over "
        "position groups".replace("\n", "<br>"))


def test_t5_nodes_sit_encoder_left_and_cross_attention_beside_self_attention():
    names = (["enc.input", "dec.input", "logits"] +
             [f"{s}.L{l}H{h}" for s in ("enc", "dec", "cross") for l in range(2) for h in range(2)]
             + [f"{s}.MLP{l}" for s in ("enc", "dec") for l in range(2)])
    planted = {"enc.L1H0->cross.L0H1.k": 1.0, "dec.L0H1->cross.L1H0.q": 0.5,
               "cross.L1H0->logits": 2.0, "enc.input->enc.L0H0.v": 0.2,
               "dec.L1H1->dec.MLP1": -0.3}
    frame = edge_frame([tuple(e.split("->")) for e in planted], planted)
    nodes = node_frame(names, endpoints(frame))
    fig = circuit_figure(frame, nodes)
    pos = {}
    for t in fig.data:
        if t.meta and t.meta.get("legend") in ("node", "faint"):
            for x, y, h in zip(t.x, t.y, t.hovertext or t.text):
                pos[html.unescape(h.split("<br>")[0])] = (x, y, t.marker.symbol, t.meta)
    assert set(pos) == set(names)
    enc = [pos[n][0] for n in names if n.startswith("enc.")]
    dec = [pos[n][0] for n in names if n.startswith(("dec.", "cross."))]
    assert max(enc) < min(dec) < pos["logits"][0]
    assert pos["enc.input"][0] < min(x for n, (x, *_) in pos.items() if n.startswith("enc.L"))
    for l in range(2):
        for h in range(2):
            cx, cy, *_ = pos[f"cross.L{l}H{h}"]
            sx, sy, *_ = pos[f"dec.L{l}H{h}"]
            assert cy == sy and sx < cx < pos[f"dec.L{l + 1}H{h}"][0] if l == 0 else sx < cx
    # layers run left to right, heads stacked within a layer, the MLP below the heads
    assert pos["enc.L0H0"][0] < pos["enc.L1H0"][0] and pos["enc.L0H0"][1] > pos["enc.L0H1"][1]
    assert pos["dec.MLP0"][1] < min(pos[f"dec.L0H{h}"][1] for h in range(2))
    # drawn apart: cross-attention heads have their own symbol and legend entry
    assert pos["cross.L1H0"][3]["kind"] == "cross" and pos["dec.L1H1"][3]["kind"] == "head"
    assert pos["cross.L1H0"][2] != pos["dec.L1H1"][2]
    # nodes outside the circuit are faint and unnamed on the drawing
    assert pos["enc.MLP0"][3]["legend"] == "faint"


def test_every_string_of_the_figures_is_escaped_and_labels_are_in_the_hover():
    res = result("field", {f"L0H1->L1H3.k@{EVIL}": 1.0}, groups=(EVIL, "b"))
    fig = circuit_figure(res.frame(), res.nodes(), title="<b>t</b>")
    drawn = assert_no_markup(fig)
    assert EVIL in drawn and "<b>t</b>" in drawn and "routed('-'->D_value)" in drawn
    node = [t for t in fig.data if t.meta and t.meta.get("legend") == "node"
            and t.meta["kind"] == "head"][0]
    hover = dict(zip([t.split("<br>")[0] for t in node.text], node.hovertext))
    assert html.unescape(hover["L0H1"]) == f"L0H1<br>{EVIL}"
    # the drawing names a head by its label too (cut to 22 characters)
    text = dict(zip([t.split("<br>")[0] for t in node.text], node.text))
    assert html.unescape(text["L0H1"]) == f"L0H1<br>{EVIL[:21]}…"
    faith = faithfulness_figure({EVIL: faith_frame(100)}, "<i>f</i>", {EVIL: (0.5, 0.2)})
    assert EVIL in assert_no_markup(faith)


# ---------------------------------------------------------------------------------------
# the faithfulness figure
def test_faithfulness_figure_log_axis_bands_reference_lines_and_explicit_colours():
    a, b = faith_frame(500), faith_frame(500, [min(1.0, v + 0.1) for v in F_CURVE])
    fig = faithfulness_figure({"eap-ig": a, "exact": b, "mine": a}, "",
                              {"eap-ig": (0.81, 0.19), "exact": (0.9, 0.1)})
    assert fig.layout.xaxis.type == "log"
    assert list(fig.layout.xaxis.tickvals) == PERCENT_TICKS
    assert list(fig.layout.xaxis.ticktext) == ["0.1", "0.2", "0.5", "1", "2", "5", "10",
                                               "20", "50", "100"]
    lines = {t.meta["method"]: t for t in fig.data if not t.meta["band"]}
    bands = {t.meta["method"]: t for t in fig.data if t.meta["band"]}
    assert set(lines) == set(bands) == {"eap-ig", "exact", "mine"}
    colours = [t.line.color for t in lines.values()]
    assert len(set(colours)) == 3 and None not in colours
    for m, t in lines.items():                  # the band is the line's colour, lighter
        r, g, b_ = (int(t.line.color[i:i + 2], 16) for i in (1, 3, 5))
        assert bands[m].fillcolor.startswith(f"rgba({r},{g},{b_},")
    assert list(lines["exact"].y) == list(b.f)
    assert list(bands["eap-ig"].y) == list(a.f_hi) + list(a.f_lo)[::-1]
    assert "CPR 0.810, CMD 0.190" in lines["eap-ig"].name and "CPR" not in lines["mine"].name
    levels = sorted(s.y0 for s in fig.layout.shapes)
    assert levels == [0.8, 1.0]
    notes = [html.unescape(n.text) for n in fig.layout.annotations]
    assert any("0.8" in n for n in notes) and any("f = 1" in n for n in notes)


# ---------------------------------------------------------------------------------------
# terminal, JSON, page
def test_summary_is_json_without_nan_and_holds_the_planted_facts():
    data = R.summary(result(), "quadratic-small", {"pairs": "32 pairs"})
    text = json.dumps(data, allow_nan=False)          # raises on NaN or numpy types
    m = data["methods"]["eap-ig"]
    assert m["cmd"] is None and m["f_hi"] is None and data["gap"] == 4.0
    assert m["at_target"]["percent"] == 5 and m["at_target"]["f"] == 0.8
    assert m["top_edges"][0]["edge"] == TOP_EDGE and len(m["top_edges"]) == 10
    assert m["circuit_edges"] == len(PLANTED) and data["pairs"] == "32 pairs"
    assert [(h["node"], h["abs_score"]) for h in m["heads"]] == [
        ("L1H3", pytest.approx(4.1)), ("L0H1", pytest.approx(2.5)), ("L0H2", pytest.approx(0.25))]
    assert m["compare"][2]["spearman"] is None and "NaN" not in text
    assert R.clean({"a": np.True_, "b": np.int64(3), "c": np.float32("nan"), "d": (np.inf,)}) \
        == {"a": True, "b": 3, "c": None, "d": [None]}
    assert all(type(r["in_circuit"]) is bool for r in m["top_edges"])


def test_terminal_lines_fit_100_columns_lead_with_findings_and_name_the_top_edge_first():
    long = "a/very/long/checkpoint/name/" * 5
    res = result()
    out = R.lines(R.summary(res, long))
    assert all(len(x) <= 100 for x in out), max(out, key=len)
    assert out[0].startswith("circuit of a/very/long") and out[0].endswith("...")
    short = R.lines(R.summary(res, "quadratic-small"))
    assert not any(x.endswith("...") for x in short)         # nothing cut at a usual name
    text = "\n".join(out)
    assert "gap m(full) - m(empty) = +3.000 - (-1.000) = +4.000" in text
    assert "eap-ig: circuit of 7 of" in text and "f 0.900 [0.850, -]" in text
    assert "f >= 0.8 from" in text and "(5% of the graph)" in text
    assert "CPR 0.810" in text and "CMD -" in text
    head = next(i for i, x in enumerate(out) if x.strip().startswith("rank"))
    rows = out[head + 1:head + 11]
    assert rows[0].split()[1:4] == ["L1H3", "->", "logits"]     # the planted top edge first
    planted = sorted(PLANTED, key=lambda e: -abs(PLANTED[e]))
    assert [r.split()[1] + "->" + r.split()[3] for r in rows[:7]] == planted
    assert len({r.index("*") for r in rows}) == 1                # an aligned table
    heads = out[out.index(next(x for x in out if "heads in the circuit (3)" in x)) + 2:][:3]
    assert [h.split()[:2] for h in heads] == [["L1H3", "4.100"], ["L0H1", "2.500"],
                                               ["L0H2", "0.250"]]   # planted: summed |score|
    assert heads[0].endswith("routed('-'->D_value)") and heads[2].endswith("(no label)")
    assert "heads q/k/v" in text and "12.0% -> 1.0%" in text
    assert "x, ^, =: not measured" in text


def test_best_f_is_reported_when_the_target_is_never_reached():
    res = result()
    faith = faith_frame(100, [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.75, 0.7, 0.6])
    res.faithfulness = lambda: faith
    data = R.summary(res, "m")
    assert data["methods"]["eap-ig"]["at_target"] is None
    text = "\n".join(R.lines(data))
    assert "f never reaches 0.8: best f 0.750 [0.700, 0.800] at 20 edges (20%)" in text


def test_edges_at_x_caret_and_equals_are_found_with_positions():
    planted = {"L1H3->logits@=": 1.0, "L0H1->L1H3.k@x": -0.5, "input->L0H1.v@b": 0.5,
               "L0H2->MLP1@enc:^": 0.1}
    res = result("field", planted, groups=("x", "b", "=", "enc:^"), answer="=")
    g = R.summary(res, "m")["methods"]["eap-ig"]["guard"]
    assert g["n"] == 3 and g["of"] == 4 and g["share"] == pytest.approx(1.6 / 2.1)
    # the logits read at =: the = group mixes the input's = with the answer's position
    assert g["answer_group"] == "=" and g["apart"]["groups"] == ["x", "^"]
    assert g["apart"]["n"] == 2 and g["apart"]["share"] == pytest.approx(0.6 / 2.1)
    assert [e["edge"] for e in g["edges"]] == ["L1H3->logits@=", "L0H1->L1H3.k@x",
                                               "L0H2->MLP1@enc:^"]
    text = "\n".join(R.lines(R.summary(res, "m")))
    assert re.search(r"\n +1  L1H3 -> logits +=  +\+1\.000  yes\n", text)   # edge, then group
    assert "x, ^, =: 3 of the circuit's 4 edges sit there (76% of its |score|)\n" in text
    assert ("      = also holds the answer's position (the logits read it); x and ^ alone: 2 "
            "edges (29%)\n") in text
    other = R.summary(result("field", planted, groups=("x", "b", "=", "enc:^"), answer="b"),
                      "m")["methods"]["eap-ig"]["guard"]
    assert other["answer_group"] == "b" and "apart" not in other
    assert "the largest: L1H3->logits@= +1, L0H1->L1H3.k@x -0.5, L0H2->MLP1@enc:^ +0.1" in text
    none = result("field", {"input->L0H1.v@b": 0.5}, groups=("x", "b"))
    assert "no edge at x, ^, = is in the circuit" in "\n".join(R.lines(R.summary(none, "m")))


def test_combine_merges_methods_of_one_run_and_refuses_two_runs():
    a = R.summary(result(), "m")
    b = R.summary(result(compare=False), "m")
    b["methods"] = {"exact": b["methods"]["eap-ig"]}
    both = R.combine(a, b)
    assert list(both["methods"]) == ["eap-ig", "exact"]
    text = "\n".join(R.lines(both))
    assert "  eap-ig: circuit of" in text and "  exact: circuit of" in text
    fig = R.faith_figure(both)            # the page's: every method of the JSON
    lines = {t.meta["method"]: t for t in fig.data if not t.meta["band"]}
    assert set(lines) == {"eap-ig", "exact"} and list(lines["exact"].y) == F_CURVE
    assert "CPR 0.810, CMD -" in lines["eap-ig"].name
    assert lines["eap-ig"].line.color != lines["exact"].line.color
    with pytest.raises(ValueError, match="n_pairs"):
        R.combine(a, {**b, "n_pairs": 7})


def test_page_leads_with_findings_then_contents_and_escapes_every_label():
    res = result()
    data = R.summary(res, "<b>ckpt</b>")
    out = R.page(data, res).render()
    body = out[out.index("<body>"):]
    body_text = re.sub(r"<script>.*?</script>", "", body, flags=re.S)
    order = [body_text.index(s) for s in ('<section class="findings"', '<nav class="toc"',
                                          'id="s-the-circuit"', 'id="s-faithfulness"',
                                          'id="s-top-edges"', "<details>")]
    assert order == sorted(order)
    assert body_text.index("<h1>") < order[0]
    for line in R.findings(data):                          # the terminal's sentences
        assert html.escape(line.strip()) in body_text
    for href in re.findall(r'href="#([^"]+)"', body_text):
        assert f'id="{href}"' in body_text
    assert body_text.count('class="plotly-graph-div"') == 2
    del res.figure                                   # a result that draws nothing itself
    assert R.page(data, res).render().count('class="plotly-graph-div"') == 2
    assert "<script>alert" not in out and "&lt;script&gt;alert(1)&lt;/script&gt;" in body_text
    assert "<b>ckpt" not in out
    assert not re.search(r"<(b|img|i)[ >]", body_text)


def test_page_in_the_browser_draws_both_figures_without_errors(tmp_path):
    from interp.viz.browser import DRAWN, Chromium, find_chromium

    if find_chromium() is None:
        pytest.skip("chromium not found")
    res = result("field", {f"L0H1->L1H3.k@{EVIL}": 1.0, "L1H3->logits@=": -0.5},
                 groups=(EVIL, "="))
    path = R.page(R.summary(res, EVIL), res).write(tmp_path / "report.html")
    with Chromium(width=1400, height=900) as b:
        tab = b.open("about:blank")
        tab.call("Page.addScriptToEvaluateOnNewDocument", {"source": "window.__alerts = 0; "
                 "window.alert = () => { window.__alerts += 1; };"})
        tab.navigate(path.as_uri())
        assert tab.wait_for(DRAWN, timeout=60)
        got = tab.evaluate("""(() => ({
          plots: document.querySelectorAll('.plotly-graph-div .main-svg').length,
          edges: document.querySelectorAll('.scatterlayer .trace').length,
          first: document.querySelector('h1 + section h2').textContent,
          alerts: window.__alerts, scripts: document.getElementsByTagName('script').length,
          text: document.body.innerText}))()""")
        assert not tab.console_errors
        assert all(u.startswith(("file:", "data:", "about:")) for u in tab.requests)
    assert got["plots"] >= 2 and got["edges"] > 2 and got["first"] == "Findings"
    assert got["alerts"] == 0 and EVIL in got["text"]


def test_page_details_fold_escaped_parts_and_keep_their_plotly():
    import plotly.graph_objects as go

    from interp.viz.page import Page, anchor

    inner = Page("").plotly(go.Figure(go.Scatter(x=[1], y=[1]))).table(
        pd.DataFrame({"a": [EVIL]}))
    page = Page("t").findings(["top <b>", "  indented"]).toc(["A b", "<c>"])
    page.section("A b").section("<c>").details(f"more {EVIL}", inner)
    assert page.uses_plotly and not Page("u").details("x", ["<p>y</p>"]).uses_plotly
    out = page.render()
    body = re.sub(r"<script>.*?</script>", "", out[out.index("<body>"):], flags=re.S)
    assert f"<details><summary>more {html.escape(EVIL)}</summary>" in body
    assert body.count("<details>") == body.count("</details>") == 1
    assert body.index("<details>") < body.index("plotly-graph-div") < body.index("</details>")
    assert 'href="#s-a-b"' in body and 'id="s-a-b"' in body and anchor("<c>") == "s-c"
    assert "top &lt;b&gt;" in body and 'margin:2px 0 2px 1em">indented' in body
    assert "<script>alert" not in out


def test_an_empty_circuit_draws_no_edge_and_says_so():
    from circuits.discovery.figures import result_figures

    res = result(planted={})
    circuit, faith = result_figures(res)
    assert edge_traces(circuit) == [] and "0 of 0 circuit edges drawn" in circuit.layout.title.text
    assert all(t.meta.get("legend") in ("sign", "input", "faint", "node") for t in circuit.data)
    assert [t.meta["method"] for t in faith.data] == ["eap-ig", "eap-ig"]
    data = R.summary(res, "m")
    m = data["methods"]["eap-ig"]
    assert m["circuit_nodes"] == 0 and m["heads"] == []
    assert "    none" in R.lines(data) and R.page(data, res).render()


def test_a_position_group_named_like_the_no_position_mark_is_still_a_position():
    """With positions, `*` is the group of the multiplication sign, not "no position"."""
    planted = {"L0H1->L1H3.k@*": -1.0, "L1H3->logits@=": 0.5}
    res = result("field", planted, groups=("*", "="), answer="=")
    data = R.summary(res, "m")
    rows = [x for x in R.lines(data) if x.strip().startswith("1  ")]
    assert rows[0].split()[1:5] == ["L0H1", "->", "L1H3.k", "*"]       # no "@*" left on it
    assert data["methods"]["eap-ig"]["guard"]["measured"]
    only = result("field", {"L0H1->L1H3.k@*": -1.0}, groups=("*", "="), answer="=")
    fig = circuit_figure(only.frame(), only.nodes())
    assert "1 of 1 circuit sender-&gt;receiver pairs drawn; 1 edge over position groups" in \
        fig.layout.title.text
    assert "groups: *" in html.unescape(edge_traces(fig)[0].text[0])


def test_t5_counts_x_caret_and_equals_on_the_encoder_side_only():
    """The decoder's `=` are the solution's; the encoder's (and cross-attention's keys and
    values, which read the encoder) are the input's."""
    planted = {"enc.L0H1->enc.L1H0.q@x": 1.0, "enc.L1H0->cross.L0H1.k@=": 0.5,
               "dec.L0H1->cross.L0H1.q@=": 2.0, "cross.L0H1->logits@=": 3.0,
               "enc.input->enc.MLP0@b": 0.5}
    frame = edge_frame([tuple(e.split("@")[0].split("->")) for e in planted], planted,
                       groups=("x", "=", "b"), answer="=")
    res = result("field")
    res.frame = lambda: frame
    g = R.summary(res, "t5")["methods"]["eap-ig"]["guard"]
    assert g["side"] == "encoder" and g["n"] == 2 and "apart" not in g
    assert g["share"] == pytest.approx(1.5 / 7.0)
    assert [e["edge"] for e in g["edges"]] == ["enc.L0H1->enc.L1H0.q@x",
                                               "enc.L1H0->cross.L0H1.k@="]
    text = "\n".join(R.lines(R.summary(res, "t5")))
    assert "x, ^, = (encoder): 2 of the circuit's 5 edges sit there (21% of its |score|)" in text
