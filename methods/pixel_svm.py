"""RBF-kernel SVC on raw pixels: the no-VAE baseline every VAE method has to beat."""

from __future__ import annotations

from typing import Any

import numpy as np

from methods._svm import SVM_RULES, rbf_svc, suggest_rbf
from methods.base import Method, TrainData


class PixelSVM(Method):
    name = "pixel-svm"
    version = 1
    description = "RBF-kernel SVC on the raw pixels of the labeled images (no VAE)"
    defaults = {"C": 10.0, "gamma": "scale"}
    rules = SVM_RULES

    @classmethod
    def search_space(cls, trial: Any) -> dict[str, Any]:
        return suggest_rbf(trial)

    @classmethod
    def estimated_seconds(
        cls, n_labels: int, n_train: int, params: dict[str, Any], n_classes: int = 10
    ) -> float:
        return 0.45 + 0.0015 * n_labels  # predicting 10k test images against ~all labeled SVs

    def fit(self, data: TrainData) -> None:
        # Pixels are already in [0, 1]; standardising would blow up near-constant border pixels.
        self.svm_ = rbf_svc(self.params, standardize=False).fit(data.x_labeled, data.y_labeled)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.svm_.predict(x)
