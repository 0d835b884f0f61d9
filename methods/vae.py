"""The shared VAE core (M1 of Kingma et al. 2014), trained once per (data, config, seed).

Model: p(z) = N(0, I); p(x | z) = Bernoulli(sigmoid(decoder(z))); q(z | x) = N(mu(x), diag
sigma²(x)). With `arch="mlp"` encoder and decoder are MLPs with Softplus hidden layers; with
`arch="conv"` (the fine-tuning paper's design) the encoder is two stride-2 convolutions and a
dense layer, the decoder their mirror image with transposed convolutions, for images of the
config's `image_shape` (any height and width). The loss is the negative
ELBO per image: BCE reconstruction + beta · KL(q(z | x) ‖ N(prior_mean, I)); prior_mean is 0
except for methods (VAE⇄GMM) that pull each image towards its cluster.

Training keeps the whole training set on the device and indexes minibatches from a seeded
permutation: no DataLoader, no global RNG, bit-identical weights for a seed on the CPU.
"""

from __future__ import annotations

import copy
import time
import warnings
import weakref
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from benchmark.devices import seeded_generator
from benchmark.errors import UsageError
from methods.training import Checkpoint, Loop, run_loop

# Bumped when what train_vae computes for a config and seed changes: cached VAEs are then
# retrained and the cells of every method on them run again (tests/test_fingerprints.py).
CORE_VERSION = 1


ARCHITECTURES = ("mlp", "conv")
CONV_CHANNELS = (32, 64)


@dataclass(frozen=True)
class VAEConfig:
    latent_dim: int = 10
    hidden: tuple[int, ...] = (512, 256)
    epochs: int = 20
    batch_size: int = 256
    lr: float = 1e-3
    beta: float = 1.0
    arch: str = "mlp"
    image_shape: tuple[int, ...] = ()  # (height, width), for arch="conv": taken from the data

    def __post_init__(self) -> None:
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))
        object.__setattr__(self, "image_shape", tuple(int(s) for s in self.image_shape))
        checks = {
            "arch": self.arch in ARCHITECTURES,
            "latent_dim": self.latent_dim >= 1,
            "hidden": len(self.hidden) >= 1 and min(self.hidden) >= 1,
            "epochs": self.epochs >= 1,
            "batch_size": self.batch_size >= 1,
            "lr": self.lr > 0,
            "beta": self.beta >= 0,
        }
        for name, ok in checks.items():
            if not ok:
                raise UsageError(f"VAE {name}={getattr(self, name)!r} is out of range.")

    def as_params(self) -> dict[str, object]:
        """Flat, loggable form (prefixed so it never clashes with a method's own params)."""
        params = {f"vae_{k}": v for k, v in self.identity().items()}
        params["vae_hidden"] = ",".join(str(h) for h in self.hidden)
        return params

    def identity(self) -> dict[str, object]:
        """The config as the cache keys it: the fields added with the convolutional core are
        left out at the MLP's values, so an MLP VAE keeps the key it had before them."""
        fields = asdict(self)
        if self.arch == "mlp":
            fields.pop("arch")
            fields.pop("image_shape")
        return fields


def _image_shape(n_inputs: int, config: VAEConfig) -> tuple[int, int]:
    if len(config.image_shape) != 2 or config.image_shape[0] * config.image_shape[1] != n_inputs:
        raise UsageError(
            f"A convolutional VAE needs image_shape=(height, width) with height x width ="
            f" {n_inputs} inputs; got {config.image_shape!r}."
        )
    return config.image_shape[0], config.image_shape[1]


