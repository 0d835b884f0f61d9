"""VAE ⇄ GMM mutual learning (Serket): the mixture reshapes the latent space it is fitted on.

Each round fits `vae-gmm`'s label-seeded Gaussian mixture on the latent means, then retrains a
copy of the shared VAE with each image's KL taken towards N(mean of its component, I) instead
of N(0, I), so images of one cluster are pulled together. A labeled image is assigned to the
most responsible component of its own class. The cached VAE is copied, never modified.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import numpy as np
import torch

from methods._holdout import split_labeled
from methods.base import TrainData, vae_config_from, vae_seconds
from methods.params import AT_LEAST_ONE, FRACTION
from methods.vae import train_vae
from methods.vae_gmm import VAEGMM


class VAEGMMMutual(VAEGMM):
    name = "vae-gmm-mutual"
    version = 1
    description = "VAE⇄GMM mutual learning: the label-seeded GMM's means become each image's prior"
    defaults = {**VAEGMM.defaults, "rounds": 3, "epochs": 3, "val_fraction": 0.1}
    rules = {
        **VAEGMM.rules,
        "rounds": AT_LEAST_ONE,
        "epochs": AT_LEAST_ONE,
        "val_fraction": FRACTION,
    }

    @classmethod
    def search_space(cls, trial: Any) -> dict[str, Any]:
        return {
            **super().search_space(trial),
            "rounds": trial.suggest_int("rounds", 1, 6),
            "epochs": trial.suggest_int("epochs", 1, 10),
        }

    @classmethod
    def estimated_seconds(
        cls, n_labels: int, n_train: int, params: dict[str, Any], n_classes: int = 10
    ) -> float:
        rounds, epochs = int(params["rounds"]), int(params["epochs"])
        retrain = vae_seconds(vae_config_from({**params, "vae_epochs": epochs}), n_train)
        return 10.0 + rounds * (8.0 + retrain)  # a GMM fit and a VAE retraining a round

    def _prior_means(self, z: np.ndarray, data: TrainData) -> np.ndarray:
        """Per image: its component's mean; labeled images only choose among their class's."""
        resp = self.gmm_.predict_proba(z)
        own_class = self.component_class_[None, :] == data.y_labeled[:, None]
        resp[data.labeled] = np.where(own_class, resp[data.labeled] + 1e-12, -1.0)
        return self.gmm_.means_[resp.argmax(axis=1)].astype(np.float32)

    def _val_accuracy(self, z: np.ndarray, data: TrainData, val: np.ndarray) -> float:
        if len(val) == 0:
            return float("nan")
        predicted = self.predict_features(z[data.labeled[val]])
        return float(np.mean(predicted == data.y_labeled[val]))

    def fit(self, data: TrainData) -> None:
        holdout = split_labeled(data.y_labeled, float(self.params["val_fraction"]), data.seed)
        # The mixture is seeded and named by the training part of the labels only.
        train_data = dataclasses.replace(
            data, labeled=data.labeled[holdout.train], y_labeled=data.y_labeled[holdout.train]
        )
        self.vae_ = copy.deepcopy(data.get_vae(self.vae_config()))
        config = dataclasses.replace(self.vae_config(), epochs=int(self.params["epochs"]))
        x = data.x_tensor()
        rounds = int(self.params["rounds"])
        checkpoint, first = data.checkpoint("mutual.pt"), 0
        saved = checkpoint.load() if checkpoint else None
        if saved is not None and saved.get("rounds") == rounds:  # resume after the last round
            self.vae_.load_state_dict(saved["vae"])
            first = int(saved["round"])
        for round_ in range(first, rounds + 1):  # the last pass only fits the mixture
            z = self.vae_.latent_means(x)
            self.fit_features(z, train_data)
            data.log_metric("gmm_log_likelihood", float(self.gmm_.score(z)), round_)
            data.log_metric("val_accuracy", self._val_accuracy(z, data, holdout.val), round_)
            if round_ == rounds:
                break
            prior = torch.from_numpy(self._prior_means(z, train_data)).to(data.device)

            def log_loss(epoch: int, loss: float, model: Any, offset: int = round_) -> None:
                data.log_metric("vae_loss", loss, offset * config.epochs + epoch)

            train_vae(
                x,
                config,
                data.seed * 1000 + round_,
                prior_means=prior,
                model=self.vae_,
                on_epoch=log_loss,
                progress=data.progress,
                desc=f"VAE⇄GMM round {round_ + 1}",
                checkpoint=data.checkpoint(f"mutual-round{round_}.pt"),
            )
            if checkpoint is not None:
                checkpoint.save(
                    {"round": round_ + 1, "rounds": rounds, "vae": self.vae_.state_dict()}
                )
