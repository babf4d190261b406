"""The HTML page: bundles embedded once, text escaped, nothing fetched from the network."""

import html
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
    page.table(pd.DataFrame({"<u>col</u>": ["<i>x</i>"]}))
    page.heading("<img src=x>").paragraph("a <br> b & c")
    out = page.render()
    assert "</script><img" not in out
    assert "&lt;i&gt;x&lt;/i&gt;" in out and "&lt;b&gt;title&lt;/b&gt;" in out
    assert "<th>&lt;u&gt;col&lt;/u&gt;</th>" in out
    assert "<h2>&lt;img src=x&gt;</h2>" in out and "<p>a &lt;br&gt; b &amp; c</p>" in out
    body = re.sub(r"<script>.*?</script>", "", out[out.index("<body>"):], flags=re.S)
    assert body.count("<div") == 2 and "<script" not in body
    assert not re.search(r"<(img|u|i|b|br)[ >]", body)


# -- token text in figures: plotly reads <b>, <i>, <br>, <a> ... and entities in every string

HTML = ["<script>alert(1)</script>", "<b>bold</b>", '"><img src=x onerror=alert(1)>', "<br>",
        "&amp;", "<i>x</i>"]


def _strings(obj, path=""):
    """Every string in a figure's JSON, with where it sits."""
    if isinstance(obj, str):
        yield path, obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from _strings(v, f"{path}.{k}")
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _strings(v, path)


def _assert_no_markup(fig):
    """No string of the figure holds markup, except the <br> and <extra> our hover templates
    use on purpose; returns the decoded strings (what plotly draws)."""
    drawn = []
    for path, s in _strings(fig.to_dict()):
        if path.startswith(".layout.template"):
            continue
        if path.endswith("hovertemplate"):
            s = s.replace("<br>", "").replace("<extra></extra>", "")
        assert "<" not in s and ">" not in s, (path, s)
        drawn.append(html.unescape(s))
    return drawn


def test_esc_shows_markup_and_entities_as_the_text_they_are():
    from interp.viz.figures import esc

    for s in HTML + ["plain", "a < b > c", "&lt;", "x&y"]:
        e = esc(s)
        assert "<" not in e and ">" not in e
        assert html.unescape(e) == s        # plotly decodes entities once: the text itself
    assert esc("&amp;") == "&amp;amp;" and esc("<br>") == "&lt;br&gt;"


def test_every_figure_escapes_token_text_in_labels_hover_and_titles():
    import torch

    from interp.viz import figures as F

    toks = HTML + ["w"]
    n = len(toks)
    P = torch.rand(2, 3, n, n)
    grid = F.head_grid(P, toks, "<b>kind</b>", toks[::-1], key_title="key <i>",
                       query_title="query <i>")
    assert grid.data[0].x == tuple(F.esc(f"{i}:{t}") for i, t in enumerate(toks))
    assert grid.data[0].y == tuple(F.esc(f"{i}:{t}") for i, t in enumerate(toks[::-1]))
    role = F.role_map_figure(torch.rand(3, n, n), toks, toks, "layer <b>0</b>")
    assert role.data[0].x == tuple(F.esc(t) for t in toks)
    hm = F.heatmap(torch.rand(2, n), toks, ["L0", "<br>"], "<sup>t</sup>")
    counts = pd.DataFrame({"<b>cls</b>": [1, 2]},
                          index=pd.MultiIndex.from_tuples([("<i>k</i>", 0), ("<i>k</i>", 1)]))
    bars = F.label_counts_figure(counts)
    summary = pd.DataFrame({"metric": ["answer_loss", "field:<b>D</b>"],
                            "target_damage": [0.5, 0.1]})
    controls = pd.DataFrame({"metric": ["field:<b>D</b>"], "damage": [0.05]})
    abl = F.ablation_figure(summary, controls)
    patch = F.patch_heatmap(torch.rand(2, n), ("layer", "pos"),
                            {"layer": [0, 1], "pos": toks}, "patch <b>x</b>")
    for fig in (grid, role, hm, patch):
        drawn = "\n".join(_assert_no_markup(fig))
        assert all(t in drawn for t in HTML)    # and still draws the text itself
    assert "<b>D</b>" in "\n".join(_assert_no_markup(abl))
    assert "<b>cls</b>" in "\n".join(_assert_no_markup(bars))
    # labels that look like numbers stay categories in their own order
    conv = F.heatmap(torch.rand(2, 3), ["10", "2", "7"], ["t-1", "t-0"], "kernel")
    assert conv.layout.xaxis.type == "category" and conv.data[0].x == ("10", "2", "7")


