"""interp: mechanistic interpretability of small transformers trained on algorithmic tasks."""

from interp.errors import InterpError, TaskError

__version__ = "0.1.0"


def load_model(name_or_path="quadratic-small", **kwargs):
    """Load a shipped model by name or a checkpoint directory; return (bridge, task).

    See `interp.models.load_model`.
    """
    from interp.models import load_model as _load

    return _load(name_or_path, **kwargs)


__all__ = ["InterpError", "TaskError", "load_model", "__version__"]
