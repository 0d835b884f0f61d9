"""M2 (Kingma et al. 2014) on pixels: a classifier trained jointly with a class-conditional VAE.

The unlabeled images enter through the ELBO summed over every class, weighted by the
classifier's q(y|x); the labels through their ELBO and an auxiliary cross-entropy. It predicts
argmax q(y|x). The model and its training live in `methods._m2`, shared with `m1-m2`; here
each step weighs the labeled and unlabeled means equally, with batch norm (docs/methods.md says
why).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from methods import _m2
from methods._holdout import predict_classes
from methods._m2 import M2_DEFAULTS, fit_m2, m2_seconds, suggest_m2
from methods.base import Method, TrainData

LIKELIHOOD = "bernoulli"  # pixels in [0, 1], as in Kingma's and Pyro's M2


class M2Method(Method):
    name = "m2"
    version = 1
    reference = "supervised-mlp"
    description = (
        "Kingma's M2: class-conditional VAE + classifier on pixels, all classes summed out"
    )
    defaults = {**M2_DEFAULTS, **_m2.SCHEDULE_DEFAULTS}
    rules = _m2.M2_RULES
    # what every run did before the schedule could be set
    former_values = _m2.SCHEDULE_DEFAULTS

    @classmethod
    def search_space(cls, trial: Any) -> dict[str, Any]:
        return {**suggest_m2(trial), "alpha": trial.suggest_float("alpha", 5.0, 500.0, log=True)}

    @classmethod
    def estimated_seconds(
        cls, n_labels: int, n_train: int, params: dict[str, Any], n_classes: int = 10
    ) -> float:
        return m2_seconds(params, n_labels, n_train, 784, LIKELIHOOD, n_classes)

    def fit(self, data: TrainData) -> None:
        x = data.x_tensor()
        self.model_ = fit_m2(x, data, self.params, likelihood=LIKELIHOOD)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return predict_classes(self.model_, x)

    def artifacts(self, folder: Path) -> list[Path]:
        """Class-conditional samples: one row per class, the same z along each column, so a
        reader sees whether the decoder uses y (rows differ) or ignores it (rows alike)."""
        import matplotlib.pyplot as plt  # the backend is the entry point's choice (runtime.py)

        model = self.model_.eval()
        device = next(model.parameters()).device
        k, n = model.n_classes, 8
        z = torch.randn(n, model.config.z_dim, generator=torch.Generator().manual_seed(0))
        z = z.repeat(k, 1).to(device)
        classes = torch.arange(k).repeat_interleave(n).to(device)
        images = model.decode(z, classes).cpu().numpy()
        side = int(round(images.shape[1] ** 0.5))
        fig, axes = plt.subplots(k, n, figsize=(n * 0.8, k * 0.8 + 0.3))
        for i, ax in enumerate(axes.flat):
            ax.imshow(images[i].reshape(side, side), cmap="gray", vmin=0, vmax=1)
            ax.axis("off")
        fig.suptitle("M2 samples: row = class y, column = the same z", fontsize=8)
        fig.tight_layout()
        path = folder / "m2_class_samples.png"
        fig.savefig(path, dpi=80)
        plt.close(fig)
        return [path]
