"""What the browser tests share: the reports, built once from tiny models, and the pages
as headless Chromium draws them (interp.viz.browser). conftest.py imports the fixtures, so
any test file can take `pages` or `reports`.

Each area's runs sit in their own dict (classify, ablate and probes, patching and induction):
a run added there is built and opened with the others.
"""

import json
import re
import time

import pytest
import torch

from interp.viz.browser import DRAWN, Chromium

WIDTH = 1400
HTML_TOKENS = ["<script>alert(1)</script>", "<b>bold</b>", '"><img src=x onerror=alert(1)>',
               "<br>", "&amp;", "<i>x</i>"]

# What a page holds once drawn, read in the page itself.
COLLECT = """(() => {
  const all = (s, root = document) => [...root.querySelectorAll(s)];
  const texts = (s, root = document) => all(s, root).map(e => e.textContent);
  const plots = all('.plotly-graph-div'), cvs = all('div.cv');
  return {
    plots: plots.map(d => ({
      traces: (d.data || []).length,
      drawn: all('.heatmaplayer image, .barlayer .trace, .scatterlayer .trace', d).length,
      right: d.getBoundingClientRect().right,
      title: (d.querySelector('.gtitle') || {}).textContent,
      x: texts('.xaxislayer-above text', d), y: texts('.yaxislayer-above text', d),
      colorbars: all('.colorbar', d).map(c => all('text', c).map(t => {
          const r = t.getBoundingClientRect(); return [r.top, r.bottom]; })),
      axes: all('.infolayer g', d).filter(g => /^g-[xy][0-9]*title$/.test(g.getAttribute('class')))
            .map(g => g.textContent).filter(t => t)})),
    cvs: cvs.map(d => ({children: d.childElementCount, text: d.textContent,
                        right: d.getBoundingClientRect().right})),
    cv_calls: texts('script').filter(t => t.includes('CircuitsVis.render("cv-')),
    scroll_width: document.documentElement.scrollWidth, inner_width: window.innerWidth,
    elements: Object.fromEntries(['img', 'b', 'i', 'script', 'iframe', 'object', 'embed']
                                 .map(t => [t, document.getElementsByTagName(t).length])),
    scripts_with_src: all('script').filter(s => s.src).length,
    bold_ticks: all('.xaxislayer-above tspan, .yaxislayer-above tspan').length,
    ticks: texts('.xaxislayer-above text, .yaxislayer-above text'),
    cells: texts('td, th'),
    paragraphs: texts('p, h1, h2, h3'),
    alerts: window.__alerts,
  };
})()"""
# Installed before any script of the page runs: an injected alert(1) would be counted.
TRAP = "window.__alerts = 0; window.alert = () => { window.__alerts += 1; };"
# Installed the same way: each long task (Chromium's PerformanceObserver) is pushed on
# window.__tasks, and so is each gap over 50 ms of a 20 ms heartbeat timer, which runs until
# `__beat` is cleared (Chromium reports no long task for the task that parses the page).
OBSERVER = """window.__tasks = []; window.__beat = true;
(() => { let last = performance.now();
  const beat = () => { const now = performance.now();
    if (now - last > 50) window.__tasks.push(Math.round(now - last));
    last = now; if (window.__beat) setTimeout(beat, 20); };
  setTimeout(beat, 20); })();
new PerformanceObserver(list => { for (const e of list.getEntries())
    window.__tasks.push(Math.round(e.duration)); })
  .observe({type: 'longtask', buffered: true});"""
#: ms of each long task of a `pages` tab until it was drawn, {report name: [ms, ...]}
LOAD_TASKS = {}
#: ms of each long task while `opened` opened a tab's sections the first time, {tab: [ms]}
OPENED_TASKS = {}

