"""The method registry. Every module in this package is imported, and defining a
:class:`~methods.base.Method` subclass with a `name` registers it: adding a method is adding a file.
"""

from __future__ import annotations

import importlib
import pkgutil
import warnings

from benchmark.errors import UsageError
from methods.base import REGISTRY, Method, TrainData, VAEFeatureMethod

_INFRASTRUCTURE = {"base", "vae", "vae_cache"}
# Modules that failed to import, with the error: one broken method file must not take the
# others down, but it must not vanish silently either.
BROKEN: dict[str, str] = {}


def _discover() -> None:
    for module in pkgutil.iter_modules(__path__):
        name = module.name
        if name in _INFRASTRUCTURE or name.startswith("_") or name in BROKEN:
            continue
        try:
            importlib.import_module(f"{__name__}.{name}")
        except Exception as error:
            BROKEN[name] = f"{type(error).__name__}: {error}"
            warnings.warn(f"methods/{name}.py failed to import ({BROKEN[name]})", stacklevel=2)


def available() -> list[str]:
    _discover()
    return sorted(REGISTRY)


def get(name: str) -> type[Method]:
    names = available()
    if name not in REGISTRY:
        broken = "".join(f" (methods/{m}.py failed to import: {e})" for m, e in BROKEN.items())
        raise UsageError(f"Unknown method {name!r}. Available: {', '.join(names)}.{broken}")
    return REGISTRY[name]


__all__ = ["Method", "TrainData", "VAEFeatureMethod", "available", "get", "REGISTRY"]
