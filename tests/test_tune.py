"""The `tune` command: CV inside the budget, resumable studies, MLflow layout, tuned file."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch
from conftest import flatten, make_fake_dataset

import methods
from benchmark.cli import main
from benchmark.tracking import client as tracking
from benchmark.tune.objective import VAESource, stratified_folds
from benchmark.tune.study import LaggardPruner
from benchmark.vaes.cache import VAECache
from methods.base import REGISTRY, Method
from methods.vae import VAEConfig, train_vae

TUNE = ["tune", "--method", "vae-rbf-svm", "--dataset", "fashion-mnist", "--labels", "30"]


def _remove_test_files(data: Path) -> None:
    for path in data.glob("*/raw/t10k-*"):
        path.unlink()


def _runs(stores: dict[str, str], query: str) -> list:
    return list(tracking.Tracker(stores["--tracking-uri"]).runs(query))


def _study(stores: dict[str, str], name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=stores["--storage"])


def _simulate_dead_worker(study: optuna.Study) -> dict:
    """A trial that started, beat once, and whose process then vanished."""
    trial = study.ask()
    methods.get("vae-rbf-svm").search_space(trial)
    study._storage.record_heartbeat(trial._trial_id)
    return dict(trial.params)


@pytest.mark.slow
def test_study_without_test_files_resumes_and_feeds_run(
    tiny_data: Path, stores: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.setenv("BENCHMARK_HEARTBEAT_SECONDS", "1")
    _remove_test_files(tiny_data)
    common = ["--epochs", "1", "--data-dir", str(tiny_data), *flatten(stores)]
    assert main([*TUNE, "--trials", "3", *common]) == 0

    name = "tune-vae-rbf-svm-fashion-mnist-30-seed0"
    study = _study(stores, name)
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 3
    tuned_file = Path(stores["--results-dir"]) / "tuned" / "vae-rbf-svm-fashion-mnist-30-seed0.json"
    tuned = json.loads(tuned_file.read_text())
    assert tuned["study_name"] == name and tuned["n_trials"] == 3 and tuned["seed"] == 0
    assert tuned["cv_accuracy"] == pytest.approx(study.best_value)
    assert tuned["params"]["latent_dim"] == study.best_params["latent_dim"]

    dead_params = _simulate_dead_worker(study)
    time.sleep(4.5)  # past the grace period of 3 heartbeats, plus SQLite's 1 s timestamps
    assert main([*TUNE, "--trials", "2", *common]) == 0
    trials = _study(stores, name).trials
    states = [t.state.name for t in trials]
    assert states == ["COMPLETE"] * 3 + ["FAIL", "COMPLETE", "COMPLETE"]
    # the dead trial was retried as it was (whichever of the two new trials ran it: under load
    # the stale check can come only before the second one)
    retried = [t for t in trials[4:] if t.system_attrs.get("failed_trial") == 3]
    fresh = [t for t in trials[4:] if "failed_trial" not in t.system_attrs]
    assert len(retried) == 1 and retried[0].params == dead_params
    assert fresh[0].params != trials[0].params  # re-seeded sampler: no replay of trial 0

    parents = _runs(stores, f"tags.kind = 'tune-study' and tags.study_name = '{name}'")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    children = _runs(stores, f"tags.mlflow.parentRunId = '{parents[0].info.run_id}'")
    assert sorted(int(r.data.tags["trial_number"]) for r in children) == [0, 1, 2, 4, 5]
    assert all("cv_accuracy" in r.data.metrics for r in children)
    assert json.loads(parents[0].data.tags["best_params"]) == _study(stores, name).best_params

    # Settings that would change the objective do not silently join the study.
    assert main([*TUNE, "--trials", "1", *common[2:], "--epochs", "2"]) == 2
    assert "was started with epochs=1" in capsys.readouterr().err

    make_fake_dataset(tiny_data, "FashionMNIST")  # the same images, now with the test files
    cached = sorted((Path(stores["--vae-cache-dir"])).glob("*.pt"))
    run = ["run", "--methods", "vae-rbf-svm", "--datasets", "fashion-mnist", "--labels", "30"]
    run += ["--tuned-dir", stores["--results-dir"]]  # where `tune` wrote its choices
    # tuned with --epochs 1: the same settings or nothing; seed 1 was never tuned
    assert main([*run, "--seeds", "0", "--params", "tuned", *common[2:]]) == 2
    assert "was tuned with epochs=1, but this run has epochs=None" in capsys.readouterr().err
    assert main([*run, "--seeds", "0,1", "--params", "tuned", *common]) == 2
    assert "tune --method vae-rbf-svm --dataset fashion-mnist --labels 30 --seed 1" in (
        capsys.readouterr().err
    )
    assert main([*run, "--seeds", "0", "--params", "tuned", *common]) == 0
    cell = _runs(stores, "tags.cell_key != ''")
    assert len(cell) == 1
    assert cell[0].data.tags["param_source"] == f"tuned:{tuned_file}+cli"  # --epochs 1
    latest = json.loads(tuned_file.read_text())["params"]
    assert float(cell[0].data.params["C"]) == pytest.approx(latest["C"])
    assert int(cell[0].data.params["latent_dim"]) == latest["latent_dim"]
    assert sorted(Path(stores["--vae-cache-dir"]).glob("*.pt")) == cached  # tuned VAE reused


@pytest.mark.parametrize(
    "change, message",
    [
        ({"--method": "vae-svn"}, "Unknown method 'vae-svn'"),
        ({"--dataset": "cifar"}, "Unknown dataset 'cifar'"),
        ({"--labels": "10"}, "at least 2 per class"),
        ({"--labels": "35"}, "multiple of the 10 classes"),
        ({"--trials": "0"}, "--trials 0 must be at least 1"),
        ({"--subset": "20"}, "--subset 20 is smaller than the budget"),
        ({"--try": "shift=2"}, "shift is not in vae-rbf-svm's search space"),
        ({"--try": "C"}, "--try expects KEY=VALUE"),
    ],
)
def test_bad_input_exits_2_before_anything_is_created(
    tiny_data: Path, stores: dict[str, str], tmp_path: Path, capsys, change, message
) -> None:
    options = {"--method": "vae-rbf-svm", "--dataset": "mnist", "--labels": "30", **change}
    argv = ["tune", *flatten(options), "--data-dir", str(tiny_data), *flatten(stores)]
    assert main(argv) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "mlruns").exists() and not (tmp_path / "vae-cache").exists()


def test_tries_run_at_the_defaults_before_the_sampler_and_once(
    tiny_data: Path, stores: dict[str, str], capsys
) -> None:
    """`--try` compares given settings by the same CV: each is a trial at the defaults but
    for the values it names; a second call runs only the sampler's trials it asks for."""
    tries = ["--try", "C=0.5", "--try", "C=8,gamma=0.01"]
    argv = [*TUNE, *tries, "--epochs", "1", "--data-dir", str(tiny_data), *flatten(stores)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "--try C=0.5: CV accuracy" in out and "--try C=8.0,gamma=0.01: CV accuracy" in out
    assert out.count("fold 3/3: ") == 2 and "trial 1, fold 1/3: " in out  # a line a fold
    trials = _study(stores, "tune-vae-rbf-svm-fashion-mnist-30-seed0").trials
    defaults = methods.get("vae-rbf-svm").defaults  # gamma="scale": outside the search space
    ran = [
        {k: t.user_attrs["method_params"][k] for k in ("latent_dim", "C", "gamma")} for t in trials
    ]
    assert ran == [
        {"latent_dim": defaults["latent_dim"], "C": 0.5, "gamma": defaults["gamma"]},
        {"latent_dim": defaults["latent_dim"], "C": 8.0, "gamma": 0.01},
    ]
    tuned = Path(stores["--results-dir"]) / "tuned" / "vae-rbf-svm-fashion-mnist-30-seed0.json"
    best = max(trials, key=lambda t: t.value)
    assert json.loads(tuned.read_text())["searched"] == best.user_attrs["try"]
    assert main([*argv, "--trials", "1"]) == 0  # the tries were scored: only the sampler's
    assert len(_study(stores, "tune-vae-rbf-svm-fashion-mnist-30-seed0").trials) == 3


def test_method_without_search_space_is_refused(tiny_data: Path, stores, capsys) -> None:
    class Untunable(Method):
        name = "untunable-for-test"
        version = 1
        description = "a method with nothing to tune"

        def fit(self, data):  # pragma: no cover - never reached
            raise AssertionError("tune must refuse before fitting")

        def predict(self, x):  # pragma: no cover
            raise AssertionError

    try:
        argv = ["tune", "--method", Untunable.name, "--dataset", "mnist", "--labels", "30"]
        assert main([*argv, "--data-dir", str(tiny_data), *flatten(stores)]) == 2
        assert "declares no search space" in capsys.readouterr().err
    finally:
        REGISTRY.pop(Untunable.name)


def test_failing_trials_are_recorded_and_the_study_goes_on(
    tiny_data: Path, stores: dict[str, str], capsys
) -> None:
    class Broken(Method):
        name = "broken-for-test"
        version = 1
        description = "a method whose fit always raises"
        defaults = {"C": 1.0}

        @classmethod
        def search_space(cls, trial):
            return {"C": trial.suggest_float("C", 0.1, 10.0, log=True)}

        def fit(self, data):
            raise ValueError("fit exploded")

        def predict(self, x):  # pragma: no cover
            raise AssertionError

    try:
        argv = ["tune", "--method", Broken.name, "--dataset", "mnist", "--labels", "30"]
        assert main([*argv, "--trials", "2", "--data-dir", str(tiny_data), *flatten(stores)]) == 1
        out, err = capsys.readouterr()
        assert "trial 1: fail: ValueError: fit exploded" in out
        assert "no trial of study" in err
        runs = _runs(stores, "tags.kind = 'tune-trial'")
        assert [r.info.status for r in runs] == ["FAILED", "FAILED"]
        assert all(r.data.tags["error"] == "ValueError: fit exploded" for r in runs)
        assert not (Path(stores["--results-dir"]) / "tuned").exists()
    finally:
        REGISTRY.pop(Broken.name)


def test_folds_are_stratified_and_cover_the_budget_once() -> None:
    labels = np.repeat(np.arange(10), 3)
    folds = stratified_folds(labels, 3, seed=0)
    held = np.concatenate([h for _, h in folds])
    assert sorted(held) == list(range(30))
    for fit, h in folds:
        assert np.bincount(labels[h], minlength=10).tolist() == [1] * 10
        assert not set(fit) & set(h)
    again = stratified_folds(labels, 3, seed=0)
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(folds, again))


