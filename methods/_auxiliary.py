"""Auxiliary deep generative models (Maaløe et al. 2016), shared by `adgm` and `sdgm`.

Both extend M2 with an auxiliary latent a and infer with the same networks: q(a | x),
q(y | a, x) (the classifier) and q(z | a, x, y). They differ in the generative model:
ADGM p(y) p(z) p(x | y, z) p(a | x, y, z), where a only enriches the posterior; SDGM
p(y) p(z) p(a | y, z) p(x | a, y, z), a second stochastic layer with a skip connection.
A labeled image costs -ELBO(x, y) + alpha · CE(q(y | a, x), y); an unlabeled one
Σ_y q(y | a, x) (-ELBO(x, y)) - H(q(y | a, x)), with a drawn once from q(a | x) and every class
evaluated in one batched pass. As in the authors' code: every network has the same hidden
layers (ReLU, batch norm), inputs are binarised afresh each step, alpha = beta · N / N_labeled,
a N(0, 1) prior on the weights, gradients clipped (norm 5, then each entry to ±1), and the step
size multiplied by 0.75 at fixed intervals. The prediction averages q(y | a, x) over draws of a.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from benchmark.devices import seeded_generator
from methods._holdout import ClassifierCurves, predict_classes
from methods._m2.cost import SECONDS_PER_ELEMENT, SECONDS_PER_MAC
from methods.base import Method, TrainData
from methods.params import AT_LEAST_ONE, NON_NEGATIVE, POSITIVE, Rule
from methods.training import (
    Loop,
    adam,
    labeled_stream,
    rows_outside,
    run_loop,
    term_gradient_norms,
)

LOG_2PI = math.log(2 * math.pi)
PREDICT_SAMPLES = 10  # draws of a averaged at prediction, from a fixed generator
GRADIENT_PROBES = 5  # steps an epoch whose per-term gradient norms on q(y | a, x) are logged


def _hidden(text: Any) -> list[int]:
    return [int(h) for h in str(text).split(",")]


class Tower(nn.Module):
    """An MLP over several inputs, each mapped by its own first-layer weights and summed, so
    that an input shared by every candidate class (x, a) is mapped once and broadcast."""

    def __init__(
        self, inputs: dict[str, int], hidden: list[int], n_out: int, batch_norm: bool
    ) -> None:
        super().__init__()
        first = hidden[0]
        self.first = nn.ModuleDict(
            {name: nn.Linear(n, first, bias=i == 0) for i, (name, n) in enumerate(inputs.items())}
        )
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(hidden[:-1], hidden[1:]))
        self.norms = nn.ModuleList(
            nn.BatchNorm1d(h) if batch_norm else nn.Identity() for h in hidden
        )
        self.out = nn.Linear(hidden[-1], n_out)

    def forward(self, **parts: torch.Tensor) -> torch.Tensor:
        """Inputs of shapes that broadcast together ([B, 1, n], [1, K, n], [B, K, n])."""
        h = sum(self.first[name](value) for name, value in parts.items())
        lead = h.shape[:-1]
        h = F.relu(self.norms[0](h.reshape(-1, h.shape[-1])))
        for layer, norm in zip(self.layers, self.norms[1:]):
            h = F.relu(norm(layer(h)))
        return self.out(h).reshape(*lead, -1)


def _gaussian_log_density(x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    return -0.5 * (LOG_2PI + logvar + (x - mu) ** 2 * torch.exp(-logvar)).sum(-1)


class AuxiliaryDGM(nn.Module):
    def __init__(
        self,
        n_inputs: int,
        n_classes: int,
        hidden: list[int],
        a_dim: int,
        z_dim: int,
        skip: bool,
        batch_norm: bool = True,
    ) -> None:
        super().__init__()
        self.n_classes, self.skip = n_classes, skip
        d, k, tower = n_inputs, n_classes, lambda i, o: Tower(i, hidden, o, batch_norm)
        self.qa = tower({"x": d}, 2 * a_dim)
        self.qy = tower({"x": d, "a": a_dim}, k)
        self.qz = tower({"x": d, "a": a_dim, "y": k}, 2 * z_dim)
        if skip:  # SDGM: p(a | y, z), p(x | a, y, z)
            self.pa = tower({"z": z_dim, "y": k}, 2 * a_dim)
            self.px = tower({"z": z_dim, "a": a_dim, "y": k}, d)
        else:  # ADGM: p(a | x, y, z), p(x | y, z)
            self.pa = tower({"z": z_dim, "x": d, "y": k}, 2 * a_dim)
            self.px = tower({"z": z_dim, "y": k}, d)

    def init_weights(self, generator: torch.Generator) -> None:
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_normal_(module.weight, generator=generator)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def sample_a(
        self, x: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """a ~ q(a | x) as [B, 1, A] and its log density [B, 1]."""
        mu, logvar = self.qa(x=x[:, None]).chunk(2, dim=-1)
        eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
        a = mu + eps * torch.exp(0.5 * logvar)
        return a, _gaussian_log_density(a, mu, logvar)

    def class_logits(self, x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """Logits of q(y | a, x) for one draw a [B, 1, A] -> [B, K]."""
        return self.qy(x=x[:, None], a=a)[:, 0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """log of q(y | a, x) averaged over PREDICT_SAMPLES draws of a (fixed seed)."""
        generator = seeded_generator(0, x.device)
        probs = sum(
            F.softmax(self.class_logits(x, self.sample_a(x, generator)[0]), dim=1)
            for _ in range(PREDICT_SAMPLES)
        )
        return torch.log(probs / PREDICT_SAMPLES)

    def neg_elbo(
        self,
        x: torch.Tensor,
        a: torch.Tensor,
        log_qa: torch.Tensor,
        classes: torch.Tensor | None,
        generator: torch.Generator,
    ) -> torch.Tensor:
        """-ELBO(x, y) for each row and candidate class -> [B, K]; classes=None: every class."""
        eye = torch.eye(self.n_classes, device=x.device, dtype=x.dtype)
        y = eye[None] if classes is None else eye[classes][:, None]
        xb = x[:, None]
        mu, logvar = self.qz(x=xb, a=a, y=y).chunk(2, dim=-1)
        eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
        z = mu + eps * torch.exp(0.5 * logvar)
        log_qz = _gaussian_log_density(z, mu, logvar)
        log_pz = -0.5 * (LOG_2PI + z**2).sum(-1)
        if self.skip:
            pa_mu, pa_logvar = self.pa(z=z, y=y).chunk(2, dim=-1)
            logits = self.px(z=z, a=a, y=y)
        else:
            pa_mu, pa_logvar = self.pa(z=z, x=xb, y=y).chunk(2, dim=-1)
            logits = self.px(z=z, y=y)
        log_pa = _gaussian_log_density(a, pa_mu, pa_logvar)
        log_px = -(F.softplus(logits) - logits * xb).sum(-1)
        log_py = -math.log(self.n_classes)
        return -(log_px + log_py + log_pz + log_pa - log_qz - log_qa)


def step_loss(
    model: AuxiliaryDGM,
    x_l: torch.Tensor,
    y_l: torch.Tensor,
    x_u: torch.Tensor,
    alpha: float,
    generator: torch.Generator,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """mean_labeled[-ELBO + alpha · CE] + mean_unlabeled[U], and its terms (with their graph):
    the labeled bound, the weighted cross-entropy and the unlabeled bound."""
    a_l, log_qa_l = model.sample_a(x_l, generator)
    ce = F.cross_entropy(model.class_logits(x_l, a_l), y_l, reduction="none")
    bound = model.neg_elbo(x_l, a_l, log_qa_l, y_l, generator)[:, 0]
    parts = {"labeled_bound": bound.mean(), "weighted_cross_entropy": alpha * ce.mean()}
    loss = (bound + alpha * ce).mean()
    if len(x_u):
        a_u, log_qa_u = model.sample_a(x_u, generator)
        log_q = F.log_softmax(model.class_logits(x_u, a_u), dim=1)
        bound_u = model.neg_elbo(x_u, a_u, log_qa_u, None, generator)
        parts["unlabeled"] = (log_q.exp() * (bound_u + log_q)).sum(1).mean()
        loss = loss + parts["unlabeled"]
    return loss, parts


PUBLISHED_LR = 3e-4  # Maaløe et al. 2016's Adam step
# The supervised-only references keep the published step: the unlabeled bound that chose a
# larger one for the semi-supervised models has nothing to say about a model without it.
SUPERVISED_REFERENCE = {"model": "supervised", "lr": PUBLISHED_LR}


class AuxiliaryMethod(Method):
    """ADGM and SDGM as registry methods: the published MNIST settings, compressed in epochs
    and in draws of a per step to fit a CPU (docs/methods.md); `model=supervised` trains the
    same networks on the labeled images alone, the supervised-only reference."""

    skip: bool
    defaults = {
        "hidden": "500,500",
        "a_dim": 100,
        "z_dim": 100,
        "model": "semi",
        "beta": 0.1,  # alpha = beta · N / N_labeled, the authors' weight of the labels
        "epochs": 50,
        "lr": 1e-3,  # the authors: PUBLISHED_LR; chosen by the unlabeled bound (docs/methods.md)
        "lr_decay": 0.75,
        "lr_decay_every": 10,  # epochs; the authors: every 200 of 1,000
        "min_lr": 3e-5,
        "batch_size": 100,  # unlabeled images a step
        "labeled_batch_size": 100,  # labeled images a step, cycled through the budget
        "max_grad_norm": 5.0,
        "batch_norm": True,
    }
    rules = {
        "hidden": Rule(pattern=r"[1-9][0-9]*(,[1-9][0-9]*)*"),
        "a_dim": AT_LEAST_ONE,
        "z_dim": AT_LEAST_ONE,
        "model": Rule(choices=("semi", "supervised")),
        "beta": NON_NEGATIVE,
        "epochs": AT_LEAST_ONE,
        "lr": POSITIVE,
        "lr_decay": Rule(gt=0, le=1),
        "lr_decay_every": AT_LEAST_ONE,
        "min_lr": NON_NEGATIVE,
        "batch_size": AT_LEAST_ONE,
        "labeled_batch_size": AT_LEAST_ONE,
        "max_grad_norm": POSITIVE,
    }

    @classmethod
    def search_space(cls, trial: Any) -> dict[str, Any]:
        return {
            "lr": trial.suggest_float("lr", 1e-4, 3e-3, log=True),
            "epochs": trial.suggest_int("epochs", 10, 100, log=True),
            "beta": trial.suggest_float("beta", 0.01, 1.0, log=True),
        }

    @classmethod
    def estimated_seconds(
        cls, n_labels: int, n_train: int, params: dict[str, Any], n_classes: int = 10
    ) -> float:
        """Multiply-adds and elementwise work of an epoch (the M2 model's per-unit costs):
        every unlabeled image through q(z|·), p(a|·) and p(x|·) once per class."""
        hidden, a, z, d = _hidden(params["hidden"]), int(params["a_dim"]), int(params["z_dim"]), 784
        deep = sum(p * q for p, q in zip(hidden[:-1], hidden[1:]))
        h0, h1 = hidden[0], hidden[-1]
        per_image = 3 * d * h0 + a * h0 + 3 * deep + h1 * (2 * a + n_classes)
        per_class = (a + z + z + a) * h0 + 3 * deep + h1 * (2 * z + 2 * a + d) + 3 * n_classes * h0
        steps = n_train / int(params["batch_size"])
        labeled_rows = steps * min(int(params["labeled_batch_size"]), n_labels)
        unlabeled = 0 if params["model"] == "supervised" else n_train
        macs = (unlabeled + labeled_rows) * per_image + (
            unlabeled * n_classes + labeled_rows
        ) * per_class
        elements = (unlabeled * n_classes + labeled_rows) * (3 * sum(hidden) + d)
        per_epoch = macs * SECONDS_PER_MAC + elements * SECONDS_PER_ELEMENT
        return 5.0 + int(params["epochs"]) * per_epoch

    def fit(self, data: TrainData) -> None:
        p, device = self.params, data.device
        generator = seeded_generator(data.seed, device)
        x = data.x_tensor()
        labeled = torch.tensor(data.labeled, dtype=torch.long, device=device)  # copies:
        y = torch.tensor(data.y_labeled, dtype=torch.long, device=device)  # read-only input
        unlabeled = rows_outside(len(x), labeled)
        model = AuxiliaryDGM(
            x.shape[1],
            data.n_classes,
            _hidden(p["hidden"]),
            int(p["a_dim"]),
            int(p["z_dim"]),
            skip=self.skip,
            batch_norm=bool(p["batch_norm"]),
        )
        model.init_weights(torch.Generator().manual_seed(data.seed))  # CPU init: any device
        model.to(device)
        self.model_ = model
        optimizer = adam(model.parameters(), device, lr=float(p["lr"]))
        alpha = float(p["beta"]) * len(x) / len(labeled)
        data.log_metric("alpha", alpha, 0)
        supervised = p["model"] == "supervised"
        batch = int(p["batch_size"])
        # batch norm needs two rows in a batch, even from a single label
        per_step = max(2 if p["batch_norm"] else 1, min(int(p["labeled_batch_size"]), len(labeled)))
        # an epoch is a pass over the unlabeled images, for the reference too
        n_steps = max(1, -(-len(unlabeled) // batch))
        weights = [m.weight for m in model.modules() if isinstance(m, nn.Linear)]
        classifier = list(model.qy.parameters())
        probes = set(torch.linspace(0, n_steps - 1, GRADIENT_PROBES).round().long().tolist())
        terms: dict[str, torch.Tensor] = {}
        norms: dict[str, torch.Tensor] = {}

        def binarised(rows: torch.Tensor) -> torch.Tensor:
            return torch.bernoulli(x[rows], generator=generator)

        def run_epoch(epoch: int) -> float:
            decays = epoch // int(p["lr_decay_every"])
            rate = max(float(p["min_lr"]), float(p["lr"]) * float(p["lr_decay"]) ** decays)
            for group in optimizer.param_groups:
                group["lr"] = rate
            order = unlabeled[torch.randperm(len(unlabeled), generator=generator, device=device)]
            stream = labeled_stream(len(labeled), n_steps * per_step, generator, device)
            total = torch.zeros((), device=device)
            terms.clear()
            norms.clear()
            for step in range(n_steps):
                idx_l = stream[step * per_step : (step + 1) * per_step]
                rows_u = order[step * batch : (step + 1) * batch][: 0 if supervised else None]
                loss, parts = step_loss(
                    model, binarised(labeled[idx_l]), y[idx_l], binarised(rows_u), alpha,
                    generator,
                )  # fmt: skip
                for name, value in parts.items():
                    terms[name] = terms.get(name, 0) + value.detach()
                if step in probes:
                    for name, value in term_gradient_norms(parts, classifier).items():
                        norms[name] = norms.get(name, 0) + value / len(probes)
                # the N(0, 1) prior on the weights, spread over the training images
                loss = loss + 0.5 * sum(w.pow(2).sum() for w in weights) / len(x)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(model.parameters(), float(p["max_grad_norm"]))
                nn.utils.clip_grad_value_(model.parameters(), 1.0)
                optimizer.step()
                total += loss.detach()
            return float(total) / n_steps

        curves = ClassifierCurves(data.log_metric, x, labeled, y, unlabeled)

        def on_epoch(epoch: int, loss: float) -> None:
            data.log_metric("aux_loss", loss, epoch)
            for name, value in terms.items():
                data.log_metric(f"aux_{name}_loss", float(value) / n_steps, epoch)
            for name, value in norms.items():  # which term drives the classifier
                data.log_metric(f"classifier_grad_{name}", float(value), epoch)
            curves.log(model, epoch)

        run_loop(
            Loop(
                name=self.name,
                model=model,
                optimizer=optimizer,
                generator=generator,
                epochs=int(p["epochs"]),
                run_epoch=run_epoch,
                on_epoch=on_epoch,
                checkpoint=data.checkpoint("auxiliary.pt"),
                progress=data.progress,
                on_resume=curves.resume,
                hint=f"lower the learning rate (lr={p['lr']}) or beta (beta={p['beta']})",
            )
        )
        model.eval()

    def predict(self, x: np.ndarray) -> np.ndarray:
        return predict_classes(self.model_, x)
