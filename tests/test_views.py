"""interp.viz.views: circuitsvis views that display inline in a notebook without a CDN."""

import html
import re

import pytest

from interp.viz.views import InlineView, attention_view


@pytest.fixture(scope="module")
def cache(tiny_checkpoints):
    from interp.cache import cache_attention
    from interp.models import load_model

    bridge, task = load_model(tiny_checkpoints["decoder"])
    return cache_attention(bridge, task, task.generate(2, seed=0))


def test_the_view_carries_its_bundle_and_never_loads_a_script_from_the_network(cache):
    view = attention_view(cache, example=1, layer=1)
    page = view._repr_html_()
    assert isinstance(view, InlineView) and str(view) == page == view.show_code()
    assert "var CircuitsVis=" in page                              # the bundle, inline
    assert not re.search(r"<script[^>]*\bsrc\s*=", page)           # no script from anywhere
    assert not re.search(r"""(src|href)\s*=\s*["']?https?://""", page)
    assert "CircuitsVis.render(" in page and "AttentionHeads" in page
    assert 'window.addEventListener("load"' not in page             # renders as the cell runs
    names = [f"self L1 H{h}" for h in range(4)]
    assert all(n in page for n in names)


def test_the_tokens_are_strings_and_markup_in_them_is_escaped(cache):
    import copy

    c = copy.deepcopy(cache)
    side = c.key("self")
    n = int(side.lengths[0])
    evil = "</script><img src=x onerror=alert(1)>"
    side.tokens[0] = [evil] + side.tokens[0][1:n]
    page = attention_view(c, example=0)._repr_html_()
    assert evil not in page                       # the closing tag cannot end the script
    assert "<\\/script><img src=x onerror=alert(1)>" in page        # JSON, closing tag cut
    shown = re.search(r'"tokens": (\[[^\]]*\])', page)
    assert shown and html.unescape(shown[1]).count('"') == 2 * n


def test_a_bad_example_layer_or_kind_is_one_clear_error(cache):
    from interp.errors import InterpError

    with pytest.raises(InterpError, match="example 5 is out of range"):
        attention_view(cache, example=5)
    with pytest.raises(InterpError, match="layer 2 is out of range"):
        attention_view(cache, layer=2)
    with pytest.raises(InterpError, match="not in this cache"):
        attention_view(cache, kind="cross")
