"""The semi-supervised adversarial autoencoder (Makhzani et al. 2015) and its reference.

The encoder splits each image into a class y (softmax) and a style z (Gaussian); the decoder
rebuilds the image from both. Two discriminators push the aggregate of the encoder's outputs
towards their priors: y towards one-hot categorical vectors, z towards N(0, I). Each step has
the paper's three phases: reconstruction (encoder and decoder, on unlabeled images),
regularisation (the discriminators on prior samples against encoded images, then the encoder
against them) and a supervised phase (the encoder's y on labeled images). It predicts
argmax y. `aae-supervised` trains the same encoder's y head on the labels alone.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from benchmark.devices import seeded_generator
from methods._holdout import ClassifierCurves, predict_classes
from methods.base import Method, TrainData
from methods.params import AT_LEAST_ONE, NON_NEGATIVE, POSITIVE
from methods.training import Loop, adam, rows_outside, run_loop


def _mlp(n_in: int, hidden: int, n_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(n_in, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
        nn.Linear(hidden, n_out),
    )  # fmt: skip


class AAENet(nn.Module):
    def __init__(self, n_inputs: int, n_classes: int, hidden: int, z_dim: int) -> None:
        super().__init__()
        self.n_classes, self.z_dim = n_classes, z_dim
        self.encoder = _mlp(n_inputs, hidden, n_classes + z_dim)
        self.decoder = _mlp(n_classes + z_dim, hidden, n_inputs)
        self.d_cat = _mlp(n_classes, hidden, 1)
        self.d_style = _mlp(z_dim, hidden, 1)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Class logits and style of each row."""
        out = self.encoder(x)
        return out[:, : self.n_classes], out[:, self.n_classes :]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encode(x)[0]


