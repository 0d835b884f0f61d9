"""The network M2 starts from, trained on the labeled images alone: the reference every SSL row
is read against (Pyro's and Oliver et al.'s tables show the same baseline).

It is M2's classifier q(y|x) (one Softplus hidden layer) with M2's optimizer, epochs and
validation slice, and, per epoch, as many steps on minibatches of labeled images as an M2 epoch
takes (one per unlabeled minibatch), so the two see the labels equally often. A gain of `m2`
over this row is what the unlabeled images bought.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from benchmark.devices import seeded_generator
from methods._holdout import accuracy, predict_classes, split_labeled
from methods._m2 import M2, M2_DEFAULTS, M2_EPOCH_SECONDS, M2_RULES, M2Config
from methods.base import Method, TrainData
from methods.params import AT_LEAST_ONE
from methods.training import Loop, adam, run_loop

SHARED = ("hidden", "epochs", "batch_size", "labeled_batch_size", "lr", "val_fraction")


def classifier(n_inputs: int, n_classes: int, params: dict[str, Any], seed: int) -> nn.Module:
    """M2's q(y|x) network, taken from an M2 built and initialised as `m2` builds it, so the
    two start from the same weights for a seed."""
    config = M2Config.from_params({**M2_DEFAULTS, **params}, "bernoulli")
    model = M2(n_inputs, n_classes, config)
    model.init_weights(torch.Generator().manual_seed(seed))
    return model.classifier


class SupervisedMLP(Method):
    name = "supervised-mlp"
    version = 1
    description = "M2's classifier network trained on the labeled images alone (the SSL reference)"
    defaults = {k: M2_DEFAULTS[k] for k in SHARED}
    rules = {**{k: M2_RULES[k] for k in SHARED}, "labeled_batch_size": AT_LEAST_ONE}

    @classmethod
    def estimated_seconds(
        cls, n_labels: int, n_train: int, params: dict[str, Any], n_classes: int = 10
    ) -> float:
        # one labeled minibatch per M2 step, through one network instead of M2's ten-class pass
        return 3.0 + int(params["epochs"]) * M2_EPOCH_SECONDS * (n_train / 60_000) * 0.035

    def fit(self, data: TrainData) -> None:
        p = self.params
        holdout = split_labeled(data.y_labeled, float(p["val_fraction"]), data.seed)
        device = data.device
        x = torch.from_numpy(data.x_labeled).to(device)
        y = torch.tensor(data.y_labeled, dtype=torch.long, device=device)
        train, val = (torch.as_tensor(i, device=device) for i in (holdout.train, holdout.val))
        x_train, y_train, x_val, y_val = x[train], y[train], x[val], y[val]
        self.net_ = classifier(x.shape[1], data.n_classes, p, data.seed).to(device)
        optimizer = adam(self.net_.parameters(), device, lr=float(p["lr"]))
        generator = seeded_generator(data.seed, device)
        n_unlabeled = len(data.x) - len(data.labeled)
        steps = max(1, -(-n_unlabeled // int(p["batch_size"])))  # as many as an M2 epoch
        batch = min(int(p["labeled_batch_size"]), len(x_train))

        def run_epoch(epoch: int) -> float:
            reps = -(-steps * batch // len(x_train))
            stream = torch.cat(
                [
                    torch.randperm(len(x_train), generator=generator, device=device)
                    for _ in range(reps)
                ]
            )
            total = torch.zeros((), device=device)
            for step in range(steps):
                idx = stream[step * batch : (step + 1) * batch]
                loss = F.cross_entropy(self.net_(x_train[idx]), y_train[idx])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total += loss.detach()
            return float(total) / steps

        def on_epoch(epoch: int, loss: float) -> None:
            self.net_.eval()  # batch norm's running statistics; the next epoch sets train mode
            data.log_metric("train_loss", loss, epoch)
            data.log_metric("labeled_accuracy", accuracy(self.net_, x_train, y_train), epoch)
            if len(y_val):
                data.log_metric("val_accuracy", accuracy(self.net_, x_val, y_val), epoch)

        run_loop(
            Loop(
                name=self.name,
                model=self.net_,
                optimizer=optimizer,
                generator=generator,
                epochs=int(p["epochs"]),
                run_epoch=run_epoch,
                on_epoch=on_epoch,
                checkpoint=data.checkpoint("supervised-mlp.pt"),
                progress=data.progress,
                hint=f"lower the learning rate (lr={p['lr']})",
            )
        )

    def predict(self, x: np.ndarray) -> np.ndarray:
        return predict_classes(self.net_, x)
