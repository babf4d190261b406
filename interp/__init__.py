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

from interp.errors import InterpError, TaskError

__version__ = "0.1.0"

# public name -> module that defines it
_API = {
    "load_model": "interp.models",
    "load_checkpoint": "interp.models",
    "Checkpoint": "interp.models",
    "get_task": "interp.tasks",
    "cache_attention": "interp.cache",
    "stream_attention": "interp.cache",
    "ShardedCache": "interp.cache",
    "save_shards": "interp.cache",
    "head_table": "interp.attention.taxonomy",
    "head_taxonomy": "interp.attention.taxonomy",
    "HeadTaxonomy": "interp.attention.taxonomy",
    "label_counts": "interp.attention.taxonomy",
    "role_maps": "interp.attention.maps",
    "rollout": "interp.attention.maps",
    "attention_view": "interp.viz.views",
    "Thresholds": "interp.attention.stats",
    "induction_scores": "interp.attention.detect",
    "evaluate": "interp.metrics",
    "answer_loss": "interp.metrics",
    "solve_one": "interp.metrics",
    "TrainConfig": "interp.training.recipe",
    "train": "interp.training.task",
    "hook_name": "interp.hooks",
    "run": "interp.hooks",
    "capture": "interp.hooks",
    "KINDS": "interp.hooks",
}


def __getattr__(name):
    if name in _API:
        import importlib

        value = getattr(importlib.import_module(_API[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'interp' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_API])


__all__ = ["InterpError", "TaskError", "__version__", *_API]
