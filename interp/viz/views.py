"""circuitsvis views for a notebook, and the props the report draws them with.

    from interp.viz.views import attention_view
    attention_view(cache, example=0, kind="self", layer=1)    # every head of layer 1

The view is a circuitsvis `RenderedHTML` whose HTML carries the circuitsvis bundle inline:
it displays in Jupyter with no network (circuitsvis's own view loads its script from a CDN
when it thinks it is online, and asks google.com to find out).
"""

from __future__ import annotations

import torch
from circuitsvis.utils.render import RenderedHTML

from interp.errors import InterpError


def shown_tokens(side, b: int) -> list[str]:
    """The tokens of example b as views and reports show them: a position whose role is
    `<start>` (T5's decoder start, fed as the <pad> id) reads `<start>`, as in the role maps."""
    return ["<start>" if r == "<start>" else t for t, r in zip(side.tokens[b], side.roles[b])]


def heads_props(pattern: torch.Tensor, tokens: list[str], kind: str, layer: int) -> dict:
    """The props of circuitsvis `AttentionHeads` for one layer of one example:
    pattern [head, query, key] (rounded to 3 decimals), its tokens and head names."""
    from interp.viz.figures import compact

    return {"attention": compact(pattern), "tokens": list(tokens),
            "attentionHeadNames": [f"{kind} L{layer} H{h}" for h in range(pattern.shape[0])]}


class InlineView(RenderedHTML):
    """A circuitsvis view that renders from the bundle it carries: the same self-contained
    HTML for Jupyter (`_repr_html_`), `str()` and `show_code()`."""

    def __init__(self, component: str, props: dict):
        from interp.viz.page import circuitsvis_bundle, circuitsvis_html

        src = (f"<script>{circuitsvis_bundle()}</script>\n"
               f"{circuitsvis_html(component, props, on_load=False)}")
        super().__init__(src, src)

    def _repr_html_(self) -> str:
        return self.local_src


def attention_view(cache, example: int = 0, kind: str | None = None, layer: int = 0
                   ) -> InlineView:
    """Every head of one layer of one example, as circuitsvis `AttentionHeads`.

    Parameters
    ----------
    cache : an `interp.cache.AttentionCache` (`patterns[kind]: [layer, batch, head, query,
        key]`), e.g. `interp.cache_attention(...)` or `head_taxonomy(..., keep=k).examples`
    example : the example's place in the cache
    kind : a self-attention kind of the cache (`self`, `encoder`, `decoder_self`); default
        the first
    layer : the layer

    Returns
    -------
    InlineView (a circuitsvis RenderedHTML) that displays inline, offline; tokens are strings
    """
    from interp.hooks import KINDS

    kind = kind or cache.kinds[0]
    if kind not in cache.kinds:
        raise InterpError(f"attention kind {kind!r} is not in this cache; it holds "
                          f"{', '.join(cache.kinds)}")
    if KINDS[kind].query_side != KINDS[kind].key_side:
        raise InterpError(f"{kind!r} attention runs between two sequences; AttentionHeads "
                          "draws self-attention (encoder, decoder_self or self)")
    P = cache.patterns[kind]
    if not 0 <= example < P.shape[1]:
        raise InterpError(f"example {example} is out of range; the cache holds examples "
                          f"0..{P.shape[1] - 1}")
    if not 0 <= layer < P.shape[0]:
        raise InterpError(f"layer {layer} is out of range for kind {kind!r}; layers are "
                          f"0..{P.shape[0] - 1}")
    side = cache.key(kind)
    n = int(side.lengths[example])
    return InlineView("AttentionHeads", heads_props(P[layer, example, :, :n, :n],
                                                    shown_tokens(side, example), kind, layer))
