"""The `tune` command: parsing and validating one tuning request, before anything is trained.

`python -m benchmark tune --method M --dataset D --labels N` runs an Optuna study over the
method's own search space (its `search_space(trial)`, next to its defaults). Each trial is scored
by stratified k-fold cross-validation on the labeled images of the budget alone, so the test
files are never opened; the best parameters go to results/tuned/M-D-N.json for
`run --params tuned`. The study itself lives in `benchmark.tuning`, imported only when needed.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any

import methods
from benchmark import datasets, grid
from benchmark.cli import add_common, positive_int
from benchmark.devices import DEVICE_CHOICES
from benchmark.errors import UsageError
from benchmark.splits import check_budget
from methods.vae_cache import DEFAULT_CACHE_DIR

DEFAULT_TRIALS = 20
DEFAULT_STORAGE = "sqlite:///mlruns/optuna.db"  # the runner's default: one file for all studies
MAX_FOLDS = 5
MIN_LABELS_PER_CLASS = 2  # a class needs one image to fit on and one to score in every fold


@dataclass(frozen=True)
class TuneRequest:
    """A validated tuning request; `base_params` are the method's defaults plus CLI overrides."""

    method: str
    dataset: str
    n_labels: int
    seed: int
    n_trials: int
    epochs: int | None
    subset: int
    folds: int
    study_name: str
    base_params: dict[str, Any]

    @property
    def label(self) -> str:
        return f"{self.method} {self.dataset} n={self.n_labels} seed={self.seed}"


def default_study_name(method: str, dataset: str, n_labels: int, seed: int) -> str:
    """Same request, same name: running the same command again continues the study."""
    return f"tune-{method}-{dataset}-{n_labels}-seed{seed}"


def probe_search_space(cls: type[methods.Method]) -> dict[str, Any]:
    """One sample of the method's search space from a throwaway in-memory study."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0)).ask()
    return cls.search_space(trial)


def request_from_args(args: argparse.Namespace) -> TuneRequest:
    """Check the whole request; every problem is a UsageError naming the fix."""
    cls = methods.get(args.method)
    spec = datasets.get_spec(args.dataset)
    per_class = check_budget(args.labels, spec.n_classes)
    if per_class < MIN_LABELS_PER_CLASS:
        raise UsageError(
            f"--labels {args.labels} gives {per_class} labeled image per class, but"
            f" cross-validation inside the budget needs at least {MIN_LABELS_PER_CLASS} per"
            f" class; use --labels {MIN_LABELS_PER_CLASS * spec.n_classes} or more."
        )
    if args.trials < 1:
        raise UsageError(f"--trials {args.trials} must be at least 1.")
    if args.seed < 0:
        raise UsageError(f"--seed {args.seed} must be a non-negative integer.")
    if args.subset and args.subset < args.labels:
        raise UsageError(
            f"--subset {args.subset} is smaller than the budget --labels {args.labels}."
        )
    name = args.study_name or default_study_name(args.method, args.dataset, args.labels, args.seed)
    if not name or "'" in name or '"' in name:
        raise UsageError(f"--study-name {name!r} must be non-empty and contain no quotes.")
    overrides = {"vae_epochs": args.epochs, "epochs": args.epochs}
    base, _ = grid.resolve_params(args.method, args.dataset, args.labels, overrides)
    sample = probe_search_space(cls)
    if not sample:
        raise UsageError(
            f"Method {args.method!r} declares no search space (its search_space() returns {{}}),"
            f" so there is nothing to tune; run it with its defaults: `run --methods {args.method}`."
        )
    cls(**{**base, **sample})  # a search space naming an unknown parameter fails here
    return TuneRequest(
        method=args.method,
        dataset=args.dataset,
        n_labels=args.labels,
        seed=args.seed,
        n_trials=args.trials,
        epochs=args.epochs,
        subset=args.subset,
        folds=min(MAX_FOLDS, per_class),
        study_name=name,
        base_params=base,
    )


def cmd_tune(args: argparse.Namespace) -> int:
    request = request_from_args(args)
    from benchmark import tuning  # optuna, MLflow and torch training: only once input is valid

    return tuning.run_study(request, args)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "tune",
        help="Optuna study of one method's search space, scored by CV inside the labeled budget",
        description=(
            "Tune one method for one dataset and label budget. Each trial's score is the mean"
            " stratified k-fold CV accuracy (k = min(5, labels per class)) on the labeled images"
            " of the budget; the test set is never read. Running the same command again"
            " continues the study. The best parameters are written to"
            " RESULTS_DIR/tuned/METHOD-DATASET-LABELS.json for `run --params tuned`."
        ),
    )
    p.add_argument("--method", required=True, help="one method (see `list`)")
    p.add_argument("--dataset", required=True, help="mnist or fashion-mnist")
    p.add_argument("--labels", type=int, required=True, help="label budget, e.g. 100")
    p.add_argument("--seed", type=int, default=0, help="labeled split, folds, VAE and sampler")
    p.add_argument(
        "--trials",
        type=int,
        default=DEFAULT_TRIALS,
        help=f"trials to run in this call (default {DEFAULT_TRIALS}); earlier ones are kept",
    )
    p.add_argument("--epochs", type=positive_int, help="training epochs (VAE and M2-style models)")
    p.add_argument("--storage", default=DEFAULT_STORAGE, help="Optuna storage URL")
    p.add_argument("--study-name", help="default: tune-METHOD-DATASET-LABELS-seedSEED")
    p.add_argument("--results-dir", default="results")
    p.add_argument("--vae-cache-dir", default=str(DEFAULT_CACHE_DIR), help="shared with `run`")
    p.add_argument("--device", default="auto", choices=DEVICE_CHOICES)
    p.add_argument(
        "--subset",
        type=positive_int,
        default=0,
        help="use only the first N training images (quick smoke runs)",
    )
    add_common(p)
    p.set_defaults(handler=cmd_tune)
