"""Poisson learning (Calder et al. 2020) over a k-nearest-neighbour graph of the VAE's features.

Each labeled image is a source of its class's one-hot vector (less the labels' mean) and the
graph Laplacian's Poisson equation spreads them to every training image, through the
`graphlearning` package's solver. Unlike label spreading, the sources do not fade with
distance to a constant, which is what keeps Poisson learning accurate at very few labels.
A test image is classified inductively, by the mean scores of its k nearest training images:
the test set never joins the graph and is read once, to score.

The equation is solved on each connected component of the graph with the labels inside it:
on a component whose sources do not sum to zero it has no solution, and the solver's iterates
grow without bound (a few thousand images can fall apart into components). A component
without labels scores zero for every class.

The defaults are the reference's (Calder et al.'s `graphlearning.weightmatrix.vae`): a VAE of
one 400-unit hidden layer and 20 latent units trained for 100 epochs, its latent means used as
they are. Standardising them would give the collapsed latent units (noise around the prior's
mean) as much weight in the kNN distances as the informative ones.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from methods.base import VAE_DEFAULTS, VAE_RULES, TrainData, VAEFeatureMethod, suggest_latent_dim
from methods.params import AT_LEAST_ONE, Rule

# Calder et al.'s VAE for graph learning: 784-400-20, 100 epochs, batch 128, Adam at 1e-3
REFERENCE_VAE = {"latent_dim": 20, "vae_hidden": "400", "vae_epochs": 100, "vae_batch_size": 128}


class VAEPoisson(VAEFeatureMethod):
    name = "vae-poisson"
    version = 2
    reference = "vae-rbf-svm"
    description = "Poisson learning over a kNN graph of all training latent means (inductive)"
    defaults = {**VAE_DEFAULTS, **REFERENCE_VAE, "n_neighbors": 10, "scaling": "none"}
    rules = {
        **VAE_RULES,
        "n_neighbors": AT_LEAST_ONE,
        "scaling": Rule(choices=("none", "standardise")),
    }
    new_params = {**VAEFeatureMethod.new_params, "scaling": "standardise"}

    @classmethod
    def search_space(cls, trial: Any) -> dict[str, Any]:
        return {
            **suggest_latent_dim(trial),
            "n_neighbors": trial.suggest_int("n_neighbors", 5, 50, log=True),
            "scaling": trial.suggest_categorical("scaling", ["none", "standardise"]),
        }

    @classmethod
    def estimated_seconds(
        cls, n_labels: int, n_train: int, params: dict[str, Any], n_classes: int = 10
    ) -> float:
        return 4.0 + 1.6e-4 * n_train * int(params["n_neighbors"]) / 10  # graph and solver

    def fit_features(self, z: np.ndarray, data: TrainData) -> None:
        import graphlearning as gl
        from sklearn.neighbors import NearestNeighbors

        self.mean_, self.std_ = np.zeros(z.shape[1]), np.ones(z.shape[1])
        if self.params["scaling"] == "standardise":
            self.mean_, self.std_ = z.mean(axis=0), z.std(axis=0) + 1e-6
        k = int(self.params["n_neighbors"])
        features = (z - self.mean_) / self.std_
        self.index_ = NearestNeighbors(n_neighbors=k).fit(features)
        distances, neighbours = self.index_.kneighbors(features)
        graph = gl.weightmatrix.knn(None, k, knn_data=(neighbours, distances))
        self.scores_ = poisson_by_component(graph, data.labeled, data.y_labeled, data.n_classes)

    def predict_features(self, z: np.ndarray) -> np.ndarray:
        _, neighbours = self.index_.kneighbors((z - self.mean_) / self.std_)
        return self.scores_[neighbours].mean(axis=1).argmax(axis=1)


def poisson_by_component(
    weights: Any, labeled: np.ndarray, labels: np.ndarray, n_classes: int
) -> np.ndarray:
    """Poisson learning's scores [n, n_classes], solved on each connected component of the
    weight matrix from the labels inside it (see the module docstring)."""
    import graphlearning as gl
    from scipy.sparse.csgraph import connected_components

    weights = weights.tocsr()
    _, component = connected_components(weights, directed=False)
    scores = np.zeros((weights.shape[0], n_classes))
    labeled, labels = np.asarray(labeled), np.asarray(labels)
    for c in np.unique(component[labeled]):
        nodes = np.flatnonzero(component == c)
        inside = component[labeled] == c
        classes = np.unique(labels[inside])
        if len(classes) == 1:  # one class reaches this component: all of it is that class
            scores[nodes, classes[0]] = 1.0
            continue
        local = np.searchsorted(nodes, labeled[inside])
        solver = gl.ssl.poisson(weights[nodes][:, nodes])
        u = solver.fit(local, np.searchsorted(classes, labels[inside]))
        scores[np.ix_(nodes, classes)] = u
    return scores
