"""One scoring function for every method: the runner calls it, methods never score themselves."""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment
from sklearn import metrics


def classification_scores(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    precision, recall, f1, _ = metrics.precision_recall_fscore_support(
        y_true, y_pred, average="macro", zero_division=0
    )
    return {
        "test_accuracy": float(metrics.accuracy_score(y_true, y_pred)),
        "test_macro_precision": float(precision),
        "test_macro_recall": float(recall),
        "test_macro_f1": float(f1),
    }


def cluster_accuracy(y_true: np.ndarray, clusters: np.ndarray) -> float:
    """Accuracy under the best one-to-one matching of clusters to classes (Hungarian)."""
    classes, y_idx = np.unique(y_true, return_inverse=True)
    groups, c_idx = np.unique(clusters, return_inverse=True)
    counts = np.zeros((len(groups), len(classes)), dtype=np.int64)
    np.add.at(counts, (c_idx, y_idx), 1)
    rows, cols = linear_sum_assignment(counts, maximize=True)
    return float(counts[rows, cols].sum() / len(y_true))


def clustering_scores(y_true: np.ndarray, clusters: np.ndarray) -> dict[str, float]:
    return {
        "test_nmi": float(metrics.normalized_mutual_info_score(y_true, clusters)),
        "test_ari": float(metrics.adjusted_rand_score(y_true, clusters)),
        "test_cluster_accuracy": cluster_accuracy(y_true, clusters),
    }


# What a cell run logs: accuracies in %, as every table and figure shows them (the harness
# has one unit for accuracy); NMI and ARI are not accuracies and stay in [0, 1] / [-1, 1].
LOGGED = {
    "test_accuracy": ("accuracy", 100.0),
    "test_macro_precision": ("macro_precision", 100.0),
    "test_macro_recall": ("macro_recall", 100.0),
    "test_macro_f1": ("macro_f1", 100.0),
    "test_cluster_accuracy": ("cluster_accuracy", 100.0),
    "test_nmi": ("nmi", 1.0),
    "test_ari": ("ari", 1.0),
}


def as_logged(scores: dict[str, float]) -> dict[str, float]:
    """The scores under the names and units a cell run logs them with."""
    return {LOGGED[k][0]: v * LOGGED[k][1] for k, v in scores.items()}


def confusion(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    return metrics.confusion_matrix(y_true, y_pred, labels=list(range(n_classes)))
