"""One popped cell as one MLflow run: run it, log what it measured, close the run once.

The objective a worker gives the queue: it opens a child run of the grid's parent, runs the
cell (benchmark.study.execute), logs scores, curves, pictures and the VAEs it trained, and
marks the run FINISHED under the finish lock, unless another worker finished the cell first
(a stalled worker whose trial was handed on): every cell ends with exactly one FINISHED run.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
import traceback
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import optuna
from optuna.exceptions import UpdateFinishedTrialError

import methods
from benchmark import provenance, runtime
from benchmark.data import scoring
from benchmark.reports import plots
from benchmark.study.execute import CellResult, Workspace, run_cell
from benchmark.study.grid import Cell
from benchmark.tracking.cells import carry_curves, close_orphans, has_finished
from benchmark.tracking.client import Tracker
from benchmark.vaes.runs import VAEData, log_vae_run
from benchmark.workqueue.locks import store_lock
from benchmark.workqueue.queue import HANDED_ON, CellFailed, identity
from methods.training import epochs_done, loop_progress, share_done

FINISH_LOCK = "finish"  # "did another worker finish this cell?" and marking ours FINISHED
log = logging.getLogger(__name__)


def queued_cell(trial: optuna.Trial) -> Cell:
    """The trial's cell, stamped with the version of the process that will run it: the queue
    may hold it from a launch made with other code, or from another machine's."""
    cell = Cell.from_json(trial.user_attrs["cell"])
    return replace(cell, code=provenance.cell_version(methods.get(cell.method)))


def suggest_identity(trial: optuna.Trial, cell: Cell, choices: dict[str, list[str]]) -> None:
    """Record the cell's identity as the trial's parameters, so optuna-dashboard shows which
    cell each trial ran (their values were fixed when it was enqueued)."""
    for name in ("method", "dataset"):  # the study's choices were fixed when it was made
        trial.suggest_categorical(name, choices[name])
    trial.suggest_int("n_labels", cell.n_labels, cell.n_labels)
    trial.suggest_int("seed", cell.seed, cell.seed)


def note_run(trial: optuna.Trial, run_id: str) -> None:
    """Name the cell's MLflow run on its trial. A worker stalled past the grace period finds
    its trial failed and handed on: the cell still runs to its end here, and whichever copy
    finishes first is the cell's record (`_close_once`)."""
    try:
        trial.set_user_attr("mlflow_run_id", run_id)
    except UpdateFinishedTrialError:
        log.warning(HANDED_ON, trial.number)


def description(cell: Cell, result: CellResult) -> str:
    """The run page's description: the score first, then what was run."""
    scores = scoring.as_logged(result.scores)
    return (
        f"**Test accuracy {scores['accuracy']:.2f} %** (macro-F1 {scores['macro_f1']:.2f} %):"
        f" `{cell.method}` on {cell.dataset}, {cell.n_labels} labels, seed {cell.seed};"
        f" settings: {cell.settings}; version {cell.code}."
    )


