"""The queue under concurrency: many workers, two launchers started at the same instant.

Before the queue took its locks (benchmark/locks.py), this setting handed cells out twice, killed
workers with "Cannot tell a COMPLETE trial", enqueued every cell once per launcher, and raced in
the stores' schema creation.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import optuna
import pytest
from conftest import REPO, flatten, launch_together
from mlflow.tracking import MlflowClient
from servers import mlflow_server, postgres

contextlib_exit = contextlib.ExitStack

pytestmark = pytest.mark.slow

TINY_METHODS = '''
import os
import time

import numpy as np
from methods.base import VAE_DEFAULTS, Method, VAEFeatureMethod


class Constant(Method):
    """Predicts the most frequent labeled class: a cell that costs only the harness's work."""

    name = "tiny-constant"
    version = 1
    description = "majority labeled class (queue stress tests)"

    def fit(self, data):
        self.label_ = int(np.bincount(data.y_labeled).argmax())

    def predict(self, x):
        return np.full(len(x), self.label_)


class SleepyVAE(VAEFeatureMethod):
    """A small shared VAE, then a pause: every cell lasts long enough to be interrupted."""

    name = "tiny-vae-sleepy"
    version = 1
    description = "small shared VAE, then a fixed pause (scale-out tests)"
    defaults = {**VAE_DEFAULTS, "latent_dim": 2, "vae_hidden": "16", "vae_batch_size": 64}

    def fit_features(self, z, data):
        time.sleep(float(os.environ.get("TINY_CELL_SECONDS", "0")))
        self.label_ = int(np.bincount(data.y_labeled).argmax())

    def predict_features(self, z):
        return np.full(len(z), self.label_)
