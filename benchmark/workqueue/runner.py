"""The grid as an Optuna queue: the launcher enqueues cells once, workers pop and run them.

Each cell is one Optuna trial in a persistent storage (SQLite on one machine, PostgreSQL for
several) and one MLflow child run; MLflow is the record of which cells are done. Optuna gives
the queue's persistence, its view in optuna-dashboard, and heartbeats: the trial of a worker
that died (even by kill -9) goes stale, its MLflow run is closed as KILLED and the cell is
enqueued again, so re-running the same command completes the grid.

What Optuna does not make safe under concurrency is held under `store_lock` (benchmark/locks.py:
an fcntl lock beside a SQLite file, an advisory lock on PostgreSQL): schema creation, enqueueing,
popping a trial (SQLite has no row locks: two workers popped the same trial), failing stale
trials, and the final "has another worker finished this cell?" check before a run is marked
FINISHED. So every cell ends with exactly one FINISHED run, whatever the number of launchers,
workers and machines, and a worker that stalled past its heartbeat and then woke up either
records its result (if it is first) or discards it, without crashing.
"""

from __future__ import annotations

import _thread
import contextlib
import hashlib
import logging
import multiprocessing as mp
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import optuna
import torch
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

import methods
from benchmark import provenance, runtime
from benchmark.data import scoring
from benchmark.devices import resolve_device
from benchmark.errors import UsageError
from benchmark.reports import plots
from benchmark.study.execute import CellResult, Workspace, run_cell
from benchmark.study.grid import Cell
from benchmark.study.plan import Plan
from benchmark.study.progress import GridProgress
from benchmark.tracking.client import Tracker
from benchmark.vaes.cache import VAECache
from benchmark.vaes.runs import log_vae_run
from benchmark.vaes.share import SharedVAEs
from benchmark.workqueue.locks import store_lock

SQLITE_TIMEOUT_S = 60
log = logging.getLogger(__name__)


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
        with store_lock(url):  # schema creation: one launcher at a time
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


def pending_cells(
    cells: list[Cell], tracker: Tracker, force: bool, archived: dict[str, set[str]] | None = None
) -> tuple[list[Cell], int]:
    """The cells without a FINISHED run by today's version, in the store or in the run
    archives (`archived`: cell key -> versions), and how many of them have one made by another
    version (a fix since then could change their numbers, so they run again)."""
    if force:
        return list(cells), 0
    done = tracker.finished_cells()
    for key, versions in (archived or {}).items():
        done.setdefault(key, set()).update(versions)
    pending = [c for c in cells if c.code not in done.get(c.key, ())]
    return pending, sum(1 for c in pending if done.get(c.key))


QUEUE_PURPOSE = (
    "work queue of `run`, not an optimisation: one trial per cell, its identity in the trial's"
    " parameters and user attributes; a trial's value is the cell's wall-clock seconds, the"
    " cell's scores are in MLflow"
)
QUEUE_LOCK = "queue"  # enqueue, pop and stale-trial failing: one process at a time
FINISH_LOCK = "finish"  # "did another worker finish this cell?" and marking ours FINISHED


def _identity(cell: Cell) -> dict[str, object]:
    return {
        "method": cell.method,
        "dataset": cell.dataset,
        "n_labels": cell.n_labels,
        "seed": cell.seed,
    }


def enqueue(study: optuna.Study, pending: list[Cell], force: bool) -> None:
    """Queue the pending cells that are not already queued or running. The caller holds the
    queue lock, so launchers started together queue each cell once.

    A cell still queued by an earlier launch carries that launch's code version, which would
    stamp the run (and name its checkpoint folder) with code that did not produce it: such a
    trial is retired (FAIL) and the cell queued afresh with today's."""
    trials = study.get_trials(deepcopy=False, states=(TrialState.WAITING, TrialState.RUNNING))
    running = {t.user_attrs.get("cell_key") for t in trials if t.state == TrialState.RUNNING}
    waiting = {t.user_attrs.get("cell_key"): t for t in trials if t.state == TrialState.WAITING}
    for cell in pending:
        queued = waiting.get(cell.key)
        if queued is not None and queued.user_attrs.get("cell") != cell.to_json():
            study._storage.set_trial_state_values(queued._trial_id, TrialState.FAIL)
            queued = None
        if cell.key not in running and queued is None:
            study.enqueue_trial(
                _identity(cell),
                user_attrs={
                    "cell": cell.to_json(),
                    "cell_key": cell.key,
                    "force": force,
                    "settings": cell.settings,
                },
            )


