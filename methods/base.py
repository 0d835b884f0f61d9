"""The contract every method implements, and the registry that defining a method fills.

A method is one class in one file under ``methods/``: a ``name``, a one-line ``description``,
``uses_vae``, ``defaults`` and an optional Optuna ``search_space``. It learns from a
:class:`TrainData` (all training images, labels for the labeled budget only) and predicts
classes for new images. It never scores itself: the runner does, the same way for all.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch

from benchmark.errors import UsageError
from benchmark.splits import UNLABELED
from methods.vae import VAE, VAEConfig

REGISTRY: dict[str, type[Method]] = {}

# Gives a VAE config -> a trained VAE, from the shared cache; the runner supplies it.
VAEProvider = Callable[[VAEConfig], VAE]
# Logs one training-curve point (name, value, step) to the method's tracking run.
MetricLogger = Callable[[str, float, int], None]


def _no_log(name: str, value: float, step: int) -> None:
    pass


@dataclass(frozen=True)
class TrainData:
    """What a method may see: every training image, but labels only inside the budget."""

    x: np.ndarray  # float32 [n_train, n_features] in [0, 1]
    labeled: np.ndarray  # indices of labeled rows
    y_labeled: np.ndarray  # their labels, aligned with `labeled`
    n_classes: int
    seed: int
    device: torch.device = torch.device("cpu")
    vae: VAEProvider | None = None
    log_metric: MetricLogger = field(default=_no_log)
    progress: bool = False

    @property
    def x_labeled(self) -> np.ndarray:
        return self.x[self.labeled]

    def targets(self) -> np.ndarray:
        """Targets for all rows, UNLABELED (-1) outside the budget."""
        targets = np.full(len(self.x), UNLABELED, dtype=np.int64)
        targets[self.labeled] = self.y_labeled
        return targets

    def get_vae(self, config: VAEConfig) -> VAE:
        if self.vae is None:
            raise RuntimeError("This TrainData carries no VAE provider; the runner must pass one.")
        return self.vae(config)


class Method(ABC):
    """Subclass with a `name` to register. `__init__` only stores validated parameters."""

    name: ClassVar[str]
    description: ClassVar[str]
    uses_vae: ClassVar[bool] = False
    defaults: ClassVar[Mapping[str, Any]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" not in cls.__dict__:  # abstract helpers define no name
            return
        if cls.name in REGISTRY:
            raise TypeError(
                f"Method name {cls.name!r} is defined twice ({REGISTRY[cls.name].__module__}"
                f" and {cls.__module__}); names must be unique."
            )
        if not getattr(cls, "description", ""):
            raise TypeError(f"Method {cls.name!r} needs a one-line `description`.")
        REGISTRY[cls.name] = cls

    def __init__(self, **params: Any) -> None:
        unknown = sorted(set(params) - set(self.defaults))
        if unknown:
            raise UsageError(
                f"Unknown parameter(s) {', '.join(unknown)} for method {self.name!r}."
                f" Known: {', '.join(sorted(self.defaults)) or 'none'}."
            )
        self.params: dict[str, Any] = {**self.defaults, **params}

    @classmethod
    def search_space(cls, trial: Any) -> dict[str, Any]:
        """Parameters for one Optuna trial; {} means the method has nothing to tune."""
        return {}

    @abstractmethod
    def fit(self, data: TrainData) -> None: ...

    @abstractmethod
    def predict(self, x: np.ndarray) -> np.ndarray:
        """Class index per row of x."""

    def cluster_assignments(self, x: np.ndarray) -> np.ndarray | None:
        """Unsupervised cluster per row, for methods that cluster; scored by the runner."""
        return None


VAE_DEFAULTS: dict[str, Any] = {
    "latent_dim": 10,
    "vae_hidden": "512,256",
    "vae_epochs": 25,  # chosen by 5-fold CV inside the labeled budgets (not test): flat after ~25
    "vae_batch_size": 256,
    "vae_lr": 1e-3,
}


def vae_config_from(params: Mapping[str, Any]) -> VAEConfig:
    """The shared VAE's config from a VAE method's flat parameters."""
    hidden = params["vae_hidden"]
    if isinstance(hidden, str):
        hidden = tuple(int(h) for h in hidden.split(","))
    return VAEConfig(
        latent_dim=int(params["latent_dim"]),
        hidden=tuple(hidden),
        epochs=int(params["vae_epochs"]),
        batch_size=int(params["vae_batch_size"]),
        lr=float(params["vae_lr"]),
    )


class VAEFeatureMethod(Method):
    """Base for methods that work on the shared VAE's latent means."""

    uses_vae = True

    def vae_config(self) -> VAEConfig:
        return vae_config_from(self.params)

    def fit(self, data: TrainData) -> None:
        self.vae_ = data.get_vae(self.vae_config())
        self.fit_features(self.vae_.latent_means(data.x), data)

    def features(self, x: np.ndarray) -> np.ndarray:
        return self.vae_.latent_means(x)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.predict_features(self.features(x))

    @abstractmethod
    def fit_features(self, z: np.ndarray, data: TrainData) -> None:
        """Fit on the latent means z of *all* training rows (labels in `data`)."""

    @abstractmethod
    def predict_features(self, z: np.ndarray) -> np.ndarray: ...
