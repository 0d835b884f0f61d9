"""The grid as an Optuna queue: the launcher enqueues cells once, workers pop and run them.

Each cell is one Optuna trial in a persistent storage (SQLite on one machine, PostgreSQL for
several) and one MLflow child run; MLflow and the run archive are the record of which cells
are done. Optuna gives the queue's persistence, its view in optuna-dashboard, and heartbeats:
the trial of a worker that died (even by kill -9) goes stale, its MLflow run is closed as
KILLED and the cell is enqueued again, so re-running the same command completes the grid.

What Optuna does not make safe under concurrency is held under `store_lock` (locks.py):
schema creation, enqueueing, popping a trial (SQLite has no row locks: two workers popped the
same trial) and failing stale trials. Trials are addressed through the storage's public API
(study id from the study's name, trial id from its number), never Optuna's private fields.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import threading
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import BaseStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

from benchmark.errors import UsageError
from benchmark.options import sqlite_path
from benchmark.study.grid import Cell
from benchmark.workqueue.locks import store_lock

SQLITE_TIMEOUT_S = 60
QUEUE_LOCK = "queue"  # enqueue, pop and stale-trial failing: one process at a time
QUEUE_PURPOSE = (
    "work queue of `run`, not an optimisation: one trial per cell, its identity in the trial's"
    " parameters and user attributes; a trial's value is the cell's wall-clock seconds, the"
    " cell's scores are in MLflow"
)
HANDED_ON = "trial %s was handed on while this worker stalled; the cell is queued again"
log = logging.getLogger(__name__)


class CellFailed(Exception):
    """A cell raised; it is recorded as a FAILED run and the grid goes on."""


def heartbeat_seconds() -> int:
    return max(1, int(os.environ.get("BENCHMARK_HEARTBEAT_SECONDS", "10")))


def open_storage(url: str, on_stale: Callable[[FrozenTrial], None] | None = None) -> RDBStorage:
    """Optuna storage with heartbeats; a stale trial's cell is retried after `on_stale`."""
    engine_kwargs: dict[str, Any] = {}
    db = sqlite_path(url)
    if db is not None:
        db.parent.mkdir(parents=True, exist_ok=True)
        engine_kwargs = {"connect_args": {"timeout": SQLITE_TIMEOUT_S}}
    retry = RetryHeartbeatStaleTrialCallback(max_retry=3)

    def stale(study: optuna.Study, trial: FrozenTrial) -> None:
        if on_stale is not None:
            on_stale(trial)
        retry(study, trial)

    beat = heartbeat_seconds()
    try:
        with store_lock(url):  # schema creation: one launcher at a time
            return RDBStorage(
                url,
                engine_kwargs=engine_kwargs,
                heartbeat_interval=beat,
                grace_period=3 * beat,
                heartbeat_stale_trial_callback=stale,
            )
    except Exception as error:
        raise UsageError(f"Cannot open Optuna storage {url!r}: {error}") from None


def study_name(experiment: str, cells: list[Cell]) -> str:
    """Same grid, same study: workers on other machines running the same command join it."""
    digest = hashlib.sha256("\n".join(sorted(c.key for c in cells)).encode()).hexdigest()[:12]
    return f"grid-{experiment}-{digest}"


def cell_key(trial: FrozenTrial | optuna.Trial) -> str:
    """The key of the cell a queued trial runs; empty for a trial that is not a cell."""
    return str(trial.user_attrs.get("cell_key", ""))


def identity(cell: Cell) -> dict[str, object]:
    return {
        "method": cell.method,
        "dataset": cell.dataset,
        "n_labels": cell.n_labels,
        "seed": cell.seed,
    }


