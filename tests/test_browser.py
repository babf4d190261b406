"""The reports in a real browser: headless Chromium, the network blocked.

One report of each kind (classify_heads for a decoder and a T5, ablate, patch, induction, probe) is
built once from tiny models and opened in Chromium (Debian's `chromium`, driven over the
DevTools pipe by interp.viz.browser). Every page must ask for nothing beyond file: and data:,
log no console error or exception, draw every figure, and fit a 1,400 px window. Reports made
from models whose tokens are HTML must show those tokens as text and inject no element.
"""

import time

import pytest

from browserkit import HTML_TOKENS, WIDTH, cv_props, opened
from interp.viz.browser import find_chromium


pytestmark = pytest.mark.skipif(
    find_chromium() is None, reason="chromium not found: install Debian's chromium package "
    "(apt-get install chromium) or set CHROMIUM=/path/to/chromium to run the browser test")

def test_the_blocking_and_the_error_capture_work_on_a_page_that_breaks_both(browser, tmp_path):
    """The checks below can fail: a page that reaches for the network and throws is seen."""
    bad = tmp_path / "bad.html"
    bad.write_text('<!DOCTYPE html><html><body><img src="http://example.invalid/x.png">'
                   '<script>console.error("planted"); fetch("https://cdn.example.invalid/a.js")'
                   '.catch(() => 0); undefined_function();</script></body></html>')
    tab = browser.open(bad.as_uri())
    end = time.monotonic() + 10                         # events arrive on their own thread
    while len(tab.blocked) < 2 or len(tab.console_errors) < 2:
        if time.monotonic() > end:
            break
        time.sleep(0.05)
    assert any("example.invalid/x.png" in u for u in tab.blocked), tab.requests
    assert any("cdn.example.invalid" in u for u in tab.blocked), tab.requests
    assert any("planted" in e for e in tab.console_errors), tab.console_errors
    assert any("undefined_function" in e for e in tab.console_errors), tab.console_errors


@pytest.mark.parametrize("name", ["classify-decoder", "classify-t5", "classify-html",
                                  "classify-verify", "ablate", "patch", "induction-html",
                                  "probe"])
def test_a_report_opens_offline_draws_every_figure_and_fits_the_window(pages, name):
    tab, page = pages[name]
    assert tab.requests and all(u.startswith(("file:", "data:")) for u in tab.requests), \
        tab.requests
    assert not tab.blocked and not tab.console_errors, (tab.blocked, tab.console_errors)
    assert page["alerts"] == 0
    # folded sections hold views drawn when opened: open them all, then check everything
    page = opened(tab)
    assert not tab.blocked and not tab.console_errors, (tab.blocked, tab.console_errors)
    assert page["plots"], "no plotly figure"
    for i, p in enumerate(page["plots"]):               # every trace of every figure drawn
        assert p["traces"] > 0 and p["drawn"] == p["traces"], (i, p)
        for bar in p["colorbars"]:                      # colour-bar labels never overlap
            spans = sorted(bar)
            assert len(spans) >= 3 and all(b[0] >= a[1] - 0.5 for a, b in zip(spans, spans[1:])), \
                (p["title"], spans)
    if name.startswith("classify") or name.startswith("induction"):
        assert page["cvs"], "no circuitsvis view"
    assert all(c["children"] > 0 and c["text"] for c in page["cvs"]), page["cvs"]
    # nothing wider than the window: no sideways scrolling of the page, no figure past it
    assert page["scroll_width"] <= page["inner_width"] == WIDTH
    assert all(p["right"] <= WIDTH for p in page["plots"] + page["cvs"])
    # scripts: the two bundles inline, then one per figure, none from elsewhere
    n_bundles = 1 + bool(page["cvs"])
    assert page["elements"]["script"] == n_bundles + len(page["plots"]) + len(page["cvs"])
    assert page["scripts_with_src"] == 0


def test_the_t5_report_labels_every_view_and_starts_the_decoder_with_start(pages):
    tab, page = pages["classify-t5"]
    page = opened(tab)
    views = [(k, l) for k in ("encoder", "decoder_self") for l in (0, 1)]
    captions = [p for p in page["paragraphs"] if " attention, layer " in p]
    # encoder and decoder self-attention, 2 layers each, one example: four labelled views
    assert captions == [f"{k} attention, layer {l}, heads 0-3 (example 0)" for k, l in views]
    texts = [c["text"] for c in page["cvs"]]
    assert len(texts) == 4
    for text, (k, l) in zip(texts, views):               # head names carry kind and layer
        assert all(f"{k} L{l} H{h}" in text for h in range(4)), text[:200]
    from interp.tasks import get_task

    encoder, _, decoder, _ = (p["tokens"] for p in cv_props(page))
    src = "".join(encoder[:-1])                  # the oracle: the task's own solution of it
    assert encoder[-1] == "<eos>"
    assert decoder == ["<start>", *get_task("quadratic", "small").solve(src)]
    assert [p["tokens"] for p in cv_props(page)] == [encoder, encoder, decoder, decoder]
    # one drawing per example: self attention in circuitsvis (above), cross attention (which
    # circuitsvis does not draw) as a plotly grid
    plots = {p["title"].split(":")[0]: p for p in page["plots"] if "every head" in p["title"]}
    assert set(plots) == {"cross"}
    cross = plots["cross"]
    assert cross["axes"] == ["key (encoder input)", "query (decoder input)"]
    # keys: the encoder's tokens, queries: the decoder's (plotly may skip some ticks)
    assert cross["x"] and set(cross["x"]) <= {f"{i}:{t}" for i, t in enumerate(encoder)}
    assert "0:<start>" in cross["y"]
    assert set(cross["y"]) <= {f"{i}:{t}" for i, t in enumerate(decoder)}
    rollouts = [p for p in page["plots"] if "rollout" in p["title"]]
    assert len(rollouts) == 2 and "0:<start>" in rollouts[1]["x"] + rollouts[1]["y"]
    assert not any("<pad>" in t for p in page["plots"] for t in p["x"] + p["y"])