@dataclass
class CellRunner:
    """Runs popped cells as MLflow runs under the grid's parent run."""

    tracker: Tracker
    ws: Workspace
    storage_url: str  # names the finish lock
    parent_run_id: str | None

    def __call__(self, trial: optuna.Trial) -> float:
        """The queue's objective: the cell's seconds (its scores are in MLflow)."""
        if "cell" not in trial.user_attrs:  # queue emptied under us: not a grid cell
            raise optuna.TrialPruned("no cell queued")
        cell = queued_cell(trial)
        force = bool(trial.user_attrs.get("force"))
        suggest_identity(trial, cell, trial.study.user_attrs["choices"])
        close_orphans(self.tracker, cell.key)  # a kill before set_user_attr leaves one
        if not force and has_finished(self.tracker, cell.key, cell.code):
            raise optuna.TrialPruned("cell already finished elsewhere")
        start = time.perf_counter()
        run_id = self._open(cell)
        status = "KILLED"
        try:
            note_run(trial, run_id)
            self._run(cell, run_id)
            status = self._close_once(run_id, cell, force)
            return time.perf_counter() - start
        except Exception as error:
            status = "FAILED"
            message = f"{type(error).__name__}: {error}"
            tags = {"error": message, "traceback": traceback.format_exc()}
            self.tracker.set_tags(run_id, tags)
            raise CellFailed(f"{cell.label}: {message}") from error
        finally:  # KeyboardInterrupt leaves status KILLED; the cell resumes next time
            if status != "FINISHED":
                self.tracker.finish(run_id, status)
            folder = self.ws.checkpoint_dir(cell)
            if status != "KILLED" and folder is not None:
                shutil.rmtree(folder, ignore_errors=True)

    def _open(self, cell: Cell) -> str:
        tags = {
            "kind": "cell",
            "cell_key": cell.key,
            "code_version": cell.code,
            "cell_params": cell.params,
            "libraries": provenance.libraries(),
            "denormals": runtime.denormals(),
            "machine": provenance.machine(),
            "settings": cell.settings,
            "data_fingerprint": cell.fingerprint,
            "param_source": cell.param_source,
        }
        progress = loop_progress(self.ws.checkpoint_dir(cell))  # read once: both use it
        resumed = share_done(progress)
        if resumed > 0:  # this run times only what is left: the cost model must know
            tags["resumed_share"] = f"{resumed:.4f}"
        run_id = self.tracker.start_run(cell.label, tags, self.parent_run_id)
        if resumed > 0:
            try:
                carry_curves(self.tracker, run_id, cell.key, epochs_done(progress))
            except Exception as error:  # the cell's training matters more than its curves
                log.warning("could not carry the curves of %s's last run: %s", cell.label, error)
        params = {**identity(cell), "subset": cell.subset, "device": str(self.ws.device)}
        self.tracker.log_params(run_id, {**params, **cell.param_dict})
        return run_id

    def _run(self, cell: Cell, run_id: str) -> None:
        tracker = self.tracker
        with tracker.system_metrics(run_id), tempfile.TemporaryDirectory() as tmp:
            log_metric = lambda k, v, s: tracker.log_metric(run_id, k, v, s)  # noqa: E731
            result = run_cell(cell, self.ws, log_metric, Path(tmp))
            for path in result.artifacts:
                tracker.log_artifact(run_id, path)
        self._log_result(run_id, cell, result)

    def _log_result(self, run_id: str, cell: Cell, result: CellResult) -> None:
        tracker = self.tracker
        if result.vae_keys:  # which cached VAE(s) the cell's numbers were computed on
            tracker.set_tags(run_id, {"vae_cache_keys": ",".join(result.vae_keys)})
        if result.trained_vaes:  # this run trained them: find it by this tag
            keys = ",".join(key for key, _ in result.trained_vaes)
            tracker.set_tags(run_id, {"vae_trained_keys": keys})
        costs = {"fit_seconds": result.fit_seconds, "vae_train_seconds": result.vae_train_seconds}
        if result.cuda_peak_mb is not None:
            costs["cuda_peak_mb"] = result.cuda_peak_mb
        tracker.log_metrics(run_id, {**scoring.as_logged(result.scores), **costs})
        tracker.set_tags(run_id, {"mlflow.note.content": description(cell, result)})
        datasets = [
            (f"{cell.dataset}-train", cell.fingerprint, result.data_source, "train"),
            (f"{cell.dataset}-test", result.test_fingerprint, result.data_source, "test"),
        ]
        tracker.log_datasets(run_id, datasets)
        self._log_files(run_id, cell, result)
        self._log_vaes(run_id, cell, result)

    def _log_files(self, run_id: str, cell: Cell, result: CellResult) -> None:
        """The confusion matrix (counts and a picture) and the labeled training indices."""
        with tempfile.TemporaryDirectory() as tmp:
            csv = Path(tmp) / "confusion_matrix.csv"
            header = ",".join(result.class_names)
            np.savetxt(csv, result.confusion, fmt="%d", delimiter=",", header=header, comments="")
            png = plots.confusion_png(
                result.confusion, Path(tmp) / "confusion_matrix.png", cell.label, result.class_names
            )
            labeled = Path(tmp) / "labeled_indices.csv"
            if result.labeled is not None:  # rows of the training IDX file that had a label
                np.savetxt(labeled, result.labeled, fmt="%d", header="train_index", comments="")
            for path in (csv, png, labeled):
                if path.exists():
                    self.tracker.log_artifact(run_id, path)

    def _log_vaes(self, run_id: str, cell: Cell, result: CellResult) -> None:
        """A run for each VAE this cell trained; the ids of the runs of those it used."""
        vae_runs = []
        for key in result.vae_keys:
            trained = dict(result.trained_vaes).get(key)
            if trained is None:
                found = self.tracker.find_run({"kind": "vae", "vae_cache_key": key})
                vae_runs.append(found or "not in this store")
                continue
            x, y, fingerprint = self.ws.train_arrays(cell.dataset, cell.subset)
            shape = self.ws.dataset(cell.dataset).spec.image_shape
            data = VAEData(cell.dataset, cell.seed, fingerprint, x, y, shape)
            try:
                vae_runs.append(log_vae_run(self.tracker, self.parent_run_id, key, trained, data))
            except Exception as error:  # the cell's score stands; say what is missing
                log.warning("could not log the VAE run of %s: %s", key, error)
                message = f"{type(error).__name__}: {error}"
                self.tracker.set_tags(run_id, {"vae_run_error": message})
        if vae_runs:
            self.tracker.set_tags(run_id, {"vae_run_ids": ",".join(vae_runs)})

    def _close_once(self, run_id: str, cell: Cell, force: bool) -> str:
        """Mark the run FINISHED unless another worker finished the cell first; returns the
        status the run must end with. Under the finish lock, so two copies of a cell (a
        stalled worker whose trial was handed on, woken up) never both end FINISHED."""
        tracker = self.tracker
        with store_lock(self.storage_url, FINISH_LOCK):
            if not force and has_finished(tracker, cell.key, cell.code):
                duplicate = "duplicate: another worker finished this cell first"
                tracker.set_tags(run_id, {"error": duplicate})
                return "KILLED"
            if tracker.status(run_id) != "RUNNING":  # closed as dead while this one stalled
                tracker.delete_tag(run_id, "error")
                note = (
                    "its worker stalled past the heartbeat grace period and the cell was handed"
                    " on; this run finished first, so it is the cell's record"
                )
                tracker.set_tags(run_id, {"note": note})
            tracker.finish(run_id, "FINISHED")
            return "FINISHED"
