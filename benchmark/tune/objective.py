"""One tuning trial: stratified k-fold cross-validation on the labeled images of the budget.

The held-out fold of each split is scored with the method's predictions; the test set is never
touched. A VAE method's VAE is trained on all training images (it never sees a label), once per
latent configuration, through the shared VAECache, so trials, studies and `run` reuse it.

While a trial trains a new VAE it reports, after every epoch, the ELBO per image (nats, higher is
better) on a fixed slice of at most 2,000 training images with fixed noise, so a pruner can stop
a hopeless VAE before it finishes. That slice is also trained on: a truly held-out slice would
change the VAE and break the cache shared with `run`. The figure therefore measures fit, not
generalisation; it is compared only between trials at the same epoch on the same data.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import optuna
import torch
from sklearn.model_selection import StratifiedKFold

from benchmark.data.splits import LabeledSplit
from benchmark.devices import seeded_generator
from benchmark.tracking.client import Tracker
from benchmark.vaes.cache import VAECache, cache_key
from methods.base import Method, MetricLogger, TrainData, VAEProvider
from methods.vae import VAE, VAEConfig, negative_elbo

MONITOR_IMAGES = 2000
MONITOR_STREAM = 104729  # own RNG stream for the slice, independent of the split's and folds'


class TrialFailed(Exception):
    """A trial raised; it is recorded as a FAILED run and trial, and the study goes on."""


def stratified_folds(labels: np.ndarray, k: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train, held-out) positions into the labeled arrays, the same for every trial."""
    splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    return list(splitter.split(np.zeros(len(labels)), labels))


class VAESource:
    """Config -> VAE from the shared cache; a VAE trained here reports its ELBO to the trial."""

    def __init__(
        self,
        x: np.ndarray,
        fingerprint: str,
        seed: int,
        device: torch.device,
        cache: VAECache,
        progress: bool,
    ) -> None:
        self.fingerprint, self.seed, self.device = fingerprint, seed, device
        self.cache, self.progress = cache, progress
        self.x = torch.tensor(x, device=device)  # a copy: the caller's array is read-only
        rng = np.random.default_rng([seed, MONITOR_STREAM])
        rows = np.sort(rng.choice(len(x), size=min(MONITOR_IMAGES, len(x)), replace=False))
        self.monitor_x = self.x[torch.from_numpy(rows).to(device)]
        self._models: dict[str, VAE] = {}

    @torch.no_grad()
    def monitor_elbo(self, model: VAE) -> float:
        """ELBO per image on the fixed slice, with the same noise every epoch and every trial.

        Uses its own generator, so the training run's random stream (and thus the cached
        weights) is exactly what `run` would produce.
        """
        model.eval()
        generator = seeded_generator(self.seed, self.device)
        return -float(negative_elbo(model, self.monitor_x, generator))

    def provider(self, trial: optuna.Trial, log: MetricLogger) -> VAEProvider:
        def provide(config: VAEConfig) -> VAE:
            key = cache_key(self.fingerprint, config, self.seed, self.device)
            if key not in self._models:
                result, _, _ = self.cache.get_or_train(
                    self.x,
                    self.fingerprint,
                    config,
                    self.seed,
                    self.progress,
                    on_epoch=self._reporter(trial, log, config),
                )
                self._models[key] = result.model
            return self._models[key]

        return provide

    def _reporter(
        self, trial: optuna.Trial, log: MetricLogger, config: VAEConfig
    ) -> Callable[[int, float, VAE], None]:
        def on_epoch(epoch: int, loss: float, model: VAE) -> None:
            elbo = self.monitor_elbo(model)
            log("vae_train_loss", loss, epoch)
            log("vae_slice_elbo", elbo, epoch)
            trial.report(elbo, epoch)
            # Pruning after the last epoch would throw away a finished, cacheable VAE.
            if epoch + 1 < config.epochs and trial.should_prune():
                raise optuna.TrialPruned(
                    f"VAE ELBO {elbo:.2f} after epoch {epoch + 1} is below the pruner's"
                    " threshold among finished trials at that epoch"
                )

        return on_epoch


