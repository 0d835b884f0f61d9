"""The MLflow UI as a researcher meets it, checked in a real browser (headless Chromium): the
README's link shows every cell with its accuracy, and the links `run` prints open in the
training view, not MLflow 3's GenAI pages."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import REPO, flatten
from mlflow.tracking import MlflowClient

from benchmark.cli import main
from benchmark.tracking import views as mlflow_views

pytestmark = pytest.mark.slow
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def chromium() -> str:
    if CHROMIUM is None and os.environ.get("BENCHMARK_REQUIRE_CHROMIUM"):
        pytest.fail("BENCHMARK_REQUIRE_CHROMIUM is set but chromium is not installed")
    if CHROMIUM is None:
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    return CHROMIUM


def _server(uri: str, port: int, artifacts: Path) -> Iterator[subprocess.Popen]:
    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri]
    command += ["--default-artifact-root", str(artifacts)]
    command += ["--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 180  # bounds a hang; the loop ends when the server answers
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
            break
        except OSError:
            time.sleep(0.5)
    try:
        yield server
    finally:
        server.terminate()
        server.wait(timeout=30)


def _dom(chromium: str, url: str, profile: Path) -> str:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run"]
    flags += ["--disable-background-networking", "--disable-component-update", "--disable-sync"]
    flags += [f"--user-data-dir={profile}", "--window-size=1600,1000"]
    flags += ["--virtual-time-budget=30000", "--dump-dom", url]
    return subprocess.run([chromium, *flags], capture_output=True, timeout=180, text=True).stdout


def test_the_readme_link_shows_every_cell_with_its_accuracy_and_links_open_training_views(
    chromium: str, tiny_data: Path, stores: dict, tmp_path: Path, capsys
) -> None:
    grid = {"--methods": "pixel-svm", "--datasets": "mnist", "--labels": "20", "--seeds": "0,1"}
    assert main(["run", *flatten({**grid, "--data-dir": str(tiny_data), **stores})]) == 0
    printed = re.search(r"Compare the cells in MLflow: (\S+)", capsys.readouterr().out).group(1)
    uri = stores["--tracking-uri"]
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("ssl-vae-benchmark")
    cells = client.search_runs([experiment.experiment_id], "tags.kind = 'cell'")
    parent = client.get_run(cells[0].data.tags["mlflow.parentRunId"])
    assert parent.data.tags["view"] == printed and "workflowType=machine_learning" in printed
    assert not any(str(REPO) in value for value in parent.data.tags.values())  # no machine path
    assert "None" not in parent.data.params.values()

    readme = (REPO / "README.md").read_text()
    route = re.search(r"http://127\.0\.0\.1:5000(/#/experiments/\S+?)[`)\s]", readme).group(1)
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    for _ in _server(uri, port, Path(stores["--vae-cache-dir"]).parent / "artifacts"):
        page = _dom(chromium, base + route, tmp_path / "p1")
        grid_page = _dom(chromium, printed.replace(mlflow_views.UI, base), tmp_path / "p2")
        cell_url = mlflow_views.run_url(uri, experiment.experiment_id, cells[0].info.run_id)
        cell_page = _dom(chromium, cell_url.replace(mlflow_views.UI, base), tmp_path / "p3")
    for dom in (page, grid_page):  # the cells, each with its accuracy, without a click
        assert "accuracy" in dom and "No data available" not in dom
        for cell in cells:
            assert cell.info.run_name in dom
            assert f"{cell.data.metrics['accuracy']:g}" in dom
    assert "Model metrics" in cell_page and "System metrics" in cell_page  # the training view
