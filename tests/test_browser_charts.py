"""circuitsvis's chart.js charts are built one per task, from their component's latest props.

interp.viz.page patches the circuitsvis bundle (`_defer_charts`): an `AttentionHeads` view
holds a chart per head and the focused one, n^2 cells each, that chart.js used to build all
in the task that drew the view (about 3 s at 90 tokens). Here the page's queue is held by the
test (`interpLater` replaced), so what each queued task does is seen step by step: no chart
is built with its view, one task builds one chart, and a head hovered before the charts are
built is the one the focused chart shows.
"""

import time

import pytest

from interp.viz.browser import DRAWN, find_chromium

pytestmark = pytest.mark.skipif(find_chromium() is None, reason="chromium not found")

N = 12
HOLD = "window.__held = []; window.interpLater = f => { window.__held.push(f); }; true"
# per canvas: how many strongly blue pixels (attention cells; labels are grey) and the spread
# of their x over the canvas's width
BLUE = """[...document.querySelectorAll('div.cv canvas')].map(c => {
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  let n = 0, s = 0, s2 = 0;
  for (let i = 0; i < d.length; i += 4) {
    if (d[i + 3] > 200 && d[i + 2] > 150 && d[i] < 110 && d[i + 1] < 110) {
      const x = (i / 4) % c.width / c.width; n += 1; s += x; s2 += x * x; } }
  return [n, n ? Math.sqrt(Math.max(s2 / n - (s / n) ** 2, 0)) : 0]; })"""


def planted_heads():
    """Four heads over N tokens: 0 reads itself (a diagonal), 1 and 2 the previous token,
    3 the first token (one column)."""
    import numpy as np

    att = np.zeros((4, N, N))
    for q in range(N):
        att[0, q, q] = 1
        att[1:3, q, max(q - 1, 0)] = 1
        att[3, q, 0] = 1
    return att


def page_with_one_view(tmp_path):
    from interp.viz.page import Page

    sub = Page("").circuitsvis("AttentionHeads", attention=planted_heads().tolist(),
                               tokens=[f"t{i}" for i in range(N)],
                               attentionHeadNames=[f"H{h}" for h in range(4)])
    return Page("charts").details("one view", sub).write(tmp_path / "charts.html")


def run_held(tab) -> None:
    """Run the first held task."""
    tab.evaluate("window.__held.splice(0, 1).forEach(f => f()); true")


def test_a_view_is_drawn_without_its_charts_and_each_queued_task_builds_one(browser, tmp_path):
    tab = browser.open(page_with_one_view(tmp_path).as_uri())
    assert tab.wait_for(DRAWN, timeout=60)
    tab.evaluate(HOLD)
    tab.evaluate("document.querySelector('details').open = true; true")
    end = time.monotonic() + 30            # the section's task, then the view's own
    while not tab.evaluate("!!document.querySelector('div.cv').dataset.drawn"):
        assert time.monotonic() < end, "the view was not drawn from the held queue"
        run_held(tab)
        time.sleep(0.1)
    # React commits the view, then its effects queue one build per chart (none runs here)
    assert tab.wait_for("document.querySelectorAll('div.cv canvas').length === 5 && "
                        "window.__held.length === 5", timeout=30), tab.evaluate(
        "[document.querySelectorAll('div.cv canvas').length, window.__held.length]")
    assert all(n == 0 for n, _ in tab.evaluate(BLUE))           # no chart built yet
    # the page's own queue is empty here (the test holds the builds): not drawn all the same
    assert tab.evaluate("interpQueue.length === 0 && !interpBusy")
    assert tab.evaluate(DRAWN) is False
    # hover head 3 (one column) before any chart exists: React renders the focused chart's
    # new props while it has no chart.js chart
    tab.evaluate("""(() => { const box = document.querySelectorAll('div.cv canvas')[3]
        .parentElement.parentElement;
      box.dispatchEvent(new MouseEvent('mouseover', {bubbles: true,
                                                     relatedTarget: document.body}));
      return true; })()""")
    # React has drawn head 3 as the focused one (its box gets the shadow)
    assert tab.wait_for("document.querySelectorAll('div.cv canvas')[3]"
                        ".closest('[style*=\"box-shadow\"]') !== null", timeout=30)
    built = []
    for _ in range(5):
        run_held(tab)
        time.sleep(0.1)
        built.append(sum(n > 0 for n, _ in tab.evaluate(BLUE)))
    assert built == [1, 2, 3, 4, 5]
    assert tab.evaluate("window.__held.length") == 0 and tab.evaluate(DRAWN) is True
    spread = [s for _, s in tab.evaluate(BLUE)]
    # the thumbnails as planted: a diagonal spreads over the width, one column does not
    assert spread[0] > 0.15 and spread[3] < 0.05, spread
    assert spread[4] < 0.05, ("the focused chart does not show the hovered head 3", spread)
    assert not tab.console_errors, tab.console_errors


def test_without_the_page_queue_charts_are_built_with_their_view(browser, tmp_path):
    """A notebook cell has no interpLater: the view's charts come with it, as in circuitsvis."""
    from interp.viz.views import InlineView, heads_props

    import torch

    view = InlineView("AttentionHeads", heads_props(torch.tensor(planted_heads()),
                                                    [f"t{i}" for i in range(N)], "self", 0))
    path = tmp_path / "cell.html"
    path.write_text(f"<!DOCTYPE html><html><body>{view._repr_html_()}</body></html>")
    tab = browser.open(path.as_uri())
    end = time.monotonic() + 30
    while not (tab.evaluate("document.querySelectorAll('canvas').length") == 5 and
               all(n > 0 for n, _ in tab.evaluate(BLUE.replace("div.cv canvas", "canvas")))):
        assert time.monotonic() < end, tab.evaluate(BLUE.replace("div.cv canvas", "canvas"))
        time.sleep(0.2)
    assert tab.evaluate("typeof interpLater") == "undefined"
    assert not tab.console_errors, tab.console_errors


def test_a_view_with_canvases_that_are_no_charts_is_drawn(browser, tmp_path):
    """DRAWN waits for the canvases of deferred charts only: `AttentionPatterns` draws its
    own canvases (not chart.js), which nothing marks as built."""
    from interp.viz.page import Page

    sub = Page("").circuitsvis("AttentionPatterns", attention=planted_heads().tolist(),
                               tokens=[f"t{i}" for i in range(N)])
    path = Page("patterns").details("one view", sub).write(tmp_path / "patterns.html")
    tab = browser.open(path.as_uri())
    tab.evaluate("document.querySelector('details').open = true; true")
    assert tab.wait_for("document.querySelectorAll('div.cv canvas').length > 0 && " + DRAWN,
                        timeout=60), tab.evaluate(
        "[...document.querySelectorAll('div.cv canvas')].map(c => c.outerHTML.slice(0, 80))")
    assert tab.evaluate("document.querySelectorAll('canvas[data-interp-chart]').length") == 0
    assert not tab.console_errors, tab.console_errors
