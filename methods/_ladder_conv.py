"""The Ladder's Γ-model on a convolutional encoder (Rasmus et al. 2015, Conv-Small).

The encoder is read from a spec such as the paper's Conv-Small for MNIST,
`convf:32:5-maxpool:2-convv:64:3-convf:64:3-maxpool:2-convv:128:3-convv:10:1-meanpool-fc`:
`convf:C:K` is a K×K convolution to C maps padded fully (the map grows by K-1), `convv:C:K`
one without padding, `maxpool:S` pools S×S, `meanpool` averages each map to one value, and
`fc`, last, maps to the classes. As in the reference code, every layer's pre-activation (the
pools' too) is batch-normalised, per map for maps, and corrupted on the corrupted path;
convolutions then add β and a ReLU, pools pass their value on, the top adds β and scales by
γ. The Γ-model's only decoder is the top layer's combinator.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from benchmark.errors import UsageError
from methods._ladder import Combinator, NormalisedNet, _broadcast, _standardised

CONV_SMALL = (
    "convf:32:5-maxpool:2-convv:64:3-convf:64:3-maxpool:2-convv:128:3-convv:10:1-meanpool-fc"
)
_LAYER = re.compile(r"(?P<kind>convf|convv):(?P<maps>[1-9][0-9]*):(?P<size>[1-9][0-9]*)"
                    r"|(?P<pool>maxpool):(?P<stride>[1-9][0-9]*)|(?P<other>meanpool|fc)")  # fmt: skip


@dataclass(frozen=True)
class Layer:
    kind: str  # convf, convv, maxpool, meanpool or fc
    maps: int = 0  # output maps of a convolution
    size: int = 0  # kernel side of a convolution, window of a pool


def parse_layers(spec: str) -> list[Layer]:
    """The layers of an encoder spec; a UsageError that names the bad part otherwise."""
    layers = []
    for part in spec.split("-"):
        match = _LAYER.fullmatch(part)
        if match is None:
            raise UsageError(
                f"Encoder layer {part!r} in {spec!r} is not one of convf:MAPS:SIZE,"
                " convv:MAPS:SIZE, maxpool:SIZE, meanpool or fc (e.g. the default"
                f" {CONV_SMALL!r})."
            )
        if match["kind"]:
            layers.append(Layer(match["kind"], int(match["maps"]), int(match["size"])))
        elif match["pool"]:
            layers.append(Layer("maxpool", size=int(match["stride"])))
        else:
            layers.append(Layer(match["other"]))
    kinds = [layer.kind for layer in layers]
    if kinds[-1] != "fc" or "fc" in kinds[:-1] or "meanpool" in kinds[:-2]:
        raise UsageError(
            f"Encoder spec {spec!r} must end in `fc` (the classes), its only fc, with"
            " `meanpool`, if any, right before it."
        )
    return layers


def output_shapes(
    layers: list[Layer], image_shape: tuple[int, ...], n_classes: int
) -> list[tuple[int, int, int]]:
    """(maps, height, width) after each layer for one image; a UsageError when a layer would
    shrink the maps below one pixel."""
    shape, shapes = (1, int(image_shape[0]), int(image_shape[1])), []
    for layer in layers:
        maps, height, width = shape
        if layer.kind in ("convf", "convv"):
            grow = layer.size - 1 if layer.kind == "convf" else 1 - layer.size
            shape = (layer.maps, height + grow, width + grow)
        elif layer.kind == "maxpool":
            shape = (maps, height // layer.size, width // layer.size)
        elif layer.kind == "meanpool":
            shape = (maps, 1, 1)
        else:
            shape = (n_classes, 1, 1)
        if min(shape) < 1:
            raise UsageError(
                f"The encoder's layer {layer.kind} shrinks a {tuple(image_shape)} image to"
                f" nothing; use fewer or smaller layers."
            )
        shapes.append(shape)
    return shapes


def multiply_adds(layers: list[Layer], image_shape: tuple[int, ...], n_classes: int) -> int:
    """Multiply-adds of one image's forward pass through the weighted layers."""
    total, before = 0, (1, int(image_shape[0]), int(image_shape[1]))
    for layer, after in zip(layers, output_shapes(layers, image_shape, n_classes)):
        if layer.kind in ("convf", "convv"):
            total += after[0] * after[1] * after[2] * before[0] * layer.size**2
        elif layer.kind == "fc":
            total += before[0] * before[1] * before[2] * n_classes
        before = after
    return total


