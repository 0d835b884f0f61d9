"""VAE latent means + LinearSVC: how linearly separable the VAE makes the classes."""

from __future__ import annotations

from typing import Any

import numpy as np

from methods._svm import C_RULES, linear_svc
from methods.base import VAE_DEFAULTS, VAE_RULES, TrainData, VAEFeatureMethod, suggest_latent_dim


class VAELinearSVM(VAEFeatureMethod):
    name = "vae-linear-svm"
    version = 1
    description = "LinearSVC on the shared VAE's latent means of the labeled images"
    defaults = {**VAE_DEFAULTS, "C": 1.0}
    rules = {**VAE_RULES, **C_RULES}

    @classmethod
    def search_space(cls, trial: Any) -> dict[str, Any]:
        return {**suggest_latent_dim(trial), "C": trial.suggest_float("C", 1e-3, 1e2, log=True)}

    def fit_features(self, z: np.ndarray, data: TrainData) -> None:
        self.svm_ = linear_svc(self.params, data.seed).fit(z[data.labeled], data.y_labeled)

    def predict_features(self, z: np.ndarray) -> np.ndarray:
        return self.svm_.predict(z)