'''


def plugin_env(tmp_path: Path) -> dict[str, str]:
    """Worker processes find the test's method through BENCHMARK_METHOD_MODULES."""
    folder = tmp_path / "plugins"
    folder.mkdir(exist_ok=True)
    (folder / "tiny_methods.py").write_text(TINY_METHODS)
    return {
        **os.environ,
        "PYTHONPATH": f"{REPO}{os.pathsep}{folder}",
        "BENCHMARK_METHOD_MODULES": "tiny_methods",
        "BENCHMARK_HEARTBEAT_SECONDS": "2",
    }


def test_two_launchers_and_six_workers_run_200_cells_once_each(
    tiny_data: Path, tmp_path: Path
) -> None:
    stores = {
        "--tracking-uri": f"sqlite:///{tmp_path}/fresh/mlflow.db",
        "--storage": f"sqlite:///{tmp_path}/fresh/optuna.db",
        "--vae-cache-dir": str(tmp_path / "cache"),
        "--results-dir": str(tmp_path / "results"),
    }
    seeds = ",".join(str(s) for s in range(50))
    options = {
        "--methods": "tiny-constant",
        "--datasets": "mnist",
        "--labels": "10,20,30,40",
        "--seeds": seeds,
        "--workers": "3",
        "--data-dir": str(tiny_data),
        **stores,
    }
    command = [sys.executable, "-m", "benchmark", "run", *flatten(options)]
    env = plugin_env(tmp_path)
    codes, errors = launch_together(command, env, tmp_path, timeout=900)
    assert codes == [0, 0], [e[-3000:] for e in errors]
    assert not any("Traceback" in e for e in errors), errors

    client = MlflowClient(stores["--tracking-uri"])
    experiment = client.get_experiment_by_name("ssl-vae-benchmark")
    runs = client.search_runs([experiment.experiment_id], max_results=5000)
    cells = [r for r in runs if "cell_key" in r.data.tags]
    finished = Counter(r.data.tags["cell_key"] for r in cells if r.info.status == "FINISHED")
    assert len(finished) == 200 and set(finished.values()) == {1}
    assert [r.info.status for r in cells].count("FINISHED") == len(cells)  # none run twice

    (study,) = optuna.get_all_study_summaries(stores["--storage"])
    trials = optuna.load_study(study_name=study.study_name, storage=stores["--storage"]).trials
    queued = Counter(t.user_attrs["cell_key"] for t in trials)
    assert len(queued) == 200 and set(queued.values()) == {1}  # each cell enqueued once
    assert {t.state for t in trials} == {optuna.trial.TrialState.COMPLETE}
    assert {t.params["method"] for t in trials} == {"tiny-constant"}  # identity as parameters


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.3)


def running_cell_of(client: MlflowClient, experiment: str, launcher_pid: int) -> bool:
    """Whether the launcher with this pid has a cell run in progress."""
    parents = client.search_runs(
        [experiment], f"tags.launcher_pid = '{launcher_pid}' and attributes.status = 'RUNNING'"
    )
    if not parents:
        return False
    query = (
        f"tags.mlflow.parentRunId = '{parents[0].info.run_id}' and attributes.status = 'RUNNING'"
    )
    return any("cell_key" in r.data.tags for r in client.search_runs([experiment], query))


def test_two_machines_on_postgres_and_an_mlflow_server(tiny_data: Path, tmp_path: Path) -> None:
    """The README's multi-machine recipe: an Optuna storage on PostgreSQL, an `mlflow server`
    backed by PostgreSQL, two machines (own working directory and VAE cache) started together;
    one is killed with kill -9 and restarted, the other is stopped past its heartbeat's grace
    period and continued. Every cell ends with one FINISHED run, and each (dataset, seed) with
    one VAE, trained once and fetched by the other machine."""
    with contextlib_exit() as stack:
        urls = stack.enter_context(postgres(("optuna", "mlflow")))
        tracking = stack.enter_context(
            mlflow_server(urls["mlflow"], tmp_path / "artifacts", tmp_path / "mlflow.log")
        )
        env = {**plugin_env(tmp_path), "TINY_CELL_SECONDS": "3", "BENCHMARK_HEARTBEAT_SECONDS": "1"}

        def machine(name: str) -> subprocess.Popen:
            home = tmp_path / name
            home.mkdir(exist_ok=True)
            options = {
                "--methods": "tiny-vae-sleepy",
                "--datasets": "mnist",
                "--labels": "10,20,30,40",
                "--seeds": "0,1,2",
                "--epochs": "20",
                "--data-dir": str(tiny_data),
                "--tracking-uri": tracking,
                "--storage": urls["optuna"],
                "--vae-cache-dir": str(home / "cache"),
                "--results-dir": str(home / "results"),
            }
            command = [sys.executable, "-m", "benchmark", "run", *flatten(options)]
            with open(home / "stderr.txt", "ab") as err:
                return subprocess.Popen(
                    command, cwd=home, env=env, start_new_session=True,
                    stdout=subprocess.DEVNULL, stderr=err,
                )  # fmt: skip

        client = MlflowClient(tracking)
        a, b = machine("a"), machine("b")
        wait_until(lambda: client.get_experiment_by_name("ssl-vae-benchmark") is not None, "store")
        experiment = client.get_experiment_by_name("ssl-vae-benchmark").experiment_id
        wait_until(lambda: running_cell_of(client, experiment, a.pid), "machine a mid-cell")
        os.killpg(a.pid, signal.SIGKILL)
        a.wait()
        a_again = machine("a")
        wait_until(lambda: running_cell_of(client, experiment, b.pid), "machine b mid-cell")
        os.killpg(b.pid, signal.SIGSTOP)  # heartbeat every 1 s, stale after 3 s
        # the other machine fails the stale trial and closes b's run as KILLED
        wait_until(lambda: not running_cell_of(client, experiment, b.pid), "b's cell handed on")
        os.killpg(b.pid, signal.SIGCONT)
        codes = [a_again.wait(timeout=600), b.wait(timeout=600)]
        stderr = {n: (tmp_path / n / "stderr.txt").read_text()[-3000:] for n in "ab"}
        assert codes == [0, 0], stderr
        assert not any("Traceback" in text for text in stderr.values()), stderr

        runs = client.search_runs([experiment], max_results=1000)
        cells = [r for r in runs if "cell_key" in r.data.tags]
        finished = [r for r in cells if r.info.status == "FINISHED"]
        assert len(finished) == len({r.data.tags["cell_key"] for r in finished}) == 12
        assert not [r.data.tags["error"] for r in finished if "error" in r.data.tags]
        late = [
            r for r in cells if "note" in r.data.tags or "duplicate" in r.data.tags.get("error", "")
        ]
        assert late, "the stalled machine's cell was not handed on"  # recorded or discarded

        vaes = [r for r in runs if r.data.tags.get("vae_published") == "true"]
        assert sorted(r.info.status for r in vaes) == ["FINISHED"] * 3  # one per seed
        per_seed = {(r.data.params["seed"], r.data.tags["vae_cache_keys"]) for r in finished}
        assert len(per_seed) == 3  # every cell of a seed scored on that seed's one VAE
        shared = [
            path.name
            for path in (tmp_path / "a" / "cache").glob("vae-*.pt")
            if (tmp_path / "b" / "cache" / path.name).exists()
        ]
        assert shared, "no VAE was fetched by the other machine"
        for name in shared:  # fetched, not retrained: the very same file
            one, other = (tmp_path / m / "cache" / name for m in "ab")
            assert one.read_bytes() == other.read_bytes()

        killed_parent = client.search_runs([experiment], f"tags.launcher_pid = '{a.pid}'")
        assert [r.info.status for r in killed_parent] == ["KILLED"]  # closed by the restart

        (summary,) = optuna.get_all_study_summaries(urls["optuna"])
        trials = optuna.load_study(study_name=summary.study_name, storage=urls["optuna"]).trials
        states = Counter(t.state.name for t in trials)
        assert states["FAIL"] >= 2 and states["RUNNING"] == states["WAITING"] == 0, states


def test_a_worker_whose_trial_was_handed_on_mid_cell_ends_cleanly() -> None:
    """CI caught it: a machine stopped between opening its cell's MLflow run and naming the
    run on its trial woke up to a trial the other machine had failed; naming it raised
    UpdateFinishedTrialError and the worker exited 1. The cell must run on, the worker end."""
    from benchmark.study import grid
    from benchmark.study.cell_run import note_run
    from benchmark.workqueue.queue import CellQueue

    cell = grid.build_grid(["pixel-svm"], ["mnist"], [20], [0])[0]
    storage = optuna.storages.InMemoryStorage()
    queue = CellQueue.create(storage, "memory", "grid", [cell])
    queue.enqueue([cell], force=False)
    ran: list[str] = []

    def stalled(trial: optuna.Trial) -> float:
        other_machine_fails(trial)
        note_run(trial, "run-of-the-stalled-machine")  # tolerated: the cell goes on
        ran.append("cell")
        trial.set_user_attr("later", 1)  # any other write to the trial: the worker ends
        ran.append("never")
        return 1.0

    def other_machine_fails(trial: optuna.Trial) -> None:
        storage.set_trial_state_values(queue.trial_id(trial.number), optuna.trial.TrialState.FAIL)

    trial = queue.pop()
    assert trial is not None
    assert queue.run(trial, stalled) == optuna.trial.TrialState.FAIL
    assert ran == ["cell"]
    assert "mlflow_run_id" not in queue.study.trials[0].user_attrs


def test_the_queue_follows_the_plan_order_and_keeps_it_without_churn() -> None:
    """An interrupted cell (with a checkpoint) once waited behind every cell never started:
    the queue kept the first launch's order. It now follows each launch's plan."""
    from benchmark.study import grid
    from benchmark.workqueue.queue import CellQueue

    a, b, c = grid.build_grid(["pixel-svm"], ["mnist"], [20, 40, 60], [0])
    queue = CellQueue.create(optuna.storages.InMemoryStorage(), "memory", "grid", [a, b, c])
    queue.enqueue([a, b, c], force=False)
    queue.enqueue([a, b, c], force=False)  # the same order again: nothing retired or added
    assert len(queue.study.trials) == 3

    queue.enqueue([c, a, b], force=False)  # c resumes now: it goes first
    popped = [queue.pop() for _ in range(3)]
    assert [t.user_attrs["cell_key"] for t in popped] == [c.key, a.key, b.key]
    states = Counter(t.state.name for t in queue.study.trials)
    assert states == {"FAIL": 3, "RUNNING": 3}


def test_saving_a_view_two_launchers_race_for_is_tried_again() -> None:
    """CI caught it: two machines started together both inserted the shared view's tag, and
    the MLflow server on PostgreSQL refused the second (UniqueViolation): that launcher died."""
    from types import SimpleNamespace

    from mlflow.exceptions import MlflowException

    from benchmark.tracking import views

    calls: list[str] = []

    def set_experiment_tag(experiment_id: str, key: str, value: str) -> None:
        calls.append(key)
        if len(calls) == 1:
            raise MlflowException("duplicate key value violates unique constraint")

    client = SimpleNamespace(set_experiment_tag=set_experiment_tag)
    tracker = SimpleNamespace(client=client, experiment_id="1", uri="sqlite:///x.db")
    link = views.save(tracker, "cells", "All cells", "tags.kind = 'cell'")
    assert calls == ["mlflow.sharedViewState.cells"] * 2 and "viewStateShareKey=cells" in link
