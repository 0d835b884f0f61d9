"""Training a classifier network on the labeled images alone: the loop the fine-tuning
methods and the supervised-only networks share (Adam with weight decay, fixed epochs, and with
a validation slice of the labels the epoch it scores best, latest on ties). With `shift`, each
batch's images are moved by a few pixels at random, a label-free augmentation."""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from benchmark.devices import seeded_generator
from methods._holdout import accuracy, split_labeled
from methods.base import TrainData
from methods.params import AT_LEAST_ONE, FRACTION, NON_NEGATIVE, POSITIVE, Rule
from methods.training import Loop, adam, run_loop

# The settings every network trained by `fit_on_labels` shares (the fine-tuning paper's).
# `shift`: the most pixels an image moves each way in a step; 0 moves none (and draws no
# random number). The default 2 is what 5-fold CV inside the budget chose (docs/methods.md).
CLASSIFIER_DEFAULTS: dict[str, Any] = {
    "head_hidden": 128,
    "epochs": 100,
    "batch_size": 64,
    "lr": 1e-3,
    "weight_decay": 1e-4,
    "val_fraction": 0.1,
    "shift": 2,
}
CLASSIFIER_RULES = {
    "head_hidden": AT_LEAST_ONE,
    "epochs": AT_LEAST_ONE,
    "batch_size": AT_LEAST_ONE,
    "lr": POSITIVE,
    "weight_decay": NON_NEGATIVE,
    "val_fraction": FRACTION,
    "shift": Rule(ge=0, integer=True),
}
CLASSIFIER_NEW_PARAMS = {"shift": 0}  # what the cells computed before it existed


def classifier_search_space(trial: Any) -> dict[str, Any]:
    """The optimiser's and the augmentation's part of `tune`'s search space."""
    return {
        "lr": trial.suggest_float("lr", 1e-4, 1e-2, log=True),
        "epochs": trial.suggest_int("epochs", 20, 300, log=True),
        "weight_decay": trial.suggest_float("weight_decay", 1e-6, 1e-2, log=True),
        "shift": trial.suggest_int("shift", 0, 3),
    }


Augment = Callable[[torch.Tensor], torch.Tensor]


def shifted(
    x: torch.Tensor, shape: Sequence[int], pixels: int, generator: torch.Generator
) -> torch.Tensor:
    """Each row of x (an image of `shape`, flattened) moved by up to `pixels` rows and columns,
    its own draw; the uncovered border is 0, the background of the datasets' scaled images."""
    n, (h, w), device = len(x), shape[-2:], x.device
    images = F.pad(x.reshape(n, -1, h, w), (pixels,) * 4)
    dy, dx = (
        torch.randint(0, 2 * pixels + 1, (n,), generator=generator, device=device) for _ in "yx"
    )
    rows = (dy[:, None] + torch.arange(h, device=device))[:, None, :, None]
    cols = (dx[:, None] + torch.arange(w, device=device))[:, None, None, :]
    channels = torch.arange(images.shape[1], device=device)[None, :, None, None]
    return images[
        torch.arange(n, device=device)[:, None, None, None], channels, rows, cols
    ].reshape(n, -1)


def _epoch(
    net: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    augment: Augment | None = None,
) -> float:
    """One pass over the labeled training images; returns their mean cross-entropy."""
    net.train()
    batch = min(batch_size, len(x))
    order = torch.randperm(len(x), generator=generator, device=x.device)
    total = torch.zeros((), device=x.device)
    for begin in range(0, len(x), batch):
        idx = order[begin : begin + batch]
        inputs = x[idx] if augment is None else augment(x[idx])
        loss = F.cross_entropy(net(inputs), y[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += loss.detach() * len(idx)
    return float(total) / len(x)


def train_classifier(
    net: nn.Module,
    name: str,
    params: dict[str, Any],
    train: tuple[torch.Tensor, torch.Tensor],
    val: tuple[torch.Tensor, torch.Tensor],
    data: TrainData,
) -> None:
    """Fixed epochs; with a validation slice, keep the epoch it scores best (latest on ties)."""
    (x, y), (x_val, y_val) = train, val
    trainable = [p for p in net.parameters() if p.requires_grad]
    optimizer = adam(
        trainable, x.device, lr=float(params["lr"]), weight_decay=float(params["weight_decay"])
    )
    generator = seeded_generator(data.seed, x.device)
    best: dict[str, Any] = {"score": -1.0, "state": None}

    def on_epoch(epoch: int, loss: float) -> None:
        data.log_metric("train_loss", loss, epoch)
        if len(y_val):
            net.eval()
            score = accuracy(net, x_val, y_val)
            data.log_metric("val_accuracy", score, epoch)
            if score >= best["score"]:
                best.update(score=score, state=copy.deepcopy(net.state_dict()))

    batch_size = int(params["batch_size"])
    pixels = int(params.get("shift", 0))
    augment = None
    if pixels > 0:
        augment = lambda batch: shifted(batch, data.image_shape, pixels, generator)  # noqa: E731
    run_loop(
        Loop(
            name=name,
            model=net,
            optimizer=optimizer,
            generator=generator,
            epochs=int(params["epochs"]),
            run_epoch=lambda epoch: _epoch(net, x, y, batch_size, optimizer, generator, augment),
            on_epoch=on_epoch,
            checkpoint=data.checkpoint("finetune.pt"),
            progress=data.progress,
            hint=f"lower the learning rate (lr={params['lr']})",
            get_extra=lambda: dict(best),
            set_extra=best.update,
        )
    )
    if best["state"] is not None:
        net.load_state_dict(best["state"])
    net.eval()


def fit_on_labels(net: nn.Module, name: str, params: dict[str, Any], data: TrainData) -> None:
    """Train `net` on the budget's labels, less a validation slice of `val_fraction` of them."""
    holdout = split_labeled(data.y_labeled, float(params["val_fraction"]), data.seed)
    x = torch.from_numpy(data.x_labeled).to(data.device)
    y = torch.tensor(data.y_labeled, dtype=torch.long, device=data.device)
    train, val = (torch.as_tensor(i, device=data.device) for i in (holdout.train, holdout.val))
    train_classifier(net, name, params, (x[train], y[train]), (x[val], y[val]), data)