def test_a_figure_takes_the_page_width_and_keeps_its_own_settings():
    fig = go.Figure(go.Heatmap(z=[[1, 2]]))
    fig.update_layout(width=1650, height=400)
    page = Page("t").plotly(fig)
    out = page.render()
    assert '"width":1650' not in out.replace(" ", "") and '"height":400' in out.replace(" ", "")
    assert '"responsive":true' in out.replace(" ", "")
    assert fig.layout.width == 1650         # the caller's figure is not changed


def test_tables_scroll_sideways_in_their_own_box_and_captions_are_escaped():
    page = Page("t").table(pd.DataFrame({c: [1] for c in "abcdefghijklmnopqrstuvwxyz"}))
    page.circuitsvis("AttentionHeads", attention=[[[1.0]]], tokens=["a"], label="<b>L0</b>")
    out = page.render()
    assert re.search(r'<div class="scroll"><table[^>]*class="dataframe table"', out)
    assert ".scroll{max-width:100%;overflow-x:auto}" in out
    assert '<p class="cv-label">&lt;b&gt;L0&lt;/b&gt;</p>' in out


def test_the_t5_decoder_start_reads_start_and_the_rest_is_the_solution():
    from interp.viz.views import shown_tokens
    from interp.tasks import get_task
    from interp.tokens import build_sides

    task = get_task("quadratic", "small")
    examples = task.generate(3, seed=0)
    sides = build_sides("t5", task, examples)
    for b, ex in enumerate(examples):
        assert shown_tokens(sides["tgt"], b) == ["<start>", *ex.tgt]
        assert shown_tokens(sides["src"], b) == [*ex.src, "<eos>"]
    dec = build_sides("decoder", task, examples)["seq"]
    assert shown_tokens(dec, 0) == dec.tokens[0]


def test_the_induction_report_names_tokens_by_their_text():
    from interp.viz.reports.induction import token_texts

    class Tok:
        def decode(self, ids):
            return {3: "def", 4: "\n    ", 5: "<b>"}[ids[0]]

        def convert_ids_to_tokens(self, i):
            return f"raw{i}"

    class WithTok:
        tokenizer = Tok()

    assert token_texts(WithTok(), [3, 4, 5]) == ["def", "\\n    ", "<b>"]
    assert token_texts(object(), [174]) == ["#174"]


def test_byte_level_tokens_show_their_text_or_their_bytes():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from interp.viz.reports.induction import token_texts

    tok = Tokenizer(models.BPE())                    # bytes only: no merges
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(["x"], trainers.BpeTrainer(
        vocab_size=259, special_tokens=["<pad>", "<bos>", "<eos>"], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    text = "a\u00e9 \u2014\n\t<b>\x0c\x7f"

    class Bridge:
        tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok)

    ids = tok.encode(text).ids
    want = []                                        # the oracle: Python's own UTF-8 bytes
    for ch in text:
        raw = ch.encode()
        if len(raw) > 1:
            want += [f"<0x{b:02X}>" for b in raw]          # a byte of a character
        else:
            want.append({" ": "\u2423", "\n": "\\n", "\t": "\\t", "\x0c": "\\x0c",
                         "\x7f": "\\x7f"}.get(ch, ch))
    assert token_texts(Bridge(), ids) == want
