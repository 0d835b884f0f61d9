"""A lock beside a SQLite file, so launchers started at once on one machine take turns.

Two `run`s started together on fresh stores raced in MLflow's and Optuna's schema creation
(`duplicate column name`, a half-migrated store) and both enqueued every cell. SQLite lives on
one machine, so an fcntl lock next to the database file is enough there; PostgreSQL and MLflow
servers get no lock from here (see the README's multi-machine notes).
"""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator
from pathlib import Path


def sqlite_file(url: str) -> Path | None:
    return Path(url[len("sqlite:///") :]) if url.startswith("sqlite:///") else None


@contextlib.contextmanager
def beside_sqlite(url: str) -> Iterator[None]:
    """Hold an exclusive lock on URL's database file's `.lock` sibling; no-op for other URLs."""
    path = sqlite_file(url)
    if path is None:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
