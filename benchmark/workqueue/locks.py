"""Mutual exclusion between launchers and workers that share a store, on one machine or many.

Launchers started together on fresh stores raced in MLflow's and Optuna's schema creation
(`duplicate column name`, `CREATE TYPE studydirection` unique violations, a half-migrated
store), enqueued every cell twice, and SQLite's lack of row locks let two workers pop the same
queued trial. Each of those steps now runs under `store_lock(url, name)`:

* SQLite lives on one machine, so an fcntl lock on a file beside the database is enough; the
  kernel drops it when its holder dies, even by kill -9.
* PostgreSQL: a session-level advisory lock (`pg_advisory_lock`), the database's own
  mechanism for this. It lasts as long as the connection, so a dead machine's lock goes with
  its TCP connection.
* Anything else (an MLflow server over http) gets no lock from here: the server migrates its
  own schema once, and the queue's storage (SQLite or PostgreSQL) carries the locks that matter.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
from collections.abc import Iterator

from benchmark.options import sqlite_path

_ENGINES: dict[str, object] = {}


def is_postgres(url: str) -> bool:
    return url.split(":", 1)[0].split("+", 1)[0] in ("postgresql", "postgres")


def lock_id(name: str) -> int:
    """A signed 64-bit number for NAME: advisory locks are keyed by bigint."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


@contextlib.contextmanager
def store_lock(url: str, name: str = "schema") -> Iterator[None]:
    """Hold the exclusive lock NAME of the store at URL (see the module docstring)."""
    path = sqlite_path(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        suffix = "" if name == "schema" else f".{hashlib.sha256(name.encode()).hexdigest()[:12]}"
        with open(path.with_name(f"{path.name}{suffix}.lock"), "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
    elif is_postgres(url):
        with _advisory_lock(url, lock_id(name)):
            yield
    else:
        yield


@contextlib.contextmanager
def _advisory_lock(url: str, key: int) -> Iterator[None]:
    from sqlalchemy import create_engine, text
    from sqlalchemy.pool import NullPool

    if url not in _ENGINES:  # NullPool: the lock's connection is closed, not pooled, after use
        _ENGINES[url] = create_engine(url, poolclass=NullPool)
    with _ENGINES[url].connect() as connection:  # type: ignore[attr-defined]
        connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": key})
        connection.commit()
        try:
            yield
        finally:
            connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})
            connection.commit()