class CellQueue:
    """One grid's queue: an Optuna study on a storage this process holds. `url` names the
    storage's lock (for an in-memory storage, any name: locks are then per process)."""

    def __init__(self, storage: BaseStorage, url: str, name: str) -> None:
        self.storage, self.url, self.name = storage, url, name
        self.study = optuna.load_study(study_name=name, storage=storage)
        self.study_id = storage.get_study_id_from_name(name)

    @classmethod
    def create(cls, storage: BaseStorage, url: str, name: str, cells: list[Cell]) -> CellQueue:
        """The grid's study, made once; its trials' parameter space is fixed by the first."""
        study = optuna.create_study(
            study_name=name, storage=storage, direction="minimize", load_if_exists=True
        )
        if "choices" not in study.user_attrs:
            study.set_user_attr("purpose", QUEUE_PURPOSE)
            choices = {
                "method": sorted({c.method for c in cells}),
                "dataset": sorted({c.dataset for c in cells}),
            }
            study.set_user_attr("choices", choices)
        return cls(storage, url, name)

    def trial_id(self, number: int) -> int:
        return self.storage.get_trial_id_from_study_id_trial_number(self.study_id, number)

    def trials(self, *states: TrialState) -> list[FrozenTrial]:
        return self.study.get_trials(deepcopy=False, states=states or None)

    def enqueue(self, pending: list[Cell], force: bool) -> None:
        """Queue the pending cells that are not running, in `pending`'s order (workers pop the
        oldest waiting trial first). The caller holds the queue lock, so launchers started
        together queue each cell once.

        Trials still waiting from an earlier launch keep their place when that order holds.
        Otherwise (a cell interrupted since then now resumes first, or a trial carries an
        earlier launch's code version, which would stamp the run and name its checkpoint folder
        with code that did not produce it) they are retired (FAIL) and queued afresh."""
        trials = self.trials(TrialState.WAITING, TrialState.RUNNING)
        running = {cell_key(t) for t in trials if t.state == TrialState.RUNNING}
        waiting = sorted(
            (t for t in trials if t.state == TrialState.WAITING), key=lambda t: t.number
        )
        wanted = [c for c in pending if c.key not in running]
        keys = {c.key for c in wanted}
        queued = [t for t in waiting if cell_key(t) in keys]  # in pop order
        head = [c.to_json() for c in wanted[: len(queued)]]
        if [t.user_attrs.get("cell") for t in queued] == head:
            wanted = wanted[len(queued) :]
        else:
            for trial in queued:
                self.storage.set_trial_state_values(self.trial_id(trial.number), TrialState.FAIL)
        for cell in wanted:
            attrs = {"cell": cell.to_json(), "cell_key": cell.key, "force": force}
            self.study.enqueue_trial(
                identity(cell), user_attrs={**attrs, "settings": cell.settings}
            )

    def pop(self) -> optuna.Trial | None:
        """The next queued trial, now RUNNING and ours alone; None when none is queued."""
        with store_lock(self.url, QUEUE_LOCK):
            optuna.storages.fail_stale_trials(self.study)  # as Study.optimize does
            if not self.trials(TrialState.WAITING):
                return None
            with warnings.catch_warnings():  # "heartbeat ... with Study.optimize": see beating
                warnings.filterwarnings("ignore", "Heartbeat of storage", UserWarning)
                return self.study.ask()

    def run(self, trial: optuna.Trial, objective: Callable[[optuna.Trial], float]) -> TrialState:
        """Run a popped trial and tell its end, with heartbeats meanwhile. A trial failed by
        another worker while this one was stalled is not told again (Optuna would raise), and
        an objective that finds it so (writing to it raises) ends quietly: the cell is queued
        again, and the finish lock keeps one record per cell."""
        value, state = None, TrialState.FAIL
        try:
            with self.beating(self.trial_id(trial.number)):
                try:
                    value, state = objective(trial), TrialState.COMPLETE
                except optuna.TrialPruned:
                    state = TrialState.PRUNED
                except CellFailed as error:
                    log.warning("cell failed: %s", error)
                except UpdateFinishedTrialError:
                    log.warning(HANDED_ON, trial.number)
        finally:  # also on Ctrl-C: the trial ends FAIL, the cell is queued again by the next run
            self.study.tell(trial, value, state=state, skip_if_finished=True)
        return state

    @contextlib.contextmanager
    def beating(self, trial_id: int) -> Iterator[None]:
        """Beat for a popped trial while its cell runs, as `Study.optimize` would."""
        stop = threading.Event()

        def beat() -> None:
            while True:
                try:
                    self.storage.record_heartbeat(trial_id)
                except Exception as error:  # a busy store: the next beat will do
                    log.warning("heartbeat of trial %s not recorded: %s", trial_id, error)
                if stop.wait(heartbeat_seconds()):
                    return

        thread = threading.Thread(target=beat, name=f"heartbeat-{trial_id}", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()

    def beat_running_once(self, seen: set[int]) -> None:
        """Give each RUNNING trial one heartbeat, once per process.

        A worker interrupted between popping a trial and its first heartbeat (Ctrl-C or kill -9
        in that instant) leaves a RUNNING trial that Optuna never finds stale, and every later
        run would wait on it forever. One heartbeat makes it go stale like any dead worker's
        (after the grace period); for a live worker it is just one more beat.
        """
        for trial in self.trials(TrialState.RUNNING):
            trial_id = self.trial_id(trial.number)
            if trial_id not in seen:
                seen.add(trial_id)
                self.storage.record_heartbeat(trial_id)
