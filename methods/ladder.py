"""The Ladder network (Rasmus et al. 2015) and its supervised-only reference.

Published settings, as defaults: MLP 784-1000-500-250-250-250-10, Gaussian noise of std 0.3 on
the input and every layer, denoising weights λ = 1000, 10, 0.1, 0.1, 0.1, 0.1, 0.1 (input to
top), Adam at 0.002 for 150 passes over the unlabeled images, the rate decaying linearly to zero
over the last 50, 100 labeled and 100 unlabeled images a step. `model=gamma` keeps the top
layer's cost only (the Γ-model). Unlike the survey's "ladder of VAEs" (a hierarchy of latent
variables with the label at the top, here `m2`/`m1-m2`), this ladder is a denoising
autoencoder whose lateral connections let the top layer specialise on the classes.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from benchmark.devices import seeded_generator
from benchmark.errors import UsageError
from methods._holdout import ClassifierCurves, predict_classes
from methods._ladder import LadderNet, NormalisedNet
from methods.base import Method, TrainData
from methods.params import AT_LEAST_ONE, NON_NEGATIVE, POSITIVE, Rule
from methods.training import (
    Loop,
    adam,
    labeled_stream,
    rows_outside,
    run_loop,
)

SIZES = "1000,500,250,250,250"
FULL_WEIGHTS = "1000,10,0.1,0.1,0.1,0.1,0.1"


def _floats(text: str) -> list[float]:
    return [float(t) for t in str(text).split(",")]


class Ladder(Method):
    name = "ladder"
    version = 1
    reference = "ladder-supervised"
    description = "Ladder network: a denoising decoder with lateral connections to every layer"
    defaults = {
        "hidden": SIZES,
        "noise_std": 0.3,
        "model": "full",
        "denoising_weights": FULL_WEIGHTS,
        "epochs": 40,
        "decay_epochs": 15,
        "lr": 0.002,
        "batch_size": 100,
    }
    rules = {
        "hidden": Rule(pattern=r"[1-9][0-9]*(,[1-9][0-9]*)*"),
        "noise_std": NON_NEGATIVE,
        "model": Rule(choices=("full", "gamma", "supervised")),
        "denoising_weights": Rule(pattern=r"[0-9.e+-]+(,[0-9.e+-]+)*"),
        "epochs": AT_LEAST_ONE,
        "decay_epochs": NON_NEGATIVE,
        "lr": POSITIVE,
        "batch_size": AT_LEAST_ONE,
    }

    @classmethod
    def search_space(cls, trial: Any) -> dict[str, Any]:
        return {
            "noise_std": trial.suggest_float("noise_std", 0.1, 0.5),
            "lr": trial.suggest_float("lr", 5e-4, 3e-2, log=True),  # 0.02: a public port
            "epochs": trial.suggest_int("epochs", 10, 150, log=True),
        }

    @classmethod
    def estimated_seconds(
        cls, n_labels: int, n_train: int, params: dict[str, Any], n_classes: int = 10
    ) -> float:
        sizes = [784, *[int(h) for h in str(params["hidden"]).split(",")], n_classes]
        weights = sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))
        steps = n_train / int(params["batch_size"])
        passes = 1 if params["model"] == "supervised" else 3  # clean, corrupted, decoder
        # ~6e-11 s per weight, row and pass on the reference CPU (a full ladder epoch: ~1 min)
        return 5.0 + int(params["epochs"]) * steps * passes * weights * 200 * 6e-11

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self._check_layers()

    def _check_layers(self) -> None:
        """A UsageError unless the layer parameters describe a network."""
        layers = len(str(self.params["hidden"]).split(",")) + 2
        if len(_floats(self.params["denoising_weights"])) != layers:
            raise UsageError(
                f"Method {self.name!r}: denoising_weights needs {layers} values, one per layer"
                f" from the input to the top (hidden={self.params['hidden']!r})."
            )

    def weights(self) -> list[float]:
        """λ per layer, input first: the Γ-model keeps the top's; the reference none."""
        layers = len(str(self.params["hidden"]).split(",")) + 2
        full = _floats(self.params["denoising_weights"])
        if self.params["model"] == "gamma":
            return [0.0] * (layers - 1) + [full[-1]]
        if self.params["model"] == "supervised":
            return [0.0] * layers
        return full

    def _network(self, data: TrainData) -> NormalisedNet:
        hidden = [int(h) for h in str(self.params["hidden"]).split(",")]
        return LadderNet(
            [data.x.shape[1], *hidden, data.n_classes], float(self.params["noise_std"])
        )

    def fit(self, data: TrainData) -> None:
        p = self.params
        weights = self.weights()
        device = data.device
        self.net_ = self._network(data)
        self.net_.init_weights(torch.Generator().manual_seed(data.seed))
        self.net_.to(device)
        optimizer = adam(self.net_.parameters(), device, lr=float(p["lr"]))
        generator = seeded_generator(data.seed, device)
        x = data.x_tensor()
        labeled = torch.tensor(data.labeled, dtype=torch.long, device=device)  # copies:
        y = torch.tensor(data.y_labeled, dtype=torch.long, device=device)  # read-only input
        unlabeled = rows_outside(len(x), labeled)
        # an epoch is a pass over the unlabeled images, for the reference too: both see the
        # labels equally often
        supervised = p["model"] == "supervised"
        batch = int(p["batch_size"])
        n_steps = max(1, -(-len(unlabeled) // batch))
        epochs, decay = int(p["epochs"]), int(p["decay_epochs"])

        def run_epoch(epoch: int) -> float:
            rate = float(p["lr"]) * min(1.0, (epochs - epoch) / decay) if decay else float(p["lr"])
            for group in optimizer.param_groups:
                group["lr"] = rate
            self.net_.train()
            order = unlabeled[torch.randperm(len(unlabeled), generator=generator, device=device)]
            stream = labeled_stream(len(labeled), n_steps * batch, generator, device)
            total = torch.zeros((), device=device)
            for step in range(n_steps):
                idx_l = stream[step * batch : (step + 1) * batch]
                rows = labeled[idx_l] if supervised else torch.cat(
                    [labeled[idx_l], order[step * batch : (step + 1) * batch]]
                )  # fmt: skip
                loss = self._step_loss(x[rows], y[idx_l], weights, generator)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total += loss.detach()
            return float(total) / n_steps

        curves = ClassifierCurves(data.log_metric, x, labeled, y, unlabeled)

        def on_epoch(epoch: int, loss: float) -> None:
            data.log_metric("ladder_loss", loss, epoch)
            curves.log(self.net_, epoch)

        run_loop(
            Loop(
                name=self.name,
                model=self.net_,
                optimizer=optimizer,
                generator=generator,
                epochs=epochs,
                run_epoch=run_epoch,
                on_epoch=on_epoch,
                checkpoint=data.checkpoint("ladder.pt"),
                progress=data.progress,
                on_resume=curves.resume,
                hint=f"lower the learning rate (lr={p['lr']})",
            )
        )
        self.net_.eval()

    def _step_loss(
        self, x: torch.Tensor, y: torch.Tensor, weights: list[float], generator: torch.Generator
    ) -> torch.Tensor:
        """Cross-entropy of the corrupted path on the labeled rows (the first len(y)) plus the
        weighted denoising costs on every row."""
        n = len(y)
        logits_noisy, noisy, _ = self.net_.encode(x, generator, train=True, n_labeled=n)
        loss = F.cross_entropy(logits_noisy[:n], y)
        if any(w > 0 for w in weights):  # denoising costs on the unlabeled rows
            _, clean, stats = self.net_.encode(x, None, train=True, n_labeled=n)
            loss = loss + self.net_.denoising_costs(
                logits_noisy[n:], [z[n:] for z in noisy], [z[n:] for z in clean], stats, weights
            )
        else:  # the reference: the running statistics still come from a clean pass
            with torch.no_grad():
                self.net_.encode(x, None, train=True, n_labeled=n)
        return loss

    def predict(self, x: np.ndarray) -> np.ndarray:
        return predict_classes(self.net_, x)


class LadderSupervised(Ladder):
    name = "ladder-supervised"
    version = 1
    reference = None
    description = "The Ladder's network with its noise, trained on the labeled images alone"
    defaults = {**Ladder.defaults, "model": "supervised"}
