"""Attention analysis: scores, streamed statistics, the head taxonomy, maps and synthetic heads.

In a notebook::

    from interp.attention import head_taxonomy, head_table
    result = head_taxonomy(bridge, task, examples, keep=3)   # one streamed pass
    result.frame()                                           # the head table (DataFrame)
    result.maps()                                            # query role x key role shares
    head_table(interp.cache_attention(bridge, task, examples))   # from a cache (without
                                      # the detector's induction score, which needs the model)
"""

from interp.attention.detect import induction_scores
from interp.attention.maps import attention_flow, role_maps, rollout
from interp.attention.stats import HeadStats, Thresholds, collect_stats
from interp.attention.taxonomy import (
    LABELS,
    HeadTaxonomy,
    head_taxonomy,
    head_table,
    label_counts,
    operations_table,
    summarise,
)

__all__ = ["head_taxonomy", "HeadTaxonomy", "head_table", "label_counts", "operations_table",
           "summarise", "LABELS", "Thresholds", "HeadStats", "collect_stats",
           "induction_scores", "rollout", "attention_flow", "role_maps"]
