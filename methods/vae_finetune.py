"""The shared VAE's encoder under a small classification head, trained on the labeled images.

The encoder's hidden layers were learned from every training image without labels; the head
(one Softplus hidden layer) learns the classes from the budget. With `freeze_encoder` only the
head trains; otherwise the encoder is fine-tuned too. The encoder is a copy: the cached VAE that
other methods share is never modified.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from benchmark.devices import seeded_generator
from methods._holdout import accuracy, predict_classes, split_labeled
from methods.base import VAE_DEFAULTS, Method, TrainData, vae_config_from
from methods.vae import VAE, TrainingDiverged


def encoder_classifier(vae: VAE, n_classes: int, head_hidden: int, seed: int) -> nn.Sequential:
    """A copy of vae's encoder layers followed by a freshly initialised head."""
    head = nn.Sequential(
        nn.Linear(vae.config.hidden[-1], head_hidden),
        nn.Softplus(),
        nn.Linear(head_hidden, n_classes),
    )
    generator = torch.Generator().manual_seed(seed)
    for layer in head:
        if isinstance(layer, nn.Linear):
            nn.init.xavier_uniform_(layer.weight, generator=generator)
            nn.init.zeros_(layer.bias)
    device = next(vae.parameters()).device
    return nn.Sequential(copy.deepcopy(vae.encoder), head.to(device))


class VAEFinetune(Method):
    name = "vae-finetune"
    description = "Shared VAE's encoder (copied, trainable) + small head on the labeled images"
    uses_vae = True
    defaults = {
        **VAE_DEFAULTS,
        "freeze_encoder": False,
        "head_hidden": 128,
        "epochs": 100,
        "batch_size": 64,
        "lr": 1e-3,
        "weight_decay": 1e-4,
        "val_fraction": 0.1,
    }

    @classmethod
    def search_space(cls, trial: Any) -> dict[str, Any]:
        return {
            "lr": trial.suggest_float("lr", 1e-4, 1e-2, log=True),
            "epochs": trial.suggest_int("epochs", 20, 300, log=True),
            "head_hidden": trial.suggest_categorical("head_hidden", [32, 128, 512]),
            "weight_decay": trial.suggest_float("weight_decay", 1e-6, 1e-2, log=True),
        }

    def fit(self, data: TrainData) -> None:
        vae = data.get_vae(vae_config_from(self.params))
        self.net_ = encoder_classifier(
            vae, data.n_classes, int(self.params["head_hidden"]), data.seed
        )
        encoder, head = self.net_
        encoder.requires_grad_(not self.params["freeze_encoder"])
        holdout = split_labeled(data.y_labeled, float(self.params["val_fraction"]), data.seed)
        x = torch.from_numpy(data.x_labeled).to(data.device)
        y = torch.tensor(data.y_labeled, dtype=torch.long, device=data.device)
        train, val = (torch.as_tensor(i, device=data.device) for i in (holdout.train, holdout.val))
        self._train(x[train], y[train], x[val], y[val], data)

    def _epoch(self, x: torch.Tensor, y: torch.Tensor, optimizer, generator) -> float:
        """One pass over the labeled training images; returns their mean cross-entropy."""
        self.net_.train()
        batch = min(int(self.params["batch_size"]), len(x))
        order = torch.randperm(len(x), generator=generator, device=x.device)
        total = torch.zeros((), device=x.device)
        for begin in range(0, len(x), batch):
            idx = order[begin : begin + batch]
            loss = F.cross_entropy(self.net_(x[idx]), y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.detach() * len(idx)
        return float(total) / len(x)

    def _train(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        x_val: torch.Tensor,
        y_val: torch.Tensor,
        data: TrainData,
    ) -> None:
        """Fixed epochs; with a validation slice, keep the epoch it scores best (latest on ties)."""
        params = [p for p in self.net_.parameters() if p.requires_grad]
        optimizer = torch.optim.Adam(
            params, lr=float(self.params["lr"]), weight_decay=float(self.params["weight_decay"])
        )
        generator = seeded_generator(data.seed, x.device)
        best, best_state = -1.0, None
        epochs = range(int(self.params["epochs"]))
        for epoch in tqdm(epochs, desc=self.name, disable=not data.progress, leave=False):
            loss = self._epoch(x, y, optimizer, generator)
            if not math.isfinite(loss):
                raise TrainingDiverged(
                    f"{self.name} loss became {loss} at epoch {epoch + 1};"
                    f" lower the learning rate (lr={self.params['lr']})."
                )
            data.log_metric("train_loss", loss, epoch)
            if len(y_val):
                self.net_.eval()
                score = accuracy(self.net_, x_val, y_val)
                data.log_metric("val_accuracy", score, epoch)
                if score >= best:
                    best, best_state = score, copy.deepcopy(self.net_.state_dict())
        if best_state is not None:
            self.net_.load_state_dict(best_state)
        self.net_.eval()

    def predict(self, x: np.ndarray) -> np.ndarray:
        return predict_classes(self.net_, x)


class VAEFinetuneFrozen(VAEFinetune):
    name = "vae-finetune-frozen"
    description = "Shared VAE's encoder (copied, frozen) + small head on the labeled images"
    defaults = {**VAEFinetune.defaults, "freeze_encoder": True}
