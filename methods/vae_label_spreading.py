"""Label spreading (Zhou et al. 2004) over a k-nearest-neighbour graph of the VAE's features.

The graph joins every training image to its k nearest neighbours in the standardised latent
means; the budget's labels spread along it to every training image (scikit-learn's
`LabelSpreading`, kernel "knn": the rbf kernel would build a dense 60,000 x 60,000 matrix). A
test image is then classified inductively: by the spread label distributions of its k nearest
training images, never joining the graph itself, so the test set is read once, to score.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from methods.base import (
    UNLABELED,
    VAE_DEFAULTS,
    VAE_RULES,
    TrainData,
    VAEFeatureMethod,
    suggest_latent_dim,
)
from methods.params import AT_LEAST_ONE, Rule


class VAELabelSpreading(VAEFeatureMethod):
    name = "vae-label-spreading"
    version = 1
    reference = "vae-rbf-svm"
    description = "Label spreading over a kNN graph of all training latent means (inductive)"
    defaults = {**VAE_DEFAULTS, "n_neighbors": 10, "alpha": 0.2}
    rules = {**VAE_RULES, "n_neighbors": AT_LEAST_ONE, "alpha": Rule(gt=0, le=0.99)}

    @classmethod
    def search_space(cls, trial: Any) -> dict[str, Any]:
        return {
            **suggest_latent_dim(trial),
            "n_neighbors": trial.suggest_int("n_neighbors", 5, 50, log=True),
            "alpha": trial.suggest_float("alpha", 0.01, 0.9, log=True),
        }

    @classmethod
    def estimated_seconds(
        cls, n_labels: int, n_train: int, params: dict[str, Any], n_classes: int = 10
    ) -> float:
        return 2.0 + 1.8e-4 * n_train * int(params["n_neighbors"]) / 10  # the graph's search

    def fit_features(self, z: np.ndarray, data: TrainData) -> None:
        from sklearn.semi_supervised import LabelSpreading

        self.mean_, self.std_ = z.mean(axis=0), z.std(axis=0) + 1e-6
        targets = np.full(len(z), UNLABELED, dtype=np.int64)
        targets[data.labeled] = data.y_labeled
        self.model_ = LabelSpreading(
            kernel="knn",
            n_neighbors=int(self.params["n_neighbors"]),
            alpha=float(self.params["alpha"]),
            max_iter=100,
        ).fit((z - self.mean_) / self.std_, targets)

    def predict_features(self, z: np.ndarray) -> np.ndarray:
        # a test image whose neighbours the labels never reached (a part of the graph with no
        # labeled image) has no distribution to normalise: scikit-learn warns and predicts 0
        with np.errstate(invalid="ignore", divide="ignore"):
            return self.model_.predict((z - self.mean_) / self.std_)
