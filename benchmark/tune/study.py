"""Running a tuning study: persistent, resumable, seeded, and tracked in MLflow.

The study is stored in an Optuna RDB storage (SQLite under mlruns/ by default, PostgreSQL for
several machines) under a name derived from the request, so the same command continues it.
Heartbeats fail the trial of a process that died; it is retried with the same parameters. The
TPE sampler is re-seeded before every trial from (seed, trials already in the study), so a
single process is reproducible and a continued study does not replay its first points.

Pruning: a trial that trains a new VAE reports the VAE's ELBO per epoch (see
`benchmark.tune.objective`). The pruner stops it only if, at that epoch, its ELBO is more
than 1% below that of every finished trial that trained a VAE. The ELBO is not the objective:
on Fashion-MNIST (100 labels, 10 epochs) latent dimensions 5 to 58 were within about 1 nat of
each other at every epoch while their CV accuracy ranged from 0.29 to 0.65 (driven by C and
gamma), and a bottom-quarter percentile rule pruned 8 of 20 trials on that noise, its threshold
rising as only survivors finish. A margin below the worst finished trial cuts only clear
laggards (latent 2 was 17 nats behind).
"""

from __future__ import annotations

import argparse
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.pruners import BasePruner
from optuna.samplers import TPESampler
from optuna.trial import FrozenTrial, TrialState

import methods
from benchmark import runtime
from benchmark.data.splits import balanced_split
from benchmark.devices import resolve_device
from benchmark.errors import UsageError
from benchmark.study.execute import Workspace
from benchmark.tracking.client import Tracker
from benchmark.tune import outputs
from benchmark.tune.objective import (
    CVTask,
    TrialFailed,
    VAESource,
    make_objective,
    stratified_folds,
)
from benchmark.tune.request import TuneRequest
from benchmark.vaes.cache import VAECache
from benchmark.workqueue.locks import store_lock
from benchmark.workqueue.queue import open_storage
from benchmark.workqueue.workers import close_stale_run


class LaggardPruner(BasePruner):
    """Prune a trial whose value at a step is clearly below every finished trial's (maximizing).

    Unlike a percentile rule, its threshold never rises as the study goes on: adding finished
    trials can only lower the worst of them.
    """

    def __init__(
        self,
        margin: float = 0.01,
        n_startup_trials: int = 5,
        n_warmup_steps: int = 1,
        n_min_trials: int = 3,
    ) -> None:
        self.margin = margin
        self.n_startup_trials = n_startup_trials
        self.n_warmup_steps = n_warmup_steps
        self.n_min_trials = n_min_trials

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        step = trial.last_step
        if step is None or step < self.n_warmup_steps:
            return False
        finished = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        values = [t.intermediate_values[step] for t in finished if step in t.intermediate_values]
        if len(finished) < self.n_startup_trials or len(values) < self.n_min_trials:
            return False
        floor = min(values)
        return trial.intermediate_values[step] < floor - self.margin * abs(floor)


