from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from benchmark.data import datasets
from benchmark.data.splits import UNLABELED, balanced_split
from benchmark.errors import UsageError

BUDGETS = (100, 600, 1000, 3000)


@pytest.fixture(scope="module")
def fashion(real_data: Path) -> datasets.Dataset:
    return datasets.load("fashion-mnist", real_data)


@pytest.mark.parametrize("n_labels", BUDGETS)
def test_exact_per_class_counts(fashion: datasets.Dataset, n_labels: int) -> None:
    split = balanced_split(
        fashion.labels("train"), n_labels, seed=3, dataset="fashion-mnist", n_classes=10
    )
    assert len(split.labeled) == n_labels == len(np.unique(split.labeled))
    assert np.bincount(split.labels, minlength=10).tolist() == [n_labels // 10] * 10
    assert (fashion.labels("train")[split.labeled] == split.labels).all()


def test_same_inputs_same_indices_and_seeds_differ(fashion: datasets.Dataset) -> None:
    y = fashion.labels("train")
    a = balanced_split(y, 100, 0, "fashion-mnist", 10)
    b = balanced_split(y.copy(), 100, 0, "fashion-mnist", 10)
    assert np.array_equal(a.labeled, b.labeled)
    assert not np.array_equal(a.labeled, balanced_split(y, 100, 1, "fashion-mnist", 10).labeled)
    # the protocol owns its RNG: global numpy state changes nothing
    np.random.seed(123)
    assert np.array_equal(a.labeled, balanced_split(y, 100, 0, "fashion-mnist", 10).labeled)


def test_pinned_indices_do_not_drift() -> None:
    """The split must be identical on every machine and release: pin a few indices."""
    y = np.arange(1000) % 10
    split = balanced_split(y, 20, seed=0, dataset="mnist", n_classes=10)
    assert split.labeled.tolist() == [
        3,
        16,
        130,
        161,
        229,
        247,
        252,
        261,
        286,
        323,
        448,
        475,
        524,
        770,
        827,
        859,
        894,
        928,
        945,
        962,
    ]  # recorded once from numpy's PCG64; a change here silently breaks paired comparisons


def test_budgets_are_nested(fashion: datasets.Dataset) -> None:
    y = fashion.labels("train")
    for seed in (0, 4):
        sets = [set(balanced_split(y, n, seed, "fashion-mnist", 10).labeled) for n in BUDGETS]
        assert all(small <= big for small, big in zip(sets, sets[1:]))


def test_unlabeled_targets_are_hidden(fashion: datasets.Dataset) -> None:
    split = balanced_split(fashion.labels("train"), 600, 2, "fashion-mnist", 10)
    targets = split.targets()
    assert (targets != UNLABELED).sum() == 600
    assert (targets[split.labeled] == split.labels).all()
    with pytest.raises(ValueError):
        split.labeled[0] = 1  # immutable


def test_labeled_images_are_not_test_images(real_data: Path) -> None:
    mnist = datasets.load("mnist", real_data)
    split = balanced_split(mnist.labels("train"), 3000, 0, "mnist", 10)
    train_rows = {row.tobytes() for row in mnist.split("train")[0][split.labeled]}
    test_rows = {row.tobytes() for row in mnist.split("test")[0]}
    assert not train_rows & test_rows


@pytest.mark.parametrize(
    ("n_labels", "message"),
    [
        (95, "multiple of the 10 classes"),
        (0, "positive"),
        (-10, "positive"),
        (70000, "only 6000 training images"),
    ],
)
def test_bad_budgets_are_explained(fashion: datasets.Dataset, n_labels: int, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        balanced_split(fashion.labels("train"), n_labels, 0, "fashion-mnist", 10)