def html_tokenizer():
    """A word-level tokenizer whose words are HTML, split on '|': [tokenizer, vocab size]."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = ["<pad>", "<bos>", "<eos>", *HTML_TOKENS] + [f"w{i}" for i in range(24)]
    tok = Tokenizer(models.WordLevel({t: i for i, t in enumerate(vocab)}, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.Split("|", behavior="removed")
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<bos>",
                                   eos_token="<eos>"), len(vocab)


#: the patching and induction runs' stdout, {run name: text}, filled as the reports are built
STDOUT = {}
#: text the byte-level tokenizer is trained on: its merges make whole multi-byte characters
BYTE_TEXT = [" ".join(c * 3 for c in "\u00e9\u00e8\u00ea\u00eb\u00e0\u00e2\u00e4\u00f4\u00f6"
                     "\u00fb\u00fc\u00e7\u00f1\u00df\u2014\u2013\u2026\u65e5\u672c\u8a9e"
                     "\u4e2d\u6587\u03a9\u03bb\u03c0\u0436\u044f")] * 4


def captured(name, main):
    """`main` with its stdout kept in STDOUT[name] (and still returning its status)."""
    import contextlib
    import io

    def run(argv):
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            rc = main(argv)
        STDOUT[name] = buf.getvalue()
        return rc
    return run


def byte_tokenizer():
    """An HF GPT-2-style byte-level BPE tokenizer, built offline: the 256 byte tokens, three
    specials and merges learnt on BYTE_TEXT (whole characters such as \u00e9, \u2014)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(BYTE_TEXT, trainers.BpeTrainer(
        vocab_size=320, special_tokens=["<pad>", "<bos>", "<eos>"], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<bos>",
                                   eos_token="<eos>")


@pytest.fixture(scope="session")
def reports(tiny_checkpoints, tmp_path_factory):
    """{name: report.html} for every kind of report, built once (in this process)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from circuits import ablate, patch
    from circuits.induction import __main__ as induction
    from interp import classify_heads
    from interp.models.native import NativeSpec, build_native, save_native
    from probes import __main__ as probe

    root = tmp_path_factory.mktemp("reports")
    tok, vocab = html_tokenizer()
    gpt2 = root / "gpt2-html"                  # an HF GPT-2 whose tokens are HTML
    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(vocab_size=vocab, n_positions=64, n_embd=32, n_layer=2, n_head=4,
                               bos_token_id=1, eos_token_id=2, pad_token_id=0)
                    ).save_pretrained(str(gpt2))
    tok.save_pretrained(str(gpt2))
    native = root / "native-html"              # a native text model, HTML tokens as well
    save_native(build_native(NativeSpec(n_layers=2, d_model=32, n_heads=4, n_ctx=32,
                                        d_vocab=vocab, mixing="smeared"), seed=1, tokenizer=tok),
                native, {"task": {"task": "test"}})
    prompts = root / "prompts.txt"
    prompts.write_text("|".join(HTML_TOKENS + ["w1", "w2"]) + "\n" +
                       "|".join(["w3", *HTML_TOKENS[::-1]]) + "\n")
    dec, t5 = (str(tiny_checkpoints[a]) for a in ("decoder", "t5"))
    runs = {}
    # classify_heads
    runs.update({
        # two examples: the first has no real root (x=nan), the second two roots, so the
        # cached examples show every group of the four
        "classify-decoder": (classify_heads.main, [dec, "--n", "4", "--examples", "2"]),
        "classify-t5": (classify_heads.main, [t5, "--n", "4", "--examples", "1"]),
        # --roles fine: the tokens themselves as roles (text models group them by class
        # otherwise), so the summary map's labels are the HTML tokens
        "classify-html": (classify_heads.main, [str(gpt2), "--prompts", str(prompts),
                                                "--examples", "2", "--roles", "fine"]),
        # the shipped decoder: a random tiny model has no label an intervention can check
        "classify-verify": (classify_heads.main, ["quadratic-small", "--n", "8", "--examples", "1",
                                                  "--verify", "--verify-n", "6",
                                                  "--controls", "2"]),
    })

    # ablate and probes (each run's terminal output kept beside its folder, NAME.stdout:
    # tests/test_browser_ablate_probes.py compares the page's findings with it)
    runs.update({
        "ablate": (teed(ablate.main), [dec, "--tokens", "x,^,=", "--n", "4", "--controls", "2",
                                       "--no-decode"]),
        "ablate-route": (teed(ablate.main), [dec, "--route", "L0H0:D_value->b,c;L1H1:offset=1;"
                                             "L1H3:->x", "--n", "8", "--controls", "2"]),
        "probe": (probe.main, [dec, "--target", "D_sign", "--n", "120", "--positions", "x,^,=",
                               "--causal", "--causal-n", "16", "--controls", "2"]),
        # every input position: cells under the minimum of test equations (a's sign, ...)
        "probe-input": (teed(probe.main), [dec, "--target", "D_sign,D_value", "--n", "120",
                                           "--positions", "input", "--causal",
                                           "--causal-layers", "1", "--causal-n", "16",
                                           "--controls", "2"]),
    })

    # patching and induction (stdout kept in STDOUT: the terminal is the pages' oracle)
    btok = byte_tokenizer()
    gpt2_bytes = root / "gpt2-bytes"           # an HF GPT-2 whose tokens are byte-level BPE
    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(vocab_size=len(btok), n_positions=64, n_embd=32, n_layer=2,
                               n_head=4, bos_token_id=1, eos_token_id=2, pad_token_id=0)
                    ).save_pretrained(str(gpt2_bytes))
    btok.save_pretrained(str(gpt2_bytes))
    runs.update({
        "patch": (captured("patch", patch.main), [dec, "--n", "3", "--sites", "resid_pre,head",
                                                  "--wide"]),
        "induction-html": (captured("induction-html", induction.main), [str(native), "--n", "2",
                                                                        "--wide"]),
        "induction-bytes": (captured("induction-bytes", induction.main),
                            [str(gpt2_bytes), "--n", "2", "--wide"]),
    })

    out = {}
    for name, (main, argv) in runs.items():
        assert main([*argv, "--out", str(root / name), "--quiet"]) == 0, name
        out[name] = root / name / "report.html"
    return out


def teed(main):
    """`main` whose standard output is also written to OUT.stdout (OUT: its --out folder)."""
    import contextlib
    import io
    import sys
    from pathlib import Path

    def run(argv):
        buf = io.StringIO()
        real = sys.stdout

        class Tee(io.TextIOBase):
            def write(self, s):
                buf.write(s)
                return real.write(s)

        with contextlib.redirect_stdout(Tee()):
            rc = main(argv)
        out = Path(argv[argv.index("--out") + 1])
        out.with_name(out.name + ".stdout").write_text(buf.getvalue())
        return rc
    return run


def cv_props(page) -> list[dict]:
    """The props each circuitsvis view was drawn with, read from the page's own scripts
    (circuitsvis draws the tokens on a canvas, so they are not in the DOM's text)."""
    out = []
    for call in page["cv_calls"]:
        m = re.search(r'CircuitsVis\.render\("cv-\w+", CircuitsVis\.AttentionHeads, (.*)\); \}\);',
                      call, re.S)
        out.append(json.loads(m.group(1)))
    return out


@pytest.fixture(scope="session")
def browser():
    with Chromium(width=WIDTH, height=900) as b:
        yield b


@pytest.fixture(scope="session")
def pages(reports, browser):
    """{name: (tab, what the drawn page holds)} for every report."""
    out = {}
    for name, path in reports.items():
        tab, LOAD_TASKS[name] = open_observed(browser, path)
        out[name] = tab, tab.evaluate(COLLECT)
    return out


def open_observed(browser, path, timeout: float = 30):
    """A new tab on `path` with TRAP and OBSERVER installed before its scripts, once drawn:
    (the tab, [ms of each long task until then])."""
    tab = browser.open("about:blank")
    tab.call("Page.addScriptToEvaluateOnNewDocument", {"source": TRAP + OBSERVER})
    tab.navigate(path.as_uri(), timeout=max(timeout, 60))
    assert tab.wait_for(DRAWN, timeout=timeout), f"{path.name}: not drawn in {timeout} s"
    time.sleep(0.3)                                     # late console errors, if any
    return tab, tab.evaluate("window.__beat = false; window.__tasks.splice(0)")


# Opens every folded section of a page (views inside are drawn when their section opens).
OPEN_ALL = "document.querySelectorAll('details').forEach(d => { d.open = true; }); true"
VIEWS_DRAWN = ("[...document.querySelectorAll('div.cv')].every(d => d.dataset.drawn && "
               "d.childElementCount > 0 && !d.querySelector('.cv-wait'))")


def opened(tab, timeout: float = 180) -> dict:
    """What the page holds once every `details` section is open and every view and figure
    drawn in it (COLLECT again). The tab is brought to the front: a background tab's timers
    are slowed. The first call on a tab keeps the long tasks of the opening in OPENED_TASKS."""
    tab.call("Page.bringToFront")
    first = tab not in OPENED_TASKS
    tab.evaluate("(window.__tasks || []).splice(0); true")  # what came before the opening
    tab.evaluate(OPEN_ALL)
    assert tab.wait_for(VIEWS_DRAWN + " && " + DRAWN + " && document.querySelectorAll("
                        "'.plotly-graph-div-lazy').length === 0", timeout=timeout), \
        "views not drawn"
    time.sleep(0.3)
    if first:
        OPENED_TASKS[tab] = tab.evaluate("(window.__tasks || []).splice(0)")
    return tab.evaluate(COLLECT)