class ConvGammaNet(NormalisedNet):
    def __init__(
        self, layers: list[Layer], image_shape: tuple[int, int], n_classes: int, noise_std: float
    ) -> None:
        super().__init__()
        shapes = output_shapes(layers, image_shape, n_classes)
        self.image_shape, self.noise_std = tuple(int(s) for s in image_shape), noise_std
        self.kinds = [layer.kind for layer in layers]
        ops, before = [], (1, *self.image_shape)
        for layer, after in zip(layers, shapes):
            if layer.kind in ("convf", "convv"):
                pad = layer.size - 1 if layer.kind == "convf" else 0
                ops.append(nn.Conv2d(before[0], layer.maps, layer.size, padding=pad, bias=False))
            elif layer.kind == "maxpool":
                ops.append(nn.MaxPool2d(layer.size))
            elif layer.kind == "meanpool":
                ops.append(nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()))
            else:
                flat = before[0] * before[1] * before[2]
                ops.append(nn.Sequential(nn.Flatten(), nn.Linear(flat, n_classes, bias=False)))
            before = after
        self.ops = nn.ModuleList(ops)
        widths = [shape[0] for shape in shapes]
        # a shift β where an activation follows: after convolutions and at the top, not pools
        self.beta = nn.ParameterDict(
            {
                str(i): nn.Parameter(torch.zeros(w))
                for i, (w, kind) in enumerate(zip(widths, self.kinds))
                if kind in ("convf", "convv") or i == len(widths) - 1
            }
        )
        self.gamma = nn.Parameter(torch.ones(n_classes))
        self.g_top = Combinator(n_classes)
        self._register_statistics(widths)

    def init_weights(self, generator: torch.Generator) -> None:
        """N(0, 1/fan-in) weights, as the MLP ladder's."""
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                fan_in = module.weight[0].numel()
                nn.init.normal_(module.weight, 0.0, 1.0 / fan_in**0.5, generator=generator)

    def encode(
        self, x: torch.Tensor, generator: torch.Generator | None, train: bool, n_labeled: int = 0
    ) -> tuple[torch.Tensor, list[torch.Tensor], list[tuple[torch.Tensor, torch.Tensor]]]:
        """Logits, each layer's (normalised) z, its batch stats: as `LadderNet.encode`, with
        the rows of x reshaped to images."""
        h = self._noisy(x.view(len(x), 1, *self.image_shape), generator)
        zs, stats = [h], []
        last = len(self.ops) - 1
        for i, (op, kind) in enumerate(zip(self.ops, self.kinds)):
            z, mean, std = self._layer(i, op(h), generator, train, n_labeled)
            zs.append(z)
            stats.append((mean, std))
            if i == last:
                h = self.gamma * (z + _broadcast(self.beta[str(i)], z))
            elif kind in ("convf", "convv"):
                h = F.relu(z + _broadcast(self.beta[str(i)], z))
            else:
                h = z  # pools pass on their normalised (corrupted) value
        return h, zs, stats

    def denoising_costs(
        self,
        logits_noisy: torch.Tensor,
        noisy: list[torch.Tensor],
        clean: list[torch.Tensor],
        stats: list[tuple[torch.Tensor, torch.Tensor]],
        weights: list[float],
    ) -> torch.Tensor:
        """λ_top · mean squared distance of the top combinator's estimate, from the corrupted
        top z and the normalised softmax, to the clean top z (the Γ-model's one cost)."""
        signal = _standardised(F.softmax(logits_noisy, dim=1))
        mean, std = stats[-1]
        z_hat = (self.g_top(noisy[-1], signal) - mean) / std
        cost = ((z_hat - clean[-1]) ** 2).sum(1).mean() / len(self.gamma)
        return weights[-1] * cost
