"""End-to-end runs of the grid on tiny synthetic data, into temporary stores."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import REPO, flatten, launch_together, store_options
from mlflow.tracking import MlflowClient

from benchmark import runtime
from benchmark.cli import main
from benchmark.errors import UsageError
from benchmark.reports import stats
from benchmark.tracking.client import OPEN_ATTEMPTS, Tracker, lost_insert_race, retried
from methods.base import REGISTRY, Method

BASELINES = "pixel-svm,vae-gmm,vae-linear-svm,vae-rbf-svm"
pytestmark = pytest.mark.slow


def grid_args(
    data: Path, stores: dict[str, str], methods: str = BASELINES, **extra: str
) -> list[str]:
    options = {
        "--methods": methods,
        "--datasets": "mnist",
        "--labels": "20,40",
        "--seeds": "0,1",
        "--epochs": "2",
        "--data-dir": str(data),
        **stores,
        **extra,
    }
    return ["run", *flatten(options)]


def child_runs(stores: dict[str, str]) -> list:
    client = MlflowClient(stores["--tracking-uri"])
    experiment = client.get_experiment_by_name("ssl-vae-benchmark")
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    return [r for r in runs if "cell_key" in r.data.tags]


def wait_until(condition, timeout: float = 300) -> None:
    """Poll until `condition()` holds; the deadline only bounds a hang."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if condition():
                return
        except Exception:  # a store that does not exist yet
            pass
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def wait_for_a_run(proc: subprocess.Popen, stores: dict[str, str], status: str) -> None:
    """Poll the store until some cell run has `status` (or the process ends, or 120 s pass)."""
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        try:
            if any(r.info.status == status for r in child_runs(stores)):
                return
        except Exception:  # the store may not exist yet
            pass
        time.sleep(0.2)


@pytest.fixture
def failing_method():
    class AlwaysFails(Method):
        name = "always-fails"
        version = 1
        description = "raises in fit, to test failure handling"

        def fit(self, data):
            raise RuntimeError("deliberate failure")

        def predict(self, x):
            return np.zeros(len(x), dtype=int)

    yield AlwaysFails
    REGISTRY.pop("always-fails")


