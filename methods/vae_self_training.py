"""Self-training (scikit-learn's `SelfTrainingClassifier`) of an RBF SVM on the VAE's features.

The SVM is fitted on the labeled latent means, labels the unlabeled images it is confident
about (predicted probability above `threshold`), is fitted again on them too, and so on for at
most `max_iter` rounds: the classical way to use unlabeled images without a generative model.
The unlabeled images come from a seeded pool of `pool` images, since an SVM's cost grows with
the square of its training set.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from methods._svm import SVM_RULES, suggest_rbf
from methods.base import (
    UNLABELED,
    VAE_DEFAULTS,
    VAE_RULES,
    TrainData,
    VAEFeatureMethod,
    suggest_latent_dim,
)
from methods.params import AT_LEAST_ONE, Rule


class VAESelfTraining(VAEFeatureMethod):
    name = "vae-self-training"
    version = 1
    reference = "vae-rbf-svm"
    description = "Self-training of an RBF SVM on latent means, confident pseudo-labels added"
    defaults = {**VAE_DEFAULTS, "C": 10.0, "gamma": "scale", "threshold": 0.9, "max_iter": 5,
                "pool": 10_000}  # fmt: skip
    rules = {
        **VAE_RULES,
        **SVM_RULES,
        "threshold": Rule(gt=0, le=1),
        "max_iter": AT_LEAST_ONE,
        "pool": AT_LEAST_ONE,
    }

    @classmethod
    def search_space(cls, trial: Any) -> dict[str, Any]:
        return {
            **suggest_latent_dim(trial),
            **suggest_rbf(trial),
            "threshold": trial.suggest_float("threshold", 0.6, 0.99),
        }

    @classmethod
    def estimated_seconds(
        cls, n_labels: int, n_train: int, params: dict[str, Any], n_classes: int = 10
    ) -> float:
        pool = min(int(params["pool"]), n_train)  # an SVM with probabilities, quadratic in rows
        return 1.0 + int(params["max_iter"]) * 1.5e-8 * (pool + n_labels) ** 2

    def fit_features(self, z: np.ndarray, data: TrainData) -> None:
        from sklearn.preprocessing import StandardScaler
        from sklearn.semi_supervised import SelfTrainingClassifier
        from sklearn.svm import SVC

        rng = np.random.default_rng(data.seed)
        unlabeled = np.setdiff1d(np.arange(len(z)), data.labeled)
        pool = rng.choice(
            unlabeled, size=min(int(self.params["pool"]), len(unlabeled)), replace=False
        )
        rows = np.concatenate([data.labeled, np.sort(pool)])
        targets = np.full(len(rows), UNLABELED, dtype=np.int64)
        targets[: len(data.labeled)] = data.y_labeled
        svm = SVC(C=float(self.params["C"]), gamma=self.params["gamma"], probability=True,
                  random_state=data.seed)  # fmt: skip
        self.scaler_ = StandardScaler().fit(z)
        self.model_ = SelfTrainingClassifier(
            svm, threshold=float(self.params["threshold"]), max_iter=int(self.params["max_iter"])
        ).fit(self.scaler_.transform(z[rows]), targets)
        data.log_metric("pseudo_labeled", int((self.model_.labeled_iter_ > 0).sum()), 0)

    def predict_features(self, z: np.ndarray) -> np.ndarray:
        return self.model_.predict(self.scaler_.transform(z))
