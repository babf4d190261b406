"""Report pages that load plotly.js from a file beside them (`Page.write(plotly_js="file")`,
the shared `--plotly-js` option), and their refusals."""

import pytest

from interp.errors import InterpError
from interp.viz.page import PLOTLY_FILE, Page


def _page():
    import plotly.graph_objects as go

    return Page("t").plotly(go.Figure(go.Bar(x=[1], y=[2])))


def test_a_file_page_loads_plotly_from_beside_it_and_an_inline_page_embeds_it(tmp_path):
    from plotly.offline import get_plotlyjs

    lib = get_plotlyjs()
    inline = _page().render()
    assert inline.count(lib[:200]) == 1 and "<script src=" not in inline
    page = _page().write(tmp_path / "report.html", plotly_js="file")
    text = page.read_text()
    assert lib[:200] not in text and text.count(f'<script src="{PLOTLY_FILE}">') == 1
    assert (tmp_path / PLOTLY_FILE).read_text() == lib          # the library itself, whole
    _page().write(tmp_path / "second.html", plotly_js="file")    # the same copy is kept
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["report.html", "second.html", PLOTLY_FILE])


def test_a_foreign_plotly_min_js_is_never_overwritten(tmp_path):
    (tmp_path / PLOTLY_FILE).write_text("// someone else's build")
    with pytest.raises(InterpError, match="is not this version of plotly.js"):
        _page().write(tmp_path / "report.html", plotly_js="file")
    assert (tmp_path / PLOTLY_FILE).read_text() == "// someone else's build"
    assert not (tmp_path / "report.html").exists()               # nothing written
    with pytest.raises(InterpError, match="not one of inline, file"):
        _page().render(plotly_js="cdn")


def test_the_shared_option_reads_inline_or_file_and_refuses_others(tmp_path):
    from interp.cli.common import Parser, UsageError, add_options, write_page

    p = add_options(Parser(prog="x"), out="o", report=True)
    assert p.parse_args([]).plotly_js == "inline"
    args = p.parse_args(["--plotly-js", "file"])
    write_page(_page(), tmp_path / "report.html", args)
    assert (tmp_path / PLOTLY_FILE).is_file()
    with pytest.raises(UsageError, match="invalid choice: 'cdn'"):
        p.parse_args(["--plotly-js", "cdn"])
    assert not hasattr(add_options(Parser(prog="y"), out="o").parse_args([]), "plotly_js")


def test_folded_figures_and_views_wait_for_their_section_and_circuitsvis_adds_no_heading():
    import re

    from interp.viz.page import circuitsvis_bundle

    sub = _page()
    sub.circuitsvis("AttentionHeads", attention=[[[1.0]]], tokens=["a"])
    page = Page("t")
    page.details("folded", sub)
    out = page.render()
    assert out.count('class="plotly-graph-div-lazy"') == 1 and 'class="plotly-graph-div"' not in out
    assert out.count('interpPlot("') == 1 and out.count('interpView("cv-') == 1
    shown = _page().render()                     # a figure outside a section: drawn at once
    assert 'class="plotly-graph-div"' in shown and "interpPlot(" not in shown.split("</head>")[1]
    assert not re.search(r'createElement\("h[1-6]"', circuitsvis_bundle())


def test_the_locked_bundle_builds_its_charts_in_queued_tasks_and_another_is_left_as_it_is():
    """The chart component of the locked circuitsvis is patched once (tests/test_browser_charts.py
    checks what it does in Chromium); a bundle without it comes back unchanged."""
    from interp.viz.page import _defer_charts, circuitsvis_bundle

    text = circuitsvis_bundle()
    assert text.count("window.interpLater||") == 1 and text.count("__interpBuild") == 2
    assert text.count("dataset.interpBuilt=1") == 1 and text.count('"data-interp-chart":1') == 1
    other = 'var a=1;(0,R.useEffect)(()=>(h(),()=>x()),[]),R.default.createElement("div",{});'
    assert _defer_charts(other) == other
