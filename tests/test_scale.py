"""The queue under concurrency: many workers, two launchers started at the same instant.

Before the queue took its locks (benchmark/locks.py), this setting handed cells out twice, killed
workers with "Cannot tell a COMPLETE trial", enqueued every cell once per launcher, and raced in
the stores' schema creation.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import optuna
import pytest
from conftest import REPO, flatten
from mlflow.tracking import MlflowClient

pytestmark = pytest.mark.slow

TINY_METHOD = '''
import numpy as np
from methods.base import Method


class Constant(Method):
    """Predicts the most frequent labeled class: a cell that costs only the harness's work."""

    name = "tiny-constant"
    description = "majority labeled class (queue stress tests)"

    def fit(self, data):
        self.label_ = int(np.bincount(data.y_labeled).argmax())

    def predict(self, x):
        return np.full(len(x), self.label_)
'''


def plugin_env(tmp_path: Path) -> dict[str, str]:
    """Worker processes find the test's method through BENCHMARK_METHOD_MODULES."""
    folder = tmp_path / "plugins"
    folder.mkdir(exist_ok=True)
    (folder / "tiny_methods.py").write_text(TINY_METHOD)
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
    launchers = [
        subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        for _ in range(2)
    ]
    errors = [p.communicate(timeout=900)[1].decode()[-3000:] for p in launchers]
    assert [p.returncode for p in launchers] == [0, 0], errors
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
