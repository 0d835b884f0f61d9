"""The shared VAE's encoder under a small classification head, trained on the labeled images.

The encoder was learned from every training image without labels; the head learns the classes
from the budget. By default, as the fine-tuning paper's best setting, the VAE is convolutional
and the head is a 3x3 convolution on the encoder's feature maps followed by a dense layer
(`head=dense`: a dense head on the encoder's last dense layer, the MLP VAE's only choice). With
`freeze_encoder` only the head trains; otherwise the encoder is fine-tuned too. The encoder is
a copy: the cached VAE that other methods share is never modified.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch
from torch import nn

from benchmark.errors import UsageError
from methods._classifier import (
    CLASSIFIER_DEFAULTS,
    CLASSIFIER_NEW_PARAMS,
    CLASSIFIER_RULES,
    classifier_search_space,
    fit_on_labels,
)
from methods._holdout import predict_classes
from methods.base import VAE_DEFAULTS, VAE_NEW_PARAMS, VAE_RULES, Method, TrainData, vae_config_from
from methods.params import Rule
from methods.vae import VAE


def conv_head(maps: tuple[int, int, int], head_hidden: int, n_classes: int) -> nn.Sequential:
    """The fine-tuning paper's head on convolutional maps: a 3x3 convolution, then dense."""
    c, h, w = maps
    return nn.Sequential(
        nn.Conv2d(c, c, 3, 1, 1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(c * h * w, head_hidden),
        nn.ReLU(),
        nn.Linear(head_hidden, n_classes),
    )


def init_layers(net: nn.Module, seed: int) -> nn.Module:
    """Xavier weights and zero biases from the seed, the same on any device."""
    generator = torch.Generator().manual_seed(seed)
    for layer in net.modules():
        if isinstance(layer, nn.Linear | nn.Conv2d):
            nn.init.xavier_uniform_(layer.weight, generator=generator)
            nn.init.zeros_(layer.bias)
    return net


def encoder_classifier(
    vae: VAE, n_classes: int, head_hidden: int, seed: int, head: str = "dense"
) -> nn.Sequential:
    """A copy of vae's encoder followed by a freshly initialised head: dense on the encoder's
    last dense layer, or (`head="conv"`, convolutional VAE) convolutional on its feature maps."""
    if head == "conv":
        body = vae.encoder.feature_maps()
        top = conv_head(vae.encoder.maps_shape, head_hidden, n_classes)
    else:
        body = copy.deepcopy(vae.encoder)
        top = nn.Sequential(
            nn.Linear(vae.config.hidden[-1], head_hidden),
            nn.Softplus(),
            nn.Linear(head_hidden, n_classes),
        )
    device = next(vae.parameters()).device
    return nn.Sequential(body, init_layers(top, seed).to(device))


class VAEFinetune(Method):
    name = "vae-finetune"
    version = 1
    reference = "supervised-cnn"
    description = "Shared (conv) VAE's encoder, copied and trainable, + conv head on the labels"
    uses_vae = True
    # The fine-tuning paper's best setting: the convolutional VAE's encoder under a small
    # convolutional and dense head (`--set vae_arch=mlp --set head=dense`: the MLP version).
    defaults = {
        **VAE_DEFAULTS,
        "vae_arch": "conv",
        "head": "conv",
        "freeze_encoder": False,
        **CLASSIFIER_DEFAULTS,
    }
    new_params = {**VAE_NEW_PARAMS, **CLASSIFIER_NEW_PARAMS, "head": "dense"}
    rules = {
        **VAE_RULES,
        **CLASSIFIER_RULES,
        "head": Rule(choices=("dense", "conv")),
    }

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        if self.params["head"] == "conv" and self.params["vae_arch"] != "conv":
            raise UsageError(
                f"Method {self.name!r}: head=conv needs the convolutional VAE's feature maps;"
                " add --set vae_arch=conv, or use --set head=dense."
            )

    @classmethod
    def search_space(cls, trial: Any) -> dict[str, Any]:
        return {
            **classifier_search_space(trial),
            "head_hidden": trial.suggest_categorical("head_hidden", [32, 128, 512]),
        }

    @classmethod
    def estimated_seconds(
        cls, n_labels: int, n_train: int, params: dict[str, Any], n_classes: int = 10
    ) -> float:
        # a step on 64 labeled images: ~20 ms through the conv network, ~5 ms the MLP's
        steps = -(-int(0.9 * n_labels) // int(params["batch_size"]))
        per_step = 0.02 if params["head"] == "conv" else 0.005
        return 1.0 + int(params["epochs"]) * steps * per_step

    def fit(self, data: TrainData) -> None:
        vae = data.get_vae(vae_config_from(self.params))
        self.net_ = encoder_classifier(
            vae, data.n_classes, int(self.params["head_hidden"]), data.seed, self.params["head"]
        )
        encoder, head = self.net_
        encoder.requires_grad_(not self.params["freeze_encoder"])
        fit_on_labels(self.net_, self.name, self.params, data)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return predict_classes(self.net_, x)


class VAEFinetuneFrozen(VAEFinetune):
    name = "vae-finetune-frozen"
    version = 1
    description = "Shared (conv) VAE's encoder, copied and frozen, + conv head on the labels"
    # CV inside the budget did not choose the shift for a frozen encoder (docs/methods.md)
    defaults = {**VAEFinetune.defaults, "freeze_encoder": True, "shift": 0}