def _suggest_identity(trial: optuna.Trial, cell: Cell, choices: dict[str, list[str]]) -> None:
    """Record the cell's identity as the trial's parameters, so optuna-dashboard shows which
    cell each trial ran (their values were fixed when it was enqueued)."""
    for name in ("method", "dataset"):  # `launch` fixed the choices when it made the study
        trial.suggest_categorical(name, choices[name])
    trial.suggest_int("n_labels", cell.n_labels, cell.n_labels)
    trial.suggest_int("seed", cell.seed, cell.seed)


def _log_result(
    tracker: Tracker,
    run_id: str,
    cell: Cell,
    result: CellResult,
    ws: Workspace,
    parent_id: str | None,
) -> None:
    if result.vae_keys:  # which cached VAE(s) the cell's numbers were computed on
        tracker.set_tags(run_id, {"vae_cache_keys": ",".join(result.vae_keys)})
    if result.trained_vaes:  # this run trained them: find it by this tag
        keys = ",".join(key for key, _ in result.trained_vaes)
        tracker.set_tags(run_id, {"vae_trained_keys": keys})
    tracker.log_metrics(
        run_id,
        {
            **scoring.as_logged(result.scores),
            "fit_seconds": result.fit_seconds,
            "vae_train_seconds": result.vae_train_seconds,
        },
    )
    tracker.set_tags(run_id, {"mlflow.note.content": _description(cell, result)})
    tracker.log_datasets(
        run_id,
        [
            (f"{cell.dataset}-train", cell.fingerprint, result.data_source, "train"),
            (f"{cell.dataset}-test", result.test_fingerprint, result.data_source, "test"),
        ],
    )
    with tempfile.TemporaryDirectory() as tmp:
        csv = Path(tmp) / "confusion_matrix.csv"
        header = ",".join(result.class_names)
        np.savetxt(csv, result.confusion, fmt="%d", delimiter=",", header=header, comments="")
        png = plots.confusion_png(
            result.confusion, Path(tmp) / "confusion_matrix.png", cell.label, result.class_names
        )
        labeled = Path(tmp) / "labeled_indices.csv"
        if result.labeled is not None:  # rows of the training IDX file that carried a label
            np.savetxt(labeled, result.labeled, fmt="%d", header="train_index", comments="")
        for path in (csv, png, labeled):
            if path.exists():
                tracker.log_artifact(run_id, path)

    vae_runs = []
    for key in result.vae_keys:
        trained = dict(result.trained_vaes).get(key)
        if trained is not None:  # trained for this cell: its own run, charged its own time
            x, y, fingerprint = ws.train_arrays(cell.dataset, cell.subset)
            try:
                vae_runs.append(
                    log_vae_run(
                        tracker,
                        parent_id,
                        key,
                        trained,
                        cell.dataset,
                        cell.seed,
                        fingerprint,
                        x,
                        y,
                        ws.dataset(cell.dataset).spec.image_shape,
                    )
                )
            except Exception as error:  # the cell's score stands; say what is missing
                log.warning("could not log the VAE run of %s: %s", key, error)
                tracker.set_tags(run_id, {"vae_run_error": f"{type(error).__name__}: {error}"})
        else:
            found = tracker.find_run({"kind": "vae", "vae_cache_key": key})
            vae_runs.append(found or "not in this store")
    if vae_runs:
        tracker.set_tags(run_id, {"vae_run_ids": ",".join(vae_runs)})


def _description(cell: Cell, result: CellResult) -> str:
    """The run page's description: the score first, then what was run."""
    scores = scoring.as_logged(result.scores)
    return (
        f"**Test accuracy {scores['accuracy']:.2f} %** (macro-F1 {scores['macro_f1']:.2f} %):"
        f" `{cell.method}` on {cell.dataset}, {cell.n_labels} labels, seed {cell.seed};"
        f" settings: {cell.settings}; version {cell.code}."
    )


def queued_cell(trial: optuna.Trial) -> Cell:
    """The trial's cell, stamped with the version of the process that will run it: the queue
    may hold it from a launch made with other code, or from another machine's."""
    cell = Cell.from_json(trial.user_attrs["cell"])
    return replace(cell, code=provenance.cell_version(methods.get(cell.method)))


