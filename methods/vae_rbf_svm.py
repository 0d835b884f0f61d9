"""VAE latent means + RBF-kernel SVC: the M1 recipe of Kingma et al. with an SVM on top."""

from __future__ import annotations

from typing import Any

import numpy as np

from methods._svm import SVM_RULES, rbf_svc, suggest_rbf
from methods.base import VAE_DEFAULTS, VAE_RULES, TrainData, VAEFeatureMethod, suggest_latent_dim


class VAERBFSVM(VAEFeatureMethod):
    name = "vae-rbf-svm"
    version = 1
    reference = "pixel-svm"
    description = "RBF-kernel SVC on the shared VAE's latent means of the labeled images"
    defaults = {**VAE_DEFAULTS, "C": 10.0, "gamma": "scale"}
    rules = {**VAE_RULES, **SVM_RULES}

    @classmethod
    def search_space(cls, trial: Any) -> dict[str, Any]:
        return {**suggest_latent_dim(trial), **suggest_rbf(trial)}

    def fit_features(self, z: np.ndarray, data: TrainData) -> None:
        self.svm_ = rbf_svc(self.params, standardize=True).fit(z[data.labeled], data.y_labeled)

    def predict_features(self, z: np.ndarray) -> np.ndarray:
        return self.svm_.predict(z)
