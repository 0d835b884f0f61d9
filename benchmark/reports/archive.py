"""The run archive: one row per FINISHED cell run, in a CSV file that git keeps.

A tracking store lives on one machine and dies with it; the archive is the record that tables,
plots and `run`'s "already finished" come from. Rows are merged by MLflow run id, so merging a
store in never drops another store's rows, and writing is atomic and ordered, so the same rows
give the same bytes.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pandas as pd

from benchmark.errors import DataError
from benchmark.options import sqlite_path

ARCHIVE_NAME = "runs.csv"
PUBLISHED_ARCHIVE = Path("results") / ARCHIVE_NAME
# identity, what was run, by what, on what, the scores (in %) and the seconds, where it is
COLUMNS = [
    "method",
    "dataset",
    "n_labels",
    "seed",
    "subset",
    "params",  # the cell's resolved parameters, canonical JSON
    "param_source",
    "code_version",  # e.g. m2@1+protocol@1 (benchmark.provenance.cell_version)
    "accuracy",
    "macro_f1",
    "fit_seconds",
    "vae_train_seconds",
    "wall_seconds",
    "resumed_share",  # of the cell's training its checkpoints held when this run began
    "device",
    "machine",  # CPU model and cores (and GPU): what the seconds were measured on
    "libraries",  # torch=... scikit-learn=... numpy=... scipy=...
    "denormals",  # "flushed" or "kept": subnormal floats on the CPU (benchmark.runtime)
    "git_commit",
    "data_fingerprint",
    "cell_key",
    "start_time",  # UTC, ISO 8601
    "run_id",
    "store",  # the tracking store the run was made in, by name (never a machine's path)
    "experiment",
]
INTEGERS = ("n_labels", "seed", "subset")
# columns added after archives were written, with the value their older rows take
OPTIONAL = {"machine": "", "resumed_share": 0.0, "denormals": "kept"}
NUMBERS = (
    "accuracy",
    "macro_f1",
    "fit_seconds",
    "vae_train_seconds",
    "wall_seconds",
    "resumed_share",
)
TEXT = tuple(c for c in COLUMNS if c not in INTEGERS + NUMBERS)
ORDER = ["dataset", "method", "n_labels", "seed", "start_time", "run_id"]


def empty() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=object) for c in COLUMNS})


def store_name(uri: str) -> str:
    """A store as people name it, without a machine's absolute path or a password:
    'mlruns/mlflow.db' for a SQLite file under the working directory, else its last three
    path parts; scheme, host and path for a server."""
    path = sqlite_path(uri)
    if path is not None:
        if not path.is_absolute():
            return path.as_posix()
        try:
            return path.resolve().relative_to(Path.cwd().resolve()).as_posix()
        except ValueError:
            return "/".join(path.parts[-3:])
    parsed = urlparse(uri)
    host = parsed.hostname or ""
    port = f":{parsed.port}" if parsed.port else ""
    return f"{parsed.scheme}://{host}{port}{parsed.path}"


def read(path: Path) -> pd.DataFrame:
    """The archive at `path`, or an empty one if there is none yet."""
    path = Path(path)
    if not path.exists():
        return empty()
    try:
        frame = pd.read_csv(path, dtype={c: str for c in TEXT})
    except (OSError, ValueError) as error:
        message = f"{path}: not a readable run archive ({error}); restore it from git."
        raise DataError(message) from None
    for column, value in OPTIONAL.items():
        if column not in frame.columns:
            frame[column] = value
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(
            f"{path}: the run archive lacks the columns {', '.join(missing)}; restore it from"
            " git or rebuild it with `python -m benchmark report`."
        )
    frame = frame[COLUMNS].copy()
    for column in INTEGERS:
        frame[column] = frame[column].astype(int)
    for column in TEXT:
        frame[column] = frame[column].fillna("")
    return frame


def merge(*frames: pd.DataFrame) -> pd.DataFrame:
    """All rows of all frames, one per run id (a later frame's row wins), in a fixed order."""
    parts = [f[COLUMNS] for f in frames if not f.empty]
    if not parts:
        return empty()
    rows = pd.concat(parts, ignore_index=True).drop_duplicates("run_id", keep="last")
    return rows.sort_values(ORDER, kind="stable", ignore_index=True)


def write(path: Path, rows: pd.DataFrame) -> Path:
    """Write atomically (a temporary file renamed over the old one): an interruption leaves
    the previous archive, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-runs-", suffix=".csv")
    with os.fdopen(fd, "w", newline="") as handle:
        merge(rows).to_csv(handle, index=False, lineterminator="\n")
    os.replace(tmp, path)
    return path


def update(path: Path, new: pd.DataFrame) -> pd.DataFrame:
    """Merge `new` rows into the archive at `path`; the archive as written."""
    rows = merge(read(path), new)
    if not new.empty:
        write(path, rows)
    return rows


def finished(frames: Iterable[pd.DataFrame]) -> dict[str, set[str]]:
    """Cell key -> the code versions the archives hold a run of."""
    done: dict[str, set[str]] = {}
    for frame in frames:
        for key, version in zip(frame["cell_key"], frame["code_version"]):
            done.setdefault(key, set()).add(version)
    return done


def _iso(ms: int | None) -> str:
    if not ms:
        return ""
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _percent(metrics: dict[str, float], name: str) -> float:
    """A score in %: runs log fractions as test_* (and percent under the bare name)."""
    if name in metrics:
        return round(float(metrics[name]), 6)
    return round(100 * float(metrics.get(f"test_{name}", float("nan"))), 6)


def row_of(run: Any, store: str, experiment: str) -> dict[str, Any] | None:
    """The archive row of one FINISHED MLflow cell run; None for a run that is not a cell."""
    tags, params, metrics = run.data.tags, run.data.params, run.data.metrics
    if "cell_key" not in tags:
        return None
    info = run.info
    return {
        "method": params.get("method"),
        "dataset": params.get("dataset"),
        "n_labels": int(params.get("n_labels", 0)),
        "seed": int(params.get("seed", 0)),
        "subset": int(params.get("subset", 0) or 0),
        "params": tags.get("cell_params") or _params_json(params),
        "param_source": tags.get("param_source", ""),
        "code_version": tags.get("code_version", ""),
        "accuracy": _percent(metrics, "accuracy"),
        "macro_f1": _percent(metrics, "macro_f1"),
        "fit_seconds": round(float(metrics.get("fit_seconds", float("nan"))), 3),
        "vae_train_seconds": round(float(metrics.get("vae_train_seconds", 0.0)), 3),
        "wall_seconds": round(((info.end_time or 0) - (info.start_time or 0)) / 1000, 3),
        "resumed_share": round(float(tags.get("resumed_share", 0.0) or 0.0), 4),
        "device": params.get("device", ""),
        "machine": tags.get("machine", ""),
        "libraries": tags.get("libraries", ""),
        "denormals": tags.get("denormals", "kept"),
        "git_commit": tags.get("git_commit", ""),
        "data_fingerprint": tags.get("data_fingerprint", ""),
        "cell_key": tags["cell_key"],
        "start_time": _iso(info.start_time),
        "run_id": info.run_id,
        "store": store,
        "experiment": experiment,
    }


IDENTITY_PARAMS = ("method", "dataset", "n_labels", "seed", "subset", "device")


def _params_json(params: dict[str, str]) -> str:
    """A run without the cell_params tag: its logged (text) parameters, minus the identity."""
    own = {k: v for k, v in params.items() if k not in IDENTITY_PARAMS}
    return json.dumps(own, sort_keys=True)


def from_runs(runs: Iterable[Any], store: str, experiment: str) -> pd.DataFrame:
    rows = [row for run in runs if (row := row_of(run, store, experiment)) is not None]
    return merge(pd.DataFrame(rows, columns=COLUMNS)) if rows else empty()
