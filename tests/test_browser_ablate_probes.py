"""The ablate, route knockout and probe reports as headless Chromium draws them.

- `ablate --route`: every trace's colour, read from the drawn SVG (points and error bars), is
  its legend entry's swatch colour, and each knockout has its own.
- `probes`: each map's colour range and colour-bar ticks come from the reliable cells alone
  (20 distinct test equations or more), recomputed here from probes.csv with pandas by the
  rules docs/probes.md states; the cells under the minimum are exactly the masked ones.
- every one of the three pages opens with its findings: the first section after the h1 holds
  the terminal's verdict lines, taken from the command's own standard output (NAME.stdout,
  written by tests/browserkit.py), and they name what the CSV files say.
"""

import pandas as pd
import pytest

from interp.viz.browser import find_chromium

pytestmark = pytest.mark.skipif(find_chromium() is None, reason="chromium not found")

MIN_TEST = 20          # the stated minimum of distinct test equations (docs/probes.md)

ROUTE_COLOURS = """(() => {
  const gd = document.querySelector('.plotly-graph-div');
  const rgb = s => s.replace(/\\s+/g, '');
  const legend = {};
  for (const item of gd.querySelectorAll('.legend .traces')) {
    const name = item.querySelector('.legendtext').textContent;
    const sw = item.querySelector('.legendpoints path');
    legend[name] = rgb(sw.style.fill || getComputedStyle(sw).fill);
  }
  const traces = [];
  for (const g of gd.querySelectorAll('.scatterlayer .trace')) {
    const name = g.__data__[0].trace.name;
    traces.push({name,
      points: [...g.querySelectorAll('.points path')].map(p => rgb(p.style.fill)),
      bars: [...g.querySelectorAll('.errorbars path')].map(p => rgb(p.style.stroke))});
  }
  return {legend, traces};
})()"""

MAPS = """(() => [...document.querySelectorAll('.plotly-graph-div')].map(gd => ({
  title: (gd.querySelector('.gtitle') || {}).textContent || '',
  zmin: gd._fullData[0].zmin, zmax: gd._fullData[0].zmax, type: gd._fullData[0].type,
  ticks: [...gd.querySelectorAll('.colorbar text')].map(t => t.textContent),
  masked: gd.data.length > 1 && gd.data[1].z ? gd.data[1].z.flat().filter(v => v !== null).length : 0,
  shown: gd.data[0].z ? gd.data[0].z.flat().filter(v => v !== null).length : 0,
})))()"""

FIRST = """(() => {
  const first = document.querySelector('h1').nextElementSibling;
  return {tag: first.tagName, cls: first.className,
          heading: (first.querySelector('h2') || {}).textContent,
          lines: [...first.querySelectorAll('p')].map(p => p.textContent),
          toc_next: (first.nextElementSibling || {}).className};
})()"""


def findings_of(stdout: str) -> list[str]:
    """The terminal's findings: the lines after the title's block, up to the next blank."""
    lines = stdout.splitlines()
    start = lines.index("") + 1
    end = lines.index("", start)
    return [x.strip() for x in lines[start:end]]


def stdout_of(reports, name: str) -> str:
    folder = reports[name].parent
    return (folder.parent / (folder.name + ".stdout")).read_text()


def test_route_traces_have_their_legend_colour_in_every_panel(pages, reports):
    tab, _ = pages["ablate-route"]
    got = tab.evaluate(ROUTE_COLOURS)
    routes = pd.read_csv(reports["ablate-route"].parent / "routes.csv")
    names = [k.replace("->", "\u2192") for k in dict.fromkeys(routes.knockout)]
    assert sorted(got["legend"]) == sorted(names)
    assert len(set(got["legend"].values())) == len(names)       # one colour per knockout
    seen = {}
    for t in got["traces"]:
        want = got["legend"][t["name"]]
        assert t["points"] and set(t["points"]) == {want}, t
        assert t["bars"] and set(t["bars"]) == {want}, t
        seen[t["name"]] = seen.get(t["name"], 0) + 1
    assert seen == {n: 2 for n in names}                         # both panels, same colour


def _expected_range(g: pd.DataFrame, column: str, metric: str) -> tuple[float, float]:
    """The documented colour range, from the reliable cells of one grid."""
    ok = g[g.n_eq_test >= MIN_TEST]
    v = ok[column].dropna()
    if column == "selectivity":
        hi = min(max(v.abs().max(), 0.05), 1.0)
        return -hi, hi
    if metric == "r2":
        return max(-1.0, min(0.0, v.min())), 1.0
    low = min(v.min(), ok.baseline.min()) if column != "control" else v.min()
    return max(0.0, min(low, 0.95)), 1.0