def _mlp(sizes: Sequence[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(n_in, n_out), nn.Softplus()]
    return nn.Sequential(*layers)


def _halved(size: int) -> int:
    """An image side after a 4x4 convolution of stride 2 and padding 1."""
    return (size + 2 - 4) // 2 + 1


def conv_encoder_macs(shape: tuple[int, int], width: int) -> int:
    """Multiply-adds per image of the convolutional encoder: two 4x4 convolutions, each at
    every position of its output, then the dense layer."""
    (c1, c2), side = CONV_CHANNELS, (_halved(shape[0]), _halved(shape[1]))
    first = side[0] * side[1] * c1 * 16
    side = (_halved(side[0]), _halved(side[1]))
    return first + side[0] * side[1] * c2 * 16 * c1 + c2 * side[0] * side[1] * width


class _ConvEncoder(nn.Sequential):
    """Rows of pixels -> two stride-2 convolutions -> a dense layer of `width` units."""

    def __init__(self, shape: tuple[int, int], width: int) -> None:
        (h, w), (c1, c2) = shape, CONV_CHANNELS
        side = (_halved(_halved(h)), _halved(_halved(w)))
        self.maps_shape = (c2, *side)
        super().__init__(
            nn.Unflatten(1, (1, h, w)),
            nn.Conv2d(1, c1, 4, 2, 1),
            nn.ReLU(),
            nn.Conv2d(c1, c2, 4, 2, 1),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(c2 * side[0] * side[1], width),
            nn.ReLU(),
        )

    def feature_maps(self) -> nn.Sequential:
        """The convolutional part alone (a copy), for a convolutional head on top."""
        return copy.deepcopy(nn.Sequential(*list(self)[:5]))


def conv_feature_maps(shape: tuple[int, int]) -> tuple[nn.Sequential, tuple[int, int, int]]:
    """A fresh copy of the convolutional VAE's two convolutions for images of `shape`, and
    the (channels, height, width) of the maps they make: the supervised-only network."""
    encoder = _ConvEncoder(shape, 1)
    return encoder.feature_maps(), encoder.maps_shape


def _conv_decoder(latent: int, width: int, shape: tuple[int, int]) -> nn.Sequential:
    """The encoder's mirror: dense layers, then transposed convolutions back to the image."""
    (h, w), (c1, c2) = shape, CONV_CHANNELS
    mid = (_halved(h), _halved(w))
    small = (_halved(mid[0]), _halved(mid[1]))

    def up(n_in: int, n_out: int, size: tuple[int, int], target: tuple[int, int]) -> nn.Module:
        pad = (target[0] - 2 * size[0], target[1] - 2 * size[1])
        return nn.ConvTranspose2d(n_in, n_out, 4, 2, 1, output_padding=pad)

    return nn.Sequential(
        nn.Linear(latent, width),
        nn.ReLU(),
        nn.Linear(width, c2 * small[0] * small[1]),
        nn.ReLU(),
        nn.Unflatten(1, (c2, *small)),
        up(c2, c1, small, mid),
        nn.ReLU(),
        up(c1, 1, mid, (h, w)),
        nn.Flatten(),
    )


class VAE(nn.Module):
    def __init__(self, n_inputs: int, config: VAEConfig) -> None:
        super().__init__()
        self.config = config
        self.n_inputs = n_inputs
        hidden = list(config.hidden)
        # registered in this order (encoder, mu, logvar, decoder): init_weights draws from
        # the seeded generator in it
        if config.arch == "conv":
            shape = _image_shape(n_inputs, config)
            self.encoder: nn.Module = _ConvEncoder(shape, hidden[-1])
        else:
            self.encoder = _mlp([n_inputs, *hidden])
        self.mu = nn.Linear(hidden[-1], config.latent_dim)
        self.logvar = nn.Linear(hidden[-1], config.latent_dim)
        if config.arch == "conv":
            self.decoder = _conv_decoder(config.latent_dim, hidden[-1], shape)
        else:
            self.decoder = nn.Sequential(
                _mlp([config.latent_dim, *reversed(hidden)]), nn.Linear(hidden[0], n_inputs)
            )

    def init_weights(self, generator: torch.Generator) -> None:
        for module in self.modules():
            if isinstance(module, nn.Linear | nn.Conv2d | nn.ConvTranspose2d):
                nn.init.xavier_uniform_(module.weight, generator=generator)
                nn.init.zeros_(module.bias)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.encoder(x)
        return self.mu(h), self.logvar(h)

    def decode_logits(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)

    @torch.no_grad()
    def latent_means(self, x: np.ndarray | torch.Tensor, batch_size: int = 4096) -> np.ndarray:
        """The features later methods use: mu(x) for each row, as float32 numpy.

        For a read-only array (the runner's shared train and test images) the result is
        remembered, so the methods and budgets of a grid sharing this VAE encode it once.
        """
        frozen = isinstance(x, np.ndarray) and not x.flags.writeable
        memo = _FEATURES.setdefault(self, {})
        if frozen and id(x) in memo and memo[id(x)][0] is x:
            return memo[id(x)][1]
        self.eval()
        device = next(self.parameters()).device
        with warnings.catch_warnings():  # the runner shares read-only arrays; nothing writes
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            rows = torch.as_tensor(x)
        out = [
            self.encode(rows[i : i + batch_size].to(device))[0].cpu()
            for i in range(0, len(rows), batch_size)
        ]
        z = torch.cat(out).numpy()
        if frozen:
            z.setflags(write=False)
            memo[id(x)] = (x, z)  # holding x keeps its id from being reused
        return z


# Encoded features per model, for read-only inputs; a copied or retrained model starts empty.
_FEATURES: weakref.WeakKeyDictionary[VAE, dict[int, tuple[np.ndarray, np.ndarray]]] = (
    weakref.WeakKeyDictionary()
)


def negative_elbo(
    model: VAE,
    x: torch.Tensor,
    generator: torch.Generator,
    prior_mean: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean over the batch of BCE(x, decoder(z)) + beta · KL(q(z|x) ‖ N(prior_mean, I))."""
    mu, logvar = model.encode(x)
    eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
    z = mu + eps * torch.exp(0.5 * logvar)
    recon = F.binary_cross_entropy_with_logits(model.decode_logits(z), x, reduction="sum")
    diff = mu if prior_mean is None else mu - prior_mean
    kl = 0.5 * torch.sum(diff.pow(2) + logvar.exp() - 1.0 - logvar)
    return (recon + model.config.beta * kl) / len(x)


@dataclass
class TrainedVAE:
    model: VAE
    history: list[float] = field(default_factory=list)  # mean training loss per epoch
    train_seconds: float = 0.0


# Called after each epoch with (epoch index, mean training loss, model); may raise to stop.
EpochCallback = Callable[[int, float, "VAE"], None]


def train_vae(
    x: torch.Tensor,
    config: VAEConfig,
    seed: int,
    *,
    prior_means: torch.Tensor | None = None,
    model: VAE | None = None,
    on_epoch: EpochCallback | None = None,
    progress: bool = True,
    desc: str = "VAE",
    checkpoint: Checkpoint | None = None,
) -> TrainedVAE:
    """Train (or continue training `model`) on the rows of `x`, which already lives on the device.

    prior_means, if given, holds one prior mean per row of x (used by VAE⇄GMM mutual learning).
    """
    device = x.device
    generator = seeded_generator(seed, device)
    if model is not None:
        _FEATURES.pop(model, None)  # its remembered features are about to go stale
    if model is None:
        model = VAE(x.shape[1], config)
        model.init_weights(torch.Generator().manual_seed(seed))  # CPU init: same on any device
        model.to(device)
    # One fused kernel per step instead of ~6 ops per tensor: a visible share of a CPU epoch.
    fused = device.type in ("cpu", "cuda")
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, fused=fused or None)
    n = len(x)

    def run_epoch(epoch: int) -> float:
        order = torch.randperm(n, generator=generator, device=device)
        total = torch.zeros((), device=device)
        for begin in range(0, n, config.batch_size):
            idx = order[begin : begin + config.batch_size]
            prior = None if prior_means is None else prior_means[idx]
            loss = negative_elbo(model, x[idx], generator, prior)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.detach() * len(idx)
        return float(total) / n  # one device sync per epoch, not per batch

    start = time.perf_counter()
    history = run_loop(
        Loop(
            name=desc,
            model=model,
            optimizer=optimizer,
            generator=generator,
            epochs=config.epochs,
            run_epoch=run_epoch,
            on_epoch=None if on_epoch is None else lambda e, loss: on_epoch(e, loss, model),
            checkpoint=checkpoint,
            progress=progress,
            hint=f"lower the learning rate (lr={config.lr}) or check the input scaling",
        )
    )
    return TrainedVAE(model, history, time.perf_counter() - start)