def make_objective(tracker: Tracker, ws: Workspace, options: RunOptions):
    """The work of one popped trial: run its cell in a new MLflow run and return its seconds."""

    def objective(trial: optuna.Trial) -> float:
        if "cell" not in trial.user_attrs:  # queue emptied under us: not a grid cell
            raise optuna.TrialPruned("no cell queued")
        cell = queued_cell(trial)
        force = bool(trial.user_attrs.get("force"))
        _suggest_identity(trial, cell, trial.study.user_attrs["choices"])
        tracker.close_orphans(cell.key)  # a kill between start_run and set_user_attr leaves one
        if not force and tracker.has_finished(cell.key, cell.code):
            raise optuna.TrialPruned("cell already finished elsewhere")
        start = time.perf_counter()
        run_id = tracker.start_run(
            cell.label,
            {
                "kind": "cell",
                "cell_key": cell.key,
                "code_version": cell.code,
                "cell_params": cell.params,
                "libraries": provenance.libraries(),
                "settings": cell.settings,
                "data_fingerprint": cell.fingerprint,
                "param_source": cell.param_source,
            },
            options.parent_run_id,
        )
        trial.set_user_attr("mlflow_run_id", run_id)
        tracker.log_params(
            run_id,
            {**_identity(cell), "subset": cell.subset, "device": str(ws.device), **cell.param_dict},
        )
        status = "KILLED"
        try:
            with tracker.system_metrics(run_id), tempfile.TemporaryDirectory() as tmp:
                log_metric = lambda k, v, s: tracker.log_metric(run_id, k, v, s)  # noqa: E731
                result = run_cell(cell, ws, log_metric, Path(tmp))
                for path in result.artifacts:
                    tracker.log_artifact(run_id, path)
            _log_result(tracker, run_id, cell, result, ws, options.parent_run_id)
            status = _close_once(tracker, options.storage, run_id, cell, force)
            return time.perf_counter() - start  # a work queue: the cell's scores are in MLflow
        except Exception as error:
            status = "FAILED"
            message = f"{type(error).__name__}: {error}"
            tracker.set_tags(run_id, {"error": message, "traceback": traceback.format_exc()})
            raise CellFailed(f"{cell.label}: {message}") from error
        finally:  # KeyboardInterrupt leaves status KILLED; the cell resumes next time
            if status != "FINISHED":
                tracker.finish(run_id, status)
            folder = ws.checkpoint_dir(cell)
            if status != "KILLED" and folder is not None:
                shutil.rmtree(folder, ignore_errors=True)

    return objective


def _close_once(tracker: Tracker, storage: str, run_id: str, cell: Cell, force: bool) -> str:
    """Mark the run FINISHED unless another worker finished the cell first; returns the status
    the run must end with. Under the finish lock, so two copies of a cell (a stalled worker
    whose trial was handed on, woken up) never both end FINISHED."""
    with store_lock(storage, FINISH_LOCK):
        if not force and tracker.has_finished(cell.key, cell.code):
            tracker.set_tags(
                run_id, {"error": "duplicate: another worker finished this cell first"}
            )
            return "KILLED"
        if tracker.status(run_id) != "RUNNING":  # closed as dead while this worker was stalled
            tracker.delete_tag(run_id, "error")
            tracker.set_tags(
                run_id,
                {
                    "note": "its worker stalled past the heartbeat grace period and the cell was"
                    " handed on; this run finished first, so it is the cell's record"
                },
            )
        tracker.finish(run_id, "FINISHED")
        return "FINISHED"


@contextlib.contextmanager
def _heartbeat(storage: RDBStorage, trial_id: int) -> Iterator[None]:
    """Beat for a popped trial while its cell runs, as `Study.optimize` would."""
    stop = threading.Event()

    def beat() -> None:
        while True:
            try:
                storage.record_heartbeat(trial_id)
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


def _pop(study: optuna.Study, storage_url: str) -> optuna.Trial | None:
    """The next queued trial, now RUNNING and ours alone; None when none is queued."""
    with store_lock(storage_url, QUEUE_LOCK):
        optuna.storages.fail_stale_trials(study)  # as Study.optimize does before each trial
        if not study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
            return None
        with warnings.catch_warnings():  # "heartbeat ... with Study.optimize": see _heartbeat
            warnings.filterwarnings("ignore", "Heartbeat of storage", UserWarning)
            return study.ask()


