"""The method registry. Every module in this package is imported, and defining a
:class:`~methods.base.Method` subclass with a `name` registers it: adding a method is adding a file.
"""

from __future__ import annotations

import importlib
import pkgutil

from benchmark.errors import UsageError
from methods.base import REGISTRY, Method, TrainData, VAEFeatureMethod

_INFRASTRUCTURE = {"base", "vae", "vae_cache"}


def _discover() -> None:
    for module in pkgutil.iter_modules(__path__):
        if module.name not in _INFRASTRUCTURE and not module.name.startswith("_"):
            importlib.import_module(f"{__name__}.{module.name}")


def available() -> list[str]:
    _discover()
    return sorted(REGISTRY)


def get(name: str) -> type[Method]:
    names = available()
    if name not in REGISTRY:
        raise UsageError(f"Unknown method {name!r}. Available: {', '.join(names)}.")
    return REGISTRY[name]


__all__ = ["Method", "TrainData", "VAEFeatureMethod", "available", "get", "REGISTRY"]
