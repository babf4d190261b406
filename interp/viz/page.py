"""A self-contained HTML page that opens offline.

plotly.js and the circuitsvis bundle are embedded once per page, however many figures the page
holds (circuitsvis's own `.local_src` embeds its 1.3 MB bundle in every figure, and `str()`
points at a CDN these machines cannot reach). All text is escaped.

Light pages: a circuitsvis view or a plotly figure inside a folded `details` section is drawn
when the section is first opened (its 'toggle' event), not on load, and views are drawn one
per task (a queue), so opening a section never blocks the page for all its views at once. circuitsvis's own titles are drawn as bold text, not as headings,
so they stay out of the page's outline. `render(plotly_js="file")` loads plotly.js from
`plotly.min.js` beside the page (`write` puts it there) instead of embedding it: many reports
in one folder share one copy.
"""

from __future__ import annotations

import html
import json
import os
import re
import uuid
from pathlib import Path

PLOTLY_FILE = "plotly.min.js"
PLOTLY_JS = ("inline", "file")
#: the page's own script, once, in its head: views and figures in a folded `details` section
#: are drawn when it first opens, one per task (a queue that yields by a message, which
#: background tabs do not throttle as they do timers), so no task draws them all at once
PAGE_JS = """
var interpQueue = [], interpBusy = false, interpPort = new MessageChannel();
function interpNext() { var f = interpQueue.shift(); if (!f) { interpBusy = false; return; }
  try { f(); } finally { interpPort.port2.postMessage(0); } }
interpPort.port1.onmessage = interpNext;
function interpLater(f) { interpQueue.push(f);
  if (!interpBusy) { interpBusy = true; interpPort.port2.postMessage(0); } }
function interpWhenOpen(d, go, wait) { var s = d.closest('details');
  if (!s || s.open) { wait(false); return go(); }
  wait(true); var on = function () { if (s.open) { s.removeEventListener('toggle', on);
    interpLater(go); } }; s.addEventListener('toggle', on); }
function interpView(id, draw) { var d = document.getElementById(id);
  var go = function () { if (d.dataset.drawn) return; d.dataset.drawn = '1';
    d.textContent = ''; draw(); };
  interpWhenOpen(d, function () { interpLater(go); }, function (lazy) { if (lazy)
    d.innerHTML = '<p class="cv-wait">drawn when this section is opened</p>'; }); }
function interpPlot(id, draw) { var d = document.getElementById(id);
  interpWhenOpen(d, function () { d.classList.remove('plotly-graph-div-lazy');
    d.classList.add('plotly-graph-div'); draw(); }, function () {}); }
document.addEventListener('toggle', function (e) {
  if (!e.target.open || !window.Plotly) return;
  e.target.querySelectorAll('.plotly-graph-div').forEach(function (g) {
    if (g.classList.contains('js-plotly-plot')) Plotly.Plots.resize(g); }); }, true);
"""
_PLOT_CALL = re.compile(r'if \(document\.getElementById\("([^"]+)"\)\) \{(.*)\};(\s*</script>)',
                        re.S)


def lazy_plot(part: str) -> str:
    """A figure's HTML (`Page.plotly`) drawn when its folded section opens: its div is
    `plotly-graph-div-lazy` (not yet a `plotly-graph-div`) until then."""
    if 'class="plotly-graph-div"' not in part:
        return part
    part = part.replace('class="plotly-graph-div"', 'class="plotly-graph-div-lazy"', 1)
    return _PLOT_CALL.sub(lambda m: f'interpPlot("{m[1]}", function () {{{m[2]}}});{m[3]}',
                          part, count=1)


