"""M2's loss and training loop.

A labeled image contributes L(x, y) = -E_q[log p(x|y,z)] + KL(q(z|x,y) ‖ p(z)) - log p(y) plus
the auxiliary alpha · CE(q(y|x), y) that makes the classifier learn; an unlabeled one
U(x) = Σ_y q(y|x) L(x, y) - H(q(y|x)). Every step mixes labeled and unlabeled images, and weighs
their means either equally ("equal") or by their share of the data ("data-share", Kingma's J/N).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.nn import functional as F

from benchmark.devices import seeded_generator
from methods._m2.config import M2Config, labeled_per_step
from methods._m2.model import M2
from methods.training import Checkpoint, Loop, adam, labeled_stream, rows_outside, run_loop


def batch_loss(
    model: M2,
    x_u: torch.Tensor,
    x_l: torch.Tensor,
    y_l: torch.Tensor,
    generator: torch.Generator,
    terms: dict[str, torch.Tensor] | None = None,
    labeled_share: float | None = None,
) -> torch.Tensor:
    """mean_labeled[L + alpha · CE] + mean_unlabeled[U]: the labels weigh as much as the
    unlabeled images in every step, whatever their number (see the module docstring).
    With `labeled_share` s (weighting "data-share", Kingma's J/N): s · mean_labeled[...] +
    (1 - s) · mean_unlabeled[U] instead.

    The classifier sees both kinds in one pass, so its batch norm never meets a single row.
    `terms`, if given, receives the two means (detached) for the training curves.
    """
    logits = model(torch.cat([x_l, x_u]))
    labeled = model.neg_elbo(x_l, y_l[:, None], generator)[:, 0]
    ce = F.cross_entropy(logits[: len(x_l)], y_l, reduction="none")
    labeled = labeled + model.config.alpha * ce
    if terms is not None:
        terms["labeled"] = terms.get("labeled", 0) + labeled.mean().detach()
        terms["cross_entropy"] = terms.get("cross_entropy", 0) + ce.mean().detach()
    if len(x_u) == 0:  # every training image is labeled
        return labeled.mean()
    log_q = F.log_softmax(logits[len(x_l) :], dim=1)
    unlabeled = (log_q.exp() * (model.neg_elbo(x_u, None, generator) + log_q)).sum(1)
    if terms is not None:
        terms["unlabeled"] = terms.get("unlabeled", 0) + unlabeled.mean().detach()
    if labeled_share is None:
        return unlabeled.mean() + labeled.mean()
    return labeled_share * labeled.mean() + (1.0 - labeled_share) * unlabeled.mean()


# Called after each epoch with (epoch index, mean training loss, model, mean of each loss term).
EpochCallback = Callable[[int, float, M2, dict[str, float]], None]


def _scored(
    on_epoch: EpochCallback, epoch: int, loss: float, model: M2, terms: dict[str, float]
) -> None:
    """Call `on_epoch` in eval mode: batch norm must use its running statistics, not the
    validation slice's, and must not update them from it; the next epoch sets train mode."""
    model.eval()
    on_epoch(epoch, loss, model, dict(terms))


def train_m2(
    x: torch.Tensor,
    labeled: torch.Tensor,
    y_labeled: torch.Tensor,
    n_classes: int,
    config: M2Config,
    seed: int,
    *,
    held_out: torch.Tensor | None = None,
    spread: torch.Tensor | None = None,
    on_epoch: EpochCallback | None = None,
    progress: bool = True,
    desc: str = "M2",
    checkpoint: Checkpoint | None = None,
) -> M2:
    """Train M2 on the rows of `x` (on the device): `labeled` rows carry `y_labeled`, the others
    are unlabeled, except `held_out` rows (a validation slice), which are not trained on at all.

    With `spread` (one standard deviation per entry of `x`), every step trains on a fresh draw
    x + spread · ε instead of x itself: M1+M2 in Kingma's code feeds M2 samples of q(z1 | x),
    not their means, so 100 labels become a cloud of plausible encodings rather than 100 points.
    """
    device = x.device
    generator = seeded_generator(seed, device)
    model = M2(x.shape[1], n_classes, config)
    model.init_weights(torch.Generator().manual_seed(seed))  # CPU init: same on any device
    model.to(device)
    optimizer = adam(model.parameters(), device, lr=config.lr)
    # held-out rows are neither labeled nor unlabeled: excluded
    unlabeled = rows_outside(len(x), labeled, *([] if held_out is None else [held_out]))
    n_steps = max(1, -(-len(unlabeled) // config.batch_size))
    # With batch norm, at least two labeled rows, so it has a batch even with a single label.
    per_step = labeled_per_step(config.labeled_batch_size, len(labeled), n_steps)
    lb = max(2 if config.batch_norm else 1, per_step)
    share = None
    if config.weighting == "data-share":
        share = len(labeled) / max(1, len(labeled) + len(unlabeled))

    terms: dict[str, float] = {}  # this epoch's mean loss terms, for the callback

    def rows(idx: torch.Tensor) -> torch.Tensor:
        if spread is None:
            return x[idx]
        eps = torch.randn((len(idx), x.shape[1]), generator=generator, device=device)
        return x[idx] + spread[idx] * eps

    def run_epoch(epoch: int) -> float:
        order = unlabeled[torch.randperm(len(unlabeled), generator=generator, device=device)]
        stream = labeled_stream(len(labeled), n_steps * lb, generator, device)
        total = torch.zeros((), device=device)
        sums: dict[str, torch.Tensor] = {}
        for step in range(n_steps):
            idx_u = order[step * config.batch_size : (step + 1) * config.batch_size]
            idx_l = stream[step * lb : (step + 1) * lb]
            x_l, y_l = rows(labeled[idx_l]), y_labeled[idx_l]
            loss = batch_loss(model, rows(idx_u), x_l, y_l, generator, sums, share)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.detach()
        terms.clear()
        terms.update({k: float(v) / n_steps for k, v in sums.items()})
        return float(total) / n_steps

    run_loop(
        Loop(
            name=desc,
            model=model,
            optimizer=optimizer,
            generator=generator,
            epochs=config.epochs,
            run_epoch=run_epoch,
            on_epoch=None
            if on_epoch is None
            else lambda e, loss: _scored(on_epoch, e, loss, model, terms),
            checkpoint=checkpoint,
            progress=progress,
            hint=f"lower the learning rate (lr={config.lr}) or alpha (alpha={config.alpha})",
        )
    )
    model.eval()
    return model
