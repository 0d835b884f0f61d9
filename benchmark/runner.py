"""The grid as an Optuna queue: the launcher enqueues cells once, workers pop and run them.

Each cell is one Optuna trial in a persistent storage (SQLite by default, PostgreSQL for several
machines) and one MLflow child run; MLflow is the record of which cells are done. Heartbeats
fail the trial of a worker that died (even by kill -9): its orphaned MLflow run is closed as
KILLED and the cell is enqueued again, so re-running the same command completes the grid with
exactly one FINISHED run per cell. A run the dead worker had not yet recorded in its trial is
closed when the cell is next popped.
"""

from __future__ import annotations

import hashlib
import logging
import multiprocessing as mp
import os
import tempfile
import time
import traceback
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import optuna
import torch
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState
from tqdm.auto import tqdm

from benchmark import plots
from benchmark.devices import resolve_device
from benchmark.errors import UsageError
from benchmark.execute import CellResult, Workspace, run_cell
from benchmark.grid import Cell
from benchmark.tracking import Tracker
from methods.vae_cache import VAECache

DEFAULT_STORAGE = "sqlite:///mlruns/optuna.db"
SQLITE_TIMEOUT_S = 60
optuna.logging.set_verbosity(optuna.logging.WARNING)
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
warnings.filterwarnings("ignore", category=FutureWarning, module="optuna")
log = logging.getLogger(__name__)


class _QuietInterrupt(logging.Filter):
    """Ctrl-C or SIGTERM inside a cell makes Optuna log the KeyboardInterrupt's traceback and a
    'failed with value None' line; the CLI already says what happened and how to resume."""

    def __init__(self) -> None:
        super().__init__()
        self.interrupted = False

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], KeyboardInterrupt):
            self.interrupted = True
            return False
        return not (self.interrupted and "failed with value None" in record.getMessage())


for _handler in logging.getLogger("optuna").handlers:  # set_verbosity above created them
    _handler.addFilter(_QuietInterrupt())


class CellFailed(Exception):
    """A cell raised; it is recorded as a FAILED run and the grid goes on."""


def heartbeat_seconds() -> int:
    return max(1, int(os.environ.get("BENCHMARK_HEARTBEAT_SECONDS", "10")))


def open_storage(url: str, tracker: Tracker | None = None) -> RDBStorage:
    """Optuna storage with heartbeats; a stale trial's MLflow run is closed, the cell retried."""
    engine_kwargs = {}
    if url.startswith("sqlite:///"):
        Path(url[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
        engine_kwargs = {"connect_args": {"timeout": SQLITE_TIMEOUT_S}}
    retry = RetryHeartbeatStaleTrialCallback(max_retry=3)

    def on_stale(study: optuna.Study, trial: FrozenTrial) -> None:
        run_id = trial.user_attrs.get("mlflow_run_id")
        if tracker is not None and run_id:
            tracker.set_tags(run_id, {"error": "worker died (heartbeat lost); cell retried"})
            tracker.finish(run_id, "KILLED")
        retry(study, trial)

    beat = heartbeat_seconds()
    try:
        return RDBStorage(
            url,
            engine_kwargs=engine_kwargs,
            heartbeat_interval=beat,
            grace_period=3 * beat,
            heartbeat_stale_trial_callback=on_stale,
        )
    except Exception as error:
        raise UsageError(f"Cannot open Optuna storage {url!r}: {error}") from None


def study_name(experiment: str, cells: list[Cell]) -> str:
    """Same grid, same study: workers on other machines running the same command join it."""
    digest = hashlib.sha256("\n".join(sorted(c.key for c in cells)).encode()).hexdigest()[:12]
    return f"grid-{experiment}-{digest}"


@dataclass(frozen=True)
class RunOptions:
    tracking_uri: str
    experiment: str
    storage: str
    data_dir: str | None
    device: str
    vae_cache_dir: str
    parent_run_id: str
    progress: bool = True


def enqueue(study: optuna.Study, cells: list[Cell], tracker: Tracker, force: bool) -> list[Cell]:
    """Queue the cells that are neither done in MLflow nor already queued or running."""
    done = set() if force else tracker.finished_cell_keys()
    active = {
        t.user_attrs.get("cell_key")
        for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING, TrialState.RUNNING))
    }
    pending = [c for c in cells if c.key not in done]
    for cell in pending:
        if cell.key not in active:
            study.enqueue_trial(
                {}, user_attrs={"cell": cell.to_json(), "cell_key": cell.key, "force": force}
            )
    return pending


def _log_result(tracker: Tracker, run_id: str, cell: Cell, result: CellResult) -> None:
    tracker.log_metrics(
        run_id,
        {
            **result.scores,
            "fit_seconds": result.fit_seconds,
            "vae_train_seconds": result.vae_train_seconds,
        },
    )
    with tempfile.TemporaryDirectory() as tmp:
        csv = Path(tmp) / "confusion_matrix.csv"
        np.savetxt(csv, result.confusion, fmt="%d", delimiter=",")
        png = plots.confusion_png(result.confusion, Path(tmp) / "confusion_matrix.png", cell.label)
        for path in (csv, png):
            tracker.log_artifact(run_id, path)
        for config, model in result.trained_vaes:
            weights = Path(tmp) / f"vae_z{config.latent_dim}_state_dict.pt"
            torch.save(model.state_dict(), weights)
            tracker.log_artifact(run_id, weights, "vae")


