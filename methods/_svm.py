"""Shared pieces of the SVM methods: the standardised pipelines and their search spaces.

scikit-learn is imported when a pipeline is built, not when the method registry is listed
(`python -m benchmark list` would otherwise wait a second for it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from methods.params import POSITIVE, Rule

if TYPE_CHECKING:
    from sklearn.pipeline import Pipeline


C_RULES: dict[str, Rule] = {"C": POSITIVE}
SVM_RULES: dict[str, Rule] = {**C_RULES, "gamma": Rule(gt=0, words=("scale", "auto"))}


def rbf_svc(params: dict[str, Any], standardize: bool) -> Pipeline:
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    svc = SVC(C=float(params["C"]), gamma=params["gamma"], kernel="rbf")
    return make_pipeline(StandardScaler(), svc) if standardize else make_pipeline(svc)


def linear_svc(params: dict[str, Any], seed: int) -> Pipeline:
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import LinearSVC

    # LinearSVC's dual solver is stochastic in its coordinate order: seed it per trial.
    svc = LinearSVC(C=float(params["C"]), tol=1e-5, max_iter=20000, random_state=seed)
    return make_pipeline(StandardScaler(), svc)


def suggest_rbf(trial: Any) -> dict[str, Any]:
    return {
        "C": trial.suggest_float("C", 1e-2, 1e3, log=True),
        "gamma": trial.suggest_float("gamma", 1e-4, 1e1, log=True),
    }
