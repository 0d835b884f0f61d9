"""What a tuning study leaves behind: its MLflow parent run, figures, and the tuned-params file.

The parent run is found again by its `study_name` tag, so a continued study keeps one parent
with every trial as a child. The best parameters change as a study continues, and MLflow
params are write-once, so the parent carries them as a tag, metrics and a JSON artifact.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import optuna
from optuna.importance import FanovaImportanceEvaluator
from optuna.trial import FrozenTrial, TrialState

from benchmark.study import grid
from benchmark.tracking.client import Tracker
from benchmark.tune.request import TuneRequest

STUDY_KIND = "tune-study"


def parent_run(tracker: Tracker, study: optuna.Study, title: str, params: dict[str, Any]) -> str:
    """The study's parent run: found by tag and reopened, or started with the study's params.

    The tag includes the study's uid, so a study deleted and created again under the same name
    gets a new parent instead of inheriting the old one's children.
    """
    tags = {
        "kind": STUDY_KIND,
        "study_name": study.study_name,
        "study_uid": study.user_attrs["uid"],
    }
    run_id = tracker.find_run(tags)
    if run_id is not None:
        tracker.reopen(run_id)
        return run_id
    run_id = tracker.start_run(title, tags)
    tracker.log_params(run_id, params)
    return run_id


def history_callback(
    tracker: Tracker, run_id: str, echo: bool = True
) -> Callable[[optuna.Study, FrozenTrial], None]:
    """After each trial: one line on stdout and the optimisation history on the parent run."""

    def on_trial(study: optuna.Study, trial: FrozenTrial) -> None:
        if trial.state == TrialState.COMPLETE:
            best = study.best_trial
            tracker.log_metrics(
                run_id,
                {"trial_cv_accuracy": trial.value, "best_cv_accuracy": best.value},
                step=trial.number,
            )
            outcome = (
                f"cv_accuracy {trial.value:.2f} % (best {best.value:.2f} %, trial {best.number})"
            )
        elif trial.state == TrialState.PRUNED:
            outcome = f"pruned at VAE epoch {(trial.last_step or 0) + 1}"
        else:
            outcome = f"{trial.state.name.lower()}: {trial.user_attrs.get('error', '')}"
        if echo:
            shown = ", ".join(f"{k}={_short(v)}" for k, v in chosen(trial).items())
            print(f"trial {trial.number}: {outcome}  [{shown}]", flush=True)

    return on_trial


def chosen(trial: FrozenTrial) -> dict[str, Any]:
    """The values a trial set: the sampler's, or a `--try`'s (those reach no sampler)."""
    return trial.user_attrs.get("try") or trial.params


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def importances(study: optuna.Study, seed: int) -> dict[str, float]:
    """fANOVA importances, or {} when they mean nothing (< 2 completed trials or params)."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    names = {name for t in complete for name in t.params}
    if len(complete) < 2 or len(names) < 2:
        return {}
    try:
        found = optuna.importance.get_param_importances(
            study, evaluator=FanovaImportanceEvaluator(seed=seed)
        )
    except (RuntimeError, ValueError, ZeroDivisionError):
        return {}  # e.g. every completed trial scored the same: nothing to attribute
    return {k: float(v) for k, v in found.items() if math.isfinite(v)}


def _save(ax: Any, path: Path) -> Path:
    figure = ax.figure if hasattr(ax, "figure") else ax.flat[0].figure
    figure.set_size_inches(7, 4.5)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return path


def figures(study: optuna.Study, weights: dict[str, float], folder: Path) -> list[Path]:
    """Optimisation history, parameter importances and VAE curves, where there is data."""
    from optuna.visualization import matplotlib as views

    made = [_save(views.plot_optimization_history(study), folder / "optimization_history.png")]
    if weights:
        fig, ax = plt.subplots()
        names = sorted(weights, key=weights.get)
        ax.barh(names, [weights[n] for n in names])
        ax.set(xlabel="fANOVA importance for CV accuracy", title="parameter importances")
        made.append(_save(ax, folder / "param_importances.png"))
    if any(t.intermediate_values for t in study.get_trials(deepcopy=False)):
        ax = views.plot_intermediate_values(study)
        ax.set(xlabel="VAE epoch (0-based)", ylabel="ELBO per image on the monitor slice")
        made.append(_save(ax, folder / "vae_elbo_per_epoch.png"))
    return made


def tuned_payload(
    study: optuna.Study, best: FrozenTrial, request: TuneRequest, settings: dict[str, Any]
) -> dict[str, Any]:
    """The tuned file's content: `params` is what `run --params tuned` merges over defaults."""
    states = [t.state for t in study.get_trials(deepcopy=False)]
    folds = best.user_attrs.get("fold_accuracies", [])
    return {
        "method": request.method,
        "dataset": request.dataset,
        "n_labels": request.n_labels,
        "seed": request.seed,
        "study_name": request.study_name,
        "n_trials": sum(s.is_finished() for s in states),
        "n_complete": states.count(TrialState.COMPLETE),
        "best_trial": best.number,
        "cv_accuracy": best.value,
        "cv_fold_accuracies": folds,
        "objective": (
            f"mean accuracy over stratified {request.folds}-fold CV on the labeled images of the"
            " budget (best of the study's trials, so optimistic)"
        ),
        "searched": chosen(best),
        "params": best.user_attrs.get("method_params", {**request.base_params, **best.params}),
        "settings": settings,
    }


def write_json(path: Path, payload: dict[str, Any]) -> Path:
    """Atomic write: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
    with os.fdopen(fd, "w") as handle:
        json.dump(payload, handle, indent=2, sort_keys=True)
        handle.write("\n")
    os.replace(tmp, path)
    return path


def summarise(
    tracker: Tracker,
    run_id: str,
    study: optuna.Study,
    request: TuneRequest,
    settings: dict[str, Any],
    results_dir: Path,
) -> Path | None:
    """Best params and figures on the parent run; the tuned file. None if nothing completed."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        return None
    best = study.best_trial
    payload = tuned_payload(study, best, request, settings)
    weights = importances(study, request.seed)
    numeric = {f"best_{k}": v for k, v in chosen(best).items() if isinstance(v, int | float)}
    tracker.log_metrics(
        run_id,
        {
            "best_cv_accuracy": best.value,
            "n_trials": payload["n_trials"],
            "n_complete": payload["n_complete"],
            **numeric,
            **{f"importance_{k}": v for k, v in weights.items()},
        },
        step=max(t.number for t in complete),
    )
    tracker.set_tags(
        run_id,
        {"best_params": json.dumps(chosen(best), sort_keys=True), "best_trial": best.number},
    )
    path = write_json(
        grid.tuned_path(
            results_dir, request.method, request.dataset, request.n_labels, request.seed
        ),
        payload,
    )
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for made in [
            write_json(folder / "best_params.json", payload),
            *figures(study, weights, folder),
        ]:
            tracker.log_artifact(run_id, made)
    return path