def make_objective(tracker: Tracker, ws: Workspace, options: RunOptions):
    def objective(trial: optuna.Trial) -> float:
        if "cell" not in trial.user_attrs:  # queue emptied under us: not a grid cell
            raise optuna.TrialPruned("no cell queued")
        cell = Cell.from_json(trial.user_attrs["cell"])
        tracker.close_orphans(cell.key)  # a kill between start_run and set_user_attr leaves one
        if not trial.user_attrs.get("force") and tracker.has_finished(cell.key):
            raise optuna.TrialPruned("cell already finished elsewhere")
        run_id = tracker.start_run(
            cell.label,
            {"cell_key": cell.key, "param_source": cell.param_source},
            options.parent_run_id,
        )
        trial.set_user_attr("mlflow_run_id", run_id)
        tracker.log_params(
            run_id,
            {
                "method": cell.method,
                "dataset": cell.dataset,
                "n_labels": cell.n_labels,
                "seed": cell.seed,
                "subset": cell.subset,
                "device": str(ws.device),
                **cell.param_dict,
            },
        )
        status = "KILLED"
        try:
            result = run_cell(cell, ws, lambda k, v, s: tracker.log_metric(run_id, k, v, s))
            _log_result(tracker, run_id, cell, result)
            status = "FINISHED"
            return result.scores["test_accuracy"]
        except Exception as error:
            status = "FAILED"
            message = f"{type(error).__name__}: {error}"
            tracker.set_tags(run_id, {"error": message, "traceback": traceback.format_exc()})
            raise CellFailed(f"{cell.label}: {message}") from error
        finally:  # KeyboardInterrupt leaves status KILLED; the cell is redone next time
            tracker.finish(run_id, status)

    return objective


def work(options: RunOptions, study_name_: str, bar: tqdm | None = None) -> None:
    """Pop and run cells until the queue is empty and no other worker holds one."""
    tracker = Tracker(options.tracking_uri, options.experiment)
    study = optuna.load_study(
        study_name=study_name_, storage=open_storage(options.storage, tracker)
    )
    ws = Workspace(
        options.data_dir,
        resolve_device(options.device),
        VAECache(options.vae_cache_dir),
        options.progress,
    )
    objective = make_objective(tracker, ws, options)

    def advance(study: optuna.Study, trial: FrozenTrial) -> None:
        if bar is not None and trial.state != TrialState.PRUNED:
            bar.update(1)

    while True:
        waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
        if waiting:
            if bar is not None:
                bar.set_postfix_str(Cell.from_json(waiting[0].user_attrs["cell"]).label)
            study.optimize(objective, n_trials=1, catch=(CellFailed,), callbacks=[advance])
            continue
        if not study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            return
        optuna.storages.fail_stale_trials(study)  # a dead worker's cell comes back as WAITING
        time.sleep(1.0)


def _worker_main(options: RunOptions, name: str) -> None:
    torch.set_num_threads(1)
    work(options, name)


def run_workers(options: RunOptions, name: str, n_workers: int, total: int) -> None:
    bar = tqdm(total=total, desc="cells", unit="cell", disable=not options.progress)
    if n_workers == 1:
        work(options, name, bar)
        bar.close()
        return
    quiet = RunOptions(**{**options.__dict__, "progress": False})
    context = mp.get_context("spawn")
    procs = [context.Process(target=_worker_main, args=(quiet, name)) for _ in range(n_workers)]
    for p in procs:
        p.start()
    study = optuna.load_study(study_name=name, storage=open_storage(options.storage))
    finished = (TrialState.COMPLETE, TrialState.FAIL)
    before = len(study.get_trials(deepcopy=False, states=finished))
    try:
        while any(p.is_alive() for p in procs):
            done = len(study.get_trials(deepcopy=False, states=finished)) - before
            bar.n = min(total, done)
            bar.refresh()
            time.sleep(2.0)
    finally:
        for p in procs:
            p.join(timeout=1) if not p.is_alive() else p.terminate()
        bar.close()


def launch(
    cells: list[Cell], options: RunOptions, tracker: Tracker, n_workers: int, force: bool
) -> list[str]:
    """Enqueue the grid, run the workers, and return the failures of this invocation."""
    name = study_name(options.experiment, cells)
    storage = open_storage(options.storage, tracker)
    study = optuna.create_study(
        study_name=name, storage=storage, direction="maximize", load_if_exists=True
    )
    pending = enqueue(study, cells, tracker, force)
    skipped = len(cells) - len(pending)
    if skipped:
        print(f"{skipped} of {len(cells)} cells already have a FINISHED run; skipping them.")
    if pending:
        run_workers(options, name, n_workers, len(pending))
    failed = tracker.cell_runs("FAILED", parent_id=options.parent_run_id)
    return [f"{row.cell_key}: {row.error}" for row in failed.itertuples()]
