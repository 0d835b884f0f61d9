"""The Ladder network of Rasmus et al. 2015 (the MLP version, after Pezeshki et al. 2016).

An encoder is run twice on each minibatch: clean, and corrupted by Gaussian noise added to the
input and to every layer's batch-normalised pre-activation. A decoder runs top-down from the
corrupted output; at each layer a combinator g(z̃, u) denoises the corrupted z̃ using the
top-down signal u, and the cost is the distance of that estimate (normalised with the clean
batch's statistics) to the clean z of the same layer, weighted per layer by λ_l. The labeled
images add the cross-entropy of the corrupted output. With only the top layer's λ non-zero it
is the Γ-model; with every λ zero, the same network trained on labels with noise alone.

Hidden layers are ReLU(z + β); the top is softmax(γ · (z + β)). Batch-norm statistics of the
clean path are kept as running averages for prediction, which uses the clean path alone.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

EPS = 1e-5
MOMENTUM = 0.1  # of the running batch-norm statistics used at prediction


def _axes(z: torch.Tensor) -> list[int]:
    """The axes batch statistics are taken over: the rows, and a map's height and width."""
    return [0, *range(2, z.dim())]


def _standardised(signal: torch.Tensor) -> torch.Tensor:
    """The batch-normalised top-down signal each decoder layer receives (no learned scale)."""
    return (signal - signal.mean(0)) / torch.sqrt(signal.var(0, unbiased=False) + EPS)


