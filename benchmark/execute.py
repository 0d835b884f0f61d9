"""Running one cell: split, fit, then read the test set once for the final score.

The method sees every training image but labels only for the budget. The test split is read
after fitting, once, and scored here the same way for every method.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

import methods
from benchmark import datasets, scoring
from benchmark.grid import Cell
from benchmark.splits import LabeledSplit, balanced_split
from methods.base import MetricLogger, TrainData, _no_log
from methods.vae import VAE, VAEConfig
from methods.vae_cache import VAECache, cache_key


@dataclass
class CellResult:
    scores: dict[str, float]
    confusion: np.ndarray
    fit_seconds: float
    vae_train_seconds: float
    trained_vaes: list[tuple[VAEConfig, VAE]] = field(default_factory=list)


class Workspace:
    """Per-process state shared by the cells it runs: loaded data, tensors, VAEs in memory."""

    def __init__(
        self,
        data_dir: str | Path | None,
        device: torch.device,
        cache: VAECache,
        progress: bool = True,
    ) -> None:
        self.data_dir = data_dir
        self.device = device
        self.cache = cache
        self.progress = progress
        self._datasets: dict[str, datasets.Dataset] = {}
        self._train: dict[tuple[str, int], tuple[np.ndarray, np.ndarray, str]] = {}
        self._test: dict[tuple[str, int], tuple[np.ndarray, np.ndarray]] = {}
        self._tensors: dict[tuple[str, int], torch.Tensor] = {}
        self._vaes: dict[str, VAE] = {}

    def dataset(self, name: str) -> datasets.Dataset:
        if name not in self._datasets:
            self._datasets[name] = datasets.load(name, self.data_dir)
        return self._datasets[name]

    def train_arrays(self, name: str, subset: int) -> tuple[np.ndarray, np.ndarray, str]:
        """(features, labels, fingerprint) of the training images, cut to `subset` if > 0."""
        key = (name, subset)
        if key not in self._train:
            x, y = self._read(name, "train", subset)
            fingerprint = self.dataset(name).fingerprint() + (f"-first{subset}" if subset else "")
            self._train[key] = (x, y, fingerprint)
        return self._train[key]

    def test_arrays(self, name: str, subset: int) -> tuple[np.ndarray, np.ndarray]:
        key = (name, subset)
        if key not in self._test:
            self._test[key] = self._read(name, "test", subset)
        return self._test[key]

    def _read(self, name: str, which: str, subset: int) -> tuple[np.ndarray, np.ndarray]:
        """Images and labels of one split, cut to `subset` if > 0, images read-only: they are
        shared by every cell, so no method may change them."""
        ds = self.dataset(name)
        x, y = ds.features(which), ds.labels(which)
        if subset:
            x, y = x[:subset].copy(), y[:subset]
        x.setflags(write=False)
        return x, y

    def split(self, cell: Cell) -> LabeledSplit:
        _, y, _ = self.train_arrays(cell.dataset, cell.subset)
        return balanced_split(y, cell.n_labels, cell.seed, cell.dataset)

    def vae_provider(self, cell: Cell, trained: list, seconds: list):
        """A callable config -> VAE that records what it had to train for this cell."""
        x, _, fingerprint = self.train_arrays(cell.dataset, cell.subset)

        def provide(config: VAEConfig) -> VAE:
            key = cache_key(fingerprint, config, cell.seed, self.device)
            if key not in self._vaes:
                tkey = (cell.dataset, cell.subset)
                if tkey not in self._tensors:
                    self._tensors[tkey] = torch.from_numpy(x).to(self.device)
                result, hit, _ = self.cache.get_or_train(
                    self._tensors[tkey], fingerprint, config, cell.seed, self.progress
                )
                if not hit:
                    trained.append((config, result.model))
                    seconds.append(result.train_seconds)
                self._vaes[key] = result.model
            return self._vaes[key]

        return provide


def run_cell(cell: Cell, ws: Workspace, log_metric: MetricLogger = _no_log) -> CellResult:
    torch.manual_seed(cell.seed)  # safety net for methods that use torch's global RNG
    x, _, _ = ws.train_arrays(cell.dataset, cell.subset)
    split = ws.split(cell)
    trained: list[tuple[VAEConfig, VAE]] = []
    vae_seconds: list[float] = []
    method = methods.get(cell.method)(**cell.param_dict)
    data = TrainData(
        x=x,
        labeled=split.labeled,
        y_labeled=split.labels,
        n_classes=ws.dataset(cell.dataset).spec.n_classes,
        seed=cell.seed,
        device=ws.device,
        vae=ws.vae_provider(cell, trained, vae_seconds) if method.uses_vae else None,
        log_metric=log_metric,
        progress=ws.progress,
    )
    start = time.perf_counter()
    method.fit(data)
    fit_seconds = time.perf_counter() - start - sum(vae_seconds)

    x_test, y_test = ws.test_arrays(cell.dataset, cell.subset)  # the one read of the test set
    predictions = np.asarray(method.predict(x_test))
    scores = scoring.classification_scores(y_test, predictions)
    clusters = method.cluster_assignments(x_test)
    if clusters is not None:
        scores.update(scoring.clustering_scores(y_test, clusters))
    return CellResult(
        scores=scores,
        confusion=scoring.confusion(y_test, predictions, data.n_classes),
        fit_seconds=fit_seconds,
        vae_train_seconds=sum(vae_seconds),
        trained_vaes=trained,
    )
