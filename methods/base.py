"""The contract every method implements, and the registry that defining a method fills.

A method is one class in one file under ``methods/``: a ``name``, a one-line ``description``,
``uses_vae``, ``defaults`` and an optional Optuna ``search_space``. It learns from a
:class:`TrainData` (all training images, labels for the labeled budget only) and predicts
classes for new images. It never scores itself: the runner does, the same way for all.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from methods.params import AT_LEAST_ONE, POSITIVE, Rule, coerce_all
from methods.training import Checkpoint, from_array
from methods.vae import VAE, VAEConfig, conv_encoder_macs

REGISTRY: dict[str, type[Method]] = {}
UNLABELED = -1  # the target of a training image outside the labeled budget

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
    image_shape: tuple[int, ...] = (28, 28)  # each row of x is one image of this shape
    device: torch.device = torch.device("cpu")
    vae: VAEProvider | None = None
    log_metric: MetricLogger = field(default=_no_log)
    progress: bool = False
    checkpoint_dir: Path | None = None  # where long trainings keep their latest epoch

    def checkpoint(self, name: str) -> Checkpoint | None:
        """A checkpoint file for one of the method's training loops, if the runner gave a
        folder: an interrupted cell then resumes its training instead of starting over."""
        return None if self.checkpoint_dir is None else Checkpoint(self.checkpoint_dir / name)

    def x_tensor(self) -> torch.Tensor:
        """Every training image as one tensor on the device (on the CPU, the array's memory)."""
        return from_array(self.x).to(self.device)

    @property
    def x_labeled(self) -> np.ndarray:
        return self.x[self.labeled]

    def targets(self) -> np.ndarray:
        """Targets for all rows, UNLABELED (-1) outside the budget."""
        targets = np.full(len(self.x), UNLABELED, dtype=np.int64)
        targets[self.labeled] = self.y_labeled
        return targets

    def get_vae(self, config: VAEConfig) -> VAE:
        """The shared VAE of `config`, trained on these images (a convolutional one learns
        their shape from here)."""
        if self.vae is None:
            raise RuntimeError("This TrainData carries no VAE provider; the runner must pass one.")
        if config.arch == "conv":
            config = replace(config, image_shape=tuple(self.image_shape))
        return self.vae(config)


class Method(ABC):
    """Subclass with a `name` to register. `__init__` only stores validated parameters."""

    name: ClassVar[str]
    description: ClassVar[str]
    # Bumped when what the method computes changes (not its text or location): its cells then
    # run again. Every registered class declares its own; tests/test_fingerprints.py checks it.
    version: ClassVar[int]
    # The supervised-only method with the same network, read beside this one in the tables.
    reference: ClassVar[str | None] = None
    uses_vae: ClassVar[bool] = False
    defaults: ClassVar[Mapping[str, Any]] = {}
    # Each parameter's range or choices beyond its default's type, declared on the class (the
    # shared groups: VAE_RULES, methods._svm.SVM_RULES, methods._m2.M2_RULES); a value outside
    # them is refused before any data is loaded.
    rules: ClassVar[Mapping[str, Rule]] = {}
    # For a parameter added after runs were made: the value that does what the method did
    # before it existed, so the report can say how those runs differ instead of "not logged".
    former_values: ClassVar[Mapping[str, Any]] = {}
    # Parameters added after cells were archived, each with the value that computes what those
    # cells computed: at that value a parameter is left out of a cell's identity (its key), so
    # the archived cells stay finished. The report reads them as former values too.
    new_params: ClassVar[Mapping[str, Any]] = {}

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
        version = cls.__dict__.get("version")
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise TypeError(
                f"Method {cls.name!r} needs its own `version = 1` (a positive integer, bumped"
                f" when what it computes changes); got {version!r}."
            )
        REGISTRY[cls.name] = cls

    def __init__(self, **params: Any) -> None:
        self.params: dict[str, Any] = coerce_all(self.name, params, self.defaults, self.rules)

    @classmethod
    def search_space(cls, trial: Any) -> dict[str, Any]:
        """Parameters for one Optuna trial; {} means the method has nothing to tune."""
        return {}

    @classmethod
    def estimated_seconds(
        cls, n_labels: int, n_train: int, params: Mapping[str, Any], n_classes: int = 10
    ) -> float:
        """Rough seconds of one cell (fit, predict, score) on the reference 2-core CPU, one
        thread, not counting the shared VAE's training, for a dataset of `n_classes` classes.
        Only the run plan and its ETA use it (scaled by earlier runs where there are any), so
        a method that is an order of magnitude costlier must say so here."""
        return 5.0

    @abstractmethod
    def fit(self, data: TrainData) -> None: ...

    @abstractmethod
    def predict(self, x: np.ndarray) -> np.ndarray:
        """Class index per row of x."""

    def artifacts(self, folder: Path) -> list[Path]:
        """Files worth keeping with the cell's run (pictures of what the model learned), written
        into `folder` after fitting; none by default."""
        return []

    def cluster_assignments(self, x: np.ndarray) -> np.ndarray | None:
        """Unsupervised cluster per row, for methods that cluster; scored by the runner."""
        return None


# Measured on the reference 2-core CPU (torch 2.13): one epoch of the default 784-512-256-10
# VAE over 60,000 images, batch 256. Other sizes scale with their weight count.
VAE_EPOCH_SECONDS = 4.8
VAE_REFERENCE_WEIGHTS = 784 * 512 + 512 * 256


# A multiply-add in a small convolution costs more here than in a dense layer's matrix
# product: fitted to the first convolutional VAEs trained on the reference CPU.
CONV_MAC_COST = 1.6


def vae_seconds(config: VAEConfig, n_train: int, n_inputs: int = 784) -> float:
    """Estimated seconds to train a VAE of `config` on n_train images (the plan's ETA): its
    encoder's multiply-adds per image against the reference VAE's (the decoder mirrors it)."""
    if config.arch == "conv":
        side = int(round(n_inputs**0.5))
        height, width = config.image_shape or (side, n_inputs // max(1, side))
        weights = CONV_MAC_COST * conv_encoder_macs((height, width), config.hidden[-1])
        weights += config.hidden[-1] * config.latent_dim
    else:
        sizes = [n_inputs, *config.hidden, config.latent_dim]
        weights = sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))
    per_epoch = VAE_EPOCH_SECONDS * (n_train / 60_000) * weights / VAE_REFERENCE_WEIGHTS
    return config.epochs * per_epoch + 1.0


