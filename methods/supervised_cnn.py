"""The convolutional fine-tuning network trained from scratch on the labeled images alone.

Two stride-2 convolutions (the convolutional VAE's encoder, freshly initialised) under the
same 3x3-convolution-and-dense head as `vae-finetune`, with its optimiser, epochs and
validation slice: what the fine-tuned methods would reach without the unlabeled images, so a
gain of theirs over this row is what the VAE's pre-training bought.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from torch import nn

from methods._classifier import (
    CLASSIFIER_DEFAULTS,
    CLASSIFIER_NEW_PARAMS,
    CLASSIFIER_RULES,
    classifier_search_space,
    fit_on_labels,
)
from methods._holdout import predict_classes
from methods.base import Method, TrainData
from methods.vae import conv_feature_maps
from methods.vae_finetune import conv_head, init_layers


class SupervisedCNN(Method):
    name = "supervised-cnn"
    version = 1
    description = "The conv fine-tuning network trained from scratch on the labels alone"
    defaults = CLASSIFIER_DEFAULTS
    new_params = CLASSIFIER_NEW_PARAMS
    rules = CLASSIFIER_RULES

    @classmethod
    def search_space(cls, trial: Any) -> dict[str, Any]:
        return classifier_search_space(trial)

    @classmethod
    def estimated_seconds(
        cls, n_labels: int, n_train: int, params: dict[str, Any], n_classes: int = 10
    ) -> float:
        steps = -(-int(0.9 * n_labels) // int(params["batch_size"]))
        return 1.0 + int(params["epochs"]) * steps * 0.02  # ~20 ms a step on 64 images

    def fit(self, data: TrainData) -> None:
        shape = (int(data.image_shape[0]), int(data.image_shape[1]))
        body, maps = conv_feature_maps(shape)
        head = conv_head(maps, int(self.params["head_hidden"]), data.n_classes)
        self.net_ = init_layers(nn.Sequential(body, head), data.seed).to(data.device)
        fit_on_labels(self.net_, self.name, self.params, data)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return predict_classes(self.net_, x)
