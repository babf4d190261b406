"""No report blocks the browser's main thread for more than 5 s, at load (beyond what loading
the libraries every report embeds costs) or when its folded sections open (their views are
drawn then).

Each report's tab of the `pages` fixture (tests/browserkit.py) has a long-task
PerformanceObserver installed before any script of the page runs, and a 20 ms heartbeat
timer set at the same moment whose gaps are counted until the page is drawn: Chromium
reports no long task for the task that parses the page itself, the heartbeat sees it (tasks
that run back to back count as one there, so at load the check is the stricter). At load,
where the longest task reached 5 s, the report is loaded again and a page holding only
plotly.js and the circuitsvis bundle right after it, and the latter's longest task is
subtracted from the former's: the libraries' parse and first run take about
2 s on an idle 2-core machine and over 5 s beside a busy pytest worker, which no report can
change. The bound at load is thus the libraries' load plus 5 s for the longest task, whatever
it holds. Then every `details` section is opened (`opened`, the first time for that tab) and
the views and figures drawn in them are waited for; the longest task must stay under 5 s.
The same observer on planted pages (a 12 s busy loop on the libraries' page at load, a 6 s
one when a section opens) shows that the check can fail.
"""

import pytest

from browserkit import LOAD_TASKS, OPEN_ALL, OPENED_TASKS, open_observed, opened
from interp.viz.browser import DRAWN, find_chromium

pytestmark = pytest.mark.skipif(find_chromium() is None, reason="chromium not found")

LIMIT_MS = 5000


def load_tasks(browser, path) -> list:
    """ms of each long task of `path` until it is drawn, in a tab of its own."""
    return open_observed(browser, path, timeout=120)[1]


def libraries_page(folder):
    """A page that holds only what every report embeds (plotly.js and the circuitsvis bundle,
    inline) and draws one tiny figure and view: its load is the libraries' own cost."""
    import plotly.graph_objects as go

    from interp.viz.page import Page

    page = Page("libraries").plotly(go.Figure(go.Bar(x=["a"], y=[1])))
    page.circuitsvis("ColoredTokens", tokens=["a", "b"], values=[0.5, 1.0])
    return page.write(folder / "libraries.html")


def test_the_long_task_check_catches_a_page_that_blocks_at_load_or_when_a_section_opens(
        browser, tmp_path):
    busy = "const t0 = performance.now(); while (performance.now() - t0 < 6000) {}"
    libraries = libraries_page(tmp_path)
    at_load = tmp_path / "load.html"
    at_load.write_text(libraries.read_text().replace(
        "</body>", f"<script>{busy.replace('6000', '12000')}</script></body>"))
    base = max(load_tasks(browser, libraries))
    assert max(load_tasks(browser, at_load)) - base > LIMIT_MS
    on_open = tmp_path / "open.html"
    on_open.write_text("<!DOCTYPE html><html><body><details><summary>s</summary>y</details>"
                       "<script>document.querySelector('details').addEventListener('toggle',"
                       f" () => {{ {busy} }});</script></body></html>")
    tab, load = open_observed(browser, on_open, timeout=120)
    opened(tab)
    assert max(load, default=0) < LIMIT_MS < max(OPENED_TASKS[tab])


def test_no_report_blocks_the_main_thread_for_5_s_at_load_or_when_its_sections_open(
        reports, pages, browser, tmp_path):
    """At load, beyond the libraries' own cost: parsing and running the 3.5 MB of plotly.js
    and the 1.3 MB circuitsvis bundle every report embeds takes about 2 s in one task on an
    idle 2-core machine and more than twice that beside another pytest worker, so each
    report's longest task at load is held to 5 s beyond the longest of a page that holds
    only the libraries. Where a report's load in `pages` reached 5 s, it is loaded again
    and the libraries' page right after, so both are timed under the same load of the
    machine. What a report draws when its sections open is held to 5 s outright."""
    libraries = libraries_page(tmp_path)
    worst = {}
    for name, (tab, _) in pages.items():
        opened(tab)                     # measured the first time (here or in another test)
        load, base = max(LOAD_TASKS[name], default=0), 0
        if load >= LIMIT_MS:
            load = max(load_tasks(browser, reports[name]), default=0)
            base = max(load_tasks(browser, libraries), default=0)
        worst[name] = {"load beyond the libraries": load - base, "libraries": base,
                       "opened": max(OPENED_TASKS[tab], default=0)}
    assert len(worst) == len(pages) >= 11
    assert all(w["load beyond the libraries"] < LIMIT_MS and w["opened"] < LIMIT_MS
               for w in worst.values()), worst


def test_a_page_that_loads_plotly_from_beside_it_draws_offline(browser, tmp_path):
    import plotly.graph_objects as go

    from interp.viz.page import Page

    page = Page("file mode").plotly(go.Figure(go.Bar(x=["a"], y=[1])))
    page.details("folded", Page("").plotly(go.Figure(go.Bar(x=["b"], y=[2]))))
    path = page.write(tmp_path / "report.html", plotly_js="file")
    tab = browser.open(path.as_uri())
    assert tab.wait_for(DRAWN, timeout=60)
    tab.evaluate(OPEN_ALL)
    assert tab.wait_for(DRAWN + " && document.querySelectorAll('.plotly-graph-div-lazy').length === 0 "
                        "&& document.querySelectorAll('.main-svg').length >= 2", timeout=60)
    assert tab.evaluate("[...document.scripts].filter(s => s.src).map(s => s.src)") == [
        (tmp_path / "plotly.min.js").as_uri()]
    assert not tab.blocked and not tab.console_errors, (tab.blocked, tab.console_errors)