VAE_DEFAULTS: dict[str, Any] = {
    "latent_dim": 10,
    "vae_hidden": "512,256",
    "vae_epochs": 25,  # chosen by 5-fold CV inside the labeled budgets (not test): flat after ~25
    "vae_batch_size": 256,
    "vae_lr": 1e-3,
    "vae_arch": "mlp",  # or "conv": two convolutions and a dense layer, mirrored
}
# vae_arch came with the convolutional core; "mlp" computes what every earlier cell did
VAE_NEW_PARAMS: dict[str, Any] = {"vae_arch": "mlp"}


VAE_RULES: dict[str, Rule] = {
    "latent_dim": AT_LEAST_ONE,
    "vae_hidden": Rule(pattern=r"[1-9][0-9]*(,[1-9][0-9]*)*"),
    "vae_epochs": AT_LEAST_ONE,
    "vae_batch_size": AT_LEAST_ONE,
    "vae_lr": POSITIVE,
    "vae_arch": Rule(choices=("mlp", "conv")),
}


def suggest_latent_dim(trial: Any) -> dict[str, Any]:
    """The shared VAE's latent size, the search dimension every VAE method has."""
    return {"latent_dim": trial.suggest_int("latent_dim", 2, 64, log=True)}


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
        arch=str(params.get("vae_arch", "mlp")),
    )


class VAEFeatureMethod(Method):
    """Base for methods that work on the shared VAE's latent means."""

    uses_vae = True
    rules = VAE_RULES
    new_params = VAE_NEW_PARAMS

    def vae_config(self) -> VAEConfig:
        return vae_config_from(self.params)

    def fit(self, data: TrainData) -> None:
        self.vae_ = data.get_vae(self.vae_config())
        self.fit_features(self.vae_.latent_means(data.x), data)

    def features(self, x: np.ndarray) -> np.ndarray:
        return self.vae_.latent_means(x)

    @classmethod
    def estimated_seconds(
        cls, n_labels: int, n_train: int, params: Mapping[str, Any], n_classes: int = 10
    ) -> float:
        return 0.5 + 0.0002 * n_labels  # encode 70k images (remembered), fit on the budget

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.predict_features(self.features(x))

    @abstractmethod
    def fit_features(self, z: np.ndarray, data: TrainData) -> None:
        """Fit on the latent means z of *all* training rows (labels in `data`)."""

    @abstractmethod
    def predict_features(self, z: np.ndarray) -> np.ndarray: ...