def test_grid_logs_every_cell_resumes_and_reports(
    tiny_data: Path, stores: dict, tmp_path: Path
) -> None:
    assert main(grid_args(tiny_data, stores)) == 0
    runs = child_runs(stores)
    assert len(runs) == 16 and {r.info.status for r in runs} == {"FINISHED"}
    for run in runs:
        assert {"method", "dataset", "n_labels", "seed"} <= set(run.data.params)
        assert {
            "accuracy",
            "macro_precision",
            "macro_recall",
            "macro_f1",
            "fit_seconds",
            "vae_train_seconds",
        } <= set(run.data.metrics)
        if run.data.params["method"] == "pixel-svm":  # the tiny classes are easy on pixels
            assert run.data.metrics["accuracy"] > 90  # in %, as in every table
        tags = set(run.data.tags)
        assert {"cell_key", "git_commit", "mlflow.parentRunId", "code_version"} <= tags
        assert {"settings", "data_fingerprint"} <= tags
        assert ("vae_cache_keys" in tags) == (run.data.params["method"] != "pixel-svm")
        if run.data.params["method"] != "pixel-svm":
            assert run.data.params["latent_dim"] == "10" and run.data.params["vae_epochs"] == "2"
    assert len({r.data.tags["cell_key"] for r in runs}) == 16
    # one VAE per (dataset, seed), shared by every VAE method and budget
    assert len(list(Path(stores["--vae-cache-dir"]).glob("vae-*.pt"))) == 2
    trained = [r for r in runs if r.data.metrics["vae_train_seconds"] > 0]
    assert len(trained) == 2
    holders = {r.data.tags["vae_trained_keys"] for r in trained}
    used = {r.data.tags["vae_cache_keys"] for r in runs if "vae_cache_keys" in r.data.tags}
    assert holders == used  # every VAE a cell used is found on the run holding its weights
    client = MlflowClient(stores["--tracking-uri"])
    names = {a.path for a in client.list_artifacts(trained[0].info.run_id)}
    assert {"confusion_matrix.csv", "confusion_matrix.png"} <= names
    # each trained VAE is a run of its own, and every cell that used it names it
    experiment = client.get_experiment_by_name("ssl-vae-benchmark")
    vae_runs = client.search_runs([experiment.experiment_id], "tags.kind = 'vae'")
    assert len(vae_runs) == 2 and {r.info.status for r in vae_runs} == {"FINISHED"}
    vae = vae_runs[0]
    assert len(client.get_metric_history(vae.info.run_id, "neg_elbo")) == 2
    assert "train_seconds" in vae.data.metrics
    pictures = {a.path for a in client.list_artifacts(vae.info.run_id)}
    assert {"reconstructions.png", "samples.png", "latent_pca.png"} <= pictures
    # the encoder is a logged model of the experiment (the UI's Models), loaded by its id
    import mlflow.pytorch

    models = {m.source_run_id: m for m in client.search_logged_models([experiment.experiment_id])}
    assert len(models) == 2 and all(m.name.startswith("vae-mnist-seed") for m in models.values())
    model = models[vae.info.run_id]
    assert vae.data.tags["model_id"] == model.model_id
    encoder = mlflow.pytorch.load_model(f"models:/{model.model_id}")
    assert tuple(encoder(torch.rand(3, 784)).shape) == (3, 10)
    # the run spans the training: its Duration is at least the training's seconds
    assert vae.info.end_time - vae.info.start_time >= 1000 * vae.data.metrics["train_seconds"]
    users = [r for r in runs if vae.info.run_id in r.data.tags.get("vae_run_ids", "")]
    assert len(users) == 6  # 3 VAE methods x 2 budgets on that (dataset, seed)
    gmm = [r for r in runs if r.data.params["method"] == "vae-gmm"]
    assert all({"nmi", "ari", "cluster_accuracy"} <= set(r.data.metrics) for r in gmm)
    # the tiny data is learnable: the pixel SVM must be far above chance
    pixel = [r.data.metrics["accuracy"] for r in runs if r.data.params["method"] == "pixel-svm"]
    assert min(pixel) > 50

    # resume: nothing is redone and no new cell run appears
    assert main(grid_args(tiny_data, stores)) == 0
    assert len(child_runs(stores)) == 16

    # the report's mean ± std is the plain mean and sample std over seeds
    summary = pd.read_csv(Path(stores["--results-dir"]) / "summary.csv")
    acc = [
        r.data.metrics["accuracy"]
        for r in runs
        if r.data.params["method"] == "vae-rbf-svm" and r.data.params["n_labels"] == "40"
    ]
    row = summary[(summary.base_method == "vae-rbf-svm") & (summary.n_labels == 40)].iloc[0]
    assert row.n == 2
    assert row["mean"] == pytest.approx(np.mean(acc), abs=1e-3)
    assert row["std"] == pytest.approx(np.std(acc, ddof=1), abs=1e-3)
    low, high = stats.t_interval(acc)
    low, high = max(low, 0.0), min(high, 100.0)  # an accuracy's interval stops at 0 and 100 %
    assert (row.ci_low, row.ci_high) == pytest.approx((low, high), abs=1e-3)
    table = (Path(stores["--results-dir"]) / "summary.md").read_text()
    assert f"{np.mean(acc):.1f} ({low:.1f}–{high:.1f})" in table
    assert (Path(stores["--results-dir"]) / "accuracy_vs_labels.png").stat().st_size > 1000


def test_same_seed_same_scores_on_cpu(tiny_data: Path, stores: dict, tmp_path: Path) -> None:
    # stores of its own, results too: else its archive says the cell is done
    other = store_options(tmp_path / "b")
    scores = []
    for options in (stores, other):
        assert main(grid_args(tiny_data, options, methods="vae-rbf-svm", **{"--seeds": "3"})) == 0
        scores.append(
            sorted(
                (r.data.tags["cell_key"], r.data.metrics["accuracy"]) for r in child_runs(options)
            )
        )
    assert scores[0] == scores[1]


