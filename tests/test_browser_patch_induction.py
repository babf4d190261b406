"""The patching and induction reports as headless Chromium draws them (tests/browserkit.py
builds them; the terminal output of the same runs, browserkit.STDOUT, is the oracle).

patch: the findings (the terminal's verdict lines) come first; the top-cells table holds the
terminal's rows and figures; the exact and attribution maps of a site share one colour range,
symmetric, the largest |share| over every map (recomputed from patching.json); the example
pair is the terminal's. induction: findings first, a heads table no wider than the window
with heads named L0H3 and no constant baseline column, one panel and axis per score (no
score's axis set by another's), and byte-level tokens shown as text with partial characters
marked <0xEF>.
"""

import json
import re

import numpy as np
import pytest

from browserkit import STDOUT, WIDTH, cv_props
from interp.viz.browser import find_chromium

pytestmark = pytest.mark.skipif(find_chromium() is None, reason="chromium not found")

# read in the drawn page: the first element after the h1, the findings, every table's rows
# and width, and every plot's traces and axes as plotly drew them
READ = """(() => {
  const h1 = document.querySelector('h1');
  const first = h1.nextElementSibling;
  const tables = [...document.querySelectorAll('table')].map(t => ({
    rows: [...t.querySelectorAll('tr')].map(r => [...r.children].map(c => c.textContent)),
    width: t.getBoundingClientRect().width, visible: t.offsetParent !== null}));
  const plots = [...document.querySelectorAll('.plotly-graph-div')].map(d => ({
    title: (d.layout.title || {}).text || '',
    traces: d._fullData.map(t => ({type: t.type, zmin: t.zmin, zmax: t.zmax,
                                   showscale: t.showscale, y: t.y, base: t.base,
                                   yaxis: t.yaxis, customdata: t.customdata})),
    ranges: Object.fromEntries(Object.keys(d._fullLayout).filter(k => /^yaxis\\d*$/.test(k))
                               .map(k => [k, d._fullLayout[k].range]))}));
  return {first_tag: first.tagName, first_class: first.className,
          findings: [...first.querySelectorAll('p')].map(p => p.textContent),
          tables, plots, paragraphs: [...document.querySelectorAll('p')].map(p => p.textContent),
          inner: window.innerWidth};
})()"""


def read(pages, name):
    tab, collected = pages[name]
    return tab.evaluate(READ), collected


def stdout_lines(name):
    return [l.strip() for l in STDOUT[name].splitlines()]


def terminal_table(name, title):
    """The rows of the table printed under `title` (cells split on runs of 2+ spaces)."""
    lines = STDOUT[name].splitlines()
    i = next(k for k, l in enumerate(lines) if l.strip() == title)
    rows = []
    for line in lines[i + 1:]:
        if not line.startswith("    "):
            break
        rows.append(re.split(r"\s{2,}", line.strip()))
    return rows


@pytest.mark.parametrize("name", ["patch", "induction-html", "induction-bytes"])
def test_the_first_section_after_the_title_holds_the_terminals_verdicts(pages, name):
    got, _ = read(pages, name)
    assert got["first_tag"] == "SECTION" and "findings" in got["first_class"]
    assert len(got["findings"]) >= 3
    out = stdout_lines(name)
    for line in got["findings"]:                     # every finding is a line it printed
        assert line.strip() in out, (line, STDOUT[name])
    if name == "patch":
        verdicts = [l for l in out if ": largest share " in l]
        assert len(verdicts) == 2 and set(verdicts) <= set(got["findings"])
    else:
        assert any(l.startswith("best induction head: L") for l in got["findings"])
        assert any(l.startswith("mechanism: previous-token head L") for l in got["findings"])


def test_the_patch_top_cells_table_is_the_terminals(pages):
    got, _ = read(pages, "patch")
    heads = {"cell", "share", "95% CI", "logit_diff", "attribution"}
    tables = [t["rows"] for t in got["tables"] if heads <= set(t["rows"][0])]
    assert len(tables) == 2                          # resid_pre, head
    for site, rows in zip(["resid_pre", "head"], tables):
        title = next(l for l in stdout_lines("patch")
                     if l.startswith(f"{site}: largest shares of the gap"))
        term = terminal_table("patch", title)
        assert rows == term, (rows, term)
        assert len(rows) == 1 + 8


