"""Lazy public names for a package's `__init__` (PEP 562): a name is imported from its home
on first use, so `import interp` stays fast and the packages import nothing they do not need.

    __getattr__, __dir__ = lazy_names(globals(), {"load_model": ("interp.models", "load_model")})
"""

from __future__ import annotations

import importlib


def lazy_names(namespace: dict, api: dict[str, tuple[str, str]]):
    """(`__getattr__`, `__dir__`) for a package whose public `name` is `attr` of `module`
    (`api`: {name: (module, attr)}); a name, once loaded, is kept in `namespace`."""
    package = namespace["__name__"]

    def __getattr__(name):
        if name in api:
            module, attr = api[name]
            value = namespace[name] = getattr(importlib.import_module(module), attr)
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__():
        return sorted({*namespace, *api})

    return __getattr__, __dir__
