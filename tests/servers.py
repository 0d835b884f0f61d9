"""Real servers for the scale-out tests: PostgreSQL from Debian's package and `mlflow server`,
both on loopback, in a temporary directory, stopped afterwards."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

USER = "bench"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def postgres_bin() -> Path | None:
    """Debian's postgresql package puts its server binaries in /usr/lib/postgresql/N/bin."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def need_postgres() -> Path:
    """The binaries, or a skip with the reason (a failure where CI says they must be there)."""
    bindir = postgres_bin()
    if bindir is None:
        message = (
            "PostgreSQL server binaries not found; `apt-get install postgresql` (Debian) to run"
            " the real-server scale-out test"
        )
        if os.environ.get("BENCHMARK_REQUIRE_POSTGRES"):
            pytest.fail(message + " (BENCHMARK_REQUIRE_POSTGRES is set)")
        pytest.skip(message)
    return bindir


@contextlib.contextmanager
def postgres(databases: tuple[str, ...]) -> Iterator[dict[str, str]]:
    """A throw-away PostgreSQL cluster on 127.0.0.1; yields {database: SQLAlchemy URL}.

    The server refuses to run as root, so as root it runs as Debian's `postgres` user, in a
    directory that user owns."""
    bindir = need_postgres()
    as_user: list[str] = []
    root = Path(tempfile.mkdtemp(prefix="bench-pg-"))
    if os.geteuid() == 0:
        as_user = ["runuser", "-u", "postgres", "--"]
        shutil.chown(root, "postgres")
    data, port = root / "data", free_port()

    def pg(*args: str) -> None:
        subprocess.run([*as_user, *args], check=True, capture_output=True, timeout=120)

    pg(str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", USER)
    options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1"
    pg(
        str(bindir / "pg_ctl"),
        "-D",
        str(data),
        "-o",
        options,
        "-l",
        str(root / "log"),
        "-w",
        "start",
    )
    try:
        for name in databases:
            pg(str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", USER, name)
        yield {name: f"postgresql+psycopg://{USER}@127.0.0.1:{port}/{name}" for name in databases}
    finally:
        subprocess.run(
            [*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
            capture_output=True,
            timeout=60,
        )
        shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def mlflow_server(backend: str, artifacts: Path, log: Path) -> Iterator[str]:
    """`mlflow server` with BACKEND as its store, serving artifacts from ARTIFACTS; yields
    its tracking URI once /health answers."""
    port = free_port()
    command = [
        sys.executable, "-m", "mlflow", "server",
        "--backend-store-uri", backend,
        "--artifacts-destination", str(artifacts),
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]  # fmt: skip
    with open(log, "wb") as out:
        server = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 180
        while True:
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=2):
                    break
            except OSError as error:
                if server.poll() is not None or time.time() > deadline:
                    tail = log.read_text()[-2000:]
                    raise RuntimeError(f"mlflow server did not start: {tail}") from error
                time.sleep(0.5)
        yield uri
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