def test_failed_cell_does_not_stop_the_grid(
    tiny_data: Path, stores: dict, failing_method: type, capsys: pytest.CaptureFixture
) -> None:
    assert main(grid_args(tiny_data, stores, methods="pixel-svm,always-fails")) == 1
    runs = child_runs(stores)
    status = {(r.data.params["method"], r.info.status) for r in runs}
    assert status == {("pixel-svm", "FINISHED"), ("always-fails", "FAILED")}
    failed = [r for r in runs if r.info.status == "FAILED"]
    assert len(failed) == 4 and "deliberate failure" in failed[0].data.tags["error"]
    assert "4 cell(s) failed" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--methods", "vae-svn", "Unknown method 'vae-svn'. Available:"),
        ("--datasets", "cifar", "Unknown dataset 'cifar'"),
        ("--labels", "95", "multiple of the 10 classes"),
        ("--seeds", "-1", "non-negative"),
        ("--params", "best", "--params 'best'"),
        ("--set", "alpha=60", "--set alpha: no selected method has such a parameter"),
        ("--set", "C", "--set expects KEY=VALUE"),
    ],
)
def test_bad_input_exits_2_before_training(
    tiny_data: Path,
    stores: dict,
    option: str,
    value: str,
    message: str,
    capsys: pytest.CaptureFixture,
) -> None:
    assert main(grid_args(tiny_data, stores, **{option: value})) == 2
    assert message in capsys.readouterr().err
    assert not Path(stores["--vae-cache-dir"]).exists()


def test_kill_9_then_rerun_completes_with_one_run_per_cell(tiny_data: Path, stores: dict) -> None:
    args = [
        sys.executable,
        "-m",
        "benchmark",
        *grid_args(tiny_data, stores, methods="vae-rbf-svm,pixel-svm", **{"--seeds": "0,1,2"}),
    ]
    env = {**os.environ, "BENCHMARK_HEARTBEAT_SECONDS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_a_run(proc, stores, "FINISHED")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert subprocess.run(args, env=env, capture_output=True, timeout=300).returncode == 0
    finished = [r.data.tags["cell_key"] for r in child_runs(stores) if r.info.status == "FINISHED"]
    assert len(finished) == len(set(finished)) == 12
    assert not [r for r in child_runs(stores) if r.info.status == "RUNNING"]


def test_report_joins_runs_from_another_store(
    tiny_data: Path, stores: dict, tmp_path: Path
) -> None:
    other = {
        **stores,
        "--tracking-uri": f"sqlite:///{tmp_path}/b/mlflow.db",
        "--storage": f"sqlite:///{tmp_path}/b/optuna.db",
    }
    assert main(grid_args(tiny_data, stores, methods="pixel-svm", **{"--seeds": "3"})) == 0
    assert main(grid_args(tiny_data, other, methods="vae-rbf-svm", **{"--seeds": "3"})) == 0
    joined = tmp_path / "joined"
    options = {"--tracking-uri": stores["--tracking-uri"], "--results-dir": str(joined)}
    extra = ["--also-from", other["--tracking-uri"]]
    assert main(["report", *flatten(options), *extra]) == 0
    tables = [pd.read_csv(joined / name) for name in ("summary.csv", "variants.csv")]
    methods_ = set(tables[0]["base_method"]) | set(tables[1]["base_method"])  # --epochs: variants
    assert methods_ == {"pixel-svm", "vae-rbf-svm"}
    stores_ = set(pd.read_csv(joined / "runs.csv")["store"])
    assert len(stores_) == 2 and not any(s.startswith("/") for s in stores_)
    missing = ["--also-from", f"sqlite:///{tmp_path}/nowhere.db"]
    assert main(["report", *flatten(options), *missing]) == 2


@pytest.mark.parametrize("workers", ["1", "2"])
def test_sigterm_mid_cell_exits_130_without_a_traceback(
    tiny_data: Path, stores: dict, workers: str
) -> None:
    """A polite kill while a VAE trains: a one-line message, the cell's run KILLED, no traceback
    (with worker processes too: the launcher stops them with SIGTERM of their own)."""
    extra = {"--epochs": "400", "--workers": workers, "--seeds": "0"}
    args = [
        sys.executable,
        "-m",
        "benchmark",
        *grid_args(tiny_data, stores, methods="vae-rbf-svm", **extra),
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO), "BENCHMARK_CHECKPOINT_SECONDS": "0.2"}
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wait_for_a_run(proc, stores, "RUNNING")
    cache = Path(stores["--vae-cache-dir"])
    wait_until(lambda: list(cache.glob("*.ckpt")) or proc.poll() is not None)  # mid-training
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr.decode()[-3000:]
    assert b"run the same command again" in stderr
    assert b"Traceback" not in stderr, stderr.decode()[-3000:]
    assert b"Warning" not in stderr, stderr.decode()[-3000:]  # nothing a user cannot act on
    statuses = [r.info.status for r in child_runs(stores)]
    assert 1 <= len(statuses) <= int(workers) and set(statuses) == {"KILLED"}


