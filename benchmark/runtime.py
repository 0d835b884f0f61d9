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
    # a Ctrl-C, or the launcher stopping a worker, can land inside a store query: SQLAlchemy
    # then fails to close the dead cursor and logs it with a traceback (seen in CI)
    last_resort = logging.lastResort
    if last_resort is not None and not any(
        isinstance(f, AfterAnInterrupt) for f in last_resort.filters
    ):
        last_resort.addFilter(AfterAnInterrupt())


class AfterAnInterrupt(logging.Filter):
    """Drops an unhandled log record whose error arose while an interrupt unwound: the stop was
    asked for and is reported once, by the launcher; the clean-up's own failure is not news."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        for _ in range(20):  # the chain of errors each raised while handling the one before
            if error is None:
                return True
            if isinstance(error, KeyboardInterrupt):
                return False
            error = error.__context__
        return True


def quiet_optuna() -> None:
    """One log line per trial is noise in a grid of hundreds of cells; warnings stay."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)


KEEP_DENORMALS = "BENCHMARK_KEEP_DENORMALS"
_denormals = "kept"  # what cpu_numerics() last set in this process: recorded with each cell


def cpu_numerics() -> str:
    """Flush subnormal floats to zero on the CPU, unless BENCHMARK_KEEP_DENORMALS=1: returns
    "flushed" or "kept", as `denormals()` will.

    Subnormals (below 1.2e-38) build up as the M2 family trains, and each one costs the CPU
    a slow microcode path; flushing them is the usual remedy and moves no number above that
    scale. Cells archived before this setting kept them: the variable reproduces those.
    """
    import torch

    global _denormals
    flush = os.environ.get(KEEP_DENORMALS, "") in ("", "0")
    _denormals = "flushed" if torch.set_flush_denormal(flush) and flush else "kept"
    return _denormals


def denormals() -> str:
    """Whether this process flushes subnormal floats on the CPU ("flushed") or not ("kept")."""
    return _denormals


THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "TORCH_NUM_THREADS")


def choose_threads(workers: int = 1) -> str:
    """Torch threads for the cells this process runs, and why, in words.

    Spawned workers use one thread each. One worker in this process uses the cores that are
    free now: the machine's cores less its 1-minute load, at least one. A torch process with
    two threads beside one busy core ran about ten times slower than with one, so a shared
    machine gets one thread. A thread count the user set (OMP_NUM_THREADS, ...) is kept.
    """
    import torch

    cores = os.cpu_count() or 1
    if workers > 1:
        return f"{workers} workers, one torch thread each"
    for name in THREAD_VARIABLES:
        if os.environ.get(name):
            return f"{torch.get_num_threads()} torch thread(s), as {name} sets"
    busy = round(os.getloadavg()[0]) if hasattr(os, "getloadavg") else 0
    threads = max(1, min(cores, cores - busy))
    torch.set_num_threads(threads)
    return f"{threads} torch thread(s): {cores} cores, load {busy}"