def test_probe_colour_ranges_come_from_reliable_cells_and_tiny_cells_are_masked(pages, reports):
    tab, _ = pages["probe-input"]
    probes = pd.read_csv(reports["probe-input"].parent / "probes.csv")
    few = probes[probes.n_eq_test < MIN_TEST]
    assert len(few), "the run should have cells under the minimum"
    maps = [m for m in tab.evaluate(MAPS) if m["type"] == "heatmap"]
    checked, differs = 0, 0
    for target, g in probes.groupby("target"):
        metric = g.metric.iloc[0]
        for column in ("score", "selectivity", "control", "positional"):
            name = metric if column == "score" else column
            title = f"{target}: {name} at resid_pre (decoder)"
            m = [x for x in maps if x["title"] == title]
            if g[column].isna().all():
                assert not m
                continue
            assert len(m) == 1, (title, [x["title"] for x in maps])
            m = m[0]
            lo, hi = _expected_range(g, column, metric)
            assert m["zmin"] == pytest.approx(lo, abs=1e-9) and \
                m["zmax"] == pytest.approx(hi, abs=1e-9), (title, m, lo, hi)
            # the colour bar drawn: its ends, unless the named baseline tick replaced one
            ticks = m["ticks"]
            base = [t for t in ticks if "baseline" in t]
            assert f"{hi:.2f}" in ticks or base, (title, ticks)
            assert f"{lo:.2f}" in ticks or base, (title, ticks)
            if column in ("score", "positional"):       # the baseline marked
                ref = g[g.n_eq_test >= MIN_TEST].baseline.round(6).mode().iloc[0]
                assert base == [f"{ref:.2f} baseline".replace("-0.00", "0.00")], (title, ticks)
            # the masked cells are exactly those under the minimum; none is coloured
            n_few = int(g[column].notna()[g.n_eq_test < MIN_TEST].sum())
            assert m["masked"] == int((g.n_eq_test < MIN_TEST).sum())
            assert m["shown"] == int(g[column].notna().sum()) - n_few
            # would every cell have set another range? (then the test above can fail)
            everything = g.assign(n_eq_test=MIN_TEST)
            if _expected_range(everything, column, metric) != (lo, hi):
                differs += 1
            checked += 1
    assert checked >= 6 and differs >= 1


def test_probe_causal_checks_run_on_reliable_cells_only(reports):
    folder = reports["probe-input"].parent
    probes = pd.read_csv(folder / "probes.csv")
    causal = pd.read_csv(folder / "causal.csv")
    reliable = {(t, l, p) for t, l, p, n in zip(probes.target, probes.layer, probes.position,
                                                probes.n_eq_test) if n >= MIN_TEST}
    holds_few = probes[(probes.n_eq_test < MIN_TEST) & (probes.layer == 1)
                       & (probes.score - probes.baseline >= 0.05)]
    assert len(holds_few), "a tiny cell that holds the target would have been checked"
    assert len(causal)
    for t, l, ps in zip(causal.target, causal.layer, causal.positions):
        assert all((t, l, p) in reliable for p in ps.split()), ps


@pytest.mark.parametrize("name", ["ablate", "ablate-route", "probe-input"])
def test_the_first_section_holds_the_terminals_findings(pages, reports, name):
    tab, _ = pages[name]
    got = tab.evaluate(FIRST)
    assert got["tag"] == "SECTION" and "findings" in got["cls"] and got["heading"] == "Findings"
    assert got["toc_next"] == "toc"
    printed = findings_of(stdout_of(reports, name))
    assert got["lines"] == printed
    folder = reports[name].parent
    text = "\n".join(printed)
    if name == "ablate":
        loss = pd.read_csv(folder / "summary.csv").set_index("metric").loc["answer_loss"]
        assert f"random input positions: {loss.verdict}" in text
        assert f"role-matched structural positions (never a digit): {loss.role_verdict}" in text
    elif name == "ablate-route":
        routes = pd.read_csv(folder / "routes.csv")
        loss = routes[routes.measure == "answer_loss"]
        words = {"confirmed": "confirmed", "not confirmed": "NOT confirmed",
                 "untestable": "untestable at 2 controls"}
        for k, v, p in zip(loss.knockout, loss.verdict, loss.p):
            line = next(x for x in printed if x.startswith(k + ":"))
            assert words[v] in line and f"p = {p:.3f}" in line
        n = int((loss.verdict == "confirmed").sum())
        assert printed[0].startswith(f"route knockout: {n} of {len(loss)} routes confirmed")
    else:
        probes = pd.read_csv(folder / "probes.csv")
        for target, g in probes.groupby("target"):
            ok = g[(g.n_eq_test >= MIN_TEST) & g.selectivity.notna()]
            best = ok.loc[ok.selectivity.idxmax()]
            want = f"most selective reliable cell L{best.layer} {best.position}:"
            assert any(x.startswith(f"{target} at") and want in x for x in printed), want
        causal = pd.read_csv(folder / "causal.csv")
        checks = causal[causal.metric == "answer_loss"]
        assert sum(x.startswith("causal check") for x in printed) == len(checks)


@pytest.mark.parametrize("name", ["ablate-route", "probe-input"])
def test_the_page_opens_offline_and_draws_every_trace(pages, name):
    """The checks tests/test_browser.py makes of every other report, for these two."""
    tab, page = pages[name]
    assert tab.requests and all(u.startswith(("file:", "data:")) for u in tab.requests)
    assert not tab.blocked and not tab.console_errors, (tab.blocked, tab.console_errors)
    assert page["plots"] and all(p["traces"] > 0 and p["drawn"] == p["traces"]
                                 for p in page["plots"])
    for p in page["plots"]:                              # colour-bar labels never overlap
        for bar in p["colorbars"]:
            spans = sorted(bar)
            assert len(spans) >= 3 and all(b[0] >= a[1] - 0.5 for a, b in zip(spans, spans[1:])), \
                (p["title"], spans)
    assert page["scroll_width"] <= page["inner_width"]