def make_pruner(epochs: int) -> LaggardPruner:
    return LaggardPruner(n_warmup_steps=max(1, epochs // 4))


def make_sampler(seed: int, n_existing: int) -> TPESampler:
    """A TPE sampler whose seed depends on the trials already run, never repeating a stream."""
    derived = int(np.random.SeedSequence([seed, n_existing]).generate_state(1)[0])
    return TPESampler(seed=derived, multivariate=True)


def redacted(url: str) -> str:
    """A storage URL without its password, safe to log."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL SQLAlchemy can parse; open_storage will say so
        return url


def open_study(
    storage: Any, request: TuneRequest, settings: dict[str, Any], epochs: int
) -> optuna.Study:
    """Create or continue the study; refuse to continue one started with other settings."""
    study = optuna.create_study(
        study_name=request.study_name,
        storage=storage,
        direction="maximize",
        load_if_exists=True,
        pruner=make_pruner(epochs),
    )
    stored = study.user_attrs.get("tune_settings")
    if stored is None:
        study.set_user_attr("tune_settings", settings)
    elif stored != settings:
        differ = sorted(
            k for k in settings.keys() | stored.keys() if stored.get(k) != settings.get(k)
        )
        was = ", ".join(f"{k}={stored.get(k)!r}" for k in differ)
        now = ", ".join(f"{k}={settings.get(k)!r}" for k in differ)
        raise UsageError(
            f"Study {request.study_name!r} was started with {was}, but this call has {now}."
            " Repeat the original options to continue it, or pass --study-name NEW to start"
            " a separate study."
        )
    if "uid" not in study.user_attrs:  # tells this study's MLflow runs from a deleted namesake's
        study.set_user_attr("uid", uuid.uuid4().hex)
    return study


def build_task(
    request: TuneRequest, args: argparse.Namespace, progress: bool
) -> tuple[CVTask, str]:
    """Load the training split only, draw the labeled budget and its folds."""
    device = resolve_device(args.device)
    ws = Workspace(args.data_dir, device, VAECache(args.vae_cache_dir), progress)
    x, y, fingerprint = ws.train_arrays(request.dataset, request.subset)
    n_classes = ws.dataset(request.dataset).spec.n_classes
    split = balanced_split(y, request.n_labels, request.seed, request.dataset, n_classes)
    cls = methods.get(request.method)
    vaes = (
        VAESource(x, fingerprint, request.seed, device, ws.cache, progress)
        if cls.uses_vae
        else None
    )
    identity = {
        "method": request.method,
        "dataset": request.dataset,
        "n_labels": request.n_labels,
        "seed": request.seed,
        "subset": request.subset,
        "cv_folds": request.folds,
        "device": str(device),
    }
    task = CVTask(
        method=cls,
        base_params=request.base_params,
        x=x,
        split=split,
        folds=stratified_folds(split.labels, request.folds, request.seed),
        n_classes=ws.dataset(request.dataset).spec.n_classes,
        seed=request.seed,
        device=device,
        vaes=vaes,
        identity=identity,
        progress=progress,
    )
    return task, fingerprint


def optimize(
    study: optuna.Study,
    objective: Callable[[optuna.Trial], float],
    n_trials: int,
    seed: int,
    callback: Callable[[optuna.Study, FrozenTrial], None],
) -> None:
    """Run n_trials trials one at a time, re-seeding the sampler before each.

    A failing trial is recorded (FAIL in Optuna, FAILED in MLflow) and the study goes on.
    """
    for _ in range(n_trials):
        study.sampler = make_sampler(seed, len(study.get_trials(deepcopy=False)))
        study.optimize(objective, n_trials=1, catch=(TrialFailed,), callbacks=[callback])


def study_settings(request: TuneRequest, fingerprint: str) -> dict[str, Any]:
    """What must not change while a study continues: it would change the objective."""
    return {
        "method": request.method,
        "dataset": request.dataset,
        "n_labels": request.n_labels,
        "seed": request.seed,
        "epochs": request.epochs,
        "subset": request.subset,
        "cv_folds": request.folds,
        "train_fingerprint": fingerprint,
    }


def run_study(request: TuneRequest, args: argparse.Namespace) -> int:
    runtime.quiet_optuna()
    runtime.cpu_numerics()
    progress = sys.stderr.isatty()
    task, fingerprint = build_task(request, args, progress)
    settings = study_settings(request, fingerprint)
    tracker = Tracker(args.tracking_uri, args.experiment)
    epochs = int(request.base_params.get("vae_epochs", request.base_params.get("epochs", 1)))
    storage = open_storage(args.storage, close_stale_run(tracker))
    with store_lock(args.storage, f"tune-{request.study_name}"):  # machines started together
        study = open_study(storage, request, settings, epochs)  # create the study once
        parent = outputs.parent_run(
            tracker, study, f"tune {request.label}", {**settings, "storage": redacted(args.storage)}
        )
    tracker.set_tags(parent, {"command": " ".join(sys.argv)})
    scored = [t.user_attrs.get("try") for t in study.trials if t.value is not None]
    new = [p for p in request.tries if p not in scored]  # a scored try is not run again
    print(
        f"study {request.study_name!r}: {len(study.trials)} earlier trial(s); running"
        f" {len(new)} --try and {request.n_trials} sampled ({request.folds}-fold CV on the"
        f" {request.n_labels} labeled images; the test set is not read)"
    )
    status = "KILLED"
    try:
        objective = make_objective(task, tracker, parent, request.study_name)
        callback = outputs.history_callback(tracker, parent)
        for values in new:  # the objective reads them, not the sampler
            study.enqueue_trial({}, user_attrs={"try": values})
        optimize(study, objective, len(new) + request.n_trials, request.seed, callback)
        path = outputs.summarise(tracker, parent, study, request, settings, Path(args.results_dir))
        status = "FINISHED"
    finally:
        tracker.finish(parent, status)
    if path is None:
        print(
            f"error: no trial of study {request.study_name!r} completed; see the FAILED child"
            " runs' `error` tags in MLflow.",
            file=sys.stderr,
        )
        return 1
    for values in request.tries:
        scores = [t.value for t in study.trials if t.user_attrs.get("try") == values]
        scores = [v for v in scores if v is not None]
        tried = ",".join(f"{k}={v}" for k, v in values.items())
        print(
            f"--try {tried}: CV accuracy {scores[-1]:.4f}" if scores else f"--try {tried}: failed"
        )
    best = study.best_trial
    print(
        f"best CV accuracy {best.value:.4f} (trial {best.number} of {len(study.trials)}):"
        f" {outputs.chosen(best)}\nwrote {path}; `run --params tuned --tuned-dir {args.results_dir}`"
        " uses it."
    )
    return 0
