"""The study's grid as pure data: one Cell per method × dataset × label budget × seed."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import methods
from benchmark import provenance
from benchmark.data import datasets
from benchmark.data.splits import check_budget
from benchmark.errors import UsageError
from benchmark.options import DEFAULT_RESULTS_DIR

DEFAULT_LABELS = (100, 600, 1000, 3000)
DEFAULT_SEEDS = (0, 1, 2, 3, 4)
PARAM_MODES = ("defaults", "tuned")


@dataclass(frozen=True)
class Cell:
    method: str
    dataset: str
    n_labels: int
    seed: int
    params: str  # the method's resolved, typed parameters, as canonical JSON
    param_source: str = "defaults"
    subset: int = 0  # >0: only the first `subset` training and test images (smoke runs)
    settings: str = "defaults"  # what differs from the method's defaults, for people
    fingerprint: str = ""  # hash of the training images (see Dataset.fingerprint)
    code: str = ""  # the versions of the computation (see benchmark.provenance.cell_version)

    @property
    def param_dict(self) -> dict[str, Any]:
        return json.loads(self.params)

    @property
    def key(self) -> str:
        """The cell's settings: same key, same question asked. Tracking, resume and the
        tables group by it; `code` tells whether an answer is still current."""
        params = canonical(identity_params(self.method, self.param_dict))
        blob = f"{params}|{self.subset}|{self.fingerprint}"
        digest = hashlib.sha256(blob.encode()).hexdigest()[:10]
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


def identity_params(method: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """The parameters that name a cell: a parameter added after cells were archived is left
    out at the value that computes what they computed (the method's `new_params`), so those
    cells keep their keys and stay finished."""
    cls = methods.REGISTRY.get(method)
    added = cls.new_params if cls is not None else {}
    return {k: v for k, v in params.items() if not (k in added and added[k] == v)}


def check_settings(settings: Mapping[str, Any], method_names: list[str]) -> None:
    """Every --set key must be a parameter of at least one selected method."""
    known = {k for name in method_names for k in methods.get(name).defaults}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise UsageError(
            f"--set {', '.join(unknown)}: no selected method has such a parameter; the"
            f" parameters of {', '.join(method_names)} are: {', '.join(sorted(known))}."
        )


def tuned_path(results_dir: Path, method: str, dataset: str, n_labels: int, seed: int) -> Path:
    """One file per seed: seed s's choices were made with seed s's labeled images only."""
    return Path(results_dir) / "tuned" / f"{method}-{dataset}-{n_labels}-seed{seed}.json"


def tune_command(
    method: str, dataset: str, n_labels: int, seed: int, overrides: Mapping[str, Any], path: Path
) -> str:
    """The `tune` command that writes the file `path` a run with `overrides` will accept: the
    same --epochs and --subset, and the results folder the run reads (`path` is in its tuned/)."""
    extra = ""
    if overrides.get("epochs") is not None:
        extra += f" --epochs {overrides['epochs']}"
    if overrides.get("subset"):
        extra += f" --subset {overrides['subset']}"
    results = path.parent.parent
    if results != Path(DEFAULT_RESULTS_DIR):
        extra += f" --results-dir {results}"
    return (
        f"python -m benchmark tune --method {method} --dataset {dataset} --labels {n_labels}"
        f" --seed {seed}{extra}"
    )


def _tuned_params(
    path: Path, method: str, dataset: str, n_labels: int, seed: int, overrides: Mapping[str, Any]
) -> dict[str, Any]:
    """The tuned file's parameters, refused if absent or tuned under other settings."""
    epochs = overrides.get("epochs")
    command = tune_command(method, dataset, n_labels, seed, overrides, path)
    if not path.exists():
        raise UsageError(
            f"--params tuned: {path} does not exist; tune that cell first with"
            f" `{command}`, or drop --params tuned."
        )
    payload = json.loads(path.read_text())
    tuned_under = payload.get("settings", {})
    wanted = {"epochs": epochs, "subset": overrides.get("subset", 0)}
    differ = {k: v for k, v in wanted.items() if tuned_under.get(k, v) != v}
    if payload.get("seed") != seed:
        differ["seed"] = seed
        tuned_under = {**tuned_under, "seed": payload.get("seed")}
    if differ:
        was = ", ".join(f"{k}={tuned_under.get(k)!r}" for k in differ)
        now = ", ".join(f"{k}={v!r}" for k, v in differ.items())
        raise UsageError(
            f"--params tuned: {path} was tuned with {was}, but this run has {now}; run with the"
            f" same options or tune again with `{command}`."
        )
    return payload["params"]


def settings_label(method: str, params: Mapping[str, Any], subset: int, tuned: bool) -> str:
    """What differs from the method's current defaults, e.g. 'epochs=3, subset=5000'.

    Tuned cells say 'tuned' instead of listing per-seed choices, so their seeds share a row.
    """
    defaults = methods.get(method)().params
    diffs = (
        []
        if tuned
        else [f"{k}={params[k]}" for k in sorted(params) if params[k] != defaults.get(k)]
    )
    if tuned:
        diffs.append("tuned")
    if subset:
        diffs.append(f"subset={subset}")
    return ", ".join(diffs) or "defaults"


def resolve_params(
    method: str,
    dataset: str,
    n_labels: int,
    overrides: Mapping[str, Any],
    mode: str = "defaults",
    results_dir: Path = Path("results"),
    seed: int = 0,
) -> tuple[dict[str, Any], str]:
    """The typed parameters a cell runs with, and where they came from."""
    cls = methods.get(method)
    params, source = dict(cls.defaults), "defaults"
    if mode == "tuned":
        path = tuned_path(results_dir, method, dataset, n_labels, seed)
        params.update(_tuned_params(path, method, dataset, n_labels, seed, overrides))
        source = f"tuned:{path}"
    applied = {k: v for k, v in overrides.items() if k in cls.defaults and v is not None}
    params.update(applied)
    if applied:
        source += "+cli"
    return cls(**params).params, source  # typed and checked before any data is loaded


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
    for seed in seeds:
        if seed < 0:
            raise UsageError(f"seed={seed} must be a non-negative integer.")
    for name in dataset_names:
        for n in labels:  # each dataset's own class count
            check_budget(n, datasets.get_spec(name).n_classes)
    if subset and subset < max(labels):
        raise UsageError(f"--subset {subset} is smaller than the largest budget {max(labels)}.")
    cells = []
    overrides = {**(overrides or {}), "subset": subset}
    # Consecutive cells use different (dataset, seed) pairs, so parallel workers train
    # different VAEs at the same time instead of waiting on each other's cache lock.
    for n_labels in labels:
        for method in method_names:
            code = provenance.cell_version(methods.get(method))
            for seed in seeds:
                for dataset in dataset_names:
                    params, source = resolve_params(
                        method, dataset, n_labels, overrides, mode, results_dir, seed
                    )
                    label = settings_label(method, params, subset, mode == "tuned")
                    cells.append(
                        Cell(
                            method,
                            dataset,
                            n_labels,
                            seed,
                            canonical(params),
                            source,
                            subset,
                            settings=label,
                            code=code,
                        )
                    )
    return cells


def with_fingerprints(cells: list[Cell], fingerprints: Mapping[str, str]) -> list[Cell]:
    """The cells bound to the data they will read (fingerprint per dataset, cut to subset)."""
    return [
        replace(c, fingerprint=fingerprints[c.dataset] + (f"-first{c.subset}" if c.subset else ""))
        for c in cells
    ]