def _script_json(obj) -> str:
    """JSON safe to place inside a <script> element (no closing tag, no comment opener)."""
    return (json.dumps(obj).replace("</", "<\\/").replace("<!--", "<\\!--")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


class Page:
    def __init__(self, title: str):
        self.title = title
        self.parts: list[str] = []
        self.uses_plotly = False
        self.uses_circuitsvis = False

    def heading(self, text: str, level: int = 2) -> "Page":
        self.parts.append(f"<h{level}>{html.escape(text)}</h{level}>")
        return self

    def paragraph(self, text: str) -> "Page":
        self.parts.append(f"<p>{html.escape(text)}</p>")
        return self

    def table(self, df, max_rows: int = 500) -> "Page":
        """A pandas DataFrame as an HTML table (cells and column names escaped), in a box
        that scrolls sideways when the table is wider than the page."""
        table = df.head(max_rows).to_html(index=False, escape=True, border=0, classes="table")
        self.parts.append(f'<div class="scroll">{table}</div>')
        return self

    def plotly(self, fig) -> "Page":
        """A plotly figure that takes the page's width (a fixed width is dropped; the figure
        follows the window when it is resized); plotly.js is added once per page.
        Strings in the figure must already be escaped for plotly (interp.viz.figures.esc)."""
        import plotly.io as pio

        self.uses_plotly = True
        spec = fig.to_dict()                    # a copy: the caller's figure is not changed
        spec.setdefault("layout", {}).pop("width", None)
        spec["layout"]["autosize"] = True
        self.parts.append(pio.to_html(spec, full_html=False, include_plotlyjs=False,
                                      default_width="100%", config={"responsive": True},
                                      validate=False))
        return self

    def circuitsvis(self, component: str, label: str | None = None, **props) -> "Page":
        """A circuitsvis component (e.g. "AttentionHeads") rendered from the page's bundle,
        under a caption `label` (escaped). circuitsvis draws text as text (React)."""
        self.uses_circuitsvis = True
        if label:
            self.parts.append(f'<p class="cv-label">{html.escape(label)}</p>')
        self.parts.append(circuitsvis_html(component, props, on_load=True))
        return self

    # -- findings first, a table of contents, folded details (added for the circuit report)
    def findings(self, lines: list[str], title: str = "Findings") -> "Page":
        """The report's conclusions, first on the page: one paragraph per line (escaped),
        indented as the terminal indents it, under the heading `title`."""
        rows = []
        for line in lines:
            pad = (len(line) - len(line.lstrip(" "))) / 2
            rows.append(f'<p style="margin:2px 0 2px {pad:g}em">{html.escape(line.strip())}</p>')
        self.parts.append(f'<section class="findings" id="{anchor(title)}" style="background:'
                          f'#f6f8fa;padding:4px 14px 10px;border-left:4px solid #2b6cb0">'
                          f'<h2>{html.escape(title)}</h2>{"".join(rows)}</section>')
        return self

    def toc(self, titles: list[str]) -> "Page":
        """A table of contents: links to the sections `titles` (added with `section`)."""
        items = "".join(f'<li><a href="#{anchor(t)}">{html.escape(t)}</a></li>' for t in titles)
        self.parts.append(f'<nav class="toc"><h2>Contents</h2><ul>{items}</ul></nav>')
        return self

    def section(self, text: str, level: int = 2) -> "Page":
        """A heading that the table of contents links to (its id is `anchor(text)`)."""
        self.parts.append(f'<h{level} id="{anchor(text)}">{html.escape(text)}</h{level}>')
        return self

    def details(self, summary: str, parts: "Page | list[str]") -> "Page":
        """`parts` folded away under `summary` (escaped) in a <details> element: a Page
        (its parts; its plotly and circuitsvis needs carry over) or HTML made by a Page."""
        if isinstance(parts, Page):
            self.uses_plotly |= parts.uses_plotly
            self.uses_circuitsvis |= parts.uses_circuitsvis
            parts = parts.parts
        parts = [lazy_plot(p) for p in parts]
        self.parts.append(f"<details><summary>{html.escape(summary)}</summary>"
                          + "\n".join(parts) + "</details>")
        return self

    def render(self, plotly_js: str = "inline") -> str:
        """The page as HTML. plotly_js: "inline" embeds plotly.js (the page opens alone);
        "file" loads it from `plotly.min.js` beside the page (see `write`)."""
        if plotly_js not in PLOTLY_JS:
            from interp.errors import InterpError

            raise InterpError(f"plotly_js {plotly_js!r} is not one of inline, file")
        head = [f"<title>{html.escape(self.title)}</title>", '<meta charset="utf-8">',
                "<style>body{font-family:sans-serif;margin:2em;max-width:1400px}"
                ".table{border-collapse:collapse;font-size:13px}.table td,.table th{"
                "padding:2px 8px;border-bottom:1px solid #ddd;text-align:left;"
                "white-space:nowrap}.scroll{max-width:100%;overflow-x:auto}"
                ".plotly-graph-div{max-width:100%}.cv-label{margin:18px 0 0;"
                "font-size:15px}details{margin:6px 0}summary{cursor:pointer;font-size:15px;"
                "padding:3px 0}.cv-h{font-weight:bold;margin:6px 0}.cv-wait{color:#777}"
                "</style>"]
        own = PAGE_JS              # once, in the first script of the head
        if self.uses_plotly:
            if plotly_js == "file":
                head.append(f'<script src="{PLOTLY_FILE}"></script><script>{own}</script>')
            else:
                from plotly.offline import get_plotlyjs

                head.append(f"<script>{get_plotlyjs()}\n{own}</script>")
            own = ""
        if self.uses_circuitsvis:
            head.append(f"<script>{circuitsvis_bundle()}\n{own}</script>")
        body = "\n".join([f"<h1>{html.escape(self.title)}</h1>", *self.parts])
        return f"<!DOCTYPE html>\n<html><head>{''.join(head)}</head>\n<body>\n{body}\n</body></html>\n"

    def write(self, path: str | os.PathLike, plotly_js: str = "inline") -> Path:
        """Write atomically (temp file, then rename): a crash leaves no half-written page.
        plotly_js="file": also `plotly.min.js` beside the page (atomically), unless the same
        file is already there; a different file of that name is never overwritten."""
        from interp.io import write_atomic

        text = self.render(plotly_js)
        if plotly_js == "file" and self.uses_plotly:
            write_plotly_js(Path(path).parent)
        return write_atomic(path, text)


def anchor(text: str) -> str:
    """The id of a section: its text in lower case, runs of other characters as one '-'."""
    import re

    return "s-" + (re.sub(r"[^a-z0-9]+", "-", str(text).lower()).strip("-") or "section")


def circuitsvis_html(component: str, props: dict, on_load: bool = True) -> str:
    """A div and the script that renders circuitsvis `component` into it from the bundle
    already on the page (`CircuitsVis`); props are JSON inside the script, escaped.
    on_load: render once the page has loaded (a page whose bundle sits in its head);
    otherwise at once (a notebook cell, whose bundle comes just before)."""
    from circuitsvis.utils.convert_props import convert_props

    div = "cv-" + uuid.uuid4().hex[:12]
    call = (f'CircuitsVis.render("{div}", CircuitsVis.{component}, '
            f'{_script_json(json.loads(convert_props(props)))});')
    if on_load:           # the page's PAGE_JS: at once, or when its folded section opens
        call = f'interpView("{div}", function () {{ {call} }});'
    return f'<div id="{div}" class="cv" style="margin: 15px 0;"></div>\n<script>{call}</script>'


_HEADING = re.compile(r'createElement\("h[1-6]",(null|\{)')
#: react-chartjs-2's chart component in the bundle builds its chart.js chart when it mounts (an
#: effect with no dependencies) right before it renders its canvas: (1) React, (2) the
#: function that builds the chart from its render's props, (3) the one that destroys it,
#: (4) the canvas's ref
_CHART_MOUNT = re.compile(r'\(0,(\w+)\.useEffect\)\(\(\)=>\((\w+)\(\),\(\)=>(\w+)\(\)\),\[\]\),'
                          r'\1\.default\.createElement\("canvas",Object\.assign\(\{ref:(\w+),')


def _defer_charts(text: str) -> str:
    """The bundle with each chart.js chart built in a task of its own, queued behind the
    page's other drawing (PAGE_JS's `interpLater`), from the props of its component's latest
    render; where there is no queue (a notebook cell) at once, as circuitsvis does. An
    `AttentionHeads` view of n tokens holds one chart per head and the focused one, n^2 cells
    each, which chart.js builds cell by cell: at 90 tokens and four heads about 3 s in one
    task before, one chart's share per task now. Each such canvas is drawn with
    `data-interp-chart` and marked `data-interp-built` once its build has run, which
    `interp.viz.browser.DRAWN` waits for (React queues the builds in effects that run a task
    after the view is committed). A bundle in which the component is not found exactly once
    is returned as it is."""
    def sub(m):
        react, build, destroy, canvas = m.groups()
        return (f"(0,{react}.useEffect)(()=>{{{canvas}.current&&({canvas}.current"
                f".__interpBuild={build})}}),(0,{react}.useEffect)(()=>{{let gone=!1;"
                f"(window.interpLater||(f=>f()))(()=>{{if(gone||!{canvas}.current)return;"
                f"try{{{canvas}.current.__interpBuild()}}finally{{{canvas}.current&&"
                f"({canvas}.current.dataset.interpBuilt=1)}}}});"
                f"return()=>{{gone=!0,{destroy}()}}}},[]),"
                f'{react}.default.createElement("canvas",Object.assign({{ref:{canvas},'
                f'"data-interp-chart":1,')
    out, n = _CHART_MOUNT.subn(sub, text)
    # another circuitsvis than the lock's (constraints.txt) may be built otherwise: its
    # charts are then drawn as circuitsvis draws them
    return out if n == 1 else text


def circuitsvis_bundle() -> str:
    """The circuitsvis browser bundle shipped in its wheel, safe to inline. Its components'
    titles ("Head selector", "Attention Patterns" ...) are drawn as bold divs (class cv-h),
    not headings: a page's outline holds the page's own sections only. Its charts are built
    one per task (`_defer_charts`)."""
    import circuitsvis

    path = Path(circuitsvis.__file__).parent / "dist" / "cdn" / "iife.js"
    text = path.read_text(encoding="utf-8").replace("</script>", "<\\/script>")
    text = _defer_charts(text)
    return _HEADING.sub(lambda m: 'createElement("div",' + ('{className:"cv-h"}'
                        if m[1] == "null" else '{className:"cv-h",'), text)


def write_plotly_js(folder: str | os.PathLike) -> Path:
    """plotly.js as `plotly.min.js` in `folder` (atomically), for pages rendered with
    plotly_js="file". A file of that name that holds the same plotly.js is kept; one that
    holds anything else is never overwritten (InterpError)."""
    from plotly.offline import get_plotlyjs

    from interp.errors import InterpError
    from interp.io import write_atomic

    path = Path(folder) / PLOTLY_FILE
    text = get_plotlyjs()
    if path.is_symlink() or path.exists():
        try:
            same = path.is_file() and not path.is_symlink() and \
                path.read_text(encoding="utf-8") == text
        except (OSError, UnicodeDecodeError):
            same = False
        if same:
            return path
        raise InterpError(f"{path} exists and is not this version of plotly.js; move it away, "
                          "or write the report with plotly.js inline")
    return write_atomic(path, text)
