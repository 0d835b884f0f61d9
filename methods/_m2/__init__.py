"""M2 of Kingma et al. 2014, shared by `m2` (on pixels) and `m1-m2` (on M1 latent features):
its settings, cost model, networks, loss and training, and the fit a method calls."""

from methods._m2.config import (
    KINGMA_SCHEDULE,
    LABELED_PASS,
    M2_DEFAULTS,
    M2_RULES,
    SCHEDULE_DEFAULTS,
    M2Config,
    labeled_per_step,
    suggest_m2,
)
from methods._m2.cost import M2_EPOCH_SECONDS, decoder_width, m2_seconds
from methods._m2.fit import fit_m2
from methods._m2.model import M2, decoder_accuracy
from methods._m2.training import batch_loss, train_m2

__all__ = [
    "KINGMA_SCHEDULE",
    "LABELED_PASS",
    "M2",
    "M2_DEFAULTS",
    "M2_EPOCH_SECONDS",
    "M2_RULES",
    "M2Config",
    "SCHEDULE_DEFAULTS",
    "batch_loss",
    "decoder_accuracy",
    "decoder_width",
    "fit_m2",
    "labeled_per_step",
    "m2_seconds",
    "suggest_m2",
    "train_m2",
]