class AAE(Method):
    name = "aae"
    version = 1
    reference = "aae-supervised"
    description = "Semi-supervised adversarial autoencoder: class and style heads, two critics"
    defaults = {
        "hidden": 1000,
        "z_dim": 10,
        "epochs": 100,
        "batch_size": 100,
        "lr": 1e-4,
        "adversarial_lr": 1e-4,
        "critic_noise": 0.3,
        "supervised": False,
    }
    new_params = {"critic_noise": 0.0}
    rules = {
        "hidden": AT_LEAST_ONE,
        "z_dim": AT_LEAST_ONE,
        "epochs": AT_LEAST_ONE,
        "batch_size": AT_LEAST_ONE,
        "lr": POSITIVE,
        "adversarial_lr": POSITIVE,
        "critic_noise": NON_NEGATIVE,
    }

    @classmethod
    def search_space(cls, trial: Any) -> dict[str, Any]:
        space = {
            "lr": trial.suggest_float("lr", 3e-5, 1e-3, log=True),
            "z_dim": trial.suggest_categorical("z_dim", [5, 10, 20]),
            "epochs": trial.suggest_int("epochs", 20, 200, log=True),
        }
        if not cls.defaults["supervised"]:  # the labels-only reference trains no critic
            space["critic_noise"] = trial.suggest_categorical("critic_noise", [0.0, 0.3])
        return space

    @classmethod
    def estimated_seconds(
        cls, n_labels: int, n_train: int, params: dict[str, Any], n_classes: int = 10
    ) -> float:
        h = int(params["hidden"])
        weights = 2 * (784 * h + h * h) + 2 * h * h  # encoder, decoder, two critics
        # the label step; then reconstruction, critics and encoder cost about six more passes
        passes = 1 if params["supervised"] else 7
        steps = n_train / int(params["batch_size"])
        # ~2.35e-11 s per weight, row and pass: fitted to the first measured epochs on the
        # reference CPU, one thread beside a busy core (~54 s an epoch, ~8 s supervised only)
        return 5.0 + int(params["epochs"]) * steps * passes * weights * 100 * 2.35e-11

    def fit(self, data: TrainData) -> None:
        p, device = self.params, data.device
        self.net_ = AAENet(data.x.shape[1], data.n_classes, int(p["hidden"]), int(p["z_dim"]))
        _init(self.net_, data.seed)
        self.net_.to(device)
        net = self.net_

        def optimizer(params, lr: float) -> torch.optim.Adam:
            return adam(params, device, lr=lr, betas=(0.5, 0.999))

        opt = {
            "ae": optimizer([*net.encoder.parameters(), *net.decoder.parameters()], float(p["lr"])),
            "critics": optimizer(
                [*net.d_cat.parameters(), *net.d_style.parameters()], float(p["adversarial_lr"])
            ),
            "encoder": optimizer(net.encoder.parameters(), float(p["adversarial_lr"])),
            "label": optimizer(net.encoder.parameters(), float(p["lr"])),
        }
        generator = seeded_generator(data.seed, device)
        x = data.x_tensor()
        labeled = torch.tensor(data.labeled, dtype=torch.long, device=device)
        y = torch.tensor(data.y_labeled, dtype=torch.long, device=device)
        unlabeled = rows_outside(len(x), labeled)
        batch = int(p["batch_size"])
        n_steps = max(1, -(-len(unlabeled) // batch))

        def run_epoch(epoch: int) -> float:
            net.train()
            order = unlabeled[torch.randperm(len(unlabeled), generator=generator, device=device)]
            total = torch.zeros((), device=device)
            for step in range(n_steps):
                pick = torch.randint(len(labeled), (batch,), generator=generator, device=device)
                x_u = x[order[step * batch : (step + 1) * batch]]
                if not p["supervised"]:
                    total += self._unsupervised_step(x_u, opt, generator)
                loss = F.cross_entropy(net(x[labeled[pick]]), y[pick])
                opt["label"].zero_grad(set_to_none=True)
                loss.backward()
                opt["label"].step()
                total += loss.detach()
            return float(total) / n_steps

        curves = ClassifierCurves(data.log_metric, x, labeled, y, unlabeled)

        def on_epoch(epoch: int, loss: float) -> None:
            data.log_metric("aae_loss", loss, epoch)
            curves.log(net, epoch)

        run_loop(
            Loop(
                name=self.name,
                model=net,
                optimizer=opt["ae"],
                generator=generator,
                epochs=int(p["epochs"]),
                run_epoch=run_epoch,
                on_epoch=on_epoch,
                checkpoint=data.checkpoint("aae.pt"),
                progress=data.progress,
                on_resume=curves.resume,
                hint=f"lower the learning rates (lr={p['lr']}, adversarial_lr={p['adversarial_lr']})",
                get_extra=lambda: {k: o.state_dict() for k, o in opt.items() if k != "ae"},
                set_extra=lambda state: [opt[k].load_state_dict(v) for k, v in state.items()],
            )
        )
        net.eval()

    def _unsupervised_step(self, x: torch.Tensor, opt: dict, generator: torch.Generator):
        """Reconstruction, then the critics, then the encoder against them; the summed losses."""
        net = self.net_
        logits, style = net.encode(x)
        recon = net.decoder(torch.cat([F.softmax(logits, 1), style], 1))
        loss_ae = F.binary_cross_entropy_with_logits(recon, x, reduction="sum") / len(x)
        opt["ae"].zero_grad(set_to_none=True)
        loss_ae.backward()
        opt["ae"].step()

        # rows of an identity: one-hot prior draws without one_hot's host-side range check
        classes = torch.randint(net.n_classes, (len(x),), generator=generator, device=x.device)
        prior_y = torch.eye(net.n_classes, device=x.device)[classes]
        prior_z = torch.randn(len(x), net.z_dim, generator=generator, device=x.device)
        with torch.no_grad():
            logits, style = net.encode(x)
            fake_y = F.softmax(logits, 1)
        real = torch.ones(len(x), 1, device=x.device)
        fake = torch.zeros(len(x), 1, device=x.device)
        bce = F.binary_cross_entropy_with_logits
        d_cat, d_style = self._critic(net.d_cat, generator), self._critic(net.d_style, generator)
        loss_d = (
            bce(d_cat(prior_y), real) + bce(d_cat(fake_y), fake)
            + bce(d_style(prior_z), real) + bce(d_style(style), fake)
        )  # fmt: skip
        opt["critics"].zero_grad(set_to_none=True)
        loss_d.backward()
        opt["critics"].step()

        logits, style = net.encode(x)
        loss_g = bce(d_cat(F.softmax(logits, 1)), real) + bce(d_style(style), real)
        opt["encoder"].zero_grad(set_to_none=True)
        loss_g.backward()
        opt["encoder"].step()
        return (loss_ae + loss_d + loss_g).detach()

    def _critic(self, critic: nn.Module, generator: torch.Generator):
        """The critic, reading its input through Gaussian noise of std `critic_noise` (as in
        a public port of the paper's semi-supervised AAE), which blurs the gap between a
        confident softmax and an exact one-hot; at 0 it draws nothing."""
        std = float(self.params["critic_noise"])
        if std == 0:
            return critic

        def noisy(v: torch.Tensor) -> torch.Tensor:
            noise = torch.randn(v.shape, generator=generator, device=v.device, dtype=v.dtype)
            return critic(v + std * noise)

        return noisy

    def predict(self, x: np.ndarray) -> np.ndarray:
        return predict_classes(self.net_, x)


class AAESupervised(AAE):
    name = "aae-supervised"
    version = 1
    reference = None
    description = "The adversarial autoencoder's encoder, its class head trained on labels alone"
    # no critic is trained without unlabeled images; 0 keeps the archived cells' keys
    defaults = {**AAE.defaults, "supervised": True, "critic_noise": 0.0}


def _init(net: nn.Module, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    for layer in net.modules():
        if isinstance(layer, nn.Linear):
            nn.init.normal_(layer.weight, 0.0, 0.01, generator=generator)
            nn.init.zeros_(layer.bias)
