"""The classify report as Chromium draws it: findings first, legible per-head maps in the
order of the equation, the attention kind in every T5 title, views drawn when opened.

The oracles are outside the report's code: the order comes from the task's own role
sequences (`task.roles` of the run's examples, grouped by `field_of_role`), the label counts
and verdicts from the run's heads.csv, the tick counts from each figure's own data.
"""

import html
import re

import pandas as pd
import pytest

from browserkit import OPEN_ALL, VIEWS_DRAWN, opened
from interp.viz.browser import DRAWN, find_chromium

pytestmark = pytest.mark.skipif(find_chromium() is None, reason="chromium not found")

# each per-head map figure, panel by panel: its trace's groups, the tick texts drawn, the
# axis titles and the smallest tick font
MAPS = """(() => [...document.querySelectorAll('.plotly-graph-div')]
  .filter(d => ((d.querySelector('.gtitle') || {}).textContent || '').startsWith('What each head reads'))
  .map(d => ({
    title: d.querySelector('.gtitle').textContent,
    panels: [...d.querySelectorAll('.cartesianlayer .subplot')].map(s => ({
      x: [...s.querySelectorAll('.xaxislayer-above text')].map(t => t.textContent),
      y: [...s.querySelectorAll('.yaxislayer-above text')].map(t => t.textContent)})),
    traces: d.data.map(t => ({x: t.x, y: t.y})),
    annotations: [...d.querySelectorAll('.infolayer .annotation-text')].map(t => t.textContent),
    titles: [...d.querySelectorAll('.infolayer g')].filter(g => /^g-[xy][0-9]*title$/.test(
        g.getAttribute('class'))).map(g => g.textContent),
    font: Math.min(...[...d.querySelectorAll('.xaxislayer-above text, .yaxislayer-above text')]
        .map(t => parseFloat(getComputedStyle(t).fontSize)))})))()"""
SIDES = {"self": ("all", "all"), "encoder": ("src", "src"), "decoder self": ("tgt", "tgt"),
         "cross": ("tgt", "src")}


def task_sequences(n=4, seed=0):
    """The run's examples (classify_heads --n 4 --seed 0) as the task groups them: per example
    {"src": groups in order of first occurrence, "tgt": ..., "all": ...}."""
    from interp.attention.groups import field_of_role
    from interp.tasks import get_task

    task = get_task("quadratic", "small")
    out = []
    for e in task.generate(n, seed=seed, unique=True):
        src, tgt = task.roles(e.src, e.tgt)
        first = lambda rs: list(dict.fromkeys("nan (no root)" if field_of_role(r) == "nan"  # noqa: E731
                                              else field_of_role(r) for r in rs))
        out.append({"src": first(src), "tgt": first(tgt), "all": first([*src, *tgt])})
    return out


def _kind(title):
    m = re.match(r"What each head reads \((.*?) attention\)", title)
    return m.group(1)


@pytest.mark.parametrize("name", ["classify-decoder", "classify-t5"])
def test_every_group_of_every_per_head_map_is_labelled_in_equation_order(pages, name):
    tab, _ = pages[name]
    opened(tab)
    figs = tab.evaluate(MAPS)
    assert figs and {_kind(f["title"]) for f in figs} == (
        {"self"} if name == "classify-decoder" else {"encoder", "decoder self", "cross"})
    examples = task_sequences()
    for f in figs:
        kind = _kind(f["title"])
        assert len(f["panels"]) == len(f["traces"]) > 0
        for p, t in zip(f["panels"], f["traces"]):
            groups_x = [html.unescape(g) for g in t["x"]]
            groups_y = [html.unescape(g) for g in t["y"]]
            assert p["x"] == groups_x and p["y"] == groups_y     # every tick, none skipped
            assert "nan" not in groups_x + groups_y
        assert f["titles"].count("key group") == f["titles"].count("query group") \
            == len(f["panels"])
        assert f["font"] >= 10
        # equation order: the groups of each example stand in the order it shows them (T5:
        # the cached example's solution only; its input groups are the same in every example)
        q_side, k_side = SIDES[kind]
        ticks_y, ticks_x = f["panels"][0]["y"], f["panels"][0]["x"]
        for i, ex in enumerate(examples):
            for side, ticks in ((q_side, ticks_y), (k_side, ticks_x)):
                if name == "classify-t5" and side == "tgt" and i > 0:
                    continue
                want = [g for g in ex[side] if g in ticks]
                assert [g for g in ticks if g in want] == want, (kind, side, ticks, want)
                assert len(want) >= len(ex[side]) - 1        # the task's groups are drawn
        # panels named with the attention kind
        assert all(a.startswith(f"{kind} L") for a in f["annotations"]), f["annotations"]


def test_the_t5_figures_name_their_attention_kind_and_cross_rows_are_legible(pages):
    tab, _ = pages["classify-t5"]
    page = opened(tab)
    kinds = ("encoder", "decoder self", "decoder_self", "cross")
    for p in page["plots"]:
        if p["title"] != "Heads of each class per layer":      # one bar per kind and layer
            assert any(k in p["title"] for k in kinds), p["title"]
    titles = [p["title"] for p in page["plots"] if p["title"].startswith("What each head")]
    assert len(titles) == len(set(titles)) == 3
    rows = tab.evaluate("""(() => { const d = [...document.querySelectorAll('.plotly-graph-div')]
        .find(g => g.querySelector('.gtitle').textContent.startsWith('cross: every head'));
      const ys = [...d.querySelector('.cartesianlayer .subplot').querySelectorAll(
        '.yaxislayer-above text')].map(t => t.getBoundingClientRect().top);
      return ys.slice(1).map((y, i) => y - ys[i]); })()""")
    assert rows and min(rows) >= 12, rows