def test_html_tokens_are_shown_as_text_and_inject_nothing(pages):
    tab, page = pages["classify-html"]
    page = opened(tab)
    assert page["alerts"] == 0
    assert {k: page["elements"][k] for k in ("img", "b", "i", "iframe", "object", "embed")} \
        == dict.fromkeys(("img", "b", "i", "iframe", "object", "embed"), 0)
    assert page["bold_ticks"] == 0           # plotly drew no <b>, <i> or <br> markup
    ticks = [t for p in page["plots"] for t in p["x"] + p["y"]]
    # the summary map's key-role labels are exactly the tokens (roles are token strings)
    summary = next(p for p in page["plots"] if p["title"].startswith("self attention: attention received"))
    assert set(HTML_TOKENS) <= set(summary["x"])
    # the grids and the rollout label positions with position:token
    assert {f"{i + 1}:{t}" for i, t in enumerate(HTML_TOKENS)} <= set(ticks)
    assert any("<script>alert(1)</script>" in c for c in page["cells"])
    for props in cv_props(page):                        # circuitsvis gets the text itself
        assert props["tokens"][0] == "<bos>"
        assert set(HTML_TOKENS) <= set(props["tokens"])
    assert not any("&lt;" in t or "&gt;" in t for t in ticks)   # no entity left undecoded
    # hover text: the label under the pointer, drawn as text
    hover = tab.evaluate("""(async () => {
      const d = [...document.querySelectorAll('.plotly-graph-div')].find(
          g => g.data[0].type === 'heatmap' && g.data[0].x.length > 6);
      const col = d.data[0].x.indexOf('&lt;b&gt;bold&lt;/b&gt;');
      Plotly.Fx.hover(d, {xval: col, yval: 0}, 'xy');
      await new Promise(r => setTimeout(r, 100));
      return [...d.querySelectorAll('.hoverlayer text')].map(e => e.textContent);
    })()""")
    assert len(hover) == 1 and hover[0].startswith("L0 \u2192 <b>bold</b>: "), hover


def test_the_induction_report_shows_token_text_not_ids(pages, reports):
    from interp.attention.induction import score_prompts
    from interp.models import load_model

    tab, page = pages["induction-html"]
    assert page["alerts"] == 0 and page["elements"]["img"] == page["elements"]["b"] == 0
    bridge, _ = load_model(reports["induction-html"].parent.parent / "native-html")
    ids, _, _, _ = score_prompts(bridge, 1, seed=0)
    words = bridge.tokenizer.convert_ids_to_tokens(ids[0].tolist())   # word-level: the text
    assert words[0] == "<bos>" and set(words) & set(HTML_TOKENS)
    listing = " ".join(f"{i}:{w}" for i, w in enumerate(words))
    assert any(p.endswith("Tokens: " + listing) for p in page["paragraphs"])
    assert [p["tokens"] for p in cv_props(page)] == [words, words]       # 2 layers


def test_the_probe_report_draws_a_heatmap_per_measure_and_a_causal_check_per_layer(pages):
    _, page = pages["probe"]
    titles = [p["title"] for p in page["plots"]]
    # score (accuracy) and the positional baseline over layer x position; at x ^ = every
    # example has one token, so there is no control task and no control/selectivity figure
    assert titles[:2] == [f"D_sign: {m} at resid_pre (decoder)"
                          for m in ("accuracy", "positional")]
    for p in page["plots"][:2]:
        assert p["x"] == ["in:x#0", "in:^#0", "in:x#1", "in:=#0"] and sorted(p["y"]) == ["L0", "L1"]
    # then one figure per erasure check (a layer where some position holds D_sign): the
    # erasure, or where it failed the interchange on its subspace, against random subspaces
    assert 2 < len(titles) <= 4 and all(
        t.startswith(("erasing D_sign at resid_pre L",
                      "swapping the erased subspace of D_sign (interchange) at resid_pre L"))
        for t in titles[2:])
