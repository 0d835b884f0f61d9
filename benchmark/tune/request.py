"""A tuning request: `tune`'s input parsed and validated, before anything is trained.

`python -m benchmark tune --method M --dataset D --labels N` runs an Optuna study over the
method's own search space (its `search_space(trial)`, next to its defaults). Each trial is scored
by stratified k-fold cross-validation on the labeled images of the budget alone, so the test
files are never opened; the best parameters go to results/tuned/M-D-N-seedS.json (one per seed) for
`run --params tuned`. The study itself lives in `benchmark.tune.study`, imported only when needed.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any

import methods
from benchmark.data import datasets
from benchmark.data.splits import check_budget
from benchmark.errors import UsageError
from benchmark.options import parse_settings
from benchmark.study import grid

MAX_FOLDS = 5
MIN_LABELS_PER_CLASS = 2  # a class needs one image to fit on and one to score in every fold


@dataclass(frozen=True)
class TuneRequest:
    """A validated tuning request; `base_params` are the method's defaults plus CLI overrides."""

    method: str
    dataset: str
    n_labels: int
    seed: int
    n_trials: int  # the sampler's, after the tries
    epochs: int | None
    subset: int
    folds: int
    study_name: str
    base_params: dict[str, Any]
    # trials at the defaults but for the values each names (--try), run before the sampler's
    tries: tuple[dict[str, Any], ...] = ()

    @property
    def label(self) -> str:
        return f"{self.method} {self.dataset} n={self.n_labels} seed={self.seed}"


def default_study_name(method: str, dataset: str, n_labels: int, seed: int) -> str:
    """Same request, same name: running the same command again continues the study."""
    return f"tune-{method}-{dataset}-{n_labels}-seed{seed}"


def probe_search_space(cls: type[methods.Method]) -> dict[str, Any]:
    """One sample of the method's search space from a throwaway in-memory study."""
    import optuna

    from benchmark import runtime

    runtime.quiet_optuna()
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
    if args.trials < (0 if args.tries else 1):
        raise UsageError(f"--trials {args.trials} must be at least {0 if args.tries else 1}.")
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
    tries = tuple(tried_params(cls, base, sample, item) for item in args.tries)
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
        tries=tries,
    )


def tried_params(
    cls: type[methods.Method], base: dict[str, Any], sample: dict[str, Any], item: str
) -> dict[str, Any]:
    """One --try: the values it names (parameters of the search space), typed as the method
    types them; the trial runs every other parameter at the request's defaults."""
    values = parse_settings(item.split(","), "--try")
    outside = sorted(set(values) - set(sample))
    if outside:
        raise UsageError(
            f"--try {item!r}: {', '.join(outside)} is not in {cls.name}'s search space"
            f" ({', '.join(sorted(sample))}); name only those."
        )
    typed = cls(**{**base, **values}).params
    return {k: typed[k] for k in values}
