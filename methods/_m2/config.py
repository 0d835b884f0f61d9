"""M2's settings: the config, its declared defaults and constraints, and the search space.

Each setting's default and constraint is written once: `M2Config`'s fields are the defaults,
`M2_RULES` the constraints, checked the same way for a method's parameters and a config.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from methods.params import AT_LEAST_ONE, FRACTION, NON_NEGATIVE, POSITIVE, Rule, coerce_all

LIKELIHOODS = ("bernoulli", "gaussian", "gaussian-per-image")
LABELED_PASS = "pass"
WEIGHTINGS = ("equal", "data-share")


@dataclass(frozen=True)
class M2Config:
    z_dim: int = 50
    hidden: int = 500
    epochs: int = 50
    batch_size: int = 200  # unlabeled images per step
    # labeled images per step, cycled through the budget; "pass": as many as make one pass over
    # the labels per epoch, as the unlabeled images make one (Kingma's code draws both so)
    labeled_batch_size: int | str = 100
    lr: float = 4.2e-4
    alpha: float = 46.0  # weight of a labeled image's cross-entropy next to its ELBO
    likelihood: str = "bernoulli"
    weighting: str = "equal"  # of the labeled and unlabeled means in a step (see batch_loss)
    batch_norm: bool = True
    init_std: float = 0.0  # 0: Xavier; else N(0, init_std²), as Kingma's 1e-3

    def __post_init__(self) -> None:
        defaults = {f.name: f.default for f in fields(self)}
        coerce_all("M2 config", asdict(self), defaults, M2_RULES)

    @classmethod
    def from_params(cls, params: dict[str, Any], likelihood: str) -> M2Config:
        """The config from a method's flat parameters (names as in the method's defaults)."""
        return cls(
            z_dim=int(params["z_dim"]),
            hidden=int(params["hidden"]),
            epochs=int(params["epochs"]),
            batch_size=int(params["batch_size"]),
            labeled_batch_size=labeled_batch(params["labeled_batch_size"]),
            lr=float(params["lr"]),
            alpha=float(params["alpha"]),
            likelihood=likelihood,
            # the schedule is optional: `supervised-mlp` has no such parameters
            **{k: type(v)(params.get(k, v)) for k, v in SCHEDULE_DEFAULTS.items()},
        )


M2_RULES: dict[str, Rule] = {
    "z_dim": AT_LEAST_ONE,
    "hidden": AT_LEAST_ONE,
    "epochs": AT_LEAST_ONE,
    "batch_size": AT_LEAST_ONE,
    "labeled_batch_size": Rule(ge=1, words=(LABELED_PASS,), integer=True),
    "lr": POSITIVE,
    "alpha": NON_NEGATIVE,
    "kingma_alpha": NON_NEGATIVE,
    "val_fraction": FRACTION,
    "likelihood": Rule(choices=LIKELIHOODS),
    "weighting": Rule(choices=WEIGHTINGS),
    "init_std": NON_NEGATIVE,
}


def labeled_batch(value: Any) -> int | str:
    """`labeled_batch_size` as the config holds it: a whole number or the word "pass"."""
    return LABELED_PASS if value == LABELED_PASS else int(value)


def labeled_per_step(labeled_batch_size: int | str, n_labeled: int, n_steps: int) -> int:
    """Labeled images in a step: as set, or with "pass" as many as spread the budget over the
    epoch's steps (1 at 100 labels and 100 steps, 30 at 3,000)."""
    if labeled_batch_size == LABELED_PASS:
        return max(1, -(-n_labeled // max(1, n_steps)))
    return min(int(labeled_batch_size), n_labeled)


# Pyro's SS-VAE tutorial settings, taken as published (docs/methods.md says where each comes
# from); `tune` (CV inside the budget) is the way to move away from them. No validation slice
# by default: the final model is reported, so a slice would only take labels away.
M2_DEFAULTS: dict[str, Any] = {
    **{
        name: getattr(M2Config, name)
        for name in ("z_dim", "hidden", "epochs", "batch_size", "labeled_batch_size", "lr", "alpha")
    },
    "val_fraction": 0.0,
}

# How a step is built: this harness's scheme by default; Kingma's code is KINGMA_SCHEDULE
# (with hidden 300, one labeled and 599 unlabeled images per step, lr 3e-4, 3,000 epochs).
SCHEDULE_DEFAULTS: dict[str, Any] = {
    k: getattr(M2Config, k) for k in ("weighting", "batch_norm", "init_std")
}
KINGMA_SCHEDULE: dict[str, Any] = {"weighting": "data-share", "batch_norm": False, "init_std": 1e-3}


def suggest_m2(trial: Any, max_epochs: int = 100) -> dict[str, Any]:
    """Optimizer and size; the weight of the labels is each method's own (see `m1-m2`)."""
    return {
        "lr": trial.suggest_float("lr", 1e-4, 3e-3, log=True),
        "epochs": trial.suggest_int("epochs", 10, max_epochs),
        "z_dim": trial.suggest_categorical("z_dim", [10, 20, 50]),
    }
