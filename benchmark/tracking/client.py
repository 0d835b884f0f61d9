"""Every MLflow call the harness makes, behind one small class.

The default store is an embedded SQLite database in ``mlruns/`` with artifacts beside it; any
tracking URI works (an MLflow server backed by PostgreSQL for a team). The client API is used
directly, with explicit run ids, so several worker processes never share MLflow's global
"active run" state.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlparse

from benchmark.errors import UsageError
from benchmark.options import DEFAULT_EXPERIMENT, DEFAULT_TRACKING_URI, sqlite_path
from benchmark.provenance import git_commit
from benchmark.workqueue.locks import store_lock

MAX_PARAM_LENGTH = 6000
OPEN_ATTEMPTS = 4
EXPERIMENT_KIND_TAG, MODEL_TRAINING = "mlflow.experimentKind", "custom_model_development"
T = TypeVar("T")


def retried(
    action: Callable[[], T],
    retry_on: Callable[[Exception], bool] = lambda error: True,
    give_up: Callable[[Exception], Exception] | None = None,
    pause_s: float = 0.5,
) -> T:
    """`action()`, tried again (up to OPEN_ATTEMPTS times, pausing longer each time) while it
    fails with an error `retry_on` accepts: another process got to the store first (creating
    its schema, the experiment or a shared row) and the next try finds its work done. The last
    error is raised as `give_up(error)` when given, else as it is; a UsageError never retries."""
    for attempt in range(1, OPEN_ATTEMPTS + 1):
        try:
            return action()
        except UsageError:
            raise
        except Exception as error:
            if attempt == OPEN_ATTEMPTS or not retry_on(error):
                if give_up is None:
                    raise
                raise give_up(error) from None
            time.sleep(pause_s * attempt)
    raise AssertionError("unreachable: the last attempt returns or raises")


def lost_insert_race(error: Exception) -> bool:
    """Two writers inserted the same new row; the loser's transaction rolled back."""
    return "unique constraint" in str(error).lower()


def store_busy(error: Exception) -> bool:
    """An SQLite store stayed locked past its timeout: many workers wrote at once (all of
    them marking their runs KILLED when a grid is stopped, say); the next try gets through."""
    return "database is locked" in str(error).lower()


def literal(value: object) -> str:
    """A value as a quoted literal of MLflow's search syntax (quotes in it are dropped)."""
    return "'" + str(value).replace("'", "") + "'"


def finished_runs(uri: str, experiment: str) -> list[Any]:
    """The FINISHED runs of an experiment, read without creating anything: [] when the store
    or the experiment does not exist (a fresh clone has no store)."""
    db = sqlite_path(uri)
    if db is not None and not db.is_file():
        return []
    os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")
    from mlflow.tracking import MlflowClient

    def open_store() -> tuple[Any, Any]:
        with store_lock(uri):  # MLflow checks (and may create) its schema on opening
            client = MlflowClient(tracking_uri=uri)
            return client, client.get_experiment_by_name(experiment)

    # another process may be creating the schema
    client, found = retried(
        open_store,
        give_up=lambda e: UsageError(f"Cannot read MLflow tracking store {uri!r}: {e}"),
    )
    if found is None:
        return []
    runs, token = [], None
    while True:
        page = client.search_runs(
            [found.experiment_id], "attributes.status = 'FINISHED'", page_token=token
        )
        runs += list(page)
        token = page.token
        if not token:
            return runs


