"""Every check a command can make before training, so bad input costs seconds, not a grid.

Each failure is a UsageError that names the fix; nothing here trains or reads a test label.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from benchmark.data import datasets
from benchmark.errors import UsageError
from benchmark.options import sqlite_path


def writable_dir(path: str | Path, option: str, create: bool = True) -> Path:
    """`path` exists as a writable directory afterwards, or a UsageError says why not; with
    create=False (a dry run) nothing is made: the nearest existing folder must be writable."""
    path = Path(path)
    for parent in (path, *path.parents):
        if parent.exists() and not parent.is_dir():
            raise UsageError(
                f"{option} {path}: {parent} is a file, not a directory; pick another path."
            )
    if not create:
        existing = next(p for p in (path, *path.parents) if p.exists() or p == Path("."))
        if not os.access(existing, os.W_OK | os.X_OK):
            raise UsageError(f"{option} {path}: {existing} is not writable; pick another path.")
        return path
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UsageError(f"{option} {path}: cannot create it ({error.strerror}).") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise UsageError(f"{option} {path}: not writable by this user; pick another path.")
    return path


def storage_url(url: str, option: str) -> None:
    """An Optuna storage URL SQLAlchemy can parse, with a driver installed here; checked before
    the plan, so a typo costs no parent run."""
    from sqlalchemy.engine import make_url

    try:
        make_url(url).get_dialect().import_dbapi()
    except Exception as error:
        raise UsageError(
            f"{option} {url!r} cannot be opened here ({type(error).__name__}: {error}); use"
            " sqlite:///PATH/optuna.db, or postgresql+psycopg://USER@HOST/DB after"
            " `python -m pip install -e '.[postgres]'`."
        ) from None


def sqlite_parent(url: str | None, option: str, create: bool = True) -> None:
    """A sqlite:/// URL's folder must be usable; other URLs are checked when opened."""
    db = sqlite_path(url) if url else None
    if db is not None:
        writable_dir(db.parent, option, create)


def check_class_sizes(ds: datasets.Dataset, budgets: Iterable[int], subset: int = 0) -> np.ndarray:
    """The training labels (cut to `subset`), after checking every budget fits every class."""
    y = ds.labels("train")
    if subset:
        y = y[:subset]
    counts = np.bincount(y, minlength=ds.spec.n_classes)
    for budget in sorted(set(budgets)):
        per_class = budget // ds.spec.n_classes
        short = np.flatnonzero(counts < per_class)
        if short.size:
            c = int(short[0])
            fits = int(counts.min()) * ds.spec.n_classes
            raise UsageError(
                f"--labels {budget} asks for {per_class} labeled images per class, but"
                f" {ds.name}{f' (first {subset} images)' if subset else ''} has only"
                f" {int(counts[c])} training images of class {c}; use at most {fits} labels."
            )
    return y


def check_data(
    budgets_by_dataset: dict[str, set[int]], data_dir: str | None, subset: int = 0
) -> dict[str, str]:
    """Fail before any training if a dataset's files are missing or malformed, or a budget
    cannot be drawn; return each dataset's training-image fingerprint."""
    fingerprints = {}
    for name in sorted(budgets_by_dataset):
        ds = datasets.load(name, data_dir)
        check_class_sizes(ds, budgets_by_dataset[name], subset)
        for stem in datasets.SPLIT_FILES["test"]:
            if datasets._file_in(ds.directory, stem) is None:
                raise UsageError(f"Dataset {name!r}: {stem}[.gz] missing in {ds.directory}.")
        fingerprints[name] = ds.fingerprint()
    return fingerprints
