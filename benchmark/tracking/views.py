"""Saved views of the MLflow UI: the cells and their scores at first sight, no hand set-up.

MLflow 3's runs page nests a grid's cells under its parent run, collapsed, with no metric
column. Its saved views (the "Views" menu; an experiment tag `mlflow.sharedViewState.<key>`
holding the table's state, opened by `?viewStateShareKey=<key>`) can carry a search filter,
the columns and a grouping. The views here group the cells by dataset, budget and method, so
each group's row shows its mean accuracy and the cells sit under it, every score visible.
"""

from __future__ import annotations

import json
import time
from typing import Any
from urllib.parse import urlparse

from mlflow.exceptions import MlflowException

from benchmark.tracking.client import retried

ALL_CELLS = "cells"  # the view the README links to: every cell of the experiment
UI = "http://127.0.0.1:5000"  # where `mlflow ui` serves a local store
COLUMNS = [
    "params.`method`",
    "params.`dataset`",
    "params.`n_labels`",
    "params.`seed`",
    "metrics.`accuracy`",
    "metrics.`macro_f1`",
    "metrics.`fit_seconds`",
    "tags.`settings`",
]
GROUPS = [("param", "dataset"), ("param", "n_labels"), ("param", "method")]


def state(search_filter: str) -> dict[str, Any]:
    """The runs table's state: cells only, score columns, grouped with the groups' means."""
    return {
        "searchFilter": search_filter,
        "orderByKey": "attributes.start_time",
        "orderByAsc": False,
        "selectedColumns": COLUMNS,
        "groupBy": {
            "aggregateFunction": "average",
            "groupByKeys": [{"mode": mode, "groupByData": key} for mode, key in GROUPS],
        },
    }


def envelope(name: str, search_filter: str) -> str:
    """The tag value MLflow's UI reads a saved view from."""
    now = int(time.time() * 1000)
    payload = {
        "name": name,
        "createdAt": now,
        "updatedAt": now,
        "state": json.dumps(state(search_filter)),
    }
    return json.dumps(payload)


def ui_base(tracking_uri: str) -> str:
    """Where a person opens the UI: the tracking server itself, or `mlflow ui`'s address."""
    scheme = urlparse(tracking_uri).scheme
    return tracking_uri.rstrip("/") if scheme in ("http", "https") else UI


def view_url(tracking_uri: str, experiment_id: str, key: str) -> str:
    """A link that opens the view in the training UI (without workflowType MLflow 3 opens a
    run or experiment on its GenAI pages)."""
    base = ui_base(tracking_uri)
    return (
        f"{base}/#/experiments/{experiment_id}/runs"
        f"?viewStateShareKey={key}&workflowType=machine_learning"
    )


def run_url(tracking_uri: str, experiment_id: str, run_id: str) -> str:
    base = ui_base(tracking_uri)
    return f"{base}/#/experiments/{experiment_id}/runs/{run_id}?workflowType=machine_learning"


def save(tracker: Any, key: str, name: str, search_filter: str) -> str:
    """Save (or refresh) a view on the tracker's experiment; its link.

    Launchers started together save the shared view at once, and an MLflow server on
    PostgreSQL then refuses the second insert of the tag (a unique-key race inside its
    select-then-insert): the other's insert won, so trying again updates the row."""
    tag = f"mlflow.sharedViewState.{key}"
    retried(
        lambda: tracker.client.set_experiment_tag(
            tracker.experiment_id, tag, envelope(name, search_filter)
        ),
        retry_on=lambda error: isinstance(error, MlflowException),
    )
    return view_url(tracker.uri, tracker.experiment_id, key)


def save_grid_views(tracker: Any, parent_id: str) -> str:
    """The experiment's view of every cell, and this grid's own; the grid's link."""
    save(tracker, ALL_CELLS, "All cells and scores", "tags.kind = 'cell'")
    key = f"grid-{parent_id[:8]}"
    own = f"tags.kind = 'cell' and tags.`mlflow.parentRunId` = '{parent_id}'"
    return save(tracker, key, f"Grid {parent_id[:8]}: cells and scores", own)
