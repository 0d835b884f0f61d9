"""Process-wide settings (logging, warnings, the plotting backend), made by the entry points.

No module changes them when it is imported: importing the harness from a notebook or a test
leaves the caller's logging alone. The CLI calls `configure()` once, and so does each worker
process it spawns; the queue and the tuner call `quiet_optuna()` when they start.
"""

from __future__ import annotations

import logging
import os
import warnings

# schema migrations, store chatter, and two lines per cell from the system-metrics monitor
NOISY_LOGGERS = ("alembic", "mlflow.store.db.utils", "mlflow.tracking", "mlflow.system_metrics")


def configure() -> None:
    os.environ.setdefault("MPLBACKEND", "Agg")  # headless: workers and CI have no display
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    # Optuna's experimental-API and deprecation notices say nothing a user can act on here
    warnings.filterwarnings("ignore", category=UserWarning, module="optuna")
    warnings.filterwarnings("ignore", category=FutureWarning, module="optuna")
    # ... and its ExperimentalWarning is often attributed to the caller (our runner), not optuna
    warnings.filterwarnings(
        "ignore", message=r".* is experimental \(supported from|Argument ``\w+`` is an experimental"
    )


def quiet_optuna() -> None:
    """One log line per trial is noise in a grid of hundreds of cells; warnings stay."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