def _sigint_as_in_a_terminal() -> None:
    """A test run started in the background of a script (`cmd &`) inherits SIGINT ignored,
    and so would the grid: give it the disposition a terminal's command has."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_with_two_workers_never_prints_a_traceback(tiny_data: Path, tmp_path: Path) -> None:
    """Ctrl-C signals the whole process group: the launcher and both workers. The launcher then
    terminates its workers, and a worker still handling its own SIGINT printed a
    KeyboardInterrupt traceback (one Ctrl-C in two). Tried three times: it was a race. Each
    try has stores of its own: with the first try's VAEs cached, a later grid could finish
    between the check that a cell is running and the Ctrl-C (CI saw exit 0)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for attempt in range(3):
        options = store_options(tmp_path / f"try{attempt}")
        extra = {"--epochs": "400", "--workers": "2", "--seeds": "0,1"}
        args = [sys.executable, "-m", "benchmark"]
        args += grid_args(tiny_data, options, methods="vae-rbf-svm", **extra)
        proc = subprocess.Popen(
            args,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
            preexec_fn=_sigint_as_in_a_terminal,
        )
        wait_for_a_run(proc, options, "RUNNING")
        assert proc.poll() is None, proc.communicate()[1].decode()[-3000:]
        os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
        _, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 130, stderr.decode()[-3000:]
        assert b"Traceback" not in stderr, stderr.decode()[-3000:]


def test_set_reaches_the_methods_that_have_the_parameter(tiny_data: Path, stores: dict) -> None:
    extra = {"--seeds": "0", "--labels": "20", "--set": "C=2.5"}
    assert main(grid_args(tiny_data, stores, methods="pixel-svm,vae-gmm", **extra)) == 0
    params = {r.data.params["method"]: r.data.params for r in child_runs(stores)}
    assert params["pixel-svm"]["C"] == "2.5"
    assert "C" not in params["vae-gmm"]


def test_a_cell_started_again_closes_its_orphaned_run(tiny_data: Path, stores: dict) -> None:
    """A worker killed between creating a cell's run and recording its id leaves it RUNNING;
    the next start of that cell marks it KILLED."""
    extra = {"--seeds": "3", "--labels": "20"}
    assert main(grid_args(tiny_data, stores, methods="pixel-svm", **extra)) == 0
    (done,) = child_runs(stores)
    tracker = Tracker(stores["--tracking-uri"], "ssl-vae-benchmark")
    orphan = tracker.start_run("orphan", {"cell_key": done.data.tags["cell_key"]})
    assert main([*grid_args(tiny_data, stores, methods="pixel-svm", **extra), "--force"]) == 0
    statuses = {r.info.run_id: r.info.status for r in child_runs(stores)}
    assert statuses[orphan] == "KILLED"
    assert sorted(statuses.values()) == ["FINISHED", "FINISHED", "KILLED"]


def test_the_parent_run_carries_the_study_and_cells_their_provenance(
    tiny_data: Path, stores: dict
) -> None:
    extra = {"--seeds": "0", "--labels": "20", "--datasets": "fashion-mnist"}
    assert main(grid_args(tiny_data, stores, methods="pixel-svm,vae-rbf-svm", **extra)) == 0
    client = MlflowClient(stores["--tracking-uri"])
    experiment = client.get_experiment_by_name("ssl-vae-benchmark")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    (parent,) = [
        r
        for r in client.search_runs([experiment.experiment_id])
        if r.data.tags.get("kind") == "grid"
    ]
    study = {a.path for a in client.list_artifacts(parent.info.run_id, "study")}
    assert {"study/summary.md", "study/summary.csv", "study/summary.html"} <= study
    assert "study/accuracy_vs_labels.png" in study
    metrics = parent.data.metrics
    assert any(k.startswith("mean_accuracy/fashion-mnist/20/pixel-svm") for k in metrics)
    cell = child_runs(stores)[0]
    names = {a.path for a in client.list_artifacts(cell.info.run_id)}
    assert {"labeled_indices.csv", "confusion_matrix.csv", "confusion_matrix.png"} <= names
    header = Path(client.download_artifacts(cell.info.run_id, "confusion_matrix.csv")).read_text()
    assert header.startswith("T-shirt/top,Trouser,")
    inputs = {d.dataset.name: d.dataset.digest for d in cell.inputs.dataset_inputs}
    assert inputs["fashion-mnist-train"] == cell.data.tags["data_fingerprint"]
    assert "fashion-mnist-test" in inputs
    assert cell.data.tags["denormals"] == "flushed"  # conftest flushes them, as `run` does


