"""What an M2 cell costs, for the run plan: the work of an epoch, times the epochs.

The two coefficients were fitted on the reference 2-core CPU (one thread) to measured epochs of
pixel M2 and of M1+M2 under both schedules; docs/methods.md gives the figures. A model of layer
sizes alone cannot tell the two M1+M2 schedules apart: their cost is in the pass over every
class and its elementwise work.
"""

from __future__ import annotations

import math
from typing import Any

from methods._m2.config import labeled_batch, labeled_per_step

SECONDS_PER_MAC = 5.6e-11  # a multiply-add, forward and backward together
SECONDS_PER_ELEMENT = 6.6e-9  # an element of the softplus and likelihood terms
M2_EPOCH_SECONDS = 28.0  # an epoch of pixel M2 (784 inputs, hidden 500, 60,000 images)


def decoder_width(n_inputs: int, likelihood: str) -> int:
    """p(x | y, z)'s outputs: a location per input, and a log σ² beside it when per image."""
    return 2 * n_inputs if likelihood == "gaussian-per-image" else n_inputs


def m2_seconds(
    params: dict[str, Any],
    n_labels: int,
    n_train: int,
    n_inputs: int,
    likelihood: str,
    n_classes: int = 10,
) -> float:
    """Estimated seconds of one M2 cell: the multiply-adds and elementwise work of an epoch
    (every unlabeled image through all classes, the labeled rows through their own), times the
    epochs."""
    h, z = int(params["hidden"]), int(params["z_dim"])
    n_out = decoder_width(n_inputs, likelihood)
    steps = n_train / int(params["batch_size"])
    per_step = labeled_per_step(
        labeled_batch(params["labeled_batch_size"]), n_labels, math.ceil(steps)
    )
    labeled_rows = steps * per_step
    per_class = 2 * h * z + z * h + h * n_out  # encoder output, decoder in, decoder out
    per_image = 2 * n_inputs * h + h * n_classes  # encoder's x part and the classifier
    macs = n_train * (per_image + n_classes * per_class) + labeled_rows * (per_image + per_class)
    elements = (n_train * n_classes + labeled_rows) * (2 * h + n_out)
    per_epoch = macs * SECONDS_PER_MAC + elements * SECONDS_PER_ELEMENT
    return 5.0 + int(params["epochs"]) * per_epoch