def test_the_top_cells_are_the_cells_of_largest_share_in_the_json(pages, reports):
    data = json.loads((reports["patch"].parent / "patching.json").read_text())
    got, _ = read(pages, "patch")
    tables = [t["rows"] for t in got["tables"] if t["rows"][0][:1] == ["cell"]]
    for (site, e), rows in zip(data["sites"].items(), tables):
        norm = np.array(e["normalised"], dtype=float)
        order = np.argsort(-np.abs(norm.ravel()), kind="stable")[:8]
        want = [f"{100 * norm.ravel()[i]:+.1f}%" for i in order]
        col = rows[0].index("share")
        assert [r[col] for r in rows[1:]] == want, site


def test_exact_and_attribution_maps_share_one_symmetric_colour_range(pages, reports):
    data = json.loads((reports["patch"].parent / "patching.json").read_text())
    lim = 0.0                                        # the oracle: every share, from the JSON
    for e in data["sites"].values():
        gap = e["clean"] - e["corrupt"]
        exact = np.array(e["normalised"], dtype=float)
        att = (np.array(e["attribution"], dtype=float) - e["corrupt"]) / gap
        lim = max(lim, np.nanmax(np.abs(exact)), np.nanmax(np.abs(att)))
    got, _ = read(pages, "patch")
    maps = [p for p in got["plots"] if [t["type"] for t in p["traces"]] == ["heatmap"] * 2]
    assert len(maps) == 2
    for p in maps:
        a, b = p["traces"]
        assert a["zmin"] == b["zmin"] == -a["zmax"] and a["zmax"] == b["zmax"]
        assert a["zmax"] == pytest.approx(lim, rel=1e-6)
        assert [a["showscale"], b["showscale"]] == [True, False]      # one colour bar
    assert any(f"±{100 * lim:.1f}%" in t for t in got["paragraphs"])


def test_the_patch_page_shows_the_terminals_example_pair(pages):
    got, _ = read(pages, "patch")
    head = STDOUT["patch"].splitlines()[0]
    clean, bad = re.search(r"e\.g\. (\S+) -> (\S+);", head).groups()
    good, wrong = re.search(r"\('(.)' vs '(.)'\)", head).groups()
    para = next(p for p in got["paragraphs"] if p.startswith("Pair 1 of 3"))
    assert f"clean {clean} -> corrupted {bad}" in para
    assert f"clean '{good}', corrupted '{wrong}'" in para
    rows = next(t["rows"] for t in got["tables"] if t["rows"][1][:1] == ["clean"])
    assert "".join(rows[1][2:2 + len(clean)]) == clean      # <bos>, then the equation
    assert "".join(rows[2][2:2 + len(bad)]) == bad
    assert rows[1][-1] == good and rows[2][-1] == wrong
    diff = [i for i, (x, y) in enumerate(zip(clean, bad)) if x != y]
    assert [rows[3][2 + i] for i in diff] == ["yes"] * len(diff)


@pytest.mark.parametrize("name", ["induction-html", "induction-bytes"])
def test_the_induction_heads_table_fits_and_names_heads(pages, reports, name):
    import pandas as pd

    got, collected = read(pages, name)
    table = next(t for t in got["tables"] if t["rows"][0][:2] == ["head", "induction"])
    assert table["visible"] and table["width"] <= got["inner"] == WIDTH
    heads = pd.read_csv(reports[name].parent / "heads.csv")
    assert [r[0] for r in table["rows"][1:]] == [f"L{a}H{b}" for a, b in
                                                zip(heads.layer, heads["head"])]
    assert not any(c.endswith(("_uniform", "_random", "_sd")) for c in table["rows"][0])
    assert not any(re.fullmatch(r"\[\d+, \d+\]", c) for c in collected["cells"])
    base = next(p for p in got["paragraphs"] if p.startswith("baselines (every head)"))
    assert f"induction {heads.induction_uniform[0]:.3f}" in base
    assert f"copying {heads.copying_random[0]:+.3f}" in base