def test_subnormal_floats_are_flushed_unless_the_user_keeps_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Flushed by default (the M2 family's CPU steps ran about twice as fast); kept with
    BENCHMARK_KEEP_DENORMALS=1, to reproduce cells archived before the setting existed."""
    if not torch.set_flush_denormal(True):
        pytest.skip("this CPU cannot flush subnormal floats")
    tiny = torch.tensor([1e-30])
    try:
        monkeypatch.delenv(runtime.KEEP_DENORMALS, raising=False)
        assert runtime.cpu_numerics() == runtime.denormals() == "flushed"
        assert (tiny * 1e-10).item() == 0.0
        monkeypatch.setenv(runtime.KEEP_DENORMALS, "1")
        assert runtime.cpu_numerics() == runtime.denormals() == "kept"
        assert (tiny * 1e-10).item() > 0.0
    finally:
        monkeypatch.delenv(runtime.KEEP_DENORMALS, raising=False)
        runtime.cpu_numerics()


def _children(parent: int) -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and int((proc / "stat").read_text().split()[3]) == parent:
                pids.append(int(proc.name))
        except (OSError, ValueError, IndexError):
            pass
    return pids


def test_workers_die_with_their_launcher(tiny_data: Path, stores: dict, tmp_path: Path) -> None:
    """kill -9 of the launcher used to leave its --workers running as orphans."""
    args = [
        sys.executable,
        "-m",
        "benchmark",
        *grid_args(
            tiny_data, stores, methods="vae-rbf-svm", **{"--epochs": "400", "--workers": "2"}
        ),
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def both_working() -> bool:
        running = [r for r in child_runs(stores) if r.info.status == "RUNNING"]
        return len(running) == 2 or proc.poll() is not None

    wait_until(both_working)  # each worker holds a cell
    workers = _children(proc.pid)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 120  # each closes its cell's run first; slow on a loaded machine
    while time.time() < deadline and any(Path(f"/proc/{p}").exists() for p in workers):
        time.sleep(0.2)
    alive = []
    for p in workers:
        try:
            status = Path(f"/proc/{p}/status").read_text()
        except OSError:
            continue
        if "State:\tZ" not in status:
            alive.append(p)
    assert workers and not alive


def test_two_launchers_started_together_on_fresh_stores_run_each_cell_once(
    tiny_data: Path, stores: dict
) -> None:
    """They raced in MLflow's schema migration ('duplicate column name'), sometimes leaving the
    store unusable, and both enqueued every cell."""
    args = [
        sys.executable,
        "-m",
        "benchmark",
        *grid_args(tiny_data, stores, methods="pixel-svm", **{"--seeds": "0,1,2", "--epochs": "1"}),
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    codes, errors = launch_together(args, env, Path(stores["--results-dir"]).parent)
    assert codes == [0, 0], errors
    finished = [r.data.tags["cell_key"] for r in child_runs(stores) if r.info.status == "FINISHED"]
    assert len(finished) == len(set(finished)) == 6


SIGTERM_IN_A_FINALISER = """
import os, signal, sys, time
from benchmark.workqueue import workers

workers._install_interrupts()

class Finalised:
    def __del__(self):  # the launcher's SIGTERM lands while this runs (as in SQLAlchemy's GC)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.2)

try:
    Finalised()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # the cell's work goes on
        time.sleep(0.01)
    sys.exit(3)  # the interrupt was lost
except KeyboardInterrupt:
    sys.exit(130)
"""


CURSOR_CLOSED_DURING_A_STOP = """
import logging, sqlite3
from benchmark import runtime

runtime.configure()
log = logging.getLogger("sqlalchemy.pool.impl.QueuePool")  # where SQLAlchemy logs it
try:
    raise KeyboardInterrupt  # the stop lands inside a query
except KeyboardInterrupt:
    try:
        raise sqlite3.ProgrammingError("Cannot operate on a closed database.")
    except sqlite3.ProgrammingError:
        log.error("Error closing cursor (while stopping)", exc_info=True)
try:
    raise sqlite3.ProgrammingError("Cannot operate on a closed database.")
except sqlite3.ProgrammingError:
    log.error("Error closing cursor (at work)", exc_info=True)
"""


def test_a_store_error_while_stopping_is_quiet_and_one_at_work_is_not() -> None:
    """CI once saw a Ctrl-C land inside a worker's store query: SQLAlchemy logged "Error closing
    cursor" with a traceback. Records raised while an interrupt unwinds are dropped; the same
    error at work still prints."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-c", CURSOR_CLOSED_DURING_A_STOP],
        env=env,
        capture_output=True,
        timeout=60,
    )
    err = proc.stderr.decode()
    assert proc.returncode == 0, err
    assert "while stopping" not in err and "KeyboardInterrupt" not in err, err
    assert "Error closing cursor (at work)" in err and "Traceback" in err, err


