"""The Ladder's Γ-model on the paper's convolutional encoder, and its supervised-only reference.

Published settings of Rasmus et al. 2015 for MNIST (Conv-Small, Γ-model) as defaults: the
encoder in `_ladder_conv.CONV_SMALL`, Gaussian noise of std 0.3 on the input and every
layer, a denoising cost on the top layer only with λ = 1, Adam at 0.002, 100 labeled and 100
unlabeled images a step. The reference ran 150 passes over the unlabeled images with the rate
decaying linearly over the last third; one pass costs about 12 min on a CPU core, so the
default is compressed to 5 passes, the last 3 decaying (see the methods doc).
"""

from __future__ import annotations

from typing import Any

from methods._ladder import NormalisedNet
from methods._ladder_conv import CONV_SMALL, ConvGammaNet, multiply_adds, parse_layers
from methods.base import TrainData
from methods.ladder import Ladder
from methods.params import NON_NEGATIVE, Rule


class LadderConv(Ladder):
    name = "ladder-conv"
    version = 1
    reference = "ladder-conv-supervised"
    description = "Ladder Γ-model on a convolutional encoder (Conv-Small)"
    defaults = {
        **{key: Ladder.defaults[key] for key in ("noise_std", "lr", "batch_size")},
        "layers": CONV_SMALL,
        "model": "gamma",
        "denoising_weight": 1.0,
        "epochs": 5,
        "decay_epochs": 3,
    }
    rules = {
        **{key: Ladder.rules[key] for key in ("noise_std", "lr", "batch_size", "epochs")},
        "decay_epochs": Ladder.rules["decay_epochs"],
        "layers": Rule(pattern=r"[a-z0-9:]+(-[a-z0-9:]+)*"),
        "model": Rule(choices=("gamma", "supervised")),
        "denoising_weight": NON_NEGATIVE,
    }

    @classmethod
    def estimated_seconds(
        cls, n_labels: int, n_train: int, params: dict[str, Any], n_classes: int = 10
    ) -> float:
        macs = multiply_adds(parse_layers(str(params["layers"])), (28, 28), n_classes)
        batch = int(params["batch_size"])
        steps = max(1, n_train - n_labels) / batch
        # rows a step, each through a forward and backward pass (~3 forward passes' work) of
        # the clean and the corrupted path; the reference has only labeled rows, corrupted
        rows, passes = (batch, 4) if params["model"] == "supervised" else (2 * batch, 6)
        # ~6.5e-11 s per multiply-add on the reference CPU core (Conv-Small: ~12 min an epoch)
        return 5.0 + int(params["epochs"]) * steps * rows * passes * macs * 6.5e-11

    def _check_layers(self) -> None:
        parse_layers(str(self.params["layers"]))

    def weights(self) -> list[float]:
        """λ per layer, input first: the top's alone, none for the reference."""
        layers = len(parse_layers(str(self.params["layers"]))) + 1
        top = (
            0.0 if self.params["model"] == "supervised" else float(self.params["denoising_weight"])
        )
        return [0.0] * (layers - 1) + [top]

    def _network(self, data: TrainData) -> NormalisedNet:
        layers = parse_layers(str(self.params["layers"]))
        shape = (int(data.image_shape[0]), int(data.image_shape[1]))
        return ConvGammaNet(layers, shape, data.n_classes, float(self.params["noise_std"]))


class LadderConvSupervised(LadderConv):
    name = "ladder-conv-supervised"
    version = 1
    reference = None
    description = "The convolutional Γ-model's network with its noise, on the labels alone"
    defaults = {**LadderConv.defaults, "model": "supervised"}