def _images(n: int = 256) -> np.ndarray:
    return np.random.default_rng(0).random((n, 64), dtype=np.float32)


def test_monitoring_leaves_vae_weights_bit_identical() -> None:
    """The cache key ignores the monitor, so monitored training must not change the weights."""
    x = _images()
    config = VAEConfig(latent_dim=3, hidden=(16,), epochs=2, batch_size=64)
    source = VAESource(x, "fp", 1, torch.device("cpu"), VAECache("unused"), progress=False)
    seen = []
    monitored = train_vae(
        source.x,
        config,
        1,
        on_epoch=lambda e, loss, m: seen.append(source.monitor_elbo(m)),
        progress=False,
    )
    plain = train_vae(torch.from_numpy(x), config, 1, progress=False)
    a, b = monitored.model.state_dict(), plain.model.state_dict()
    assert len(seen) == 2 and seen[1] > seen[0]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_pruned_vae_reports_its_elbo_and_is_not_cached(tmp_path: Path) -> None:
    study = optuna.create_study(
        direction="maximize", pruner=optuna.pruners.ThresholdPruner(lower=0.0)
    )  # an ELBO is negative: every check prunes
    trial = study.ask()
    cache = VAECache(tmp_path / "cache")
    source = VAESource(_images(), "fp", 0, torch.device("cpu"), cache, progress=False)
    provide = source.provider(trial, lambda name, value, step: None)
    with pytest.raises(optuna.TrialPruned):
        provide(VAEConfig(latent_dim=3, hidden=(16,), epochs=3, batch_size=64))
    assert list(study._storage.get_trial(trial._trial_id).intermediate_values) == [0]
    assert not list((tmp_path / "cache").glob("*.pt"))


def test_pruner_cuts_only_clear_laggards_behind_every_finished_trial() -> None:
    study = optuna.create_study(direction="maximize", pruner=LaggardPruner(n_warmup_steps=1))
    curves = [-250.0, -251.0, -252.0, -250.5]
    for floor in curves:
        study.add_trial(optuna.create_trial(value=0.5, intermediate_values={0: -300, 2: floor}))

    def prunes(values: dict[int, float]) -> bool:
        trial = study.ask()
        for step, value in values.items():
            trial.report(value, step)
        verdict = trial.should_prune()
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        return verdict

    assert not prunes({2: -270.0})  # fewer than 5 finished trials: no pruning yet
    study.add_trial(optuna.create_trial(value=0.5, intermediate_values={2: -249.0}))
    assert prunes({2: -270.0})
    assert not prunes({2: -253.0})  # behind every one, but within 1%: noise, not a laggard
    assert not prunes({0: -400.0})  # warm-up step
