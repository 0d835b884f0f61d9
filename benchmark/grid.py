"""The study's grid as pure data: one Cell per method × dataset × label budget × seed."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import methods
from benchmark import datasets
from benchmark.errors import UsageError
from benchmark.splits import check_budget

DEFAULT_LABELS = (100, 600, 1000, 3000)
DEFAULT_SEEDS = (0, 1, 2, 3, 4)
PARAM_MODES = ("defaults", "tuned")


@dataclass(frozen=True)
class Cell:
    method: str
    dataset: str
    n_labels: int
    seed: int
    params: str  # the method's resolved parameters, as canonical JSON
    param_source: str = "defaults"
    subset: int = 0  # >0: only the first `subset` training and test images (smoke runs)

    @property
    def param_dict(self) -> dict[str, Any]:
        return json.loads(self.params)

    @property
    def key(self) -> str:
        """Identifies the work: same key, same result. Tracking and resume use it."""
        digest = hashlib.sha256(f"{self.params}|{self.subset}".encode()).hexdigest()[:10]
        return f"{self.method}/{self.dataset}/{self.n_labels}/seed{self.seed}/{digest}"

    @property
    def label(self) -> str:
        return f"{self.method} {self.dataset} n={self.n_labels} seed={self.seed}"

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Cell:
        return cls(**json.loads(text))


def canonical(params: Mapping[str, Any]) -> str:
    return json.dumps(dict(params), sort_keys=True)


def parse_list(text: str, choices: Iterable[str], what: str) -> list[str]:
    """'all' or a comma-separated list, each name checked against the choices."""
    choices = list(choices)
    if text.strip() == "all":
        return choices
    names = [t.strip() for t in text.split(",") if t.strip()]
    for name in names:
        if name not in choices:
            raise UsageError(f"Unknown {what} {name!r}. Available: {', '.join(choices)}.")
    if not names:
        raise UsageError(f"No {what} given; use 'all' or a comma-separated list.")
    return list(dict.fromkeys(names))


def parse_ints(text: str, what: str) -> list[int]:
    try:
        values = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise UsageError(f"--{what} expects comma-separated integers, got {text!r}.") from None
    if not values:
        raise UsageError(f"--{what} is empty.")
    return list(dict.fromkeys(values))


def parse_settings(items: list[str]) -> dict[str, Any]:
    """`--set KEY=VALUE` pairs; VALUE is read as JSON (0, 1e-3, true, "x") or else kept as text."""
    settings: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--set expects KEY=VALUE (e.g. --set val_fraction=0), got {item!r}.")
        try:
            settings[key.strip()] = json.loads(text)
        except json.JSONDecodeError:
            settings[key.strip()] = text
    return settings


def check_settings(settings: Mapping[str, Any], method_names: list[str]) -> None:
    """Every --set key must be a parameter of at least one selected method."""
    known = {k for name in method_names for k in methods.get(name).defaults}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise UsageError(
            f"--set {', '.join(unknown)}: no selected method has such a parameter; the"
            f" parameters of {', '.join(method_names)} are: {', '.join(sorted(known))}."
        )


def tuned_path(results_dir: Path, method: str, dataset: str, n_labels: int) -> Path:
    return Path(results_dir) / "tuned" / f"{method}-{dataset}-{n_labels}.json"


def resolve_params(
    method: str,
    dataset: str,
    n_labels: int,
    overrides: Mapping[str, Any],
    mode: str = "defaults",
    results_dir: Path = Path("results"),
) -> tuple[dict[str, Any], str]:
    """The parameters a cell runs with, and where they came from."""
    cls = methods.get(method)
    params, source = dict(cls.defaults), "defaults"
    if mode == "tuned":
        path = tuned_path(results_dir, method, dataset, n_labels)
        if path.exists():
            params.update(json.loads(path.read_text())["params"])
            source = f"tuned:{path}"
    applied = {k: v for k, v in overrides.items() if k in cls.defaults and v is not None}
    params.update(applied)
    if applied:
        source += "+cli"
    cls(**params)  # validates names before any training starts
    return params, source


def build_grid(
    method_names: list[str],
    dataset_names: list[str],
    labels: list[int],
    seeds: list[int],
    overrides: Mapping[str, Any] | None = None,
    mode: str = "defaults",
    results_dir: Path = Path("results"),
    subset: int = 0,
) -> list[Cell]:
    """Validate the whole request, then list its cells."""
    if mode not in PARAM_MODES:
        raise UsageError(f"--params {mode!r} must be one of {', '.join(PARAM_MODES)}.")
    for n in labels:
        check_budget(n)
    for seed in seeds:
        if seed < 0:
            raise UsageError(f"seed={seed} must be a non-negative integer.")
    for name in dataset_names:
        datasets.get_spec(name)
    if subset and subset < max(labels):
        raise UsageError(f"--subset {subset} is smaller than the largest budget {max(labels)}.")
    cells = []
    # Consecutive cells use different (dataset, seed) pairs, so parallel workers train
    # different VAEs at the same time instead of waiting on each other's cache lock.
    for n_labels in labels:
        for method in method_names:
            params_by_dataset = {
                d: resolve_params(method, d, n_labels, overrides or {}, mode, results_dir)
                for d in dataset_names
            }
            for seed in seeds:
                for dataset in dataset_names:
                    params, source = params_by_dataset[dataset]
                    cells.append(
                        Cell(method, dataset, n_labels, seed, canonical(params), source, subset)
                    )
    return cells