@dataclass
class CVTask:
    """What every trial of a study shares: data, labeled split, folds, VAE source."""

    method: type[Method]
    base_params: dict[str, Any]
    x: np.ndarray
    split: LabeledSplit
    folds: list[tuple[np.ndarray, np.ndarray]]
    n_classes: int
    seed: int
    device: torch.device
    vaes: VAESource | None
    identity: dict[str, Any] = field(default_factory=dict)  # logged with every trial
    progress: bool = False


def cross_validate(
    task: CVTask, params: dict[str, Any], trial: optuna.Trial, log: MetricLogger
) -> list[float]:
    """Accuracy on each held-out fold of the labeled images, fitting on the other folds."""
    accuracies, start = [], time.perf_counter()
    for j, (fit_pos, held_pos) in enumerate(task.folds):
        torch.manual_seed(task.seed)  # safety net for methods that use torch's global RNG
        method = task.method(**params)
        data = TrainData(
            x=task.x,
            labeled=task.split.labeled[fit_pos],
            y_labeled=task.split.labels[fit_pos],
            n_classes=task.n_classes,
            seed=task.seed,
            device=task.device,
            vae=task.vaes.provider(trial, log) if task.vaes and method.uses_vae else None,
            log_metric=lambda k, v, s, j=j: log(f"fold{j}_{k}", v, s),
            progress=task.progress,
        )
        method.fit(data)
        predicted = np.asarray(method.predict(task.x[task.split.labeled[held_pos]]))
        accuracies.append(100 * float(np.mean(predicted == task.split.labels[held_pos])))
        log("fold_accuracy", accuracies[-1], j)
        minutes = (time.perf_counter() - start) / 60
        print(  # one line a fold: a fold of a long method takes minutes, and logs are files
            f"[{time.strftime('%H:%M:%S')}] trial {trial.number}, fold {j + 1}/{len(task.folds)}:"
            f" {accuracies[-1]:.2f} % held-out accuracy ({minutes:.0f} min into the trial)",
            flush=True,
        )
    return accuracies


def make_objective(
    task: CVTask, tracker: Tracker, parent_run_id: str, study_name: str
) -> Callable[[optuna.Trial], float]:
    """Objective = mean CV accuracy in %; each trial is one MLflow child run of the study's run."""

    def objective(trial: optuna.Trial) -> float:
        tried = trial.user_attrs.get("try")  # a --try: its values, the defaults elsewhere
        searched = task.method.search_space(trial) if tried is None else tried
        params = {**task.base_params, **searched}
        trial.set_user_attr("method_params", params)
        tags = {"kind": "tune-trial", "study_name": study_name, "trial_number": str(trial.number)}
        run_id = tracker.start_run(f"trial {trial.number}", tags, parent_run_id)
        trial.set_user_attr("mlflow_run_id", run_id)
        tracker.log_params(run_id, {**task.identity, **params})
        log = lambda k, v, s: tracker.log_metric(run_id, k, v, s)  # noqa: E731
        status = "KILLED"  # KeyboardInterrupt leaves it so
        start = time.perf_counter()
        try:
            folds = cross_validate(task, params, trial, log)
            mean, std = float(np.mean(folds)), float(np.std(folds))
            trial.set_user_attr("fold_accuracies", folds)
            seconds = time.perf_counter() - start
            tracker.log_metrics(
                run_id, {"cv_accuracy": mean, "cv_accuracy_std": std, "seconds": seconds}
            )
            status = "FINISHED"
            return mean
        except optuna.TrialPruned as pruned:
            tracker.set_tags(run_id, {"optuna_state": "PRUNED", "pruned": str(pruned)})
            raise
        except Exception as error:
            status = "FAILED"
            message = f"{type(error).__name__}: {error}"
            trial.set_user_attr("error", message)
            tracker.set_tags(run_id, {"error": message, "traceback": traceback.format_exc()})
            raise TrialFailed(f"trial {trial.number}: {message}") from error
        finally:
            tracker.finish(run_id, status)

    return objective