def _broadcast(stat: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """A per-unit (per-channel) statistic shaped to broadcast against z."""
    return stat.view(1, -1, *([1] * (z.dim() - 2)))


class Combinator(nn.Module):
    """The vanilla combinator: ẑ = (z̃ - μ(u)) · v(u) + μ(u), where μ and v are each a sigmoid
    of u plus a linear term, with ten parameters per unit (initialised as in the paper)."""

    def __init__(self, size: int) -> None:
        super().__init__()
        init = torch.tensor([0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0])
        self.a = nn.Parameter(init[:, None].repeat(1, size))

    def forward(self, z: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        a = self.a
        mu = a[0] * torch.sigmoid(a[1] * u + a[2]) + a[3] * u + a[4]
        v = a[5] * torch.sigmoid(a[6] * u + a[7]) + a[8] * u + a[9]
        return (z - mu) * v + mu


class NormalisedNet(nn.Module):
    """What the MLP and the convolutional ladder share: each layer's pre-activation
    batch-normalised with its own running statistics, then corrupted by Gaussian noise on the
    corrupted path. Subclasses define `init_weights`, `encode` and `denoising_costs`;
    prediction is the clean path of `encode`."""

    noise_std: float

    def _register_statistics(self, widths: list[int]) -> None:
        for i, width in enumerate(widths):
            self.register_buffer(f"mean{i}", torch.zeros(width))
            self.register_buffer(f"var{i}", torch.ones(width))

    def _noisy(self, t: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """t + noise_std · ε on the corrupted path (with a generator); t itself otherwise."""
        if generator is None:
            return t
        eps = torch.randn(t.shape, generator=generator, device=t.device, dtype=t.dtype)
        return t + self.noise_std * eps

    def _layer(
        self,
        i: int,
        pre: torch.Tensor,
        generator: torch.Generator | None,
        train: bool,
        n_labeled: int,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Layer i's normalised (and, with a generator, corrupted) z and its batch mean and
        std; the clean training path updates the running statistics."""
        z, mean, std = self._normalise(i, pre, train, n_labeled)
        if train and generator is None:
            self._update_running(i, pre, n_labeled)
        return self._noisy(z, generator), mean, std

    def _normalise(
        self, i: int, z: torch.Tensor, train: bool, n_labeled: int
    ) -> tuple[torch.Tensor, ...]:
        """z batch-normalised per unit (per channel for maps), the labeled rows (the first
        n_labeled) and the unlabeled ones each with their own statistics, as the reference
        implementation does; the unlabeled rows' mean and std (running ones when not
        training)."""
        if not train:
            mean, var = (
                _broadcast(getattr(self, f"mean{i}"), z),
                _broadcast(getattr(self, f"var{i}"), z),
            )
            return (z - mean) / torch.sqrt(var + EPS), mean, torch.sqrt(var + EPS)
        parts, stats = [], None
        axes = _axes(z)
        for rows in (z[:n_labeled], z[n_labeled:]):
            if len(rows) == 0:
                continue
            mean = rows.mean(axes, keepdim=True)
            var = rows.var(axes, unbiased=False, keepdim=True)
            parts.append((rows - mean) / torch.sqrt(var + EPS))
            stats = (mean, torch.sqrt(var + EPS))
        return (torch.cat(parts), *stats)

    @torch.no_grad()
    def _update_running(self, i: int, pre: torch.Tensor, n_labeled: int) -> None:
        """The running statistics of layer i, from the clean path's labeled rows (all rows
        when none is labeled)."""
        rows = pre[:n_labeled] if n_labeled else pre
        axes = _axes(rows)
        getattr(self, f"mean{i}").lerp_(rows.mean(axes), MOMENTUM)
        getattr(self, f"var{i}").lerp_(rows.var(axes, unbiased=False), MOMENTUM)

    def init_weights(self, generator: torch.Generator) -> None:
        raise NotImplementedError

    def encode(
        self, x: torch.Tensor, generator: torch.Generator | None, train: bool, n_labeled: int = 0
    ) -> tuple[torch.Tensor, list[torch.Tensor], list[tuple[torch.Tensor, torch.Tensor]]]:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits of the clean path with the running statistics (prediction)."""
        return self.encode(x, None, train=False)[0]


class LadderNet(NormalisedNet):
    def __init__(self, sizes: list[int], noise_std: float) -> None:
        super().__init__()
        self.sizes, self.noise_std = sizes, noise_std
        layers = len(sizes) - 1
        self.W = nn.ModuleList(nn.Linear(sizes[i], sizes[i + 1], bias=False) for i in range(layers))
        self.V = nn.ModuleList(nn.Linear(sizes[i + 1], sizes[i], bias=False) for i in range(layers))
        self.beta = nn.ParameterList(nn.Parameter(torch.zeros(s)) for s in sizes[1:])
        self.gamma = nn.Parameter(torch.ones(sizes[-1]))
        self.g = nn.ModuleList(Combinator(s) for s in sizes)
        self._register_statistics(sizes[1:])

    def init_weights(self, generator: torch.Generator) -> None:
        for linear in [*self.W, *self.V]:
            n_in = linear.weight.shape[1]
            nn.init.normal_(linear.weight, 0.0, 1.0 / n_in**0.5, generator=generator)

    def encode(
        self, x: torch.Tensor, generator: torch.Generator | None, train: bool, n_labeled: int = 0
    ) -> tuple[torch.Tensor, list[torch.Tensor], list[tuple[torch.Tensor, torch.Tensor]]]:
        """Logits of the top layer, each layer's (normalised) z, and each layer's batch stats.
        With a generator the path is corrupted by noise; the clean training path updates the
        running statistics."""
        h = self._noisy(x, generator)
        zs, stats = [h], []
        for i, linear in enumerate(self.W):
            z, mean, std = self._layer(i, linear(h), generator, train, n_labeled)
            zs.append(z)
            stats.append((mean, std))
            top = i == len(self.W) - 1
            h = self.gamma * (z + self.beta[i]) if top else F.relu(z + self.beta[i])
        return h, zs, stats

    def denoising_costs(
        self,
        logits_noisy: torch.Tensor,
        noisy: list[torch.Tensor],
        clean: list[torch.Tensor],
        stats: list[tuple[torch.Tensor, torch.Tensor]],
        weights: list[float],
    ) -> torch.Tensor:
        """Σ_l λ_l · mean squared distance of the decoder's estimate to the clean z_l, from
        the top down; layers whose λ is 0 are still decoded through, as the top-down path."""
        total = logits_noisy.new_zeros(())
        u = None
        for layer in range(len(self.sizes) - 1, -1, -1):
            top = layer == len(self.sizes) - 1
            signal = _standardised(F.softmax(logits_noisy, dim=1) if top else self.V[layer](u))
            z_hat = self.g[layer](noisy[layer], signal)
            if weights[layer] > 0:
                if layer == 0:
                    normalised = z_hat
                else:
                    mean, std = stats[layer - 1]
                    normalised = (z_hat - mean) / std
                cost = ((normalised - clean[layer]) ** 2).sum(1).mean()
                total = total + weights[layer] * cost / self.sizes[layer]
            u = z_hat
        return total