def _findings(tab):
    return tab.evaluate("""(() => { const h = document.querySelector('h1').nextElementSibling;
      return {cls: h.className, head: h.querySelector('h2').textContent,
              lines: [...h.querySelectorAll('p')].map(p => p.textContent)}; })()""")


@pytest.mark.parametrize("name", ["classify-decoder", "classify-t5", "classify-html"])
def test_the_first_section_holds_the_label_counts_per_kind(pages, reports, name):
    tab, _ = pages[name]
    f = _findings(tab)
    assert f["cls"] == "findings" and f["head"] == "Findings"
    table = pd.read_csv(reports[name].parent / "heads.csv")
    for kind, part in table.groupby("kind"):
        counts = pd.Series([lab.split("(")[0] for ls in part["labels"] for lab in ls.split(";")]
                           ).value_counts()
        line = next(x for x in f["lines"] if x.startswith(kind.replace("_", " ") + ":"))
        assert sorted(line.split(": ", 1)[1].split(", ")) == sorted(
            f"{c} {n}" for c, n in counts.items())


def test_the_verification_is_in_the_findings_with_intervals_and_its_table_is_in_view(
        pages, reports):
    tab, page = pages["classify-verify"]
    lines = _findings(tab)["lines"]
    table = pd.read_csv(reports["classify-verify"].parent / "heads.csv")
    checked = table[table.verify_effect.notna()]
    assert checked.verify_verdict.eq("untestable").all()     # 2 controls cannot reach p<=0.05
    assert "untestable at 2 controls:" in lines             # (the page indents by CSS)
    number = r"([+-][0-9.e-]+)"
    for r in checked.itertuples():
        line = next(x for x in lines if x.startswith(f"self L{r.layer}H{r.head} "))
        m = re.search(rf"effect {number} \[{number}, {number}\], p=([0-9.]+)", line)
        got = [float(v) for v in m.groups()]
        want = [r.verify_effect, r.verify_ci_lo, r.verify_ci_hi, r.verify_p]
        assert got == pytest.approx(want, rel=0.06, abs=6e-4), (line, want)
        assert "+0.000 " not in line + " " or r.verify_effect == 0
    n_unchecked = int(table.verify_effect.isna().sum())
    assert any(x.endswith(f"{n_unchecked} heads not checked.") for x in lines)
    view = tab.evaluate("""(() => { const h = document.getElementById('s-verification');
      let t = h.nextElementSibling; while (!t.querySelector('table')) t = t.nextElementSibling;
      const ths = [...t.querySelectorAll('th')];
      return {cols: ths.map(th => th.textContent), right: Object.fromEntries(ths.map(th =>
                [th.textContent, th.getBoundingClientRect().right])),
              cells: [...t.querySelectorAll('td')].map(td => td.textContent),
              width: window.innerWidth}; })()""")
    assert {"effect [95% CI]", "p", "check"} <= set(view["cols"])
    assert view["right"]["p"] <= view["width"] and view["right"]["effect [95% CI]"] <= view["width"]
    assert not any(c.lower() in ("nan", "none") for c in view["cells"])
    assert view["cells"].count("not checked") == n_unchecked


def test_the_score_legend_explains_main_score_and_the_reads_notation(pages):
    _, page = pages["classify-decoder"]
    text = " ".join(page["paragraphs"])
    assert "main_score" in text and "(x4.6, x5.0 offset)" in text and "offset-only" in text


def test_circuitsvis_views_are_drawn_when_their_section_opens_and_add_no_heading(
        browser, reports):
    tab = browser.open(reports["classify-decoder"].as_uri())
    assert tab.wait_for(DRAWN, timeout=60)
    before = tab.evaluate("""[...document.querySelectorAll('div.cv')].map(d =>
        [d.dataset.drawn || '', !!d.querySelector('.cv-wait'), d.closest('details').open])""")
    assert before and all(b == ["", True, False] for b in before), before
    outline = "[...document.querySelectorAll('h1,h2,h3,h4,h5,h6')].map(h => h.textContent)"
    headings = tab.evaluate(outline)
    tab.evaluate(OPEN_ALL)
    assert tab.wait_for(VIEWS_DRAWN, timeout=120)
    texts = tab.evaluate("[...document.querySelectorAll('div.cv')].map(d => d.textContent)")
    assert all(re.search(r"self L\d H\d", t) for t in texts)
    assert tab.evaluate(outline) == headings                     # circuitsvis adds no heading
    assert tab.evaluate("document.querySelectorAll('.cv h1,.cv h2,.cv h3,.cv h4').length") == 0
    assert not tab.console_errors, tab.console_errors


def test_one_drawing_per_example_and_a_flow_panel_without_blank_rows(pages):
    tab, _ = pages["classify-t5"]
    opened(tab)
    kinds = tab.evaluate("""[...document.querySelectorAll('details')]
      .filter(d => d.querySelector('summary').textContent.startsWith('Example'))
      .map(d => [d.querySelector('summary').textContent, d.querySelectorAll('div.cv').length,
                 [...d.querySelectorAll('.plotly-graph-div')].filter(g =>
                   g.querySelector('.gtitle').textContent.includes('every head')).length])""")
    assert len(kinds) == 3
    for summary, views, grids in kinds:          # circuitsvis or a grid, never both
        assert (views > 0) != (grids > 0), (summary, views, grids)
        assert (grids > 0) == ("cross" in summary)
    flows = tab.evaluate("""[...document.querySelectorAll('.plotly-graph-div')]
      .filter(g => g.querySelector('.gtitle').textContent.includes('attention flow'))
      .map(g => g.data[1].z.map(row => row.some(v => v !== null)))""")
    assert len(flows) == 2 and all(rows and all(rows) for rows in flows)
