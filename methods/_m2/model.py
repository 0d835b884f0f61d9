"""M2's networks (Kingma et al. 2014): the classifier q(y | x), the encoder q(z | x, y) and the
class-conditional decoder p(x | y, z), each one Softplus hidden layer, optionally batch-normalised
before the activation (`batch_norm`; `m1-m2` runs without, as Kingma's code).

Model: p(y) = uniform over the classes; p(z) = N(0, I); p(x | y, z) = Bernoulli(sigmoid(f(y, z)))
for pixels, or for real-valued features N(f(y, z), diag σ²) with either one learned σ per
feature ("gaussian") or σ(y, z) predicted by the decoder beside its mean ("gaussian-per-image",
as Kingma's VAE_YZ_X: a feature the class explains can then be tight for one class and loose for
another). Every candidate class of a row is evaluated in one batched pass.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from benchmark.devices import seeded_generator
from methods._m2.config import M2Config
from methods._m2.cost import decoder_width


class M2(nn.Module):
    def __init__(self, n_inputs: int, n_classes: int, config: M2Config) -> None:
        super().__init__()
        self.config, self.n_classes = config, n_classes
        h, z = config.hidden, config.z_dim
        self.classifier = nn.Sequential(
            nn.Linear(n_inputs, h), self._norm(h), nn.Softplus(), nn.Linear(h, n_classes)
        )
        # First layers split into an x part and a y part, so x's part is computed once per image
        # and broadcast over every candidate class.
        self.enc_x, self.enc_y = nn.Linear(n_inputs, h), nn.Linear(n_classes, h, bias=False)
        self.enc_out = nn.Linear(h, 2 * z)
        self.dec_z, self.dec_y = nn.Linear(z, h), nn.Linear(n_classes, h, bias=False)
        self.dec_out = nn.Linear(h, decoder_width(n_inputs, config.likelihood))
        self.enc_norm, self.dec_norm = self._norm(h), self._norm(h)
        self.x_logvar = nn.Parameter(torch.zeros(n_inputs))  # the "gaussian" likelihood's σ²

    def _norm(self, h: int) -> nn.Module:
        return nn.BatchNorm1d(h) if self.config.batch_norm else nn.Identity()

    def init_weights(self, generator: torch.Generator) -> None:
        for module in self.modules():
            if isinstance(module, nn.Linear):
                if self.config.init_std > 0:
                    nn.init.normal_(module.weight, 0.0, self.config.init_std, generator=generator)
                else:
                    nn.init.xavier_uniform_(module.weight, generator=generator)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        if self.config.likelihood == "gaussian-per-image":  # start at σ = 1, as "gaussian" does
            nn.init.zeros_(self.dec_out.weight[self.dec_out.out_features // 2 :])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits of q(y | x)."""
        return self.classifier(x)

    @torch.no_grad()
    def decode(self, z: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        """p(x | y, z)'s mean (Bernoulli) or location (Gaussian), one row per (z, class)."""
        a = self.dec_z(z) + self.dec_y.weight.T[classes]
        out = self._split(self.dec_out(F.softplus(self.dec_norm(a))))[0]
        return torch.sigmoid(out) if self.config.likelihood == "bernoulli" else out

    def _split(self, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The decoder's output as (location or logits, log σ²): σ² is the shared per-feature
        parameter unless the decoder predicts it per image."""
        if self.config.likelihood == "gaussian-per-image":
            mean, logvar = out.chunk(2, dim=-1)
            return mean, logvar
        return out, self.x_logvar

    def _class_rows(self, layer: nn.Linear, classes: torch.Tensor | None) -> torch.Tensor:
        """one-hot(y) @ W.T without the one-hot: [B, K, h], or [1, C, h] for every class."""
        return layer.weight.T[None] if classes is None else layer.weight.T[classes]

    @staticmethod
    def _normed(norm: nn.Module, a: torch.Tensor) -> torch.Tensor:
        """Batch norm of [B, K, h] pre-activations over all B·K rows (every candidate class)."""
        return norm(a.reshape(-1, a.shape[-1])).reshape(a.shape)

    def neg_elbo(
        self, x: torch.Tensor, classes: torch.Tensor | None, generator: torch.Generator
    ) -> torch.Tensor:
        """L(x, y) for each row of x [B, D] and each of its candidate classes [B, K] -> [B, K].

        classes=None means every class for every row, broadcast rather than gathered.
        """
        a = self.enc_x(x)[:, None, :] + self._class_rows(self.enc_y, classes)
        h = F.softplus(self._normed(self.enc_norm, a))
        mu, logvar = self.enc_out(h).chunk(2, dim=-1)
        eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
        z = mu + eps * torch.exp(0.5 * logvar)
        a = self.dec_z(z) + self._class_rows(self.dec_y, classes)
        out, x_logvar = self._split(self.dec_out(F.softplus(self._normed(self.dec_norm, a))))
        xb = x[:, None, :]
        if self.config.likelihood == "bernoulli":
            nll = (F.softplus(out) - out * xb).sum(-1)  # BCE with logits, broadcast over K
        else:
            nll = 0.5 * (((xb - out) ** 2) * torch.exp(-x_logvar) + x_logvar).sum(-1)
            nll = nll + 0.5 * x.shape[1] * math.log(2 * math.pi)
        kl = 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(-1)
        return nll + kl + math.log(self.n_classes)  # -log p(y), uniform prior


@torch.no_grad()
def decoder_accuracy(model: M2, x: torch.Tensor, y: torch.Tensor, seed: int) -> float:
    """How often argmin_y L(x, y) is the true class: whether p(x | y, z) uses y at all. If it
    does not, the unlabeled term has nothing to teach the classifier, whatever its weight.
    One draw of z from its own generator, so the training run's noise is left untouched."""
    if len(y) == 0:
        return float("nan")
    generator = seeded_generator(seed, x.device)
    return float((model.neg_elbo(x, None, generator).argmin(dim=1) == y).float().mean())
