"""Attention analysis: scores, streamed statistics, the head taxonomy, maps and synthetic heads.

In a notebook::

    from interp.attention import classify_heads, head_table
    result = classify_heads(bridge, task, examples, keep=3)   # one streamed pass
    result.frame()                                           # the head table (DataFrame)
    head_table(interp.cache_attention(bridge, task, examples))   # the same from a cache

Names are loaded on first use.
"""

# public name -> module that defines it
_API = {
    "classify_heads": "interp.attention.taxonomy",
    "HeadTaxonomy": "interp.attention.taxonomy",
    "head_table": "interp.attention.taxonomy",
    "label_counts": "interp.attention.taxonomy",
    "operations_table": "interp.attention.taxonomy",
    "summarise": "interp.attention.taxonomy",
    "LABELS": "interp.attention.taxonomy",
    "Thresholds": "interp.attention.stats",
    "HeadStats": "interp.attention.stats",
    "collect_stats": "interp.attention.stats",
    "induction_scores": "interp.attention.detect",
    "rollout": "interp.attention.maps",
    "role_maps": "interp.attention.maps",
}


def __getattr__(name):
    if name in _API:
        import importlib

        value = getattr(importlib.import_module(_API[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'interp.attention' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_API])


__all__ = list(_API)
