"""The method registry. Every module in this package is imported, and defining a
:class:`~methods.base.Method` subclass with a `name` registers it: adding a method is adding a file.

Methods that live outside this package (a lab's own, or a test's) register the same way from
the modules named in ``BENCHMARK_METHOD_MODULES`` (comma-separated, importable): worker
processes import them too, because they read the same environment.
"""

from __future__ import annotations

import functools
import importlib
import os
import pkgutil
import warnings

from benchmark.errors import UsageError
from methods.base import REGISTRY, Method, TrainData, VAEFeatureMethod

_INFRASTRUCTURE = {"base", "vae"}
# Modules that failed to import, with the error: one broken method file must not take the
# others down, but it must not vanish silently either.
BROKEN: dict[str, str] = {}


@functools.cache
def _discover() -> None:
    """Import this package's method files, once a process: a plan of the grid looks methods
    up thousands of times."""
    for module in pkgutil.iter_modules(__path__):
        name = module.name
        if name in _INFRASTRUCTURE or name.startswith("_"):
            continue
        try:
            importlib.import_module(f"{__name__}.{name}")
        except Exception as error:
            BROKEN[name] = f"{type(error).__name__}: {error}"
            warnings.warn(f"methods/{name}.py failed to import ({BROKEN[name]})", stacklevel=2)


def _plugins() -> None:
    for name in filter(None, os.environ.get("BENCHMARK_METHOD_MODULES", "").split(",")):
        try:
            importlib.import_module(name.strip())
        except ImportError as error:
            raise UsageError(
                f"BENCHMARK_METHOD_MODULES names {name!r}, which does not import ({error});"
                " fix the name or PYTHONPATH, or unset the variable."
            ) from None


def available() -> list[str]:
    _discover()
    _plugins()
    return sorted(REGISTRY)


def get(name: str) -> type[Method]:
    names = available()
    if name not in REGISTRY:
        broken = "".join(f" (methods/{m}.py failed to import: {e})" for m, e in BROKEN.items())
        raise UsageError(f"Unknown method {name!r}. Available: {', '.join(names)}.{broken}")
    return REGISTRY[name]


__all__ = ["Method", "TrainData", "VAEFeatureMethod", "available", "get", "REGISTRY"]
