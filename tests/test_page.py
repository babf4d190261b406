"""The HTML page: bundles embedded once, text escaped, nothing fetched from the network."""

import re

import pandas as pd
import plotly.graph_objects as go

from interp.viz.page import Page, circuitsvis_bundle


def test_bundles_are_embedded_once_however_many_figures(tmp_path):
    page = Page("t")
    for i in range(3):
        page.plotly(go.Figure(go.Heatmap(z=[[i, 1], [2, 3]])))
        page.circuitsvis("AttentionHeads", attention=[[[1.0, 0.0], [0.5, 0.5]]],
                         tokens=["a", "b"])
    out = page.write(tmp_path / "r.html").read_text()
    assert out.count("CircuitsVis.render(") - circuitsvis_bundle().count("CircuitsVis.render(") == 3
    assert len(out) < len(circuitsvis_bundle()) + 6_000_000
    from plotly.offline import get_plotlyjs
    assert out.count(get_plotlyjs()[:200]) == 1
    assert out.count(circuitsvis_bundle()[:200]) == 1
    assert not re.search(r"<script[^>]+src=\"https?://", out)  # nothing from a CDN


def test_token_text_and_table_cells_are_escaped():
    page = Page("<b>title</b>")
    page.circuitsvis("AttentionHeads", attention=[[[1.0]]], tokens=["</script><img src=x>"])
    page.table(pd.DataFrame({"token": ["<i>x</i>"]}))
    out = page.render()
    assert "</script><img" not in out
    assert "&lt;i&gt;x&lt;/i&gt;" in out and "&lt;b&gt;title&lt;/b&gt;" in out