@pytest.mark.parametrize("name", ["induction-html", "induction-bytes"])
def test_every_score_has_its_own_axis_set_by_its_own_values(pages, reports, name):
    import pandas as pd

    heads = pd.read_csv(reports[name].parent / "heads.csv")
    got, _ = read(pages, name)
    fig = next(p for p in got["plots"] if p["title"].startswith("Scores per head"))
    bars = [t for t in fig["traces"] if t["type"] == "bar"]
    assert len(bars) == 6 and len({t["yaxis"] for t in bars}) == 6
    for t, col in zip(bars, ["induction", "prefix_matching", "previous_token",
                             "duplicate_token", "copying", "ov_eigen_positivity"]):
        own = np.array([*heads[col], t["base"] if np.isscalar(t["base"]) else t["base"][0]])
        tops = np.array(t["y"]) + np.array(t["base"])
        assert tops == pytest.approx(heads[col].values, abs=2e-4)     # bar ends: the scores
        lo, hi = fig["ranges"]["yaxis" + t["yaxis"][1:]]
        span = max(own.max() - own.min(), 1e-3)
        assert lo <= own.min() + 1e-4 and hi >= own.max() - 1e-4
        assert lo >= own.min() - 0.5 * span and hi <= own.max() + 0.5 * span, (col, lo, hi)


def byte_oracle(tok, i):
    """A token's text from GPT-2's byte alphabet written out here: bytes of whole UTF-8
    characters as text, every other byte as <0xEF>."""
    alphabet = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + \
        list(range(0xAE, 0x100))
    chars, n = {b: chr(b) for b in alphabet}, 0
    for b in range(256):
        if b not in chars:
            chars[b], n = chr(256 + n), n + 1
    back = {c: b for b, c in chars.items()}
    raw = bytes(back[c] for c in tok.convert_ids_to_tokens(i))
    out, k = "", 0
    while k < len(raw):
        for size in (4, 3, 2, 1):                   # the longest whole character here
            try:
                ch = raw[k:k + size].decode("utf-8")
                break
            except UnicodeDecodeError:
                ch = None
        if ch is None:
            out, k = out + f"<0x{raw[k]:02X}>", k + 1
        else:
            out, k = out + ch, k + len(ch.encode())
    out = out.replace(" ", "\u2423") if not out.strip(" ") else out
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in out)


def test_byte_level_tokens_read_as_text_and_the_repeat_as_a_repeat(pages, reports):
    from interp.attention.induction import score_prompts
    from interp.models import load_model

    got, collected = read(pages, "induction-bytes")
    bridge, _ = load_model(reports["induction-bytes"].parent.parent / "gpt2-bytes")
    ids, half, _, _ = score_prompts(bridge, 1, seed=0)
    ids = ids[0].tolist()
    tok = bridge.tokenizer
    want = [tok.convert_ids_to_tokens(i) if i < 3 else byte_oracle(tok, i) for i in ids]
    assert want[0] == "<bos>"
    shown = cv_props(collected)[0]["tokens"]
    assert shown == want
    assert any(t.startswith("<0x") for t in shown)                  # partial characters ...
    assert any(ord(c) > 127 for t in shown for c in t if not t.startswith("<0x"))  # ... whole
    assert not any(re.search(r"\\x[89a-f]", t) for t in shown)   # no byte escapes
    assert shown[1:1 + half] == shown[1 + half:]                     # the repeat reads
    rows = next(t["rows"] for t in got["tables"] if t["rows"][0][:3] == ["k", "first copy",
                                                                          "second copy"])
    assert [r[3] for r in rows[1:]] == ["yes"] * half
    assert [r[1].split(":", 1)[1] for r in rows[1:]] == want[1:1 + half]


def test_the_byte_level_report_opens_offline_and_draws_within_the_window(pages):
    tab, page = pages["induction-bytes"]
    assert tab.requests and all(u.startswith(("file:", "data:")) for u in tab.requests)
    assert not tab.blocked and not tab.console_errors, (tab.blocked, tab.console_errors)
    assert page["plots"] and all(p["traces"] > 0 and p["drawn"] == p["traces"]
                                 for p in page["plots"])
    assert page["cvs"] and all(c["children"] > 0 for c in page["cvs"])
    assert page["scroll_width"] <= page["inner_width"] == WIDTH
