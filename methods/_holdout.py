"""A validation slice carved out of the labeled budget, and how network methods score with it.

Methods that train a network log validation accuracy per epoch. That slice must come out of
the labels the method was given, never from the test set or from unlabeled images' labels,
and whatever it is used for, its images are not trained on with their label.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from benchmark.errors import UsageError
from methods.training import from_array


@dataclass(frozen=True)
class Holdout:
    """Positions into the labeled arrays: `train` keeps its labels, `val` only scores."""

    train: np.ndarray
    val: np.ndarray


def split_labeled(y_labeled: np.ndarray, fraction: float, seed: int) -> Holdout:
    """Per class, round(fraction · count) labeled images (at least one if fraction > 0) go to val.

    A class with a single labeled image keeps it for training: a class the model never saw
    with a label would cost more than a noisier validation curve.
    """
    if not 0.0 <= fraction < 1.0:
        raise UsageError(f"val_fraction={fraction} must be in [0, 1); use 0 for no validation.")
    y_labeled = np.asarray(y_labeled)
    rng = np.random.default_rng([seed, 7919])  # own stream, independent of the split's
    val: list[np.ndarray] = []
    for c in np.unique(y_labeled):
        members = rng.permutation(np.flatnonzero(y_labeled == c))
        n_val = 0 if fraction == 0 else max(1, round(fraction * len(members)))
        val.append(members[: min(n_val, len(members) - 1)])
    val_idx = np.sort(np.concatenate(val)) if val else np.empty(0, dtype=np.int64)
    train_idx = np.setdiff1d(np.arange(len(y_labeled)), val_idx)
    return Holdout(train_idx, val_idx)


@torch.no_grad()
def accuracy(predict: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Accuracy of argmax(predict(x)); NaN for an empty slice so curves show a gap."""
    if len(y) == 0:
        return float("nan")
    return float((predict(x).argmax(dim=1) == y).float().mean())


@torch.no_grad()
def predict_classes(
    model: torch.nn.Module, features: np.ndarray, batch_size: int = 4096
) -> np.ndarray:
    """argmax of the model's class logits per row, in batches on the model's device."""
    model.eval()
    device = next(model.parameters()).device
    x = from_array(features)
    out = [
        model(x[i : i + batch_size].to(device)).argmax(1).cpu()
        for i in range(0, len(x), batch_size)
    ]
    return torch.cat(out).numpy()


class ClassifierCurves:
    """Per-epoch curves of a method's classifier: `labeled_accuracy` (does it fit its own
    labels?) and `probe_changed_class`, the share of a fixed sample of unlabeled images whose
    predicted class changed since the previous epoch. The latter reads no label, so it may pick
    a schedule; 0 means the classifier has settled on the unlabeled images."""

    def __init__(
        self,
        log_metric: Callable[[str, float, int], None],
        x: torch.Tensor,
        labeled: torch.Tensor,
        y: torch.Tensor,
        unlabeled: torch.Tensor,
        probe_size: int = 1000,
    ) -> None:
        self.log_metric, self.x, self.labeled, self.y = log_metric, x, labeled, y
        self.probe = unlabeled[:: max(1, len(unlabeled) // probe_size)][:probe_size]
        self.previous: torch.Tensor | None = None

    def log(self, net: torch.nn.Module, epoch: int) -> None:
        """Log both curves for `net` (put in eval mode; its logits give the class)."""
        net.eval()
        self.log_metric("labeled_accuracy", accuracy(net, self.x[self.labeled], self.y), epoch)
        guess = self._guess(net)
        if self.previous is not None:
            changed = (guess != self.previous).float().mean()
            self.log_metric("probe_changed_class", float(changed), epoch)
        self.previous = guess

    def resume(self, net: torch.nn.Module) -> None:
        """Take `net`, just restored from a checkpoint, as the previous epoch's classifier, so
        the first epoch after a resume logs its change like any other."""
        net.eval()
        self.previous = self._guess(net)

    @torch.no_grad()
    def _guess(self, net: torch.nn.Module) -> torch.Tensor:
        return net(self.x[self.probe]).argmax(1)