def test_the_progress_counts_a_cell_once_and_not_while_it_is_retried() -> None:
    """A stale trial is failed and queued again, and another launcher may queue a cell afresh:
    the progress line of several workers must count each of its own cells once, when no trial
    of it still runs or waits, and never a trial that had ended before it started."""
    from types import SimpleNamespace

    from optuna.trial import TrialState

    from benchmark.workqueue.workers import done_keys

    def trial(number: int, key: str, state: TrialState) -> SimpleNamespace:
        return SimpleNamespace(number=number, state=state, user_attrs={"cell_key": key})

    trials = [
        trial(0, "old", TrialState.COMPLETE),  # ended before this launcher started
        trial(1, "a", TrialState.FAIL),  # stale, retried as trial 4
        trial(2, "b", TrialState.COMPLETE),
        trial(3, "b", TrialState.COMPLETE),  # twice: counted once
        trial(4, "a", TrialState.RUNNING),
        trial(5, "other", TrialState.COMPLETE),  # not a cell of this launcher
    ]
    wanted = {"old", "a", "b"}
    assert done_keys(trials, {0}, wanted) == ["b"]
    trials[4] = trial(4, "a", TrialState.COMPLETE)
    assert done_keys(trials, {0}, wanted) == ["a", "b"]


def test_a_sigterm_inside_a_finaliser_still_stops_the_worker_without_a_traceback() -> None:
    """Python cannot raise from a finaliser: it prints "Exception ignored ... Traceback ...
    KeyboardInterrupt" and carries on, so the worker neither stopped quietly nor at once
    (seen in CI with --workers 2). The interrupt must be delivered again, outside it."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-c", SIGTERM_IN_A_FINALISER], env=env, capture_output=True, timeout=60
    )
    assert proc.returncode == 130, proc.stderr.decode()[-2000:]
    assert b"Traceback" not in proc.stderr and b"ignored" not in proc.stderr, proc.stderr


def test_a_worker_whose_launcher_died_before_it_started_exits(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """PR_SET_PDEATHSIG only covers a parent that dies after the request: a launcher killed
    while its worker was still importing left that worker working on as an orphan (CI saw
    two outlive a kill -9)."""
    import ctypes
    import types

    from benchmark.workqueue import workers

    monkeypatch.setattr(ctypes, "CDLL", lambda *a, **k: types.SimpleNamespace(prctl=lambda *a: 0))
    launcher = types.SimpleNamespace(pid=os.getppid() + 1)  # not this process's parent any more
    monkeypatch.setattr(workers.mp, "parent_process", lambda: launcher)
    with pytest.raises(SystemExit):
        workers._die_with_parent()
    monkeypatch.setattr(
        workers.mp, "parent_process", lambda: types.SimpleNamespace(pid=os.getppid())
    )
    workers._die_with_parent()  # its launcher alive: it works on


def test_a_dataset_two_workers_log_at_once_is_recorded_once_not_failed(
    stores: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two workers logging a dataset new to the store both insert it; the loser's store call
    fails on the unique key (seen on PostgreSQL) and a retry finds the winner's row. Any other
    failure still surfaces."""
    from mlflow.exceptions import MlflowException

    tracker = Tracker(stores["--tracking-uri"], "ssl-vae-benchmark")
    run = tracker.start_run("cell", {})
    real, calls = tracker.client.log_inputs, []

    def lose_the_race_once(*args: object, **kwargs: object) -> None:
        calls.append(1)
        if len(calls) == 1:
            raise MlflowException('duplicate key value violates unique constraint "dataset_pk"')
        real(*args, **kwargs)

    monkeypatch.setattr(tracker.client, "log_inputs", lose_the_race_once)
    tracker.log_datasets(run, [("mnist-train", "abc", "/data", "training")])
    assert len(calls) == 2
    (logged,) = MlflowClient(stores["--tracking-uri"]).get_run(run).inputs.dataset_inputs
    assert (logged.dataset.name, logged.dataset.digest) == ("mnist-train", "abc")

    def broken(*args: object, **kwargs: object) -> None:
        raise MlflowException("permission denied")

    monkeypatch.setattr(tracker.client, "log_inputs", broken)
    with pytest.raises(MlflowException, match="permission denied"):
        tracker.log_datasets(run, [("mnist-test", "def", "/data", "evaluation")])