def run_trial(study: optuna.Study, trial: optuna.Trial, objective) -> TrialState:
    """Run a popped trial and tell its end, with heartbeats meanwhile. A trial failed by
    another worker while this one was stalled is not told again (Optuna would raise)."""
    value, state = None, TrialState.FAIL
    try:
        with _heartbeat(study._storage, trial._trial_id):
            try:
                value, state = objective(trial), TrialState.COMPLETE
            except optuna.TrialPruned:
                state = TrialState.PRUNED
            except CellFailed as error:
                log.warning("cell failed: %s", error)
    finally:  # also on Ctrl-C: the trial ends FAIL, the cell is queued again by the next run
        study.tell(trial, value, state=state, skip_if_finished=True)
    return state


def _give_heartbeat_once(study: optuna.Study, seen: set[int]) -> None:
    """Give each RUNNING trial one heartbeat, once per process.

    A worker interrupted between popping a trial and its first heartbeat (Ctrl-C or kill -9 in
    that instant) leaves a RUNNING trial that Optuna never finds stale, and every later run
    would wait on it forever. One heartbeat makes it go stale like any dead worker's (after the
    grace period); for a live worker it is just one more beat.
    """
    storage = study._storage
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if trial._trial_id not in seen:
            seen.add(trial._trial_id)
            storage.record_heartbeat(trial._trial_id)


def work(
    options: RunOptions,
    study_name_: str,
    progress: GridProgress | None = None,
    on_change: Callable[[], None] | None = None,
) -> None:
    """Pop and run cells until the queue is empty and no other worker holds one."""
    runtime.quiet_optuna()
    tracker = Tracker(options.tracking_uri, options.experiment)
    study = optuna.load_study(
        study_name=study_name_, storage=open_storage(options.storage, tracker)
    )
    ws = Workspace(
        options.data_dir,
        resolve_device(options.device),
        VAECache(
            options.vae_cache_dir,
            shared=SharedVAEs(tracker, options.storage, options.parent_run_id),
        ),
        options.progress and sys.stderr.isatty(),  # epoch bars only where they redraw
        checkpoint_root=Path(options.vae_cache_dir).parent / "checkpoints",
    )
    objective = make_objective(tracker, ws, options)
    seen: set[int] = set()
    while True:
        trial = _pop(study, options.storage)
        if trial is not None:
            cell_json = trial.user_attrs.get("cell")
            if progress is not None and cell_json:
                progress.cell_started(Cell.from_json(cell_json).label)
            state = run_trial(study, trial, objective)
            if state != TrialState.PRUNED:
                if progress is not None:
                    progress.cell_finished(trial.user_attrs.get("cell_key", ""))
                if on_change is not None:
                    on_change()
            continue
        if not study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            return
        _give_heartbeat_once(study, seen)
        time.sleep(1.0)  # the next _pop fails the trials gone stale: their cells come back


