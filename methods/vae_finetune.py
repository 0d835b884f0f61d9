"""The shared VAE's encoder under a small classification head, trained on the labeled images.

The encoder's hidden layers were learned from every training image without labels; the head
(one Softplus hidden layer) learns the classes from the budget. With `freeze_encoder` only the
head trains; otherwise the encoder is fine-tuned too. The encoder is a copy: the cached VAE that
other methods share is never modified.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from benchmark.devices import seeded_generator
from methods._holdout import accuracy, predict_classes, split_labeled
from methods.base import VAE_DEFAULTS, VAE_RULES, Method, TrainData, vae_config_from
from methods.params import AT_LEAST_ONE, FRACTION, NON_NEGATIVE, POSITIVE
from methods.training import Loop, run_loop
from methods.vae import VAE


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
    version = 1
    reference = "supervised-mlp"
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
    rules = {
        **VAE_RULES,
        "head_hidden": AT_LEAST_ONE,
        "epochs": AT_LEAST_ONE,
        "batch_size": AT_LEAST_ONE,
        "lr": POSITIVE,
        "weight_decay": NON_NEGATIVE,
        "val_fraction": FRACTION,
    }

    @classmethod
    def search_space(cls, trial: Any) -> dict[str, Any]:
        return {
            "lr": trial.suggest_float("lr", 1e-4, 1e-2, log=True),
            "epochs": trial.suggest_int("epochs", 20, 300, log=True),
            "head_hidden": trial.suggest_categorical("head_hidden", [32, 128, 512]),
            "weight_decay": trial.suggest_float("weight_decay", 1e-6, 1e-2, log=True),
        }

    @classmethod
    def estimated_seconds(
        cls, n_labels: int, n_train: int, params: dict[str, Any], n_classes: int = 10
    ) -> float:
        per_epoch = 0.12 + 0.00036 * n_labels  # fitted to cells timed on the reference CPU
        return 3.0 + int(params["epochs"]) * per_epoch

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
        best: dict[str, Any] = {"score": -1.0, "state": None}

        def on_epoch(epoch: int, loss: float) -> None:
            data.log_metric("train_loss", loss, epoch)
            if len(y_val):
                self.net_.eval()
                score = accuracy(self.net_, x_val, y_val)
                data.log_metric("val_accuracy", score, epoch)
                if score >= best["score"]:
                    best.update(score=score, state=copy.deepcopy(self.net_.state_dict()))

        run_loop(
            Loop(
                name=self.name,
                model=self.net_,
                optimizer=optimizer,
                generator=generator,
                epochs=int(self.params["epochs"]),
                run_epoch=lambda epoch: self._epoch(x, y, optimizer, generator),
                on_epoch=on_epoch,
                checkpoint=data.checkpoint("finetune.pt"),
                progress=data.progress,
                hint=f"lower the learning rate (lr={self.params['lr']})",
                get_extra=lambda: dict(best),
                set_extra=best.update,
            )
        )
        best_state = best["state"]
        if best_state is not None:
            self.net_.load_state_dict(best_state)
        self.net_.eval()

    def predict(self, x: np.ndarray) -> np.ndarray:
        return predict_classes(self.net_, x)


class VAEFinetuneFrozen(VAEFinetune):
    name = "vae-finetune-frozen"
    version = 1
    description = "Shared VAE's encoder (copied, frozen) + small head on the labeled images"
    defaults = {**VAEFinetune.defaults, "freeze_encoder": True}
