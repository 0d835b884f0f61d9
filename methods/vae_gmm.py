"""A Gaussian mixture on the VAE latent means of all training images, seeded by the labels.

Components start at the labeled class means (extra components per class at labeled images of
that class), are fitted by EM on every training image, and are mapped to classes through the
labeled images' responsibilities. The unlabeled images shape the clusters; only the few labels
name them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from methods.base import VAE_DEFAULTS, VAE_RULES, TrainData, VAEFeatureMethod, suggest_latent_dim
from methods.params import AT_LEAST_ONE, Rule


class VAEGMM(VAEFeatureMethod):
    name = "vae-gmm"
    version = 1
    description = (
        "Gaussian mixture on all training latent means, initialised and named by the labels"
    )
    defaults = {**VAE_DEFAULTS, "covariance_type": "full", "components_per_class": 1}
    rules = {
        **VAE_RULES,
        "covariance_type": Rule(choices=("full", "diag", "tied", "spherical")),
        "components_per_class": AT_LEAST_ONE,
    }

    @classmethod
    def search_space(cls, trial: Any) -> dict[str, Any]:
        return {
            **suggest_latent_dim(trial),
            "covariance_type": trial.suggest_categorical(
                "covariance_type", ["full", "diag", "tied", "spherical"]
            ),
            "components_per_class": trial.suggest_int("components_per_class", 1, 3),
        }

    @classmethod
    def estimated_seconds(
        cls, n_labels: int, n_train: int, params: dict[str, Any], n_classes: int = 10
    ) -> float:
        return 1.3  # EM on every training image's latent means

    def _initial_means(self, z: np.ndarray, data: TrainData) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(data.seed)
        k = int(self.params["components_per_class"])
        means, owners = [], []
        for c in range(data.n_classes):
            zc = z[data.labeled[data.y_labeled == c]]
            extra = zc[rng.choice(len(zc), size=min(k - 1, len(zc)), replace=False)]
            for mean in [zc.mean(axis=0), *extra]:
                means.append(mean)
                owners.append(c)
        return np.asarray(means), np.asarray(owners)

    def fit_features(self, z: np.ndarray, data: TrainData) -> None:
        means, owners = self._initial_means(z, data)
        from sklearn.mixture import GaussianMixture  # late: listing methods need not load it

        self.gmm_ = GaussianMixture(
            n_components=len(means),
            covariance_type=self.params["covariance_type"],
            means_init=means,
            reg_covar=1e-4,
            max_iter=200,
            random_state=data.seed,
        ).fit(z)
        # Name each component by the labeled images it takes responsibility for.
        resp = self.gmm_.predict_proba(z[data.labeled])
        votes = np.zeros((len(means), data.n_classes))
        np.add.at(votes.T, data.y_labeled, resp)
        self.component_class_ = np.where(votes.sum(axis=1) > 0, votes.argmax(axis=1), owners)

    def predict_features(self, z: np.ndarray) -> np.ndarray:
        return self.component_class_[self.gmm_.predict(z)]

    def cluster_assignments(self, x: np.ndarray) -> np.ndarray:
        return self.gmm_.predict(self.features(x))
