"""Running one cell: split, fit, then read the test set once for the final score.

The method sees every training image but labels only for the budget. The test split is read
after fitting, once, and scored here the same way for every method.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

import methods
from benchmark.data import datasets, scoring
from benchmark.data.splits import LabeledSplit, balanced_split
from benchmark.study.grid import Cell
from benchmark.vaes.cache import VAECache, cache_key
from methods.base import MetricLogger, TrainData, _no_log
from methods.vae import VAE, TrainedVAE, VAEConfig


@dataclass
class CellResult:
    scores: dict[str, float]
    confusion: np.ndarray
    fit_seconds: float
    vae_train_seconds: float
    trained_vaes: list[tuple[str, TrainedVAE]] = field(default_factory=list)  # (cache key, VAE)
    vae_keys: list[str] = field(default_factory=list)
    labeled: np.ndarray | None = None  # the labeled training indices (anyone can recompute)
    class_names: tuple[str, ...] = ()
    data_source: str = ""
    test_fingerprint: str = ""
    artifacts: list[Path] = field(default_factory=list)  # the method's own pictures
    predictions: np.ndarray | None = None  # the class predicted for each test image
    cuda_peak_mb: float | None = None  # the cell's peak CUDA allocation (None on CPU)


def checkpoint_root(vae_cache_dir: str | Path) -> Path:
    """Where cells keep their checkpoints: beside the VAE cache, on the same disk."""
    return Path(vae_cache_dir).parent / "checkpoints"


def checkpoint_folder(root: Path, cell: Cell) -> Path:
    """The folder of one cell's checkpoints under `root`: same cell and code, same folder."""
    return root / hashlib.sha256(f"{cell.key}|{cell.code}".encode()).hexdigest()[:16]


class Workspace:
    """Per-process state shared by the cells it runs: loaded data, tensors, VAEs in memory."""

    def __init__(
        self,
        data_dir: str | Path | None,
        device: torch.device,
        cache: VAECache,
        progress: bool = True,
        checkpoint_root: Path | None = None,
    ) -> None:
        self.checkpoint_root = checkpoint_root
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
        n_classes = self.dataset(cell.dataset).spec.n_classes
        return balanced_split(y, cell.n_labels, cell.seed, cell.dataset, n_classes)

    def checkpoint_dir(self, cell: Cell) -> Path | None:
        """Where this cell's trainings keep their latest epoch (same cell and code, same
        folder, so a rerun after an interruption finds it)."""
        return (
            None if self.checkpoint_root is None else checkpoint_folder(self.checkpoint_root, cell)
        )

    def train_tensor(self, cell: Cell) -> torch.Tensor:
        """The training images on the device, made once per (dataset, subset)."""
        key = (cell.dataset, cell.subset)
        if key not in self._tensors:
            x, _, _ = self.train_arrays(cell.dataset, cell.subset)
            self._tensors[key] = torch.from_numpy(x.copy()).to(self.device)
        return self._tensors[key]

    def vae_supply(self, cell: Cell) -> VAESupply:
        _, _, fingerprint = self.train_arrays(cell.dataset, cell.subset)
        return VAESupply(
            self.train_tensor(cell), fingerprint, cell.seed, self.cache, self._vaes, self.progress
        )


class VAESupply:
    """Gives a method a trained VAE for a config, and nothing else.

    It holds the training images (which every method sees) but no label and no test image, so
    nothing reachable from a method's `TrainData` leads outside its labeled budget. It records
    what it had to train, and which cache keys the cell used, for tracking.
    """

    def __init__(
        self,
        x: torch.Tensor,
        fingerprint: str,
        seed: int,
        cache: VAECache,
        memo: dict[str, VAE],
        progress: bool,
    ) -> None:
        self._x, self._fingerprint, self._seed = x, fingerprint, seed
        self._cache, self._memo, self._progress = cache, memo, progress
        self.trained: list[tuple[str, TrainedVAE]] = []
        self.seconds: list[float] = []
        self.keys: list[str] = []

    def __call__(self, config: VAEConfig) -> VAE:
        key = cache_key(self._fingerprint, config, self._seed, self._x.device)
        if key not in self._memo:
            result, hit, _ = self._cache.get_or_train(
                self._x, self._fingerprint, config, self._seed, self._progress
            )
            if not hit:
                self.trained.append((key, result))
                self.seconds.append(result.train_seconds)
            self._memo[key] = result.model
        if key not in self.keys:
            self.keys.append(key)
        return self._memo[key]


def train_data(
    cell: Cell, ws: Workspace, uses_vae: bool, log_metric: MetricLogger = _no_log
) -> TrainData:
    """What the cell's method may see: all training images, labels of its budget only."""
    x, _, _ = ws.train_arrays(cell.dataset, cell.subset)
    split = ws.split(cell)
    return TrainData(
        x=x,
        labeled=split.labeled,
        y_labeled=split.labels,
        n_classes=ws.dataset(cell.dataset).spec.n_classes,
        image_shape=ws.dataset(cell.dataset).spec.image_shape,
        seed=cell.seed,
        device=ws.device,
        vae=ws.vae_supply(cell) if uses_vae else None,
        log_metric=log_metric,
        progress=ws.progress,
        checkpoint_dir=ws.checkpoint_dir(cell),
    )


def run_cell(
    cell: Cell,
    ws: Workspace,
    log_metric: MetricLogger = _no_log,
    artifact_dir: Path | None = None,
) -> CellResult:
    torch.manual_seed(cell.seed)  # safety net for methods that use torch's global RNG
    on_cuda = ws.device.type == "cuda"
    if on_cuda:  # one cell at a time per worker process: the peak is this cell's
        torch.cuda.reset_peak_memory_stats(ws.device)
    method = methods.get(cell.method)(**cell.param_dict)
    data = train_data(cell, ws, method.uses_vae, log_metric)
    supply = data.vae if isinstance(data.vae, VAESupply) else None
    start = time.perf_counter()
    method.fit(data)
    vae_seconds = sum(supply.seconds) if supply else 0.0
    fit_seconds = time.perf_counter() - start - vae_seconds

    x_test, y_test = ws.test_arrays(cell.dataset, cell.subset)  # the one read of the test set
    predictions = np.asarray(method.predict(x_test))
    scores = scoring.classification_scores(y_test, predictions)
    clusters = method.cluster_assignments(x_test)
    if clusters is not None:
        scores.update(scoring.clustering_scores(y_test, clusters))
    spec = ws.dataset(cell.dataset).spec
    artifacts = method.artifacts(artifact_dir) if artifact_dir is not None else []
    return CellResult(
        scores=scores,
        confusion=scoring.confusion(y_test, predictions, data.n_classes),
        fit_seconds=fit_seconds,
        vae_train_seconds=vae_seconds,
        trained_vaes=supply.trained if supply else [],
        vae_keys=supply.keys if supply else [],
        labeled=data.labeled,
        class_names=tuple(spec.class_name(c) for c in range(data.n_classes)),
        data_source=str(ws.dataset(cell.dataset).directory),
        test_fingerprint=hashlib.sha256(x_test.tobytes()).hexdigest()[:16],
        artifacts=artifacts,
        predictions=predictions,
        cuda_peak_mb=torch.cuda.max_memory_allocated(ws.device) / 2**20 if on_cuda else None,
    )
