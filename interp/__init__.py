"""interp: mechanistic interpretability of small transformers trained on algorithmic tasks.

The notebook API, one import away (every name is loaded on first use)::

    import interp
    bridge, task = interp.load_model("quadratic-small")        # a TransformerBridge + its task
    examples = task.generate(64, seed=0)
    cache = interp.cache_attention(bridge, task, examples)      # patterns of every kind
    table = interp.head_table(cache)                            # one row per head (DataFrame)
    view = interp.attention_view(cache, example=0, layer=2)     # circuitsvis, inline, no CDN
    tax = interp.head_taxonomy(bridge, task, examples, keep=3)  # .frame(), .figure(), .counts()

`circuits` adds the interventions (ablation, patching, attribution, induction).
"""

from interp.api import lazy_names
from interp.errors import InterpError, TaskError

__version__ = "0.1.0"

# public name -> (module, attribute). `evaluate_model` and `train_model` are not called
# `evaluate` and `train`: those are the command modules `python -m interp.evaluate / .train`,
# which would replace the attribute once imported.
_API = {
    "load_model": ("interp.models", "load_model"),
    "load_checkpoint": ("interp.models", "load_checkpoint"),
    "Checkpoint": ("interp.models", "Checkpoint"),
    "get_task": ("interp.tasks", "get_task"),
    "cache_attention": ("interp.cache", "cache_attention"),
    "stream_attention": ("interp.cache", "stream_attention"),
    "ShardedCache": ("interp.cache", "ShardedCache"),
    "save_shards": ("interp.cache", "save_shards"),
    "head_table": ("interp.attention.taxonomy", "head_table"),
    "head_taxonomy": ("interp.attention.taxonomy", "head_taxonomy"),
    "HeadTaxonomy": ("interp.attention.taxonomy", "HeadTaxonomy"),
    "label_counts": ("interp.attention.taxonomy", "label_counts"),
    "route_maps": ("interp.attention.taxonomy", "route_maps"),
    "rollout": ("interp.attention.maps", "rollout"),
    "attention_flow": ("interp.attention.maps", "attention_flow"),
    "Thresholds": ("interp.attention.stats", "Thresholds"),
    "attention_view": ("interp.viz.views", "attention_view"),
    "evaluate_model": ("interp.metrics", "evaluate"),
    "answer_loss": ("interp.metrics", "answer_loss"),
    "solve_one": ("interp.metrics", "solve_one"),
    "TrainConfig": ("interp.training.recipe", "TrainConfig"),
    "train_model": ("interp.training.task", "train"),
    "hook_name": ("interp.hooks", "hook_name"),
    "run": ("interp.hooks", "run"),
    "capture": ("interp.hooks", "capture"),
    "KINDS": ("interp.hooks", "KINDS"),
}


__getattr__, __dir__ = lazy_names(globals(), _API)

__all__ = ["InterpError", "TaskError", "__version__", *_API]
