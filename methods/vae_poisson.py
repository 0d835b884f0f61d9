"""Poisson learning (Calder et al. 2020) over a k-nearest-neighbour graph of the VAE's features.

Each labeled image is a source of its class's one-hot vector (less the labels' mean) and the
graph Laplacian's Poisson equation spreads them to every training image, through the
`graphlearning` package's solver. Unlike label spreading, the sources do not fade with
distance to a constant, which is what keeps Poisson learning accurate at very few labels.
A test image is classified inductively, by the mean scores of its k nearest training images:
the test set never joins the graph and is read once, to score.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from methods.base import VAE_DEFAULTS, VAE_RULES, TrainData, VAEFeatureMethod, suggest_latent_dim
from methods.params import AT_LEAST_ONE


class VAEPoisson(VAEFeatureMethod):
    name = "vae-poisson"
    version = 1
    reference = "vae-rbf-svm"
    description = "Poisson learning over a kNN graph of all training latent means (inductive)"
    defaults = {**VAE_DEFAULTS, "n_neighbors": 10}
    rules = {**VAE_RULES, "n_neighbors": AT_LEAST_ONE}

    @classmethod
    def search_space(cls, trial: Any) -> dict[str, Any]:
        return {
            **suggest_latent_dim(trial),
            "n_neighbors": trial.suggest_int("n_neighbors", 5, 50, log=True),
        }

    @classmethod
    def estimated_seconds(
        cls, n_labels: int, n_train: int, params: dict[str, Any], n_classes: int = 10
    ) -> float:
        return 4.0 + 1.6e-4 * n_train * int(params["n_neighbors"]) / 10  # graph and solver

    def fit_features(self, z: np.ndarray, data: TrainData) -> None:
        import graphlearning as gl
        from sklearn.neighbors import NearestNeighbors

        self.mean_, self.std_ = z.mean(axis=0), z.std(axis=0) + 1e-6
        k = int(self.params["n_neighbors"])
        features = (z - self.mean_) / self.std_
        self.index_ = NearestNeighbors(n_neighbors=k).fit(features)
        distances, neighbours = self.index_.kneighbors(features)
        graph = gl.weightmatrix.knn(None, k, knn_data=(neighbours, distances))
        model = gl.ssl.poisson(graph)
        self.scores_ = np.asarray(model.fit(np.asarray(data.labeled), data.y_labeled))

    def predict_features(self, z: np.ndarray) -> np.ndarray:
        _, neighbours = self.index_.kneighbors((z - self.mean_) / self.std_)
        return self.scores_[neighbours].mean(axis=1).argmax(axis=1)
