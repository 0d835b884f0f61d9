"""The README's route into MLflow, checked in a real browser: the experiment page lists the
grid's runs (MLflow 3 opens an untagged experiment on its GenAI overview, "No data")."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import flatten
from mlflow.tracking import MlflowClient

from benchmark.cli import main

pytestmark = pytest.mark.slow
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(
    CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install chromium)"
)
def test_the_experiment_page_lists_the_grids_runs(
    tiny_data: Path, stores: dict, tmp_path: Path
) -> None:
    grid = {"--methods": "pixel-svm", "--datasets": "mnist", "--labels": "20", "--seeds": "0,1"}
    assert main(["run", *flatten({**grid, "--data-dir": str(tiny_data), **stores})]) == 0
    uri = stores["--tracking-uri"]
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("ssl-vae-benchmark")
    port = _free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--backend-store-uri",
            uri,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ},
    )
    try:
        deadline = time.time() + 90
        while time.time() < deadline:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        # the README's route: without ?workflowType MLflow 3 opens its GenAI overview
        page = (
            f"http://127.0.0.1:{port}/#/experiments/{experiment.experiment_id}"
            "?workflowType=machine_learning"
        )
        dom = subprocess.run(
            [
                CHROMIUM,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                f"--user-data-dir={tmp_path / 'chromium'}",
                "--virtual-time-budget=20000",
                "--dump-dom",
                page,
            ],
            capture_output=True,
            timeout=120,
            text=True,
        ).stdout
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert "grid (2 cells)" in dom  # the grid's parent run; its cells are nested under it
    assert "matching runs" in dom and "No data available" not in dom