def _die_with_parent() -> None:
    """Linux: the kernel sends this worker SIGTERM when its launcher dies, even by kill -9, so
    no orphan keeps working (and its cell's run is closed as KILLED, as after Ctrl-C)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: workers finish their cell and exit
        return
    # A launcher killed while this worker was still starting died before the request above,
    # so the kernel will never send the signal: this worker was adopted, and must not work on.
    parent = mp.parent_process()
    if parent is not None and os.getppid() != parent.pid:
        sys.exit(0)


def _worker_main(options: RunOptions, name: str) -> None:
    _die_with_parent()
    runtime.configure()
    _install_interrupts()
    torch.set_num_threads(1)
    try:
        work(options, name)
    except KeyboardInterrupt:  # stopped by the launcher (or Ctrl-C): the cell's run is closed
        sys.exit(130)  # already; the launcher tells the user what to do, not a traceback


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _install_interrupts() -> None:
    """SIGTERM raises KeyboardInterrupt in this worker. Should it land inside a finaliser (a
    `__del__` or weakref callback, e.g. SQLAlchemy's during garbage collection), Python cannot
    raise it there: it would print "Exception ignored ... Traceback" and carry on. The hook
    below prints nothing and has a helper thread deliver it again 50 ms later, when the main
    thread is out of the finaliser (if not, the same happens once more)."""
    signal.signal(signal.SIGTERM, _interrupt)
    default = sys.unraisablehook

    def redeliver() -> None:
        timer = threading.Timer(0.05, _thread.interrupt_main, args=(signal.SIGTERM,))
        timer.daemon = True
        timer.start()

    def hook(unraisable: sys.UnraisableHookArgs) -> None:
        if not isinstance(unraisable.exc_value, KeyboardInterrupt):
            default(unraisable)
            return
        try:
            redeliver()
        except KeyboardInterrupt:  # a second one landed in here: it is delivered later too
            redeliver()

    sys.unraisablehook = hook


def run_workers(
    options: RunOptions,
    name: str,
    n_workers: int,
    estimates: dict[str, float],
    on_change: Callable[[], None] | None = None,
) -> None:
    """Run the queue with n_workers processes; the progress line weighs cells by cost."""
    parallel = min(n_workers, os.cpu_count() or 1)
    progress = GridProgress(estimates, enabled=options.progress, parallel=parallel)
    try:
        if n_workers == 1:
            work(options, name, progress, on_change)
            return
        _run_processes(options, name, n_workers, progress, on_change)
    finally:
        progress.close()


def _run_processes(
    options: RunOptions,
    name: str,
    n_workers: int,
    progress: GridProgress,
    on_change: Callable[[], None] | None,
) -> None:
    quiet = RunOptions(**{**options.__dict__, "progress": False})
    context = mp.get_context("spawn")
    procs = [context.Process(target=_worker_main, args=(quiet, name)) for _ in range(n_workers)]
    for p in procs:
        p.start()
    study = optuna.load_study(study_name=name, storage=open_storage(options.storage))
    finished = (TrialState.COMPLETE, TrialState.FAIL)
    before = {t.number for t in study.get_trials(deepcopy=False, states=finished)}
    seen_done = 0
    try:
        while any(p.is_alive() for p in procs):
            trials = study.get_trials(deepcopy=False)
            done = [
                t.user_attrs.get("cell_key", "")
                for t in trials
                if t.state in finished and t.number not in before
            ]
            running = [
                Cell.from_json(t.user_attrs["cell"]).label
                for t in trials
                if t.state == TrialState.RUNNING and "cell" in t.user_attrs
            ]
            progress.current = "; ".join(running)
            progress.set_done(done)
            if len(done) != seen_done and on_change is not None:
                seen_done = len(done)
                on_change()
            time.sleep(2.0)
    finally:
        for p in procs:
            p.join(timeout=1) if not p.is_alive() else p.terminate()
    crashed = [f"worker {i} (exit code {p.exitcode})" for i, p in enumerate(procs) if p.exitcode]
    if crashed:
        print(f"warning: {', '.join(crashed)} ended abnormally; see above.", file=sys.stderr)


def launch(
    cells: list[Cell],
    options: RunOptions,
    tracker: Tracker,
    n_workers: int,
    force: bool,
    plan: Plan | None = None,
    on_change: Callable[[], None] | None = None,
    archived: dict[str, set[str]] | None = None,
) -> list[str]:
    """Enqueue the grid (in the plan's order: cheapest first), run the workers, and return the
    failures of this invocation. `on_change` is called after each finished cell."""
    runtime.quiet_optuna()
    name = study_name(options.experiment, cells)
    storage = open_storage(options.storage, tracker)
    with store_lock(options.storage, QUEUE_LOCK):  # launchers started together: one at a time
        study = optuna.create_study(
            study_name=name, storage=storage, direction="minimize", load_if_exists=True
        )
        if "choices" not in study.user_attrs:  # the trials' parameter space, fixed once
            study.set_user_attr("purpose", QUEUE_PURPOSE)
            study.set_user_attr(
                "choices",
                {
                    "method": sorted({c.method for c in cells}),
                    "dataset": sorted({c.dataset for c in cells}),
                },
            )
        # what is pending is read again under the lock: another launcher may have run cells
        # since the plan was made, and each cell is queued once
        pending, _ = pending_cells(
            cells if plan is None else plan.pending, tracker, force, archived
        )
        estimates = {c.key: 1.0 for c in pending} if plan is None else plan.seconds
        enqueue(study, pending, force)
    if pending:
        run_workers(options, name, n_workers, {c.key: estimates[c.key] for c in pending}, on_change)
    failed = tracker.cell_runs("FAILED", parent_id=options.parent_run_id)
    failures = [f"{row.cell_key}: {row.error}" for row in failed.itertuples()]
    if pending:  # a dead worker, a retry budget spent: nothing may end silently unfinished
        done, _ = pending_cells(pending, tracker, False, archived)
        failed_keys = set(failed["cell_key"]) if not failed.empty else set()
        failures += [
            f"{c.key}: not finished (no FINISHED run; run the same command again)"
            for c in done
            if c.key not in failed_keys
        ]
    return failures
