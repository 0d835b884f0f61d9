"""Fitting M2 for a method: labels held out if asked, Kingma's label weight, training curves."""

from __future__ import annotations

import time
from typing import Any

import torch

from methods._holdout import accuracy, split_labeled
from methods._m2.config import M2Config
from methods._m2.model import M2, decoder_accuracy
from methods._m2.training import train_m2
from methods.base import TrainData
from methods.training import rows_outside


def fit_m2(
    features: torch.Tensor,
    data: TrainData,
    params: dict[str, Any],
    likelihood: str,
    spread: torch.Tensor | None = None,
) -> M2:
    """Hold out a validation slice of the labels (if `val_fraction` > 0), train M2, and log
    its curves.

    `features` has one row per training image (pixels or M1 features) on `data.device`;
    `spread`, if given, is the standard deviation each step's features are drawn with.
    """
    holdout = split_labeled(data.y_labeled, float(params["val_fraction"]), data.seed)
    if "kingma_alpha" in params:  # Kingma's rule: the labels weigh as much whatever their number
        n_train = max(1, len(holdout.train))
        params = {**params, "alpha": float(params["kingma_alpha"]) * len(data.x) / n_train}
        data.log_metric("alpha", params["alpha"], 0)
    config = M2Config.from_params(params, likelihood)
    device = features.device
    labeled = torch.tensor(data.labeled, dtype=torch.long, device=device)  # copies: read-only
    y = torch.tensor(data.y_labeled, dtype=torch.long, device=device)
    train_pos = torch.as_tensor(holdout.train, dtype=torch.long, device=device)
    val_pos = torch.as_tensor(holdout.val, dtype=torch.long, device=device)
    x_val, y_val = features[labeled[val_pos]], y[val_pos]

    clock = [time.perf_counter()]

    x_fit, y_fit = features[labeled[train_pos]], y[train_pos]
    # A fixed probe of unlabeled images (no labels read): does the decoder's class agree with
    # the classifier's? Near chance means p(x|y,z) cannot steer q(y|x) on unlabeled data.
    x_probe = features[rows_outside(len(features), labeled)[:1000]]

    def log_epoch(epoch: int, loss: float, model: M2, terms: dict[str, float]) -> None:
        """The curves that show M2's failure modes: does the classifier fit its own labels,
        and which loss term dominates?"""
        now = time.perf_counter()
        data.log_metric("m2_epoch_seconds", now - clock[0], epoch)
        clock[0] = now
        data.log_metric("m2_loss", loss, epoch)
        for name, value in terms.items():
            data.log_metric(f"m2_{name}_loss", value, epoch)
        data.log_metric("labeled_accuracy", accuracy(model, x_fit, y_fit), epoch)
        data.log_metric("decoder_labeled_accuracy", decoder_accuracy(model, x_fit, y_fit, 0), epoch)
        if len(x_probe):
            agree = decoder_accuracy(model, x_probe, model(x_probe).argmax(dim=1), 0)
            data.log_metric("decoder_classifier_agreement", agree, epoch)
        if len(val_pos):
            data.log_metric("val_accuracy", accuracy(model, x_val, y_val), epoch)

    return train_m2(
        features,
        labeled[train_pos],
        y[train_pos],
        data.n_classes,
        config,
        data.seed,
        held_out=labeled[val_pos],
        spread=spread,
        on_epoch=log_epoch,
        progress=data.progress,
        checkpoint=data.checkpoint("m2.pt"),
    )
