"""The shared VAE core (M1 of Kingma et al. 2014), trained once per (data, config, seed).

Model: p(z) = N(0, I); p(x | z) = Bernoulli(sigmoid(decoder(z))); q(z | x) = N(mu(x), diag
sigma²(x)). Encoder and decoder are MLPs with Softplus hidden layers. The loss is the negative
ELBO per image: BCE reconstruction + beta · KL(q(z | x) ‖ N(prior_mean, I)); prior_mean is 0
except for methods (VAE⇄GMM) that pull each image towards its cluster.

Training keeps the whole training set on the device and indexes minibatches from a seeded
permutation: no DataLoader, no global RNG, bit-identical weights for a seed on the CPU.
"""

from __future__ import annotations

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


@dataclass(frozen=True)
class VAEConfig:
    latent_dim: int = 10
    hidden: tuple[int, ...] = (512, 256)
    epochs: int = 20
    batch_size: int = 256
    lr: float = 1e-3
    beta: float = 1.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))
        checks = {
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
        params = {f"vae_{k}": v for k, v in asdict(self).items()}
        params["vae_hidden"] = ",".join(str(h) for h in self.hidden)
        return params


def _mlp(sizes: Sequence[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(n_in, n_out), nn.Softplus()]
    return nn.Sequential(*layers)


class VAE(nn.Module):
    def __init__(self, n_inputs: int, config: VAEConfig) -> None:
        super().__init__()
        self.config = config
        self.n_inputs = n_inputs
        hidden = list(config.hidden)
        self.encoder = _mlp([n_inputs, *hidden])
        self.mu = nn.Linear(hidden[-1], config.latent_dim)
        self.logvar = nn.Linear(hidden[-1], config.latent_dim)
        self.decoder = nn.Sequential(
            _mlp([config.latent_dim, *reversed(hidden)]), nn.Linear(hidden[0], n_inputs)
        )

    def init_weights(self, generator: torch.Generator) -> None:
        for module in self.modules():
            if isinstance(module, nn.Linear):
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