def test_a_run_that_ended_is_marked_so_even_when_the_store_is_busy(
    stores: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Sixteen GPU workers stopped at once left runs RUNNING: marking them KILLED met an
    SQLite store locked past its timeout. `finish` tries again; other errors surface."""
    from mlflow.exceptions import MlflowException

    tracker = Tracker(stores["--tracking-uri"], "ssl-vae-benchmark")
    run = tracker.start_run("cell", {})
    real, calls = tracker.client.set_terminated, []

    def locked_once(*args: object, **kwargs: object) -> None:
        calls.append(1)
        if len(calls) == 1:
            raise MlflowException("(sqlite3.OperationalError) database is locked")
        real(*args, **kwargs)

    monkeypatch.setattr("benchmark.tracking.client.time.sleep", lambda s: None)
    monkeypatch.setattr(tracker.client, "set_terminated", locked_once)
    tracker.finish(run, "KILLED")
    assert len(calls) == 2 and tracker.status(run) == "KILLED"

    def refused(*args: object, **kwargs: object) -> None:
        raise MlflowException("permission denied")

    monkeypatch.setattr(tracker.client, "set_terminated", refused)
    with pytest.raises(MlflowException, match="permission denied"):
        tracker.finish(run)


def test_a_store_call_is_retried_a_bounded_number_of_times_then_explained() -> None:
    """The one retry rule of the MLflow client: a call that keeps failing is tried
    OPEN_ATTEMPTS times and then raised as the caller's explanation; an error the caller does
    not retry, or a UsageError, is raised at once."""
    calls: list[int] = []

    def always_fails() -> None:
        calls.append(1)
        raise RuntimeError("database is locked")

    with pytest.raises(UsageError, match="Cannot open: database is locked"):
        retried(always_fails, give_up=lambda e: UsageError(f"Cannot open: {e}"), pause_s=0)
    assert len(calls) == OPEN_ATTEMPTS

    calls.clear()
    with pytest.raises(RuntimeError, match="locked"):
        retried(always_fails, retry_on=lost_insert_race, pause_s=0)
    assert len(calls) == 1

    def refuses() -> None:
        calls.append(1)
        raise UsageError("bad URI")

    calls.clear()
    with pytest.raises(UsageError, match="bad URI"):
        retried(refuses, give_up=lambda e: UsageError(f"Cannot open: {e}"), pause_s=0)
    assert len(calls) == 1
    assert retried(lambda: 7, pause_s=0) == 7


def test_workers_sharing_a_gpu_without_mps_get_a_hint(tmp_path: Path) -> None:
    """Measured on an H200: 16 workers under the MPS daemon ran about twice the cells an hour.
    `run` says so when several workers will share a GPU and no daemon's pipe is there."""
    import torch

    from benchmark.devices import sharing_hint

    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    env = {"CUDA_MPS_PIPE_DIRECTORY": str(tmp_path)}
    assert "nvidia-cuda-mps-control -d" in sharing_hint(cuda, 4, env)
    assert sharing_hint(cuda, 1, env) == "" and sharing_hint(cpu, 4, env) == ""
    (tmp_path / "control").touch()  # the daemon's control pipe
    assert sharing_hint(cuda, 4, env) == ""