class Tracker:
    def __init__(self, uri: str = DEFAULT_TRACKING_URI, experiment: str = DEFAULT_EXPERIMENT):
        os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")
        self.uri = uri
        db = sqlite_path(uri)
        artifact_location = None
        if db is not None:
            db.parent.mkdir(parents=True, exist_ok=True)
            artifact_location = (db.parent / "artifacts").resolve().as_uri()
        elif urlparse(uri).scheme in ("", "file"):
            raise UsageError(
                f"--tracking-uri {uri!r}: MLflow no longer accepts a plain file store; use"
                " sqlite:///PATH/mlflow.db or an http(s):// tracking server."
            )
        # a server has no lock to give: two launchers creating or tagging the experiment at
        # once get a unique violation, and the next try finds it done
        retried(
            lambda: self._open(experiment, artifact_location),
            give_up=lambda e: UsageError(f"Cannot open MLflow tracking store {uri!r}: {e}"),
        )

    def _open(self, experiment: str, artifact_location: str | None) -> None:
        from mlflow.tracking import MlflowClient

        with store_lock(self.uri):  # MLflow's schema migration: one process at a time
            self.client = MlflowClient(tracking_uri=self.uri)
            found = self.client.get_experiment_by_name(experiment)
            self.experiment_id = (
                found.experiment_id
                if found is not None
                else self._create_experiment(experiment, artifact_location)
            )
            self._mark_model_training(found)

    def _mark_model_training(self, found: Any) -> None:
        """MLflow 3's UI opens an experiment of unknown kind on its GenAI overview ("No data");
        tagged as model development it opens on the runs table."""
        tags = found.tags if found is not None else {}
        if tags.get(EXPERIMENT_KIND_TAG) != MODEL_TRAINING:
            self.client.set_experiment_tag(self.experiment_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING)

    def _create_experiment(self, name: str, artifact_location: str | None) -> str:
        from mlflow.exceptions import MlflowException

        try:
            return self.client.create_experiment(name, artifact_location=artifact_location)
        except MlflowException:  # another process created it first
            return self.client.get_experiment_by_name(name).experiment_id

    def start_run(
        self,
        name: str,
        tags: Mapping[str, str] | None = None,
        parent_id: str | None = None,
        started_s_ago: float = 0.0,
    ) -> str:
        """A new run; `started_s_ago` dates its start back, for work done before it was opened
        (a VAE trained before its run exists), so the UI's Duration covers that work."""
        all_tags = {"git_commit": git_commit(), **(tags or {})}
        if parent_id:
            all_tags["mlflow.parentRunId"] = parent_id
        start = int((time.time() - started_s_ago) * 1000)
        run = self.client.create_run(
            self.experiment_id, start_time=start, tags=all_tags, run_name=name
        )
        return run.info.run_id

    def log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        """Parameters as text; one that is None (an option not given) is not logged."""
        from mlflow.entities import Param

        given = sorted((k, v) for k, v in params.items() if v is not None)
        items = [Param(k, str(v)[:MAX_PARAM_LENGTH]) for k, v in given]
        for i in range(0, len(items), 100):
            self.client.log_batch(run_id, params=items[i : i + 100])

    def log_metrics(
        self,
        run_id: str,
        metrics: Mapping[str, float],
        step: int = 0,
        model_id: str | None = None,
    ) -> None:
        """Metrics of a run at a step; with `model_id` they are the logged model's too."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step, model_id=model_id) for k, v in metrics.items()]
        if items:
            self.client.log_batch(run_id, metrics=items)

    def copy_curves(self, source: str, target: str, below_step: int) -> int:
        """Copy `source`'s per-epoch metrics (not system/) at steps below `below_step` onto
        `target`, timestamps kept; how many values were copied."""
        from mlflow.entities import Metric

        names = [k for k in self.client.get_run(source).data.metrics if not k.startswith("system/")]
        items = [
            Metric(m.key, m.value, m.timestamp, m.step)
            for name in sorted(names)
            for m in self.client.get_metric_history(source, name)
            if m.step < below_step
        ]
        for i in range(0, len(items), 1000):
            self.client.log_batch(target, metrics=items[i : i + 1000])
        return len(items)

    def log_metric(self, run_id: str, name: str, value: float, step: int) -> None:
        self.log_metrics(run_id, {name: value}, step)

    def set_tags(self, run_id: str, tags: Mapping[str, str]) -> None:
        for k, v in tags.items():
            self.client.set_tag(run_id, k, str(v)[:5000])

    def log_datasets(self, run_id: str, datasets: list[tuple[str, str, str, str]]) -> None:
        """MLflow inputs: (name, digest, source, context) for each dataset a run read."""
        from mlflow.entities import Dataset, DatasetInput, InputTag
        from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

        inputs = [
            DatasetInput(
                Dataset(name=name, digest=digest, source_type="local", source=source),
                tags=[InputTag(MLFLOW_DATASET_CONTEXT, context)],
            )
            for name, digest, source, context in datasets
        ]
        # Two workers logging a dataset the store has not seen both insert it; a retry finds
        # the winner's row.
        retried(
            lambda: self.client.log_inputs(run_id, datasets=inputs),
            retry_on=lost_insert_race,
            pause_s=0.2,
        )

    @contextlib.contextmanager
    def system_metrics(self, run_id: str, every_s: float = 15.0) -> Iterator[None]:
        """MLflow's system metrics (CPU, memory, disk, GPU) on the run while the block runs;
        a cell shorter than `every_s` logs none."""
        try:
            from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

            monitor = SystemMetricsMonitor(run_id, sampling_interval=every_s, tracking_uri=self.uri)
            monitor.start()
        except Exception as error:  # psutil missing or an MLflow change: the cell goes on
            logging.getLogger(__name__).warning("no system metrics: %s", error)
            monitor = None
        try:
            yield
        finally:
            if monitor is not None:
                monitor.finish()

    def log_artifact(self, run_id: str, path: Path, folder: str | None = None) -> None:
        self.client.log_artifact(run_id, str(path), artifact_path=folder)

    def finish(self, run_id: str, status: str = "FINISHED") -> None:
        """Mark the run terminated; a busy SQLite store is tried again rather than leaving
        a run that ended marked RUNNING."""
        retried(lambda: self.client.set_terminated(run_id, status=status), retry_on=store_busy)

    def status(self, run_id: str) -> str:
        return self.client.get_run(run_id).info.status

    def delete_tag(self, run_id: str, key: str) -> None:
        from mlflow.exceptions import MlflowException

        with contextlib.suppress(MlflowException):  # not there: nothing to delete
            self.client.delete_tag(run_id, key)

    def reopen(self, run_id: str) -> None:
        """Mark a terminated run RUNNING again, for a job that resumes under it."""
        self.client.update_run(run_id, status="RUNNING")

    def find_run(self, tags: Mapping[str, str], status: str | None = None) -> str | None:
        """The oldest run carrying all these tags (and this status, if given), so a resumed
        job finds its earlier run."""
        query = " and ".join(f"tags.{k} = {literal(v)}" for k, v in tags.items())
        if status is not None:
            query += f" and attributes.status = '{status}'"
        found = self.client.search_runs(
            [self.experiment_id], query, max_results=1, order_by=["attributes.start_time ASC"]
        )
        return found[0].info.run_id if found else None

    def runs(self, filter_string: str = "") -> Iterator[Any]:
        token = None
        while True:
            page = self.client.search_runs(
                [self.experiment_id], filter_string, max_results=1000, page_token=token
            )
            yield from page
            token = page.token
            if not token:
                return
