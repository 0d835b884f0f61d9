"""No lost work: long trainings checkpoint every epoch and resume after Ctrl-C or kill -9,
ending with the same numbers as an uninterrupted run on the CPU."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO, flatten, store_options
from mlflow.tracking import MlflowClient

from methods._m2 import M2Config, train_m2
from methods.training import Checkpoint
from methods.vae import VAEConfig, train_vae


class Stop(KeyboardInterrupt):
    """Ctrl-C at the end of a chosen epoch."""


def _stop_after(epoch: int):
    def on_epoch(e: int, loss: float, model, *terms) -> None:
        if e == epoch:
            raise Stop

    return on_epoch


@pytest.fixture(autouse=True)
def checkpoint_every_epoch(monkeypatch) -> None:
    monkeypatch.setenv("BENCHMARK_CHECKPOINT_SECONDS", "0")


def _same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.slow
def test_an_interrupted_vae_resumes_from_its_checkpoint_bit_identically(
    tmp_path: Path, capsys
) -> None:
    x = torch.from_numpy(np.random.default_rng(0).random((300, 32), dtype=np.float32))
    config = VAEConfig(latent_dim=2, hidden=(16,), epochs=5, batch_size=64)
    checkpoint = Checkpoint(tmp_path / "vae.ckpt")
    with pytest.raises(Stop):
        train_vae(x, config, 3, on_epoch=_stop_after(1), checkpoint=checkpoint, progress=False)
    assert checkpoint.load()["epoch"] == 1  # epoch 2 was interrupted in its callback
    resumed = train_vae(x, config, 3, checkpoint=checkpoint, progress=False)
    assert "resuming at epoch 2 of 5" in capsys.readouterr().out
    plain = train_vae(x, config, 3, progress=False)
    assert _same(resumed.model, plain.model)
    assert resumed.history == pytest.approx(plain.history)


def test_an_interrupted_m2_resumes_from_its_checkpoint_bit_identically(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.random((200, 20), dtype=np.float32))
    labeled = torch.arange(20)
    y = torch.arange(20) % 4
    config = M2Config(z_dim=2, hidden=8, epochs=4, batch_size=50, labeled_batch_size=10)
    checkpoint = Checkpoint(tmp_path / "m2.ckpt")
    stop = _stop_after(1)
    with pytest.raises(Stop):
        train_m2(x, labeled, y, 4, config, 0, on_epoch=stop, progress=False, checkpoint=checkpoint)
    resumed = train_m2(x, labeled, y, 4, config, 0, progress=False, checkpoint=checkpoint)
    plain = train_m2(x, labeled, y, 4, config, 0, progress=False)
    assert _same(resumed, plain)


def test_a_checkpoint_of_a_different_network_starts_over(tmp_path: Path, caplog) -> None:
    """Code that changes a network's tensors must not fail the cell on resume, nor load a
    half-matching state: it warns and trains from scratch, as an uninterrupted run."""
    x = torch.from_numpy(np.random.default_rng(0).random((300, 32), dtype=np.float32))
    checkpoint = Checkpoint(tmp_path / "vae.ckpt")
    wide = VAEConfig(latent_dim=2, hidden=(24,), epochs=3, batch_size=64)
    with pytest.raises(Stop):
        train_vae(x, wide, 3, on_epoch=_stop_after(1), checkpoint=checkpoint, progress=False)
    assert checkpoint.load()["epoch"] == 1
    config = VAEConfig(latent_dim=2, hidden=(16,), epochs=3, batch_size=64)
    with caplog.at_level("WARNING"):
        resumed = train_vae(x, config, 3, checkpoint=checkpoint, progress=False)
    assert "holds a different network" in caplog.text
    plain = train_vae(x, config, 3, progress=False)
    assert _same(resumed.model, plain.model)


@pytest.mark.slow
def test_kill_9_mid_vae_then_rerun_resumes_and_matches_an_uninterrupted_run(
    tiny_data: Path, tmp_path: Path, stores: dict
) -> None:
    def args(options: dict) -> list[str]:
        grid = {
            "--methods": "vae-rbf-svm",
            "--datasets": "mnist",
            "--labels": "20",
            "--seeds": "0",
            "--epochs": "1500",  # a few seconds on tiny data: time to be killed mid-training
            "--set": "vae_hidden=64",  # small checkpoints: the point is the resume
            "--data-dir": str(tiny_data),
            **options,
        }
        return [sys.executable, "-m", "benchmark", "run", *flatten(grid)]

    env = {**os.environ, "PYTHONPATH": str(REPO), "BENCHMARK_CHECKPOINT_SECONDS": "0.2"}
    proc = subprocess.Popen(args(stores), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    cache = Path(stores["--vae-cache-dir"])
    deadline = time.time() + 180
    while time.time() < deadline and not list(cache.glob("*.ckpt")):
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)  # at the first checkpoint: mid-training
    proc.wait()
    assert list(cache.glob("*.ckpt")) and not list(cache.glob("*.pt"))
    rerun = subprocess.run(args(stores), env=env, capture_output=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr.decode()[-2000:]
    assert "resuming at epoch" in rerun.stdout.decode()
    assert not list(cache.glob("*.ckpt"))  # done: the checkpoint made way for the cache entry

    # stores of its own, results too: else its archive says the cell is done
    other = store_options(tmp_path / "b")
    assert subprocess.run(args(other), env=env, capture_output=True, timeout=300).returncode == 0

    def accuracy(options: dict) -> list[float]:
        client = MlflowClient(options["--tracking-uri"])
        experiment = client.get_experiment_by_name("ssl-vae-benchmark")
        runs = client.search_runs([experiment.experiment_id], "attributes.status = 'FINISHED'")
        return [r.data.metrics["accuracy"] for r in runs if "cell_key" in r.data.tags]

    assert accuracy(stores) == accuracy(other)


@pytest.mark.slow
def test_a_cell_killed_mid_training_resumes_with_its_whole_curves_and_says_so(
    tiny_data: Path, stores: dict
) -> None:
    """kill -9 mid-M2, then the same command: the new run resumes from the cell's checkpoint,
    says how much it held (the cost model skips its time), and carries the earlier epochs'
    curves from the killed run, each epoch once."""
    epochs = 100
    grid = {
        "--methods": "m2",
        "--datasets": "mnist",
        "--labels": "20",
        "--seeds": "0",
        "--epochs": str(epochs),
        "--set": "hidden=16",
        "--data-dir": str(tiny_data),
        **stores,
    }
    command = [sys.executable, "-m", "benchmark", "run", *flatten(grid)]
    env = {**os.environ, "PYTHONPATH": str(REPO), "BENCHMARK_CHECKPOINT_SECONDS": "0.2"}
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    root = Path(stores["--vae-cache-dir"]).parent / "checkpoints"

    def epochs_saved() -> int:
        found = [Checkpoint(p).epochs() for p in root.glob("*/*.pt")]
        return max((done for done, _ in filter(None, found)), default=0)

    deadline = time.time() + 180
    while time.time() < deadline and epochs_saved() < 2 and proc.poll() is None:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert 2 <= epochs_saved() < epochs, "the first run must be killed mid-training"
    rerun = subprocess.run(command, env=env, capture_output=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr.decode()[-2000:]
    assert "resuming at epoch" in rerun.stdout.decode()

    client = MlflowClient(stores["--tracking-uri"])
    experiment = client.get_experiment_by_name("ssl-vae-benchmark")
    runs = [r for r in client.search_runs([experiment.experiment_id]) if "cell_key" in r.data.tags]
    killed = [r for r in runs if r.info.status == "KILLED"]
    finished = [r for r in runs if r.info.status == "FINISHED"]
    assert len(killed) == 1 and len(finished) == 1
    tags = finished[0].data.tags
    assert 0 < float(tags["resumed_share"]) < 1
    assert tags["resumed_from_run"] == killed[0].info.run_id
    history = client.get_metric_history(finished[0].info.run_id, "m2_loss")
    assert sorted(m.step for m in history) == list(range(epochs))


def _random_train_data(log_metric, checkpoint_dir: Path | None):
    """120 random 4x4 images, the first 12 labeled (three classes), checkpointing in the folder."""
    from methods.base import TrainData

    x = np.random.default_rng(0).random((120, 16), dtype=np.float32)
    return TrainData(x, np.arange(12), np.arange(12) % 3, 3, 0, image_shape=(4, 4),
                     log_metric=log_metric, checkpoint_dir=checkpoint_dir)  # fmt: skip


def test_an_interrupted_sdgm_resumes_from_its_checkpoint_bit_identically(
    tmp_path: Path, capsys
) -> None:
    """Through the method's own fit: its step-size schedule and sampled latents must pick up
    where the interrupted run stopped."""
    import methods

    small = {"hidden": "8", "a_dim": 2, "z_dim": 2, "epochs": 4, "batch_size": 20,
             "labeled_batch_size": 10, "lr_decay_every": 1}  # fmt: skip

    def fit(log, folder: Path | None):
        method = methods.get("sdgm")(**small)
        method.fit(_random_train_data(log, folder))
        return method.model_

    def stop_at_epoch_1(name: str, value: float, step: int) -> None:
        if name == "labeled_accuracy" and step == 1:
            raise Stop

    with pytest.raises(Stop):
        fit(stop_at_epoch_1, tmp_path)
    resumed = fit(lambda *a: None, tmp_path)
    assert "resuming at epoch 2 of 4" in capsys.readouterr().out
    plain = fit(lambda *a: None, None)
    assert _same(resumed, plain)


@pytest.mark.parametrize(
    "name, small",
    [
        ("ladder", {"hidden": "8,8", "denoising_weights": "1,1,0.1,0.1", "epochs": 4,
                    "decay_epochs": 2, "batch_size": 20}),
        ("aae", {"hidden": 8, "z_dim": 2, "epochs": 4, "batch_size": 20}),
        ("adgm", {"hidden": "8", "a_dim": 2, "z_dim": 2, "epochs": 4, "batch_size": 20,
                  "labeled_batch_size": 10}),
    ],
)  # fmt: skip
def test_a_resumed_fit_logs_the_same_curves_as_an_uninterrupted_one(
    name: str, small: dict, tmp_path: Path
) -> None:
    """The label-free `probe_changed_class` compares each epoch with the previous one: the
    first epoch after a resume must be compared with the restored classifier, not skipped."""
    import methods

    def fit(folder: Path | None, stop_at: int | None = None) -> dict[tuple[str, int], float]:
        logged: dict[tuple[str, int], float] = {}

        def log(key: str, value: float, step: int) -> None:
            if key == "labeled_accuracy" and step == stop_at:
                raise Stop
            logged[key, step] = value

        try:
            methods.get(name)(**small).fit(_random_train_data(log, folder))
        except Stop:
            pass
        return logged

    interrupted = fit(tmp_path, stop_at=2)
    assert ("probe_changed_class", 1) in interrupted and ("labeled_accuracy", 2) not in interrupted
    resumed = fit(tmp_path)
    first = min(step for key, step in resumed if key == "labeled_accuracy")
    assert first == 2, "the second fit must resume at epoch 3"
    plain = fit(None)
    assert {**interrupted, **resumed} == plain
    assert sorted(s for k, s in plain if k == "probe_changed_class") == [1, 2, 3]
