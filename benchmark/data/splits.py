"""The balanced labeled-split protocol shared by every method.

One function decides which training images carry a label for (dataset, n_labels, seed). Each
class's images are shuffled once by a generator seeded from (seed, dataset) and the first
n_labels / n_classes of each are labeled, so budgets are nested (100 ⊂ 600 ⊂ 1000 ⊂ 3000) and
every method sees exactly the same labeled images: comparisons are paired.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from benchmark.errors import UsageError
from methods.base import UNLABELED


@dataclass(frozen=True)
class LabeledSplit:
    """Indices into the training set; the arrays are read-only."""

    dataset: str
    n_labels: int
    seed: int
    n_train: int
    labeled: np.ndarray  # sorted indices of the labeled training images
    labels: np.ndarray  # their labels, aligned with `labeled`

    def targets(self) -> np.ndarray:
        """Training targets with UNLABELED (-1) everywhere outside the labeled budget."""
        targets = np.full(self.n_train, UNLABELED, dtype=np.int64)
        targets[self.labeled] = self.labels
        return targets


def check_budget(n_labels: int, n_classes: int) -> int:
    """Labels per class for a budget, or a UsageError saying what is wrong."""
    if n_labels <= 0:
        raise UsageError(f"n_labels={n_labels} must be a positive multiple of {n_classes}.")
    if n_labels % n_classes:
        raise UsageError(f"n_labels={n_labels} must be a multiple of the {n_classes} classes.")
    return n_labels // n_classes


def _rng(dataset: str, seed: int) -> np.random.Generator:
    if seed < 0:
        raise UsageError(f"seed={seed} must be a non-negative integer.")
    return np.random.default_rng([seed, zlib.crc32(dataset.encode())])


def balanced_split(
    train_labels: np.ndarray, n_labels: int, seed: int, dataset: str, n_classes: int
) -> LabeledSplit:
    """Exactly n_labels / n_classes labeled images per class, drawn from the seed alone."""
    per_class = check_budget(n_labels, n_classes)
    train_labels = np.asarray(train_labels)
    rng = _rng(dataset, seed)
    chosen = []
    for c in range(n_classes):
        members = np.flatnonzero(train_labels == c)
        if per_class > len(members):
            raise UsageError(
                f"n_labels={n_labels} asks for {per_class} labels of class {c},"
                f" but {dataset} has only {len(members)} training images of that class."
            )
        chosen.append(rng.permutation(members)[:per_class])
    labeled = np.sort(np.concatenate(chosen))
    labels = train_labels[labeled].astype(np.int64)
    labeled.setflags(write=False)
    labels.setflags(write=False)
    return LabeledSplit(dataset, n_labels, seed, len(train_labels), labeled, labels)
