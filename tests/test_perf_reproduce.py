"""The perf and reproduce commands run on tiny data and write well-formed output (no timings)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
from conftest import flatten

from benchmark import cli
from benchmark.reports import perf, published, reproduce

PERF_KEYS = (
    "vae_epoch_seconds",
    "plain_epoch_seconds",
    "vae_epoch_ratio",
    "grid_cold_seconds",
    "grid_warm_seconds",
    "peak_rss_mb",
)


@pytest.mark.slow
def test_perf_quick_prints_numeric_json_and_writes_table(
    tiny_data: Path, tmp_path: Path, capsys, monkeypatch
) -> None:
    monkeypatch.chdir(tmp_path)
    results = tmp_path / "results"
    argv = ["perf", "--quick", "--json", "--device", "cpu", "--data-dir", str(tiny_data)]
    code = cli.main([*argv, "--results-dir", str(results)])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    for key in PERF_KEYS:
        assert isinstance(result[key], float) and math.isfinite(result[key]) and result[key] > 0
    assert result["vae_epoch_ratio"] == pytest.approx(
        result["vae_epoch_seconds"] / result["plain_epoch_seconds"]
    )
    timed = {(t["method"], t["n_labels"]) for t in result["method_timings"]}
    assert ("pixel-svm", 100) in timed and ("vae-rbf-svm", 100) in timed
    text = (results / "perf.md").read_text()
    assert "Ratio harness / plain" in text and "| vae-rbf-svm | 100 |" in text
    assert not (tmp_path / "mlruns").exists()  # perf keeps its stores in a temp directory


@pytest.mark.slow
def test_reproduce_prints_comparison_and_reuses_finished_cells(
    tiny_data: Path, tmp_path: Path, stores: dict[str, str], capsys
) -> None:
    """It prints the comparison of its own cells; the file is `report`'s, from the archive."""
    argv = ["reproduce", "--datasets", "fashion-mnist", "--methods", "vae-linear-svm,pixel-svm"]
    argv += ["--labels", "100", "--seeds", "0", "--epochs", "1", "--subset", "300"]
    argv += ["--device", "cpu", "--data-dir", str(tiny_data), *flatten(stores)]
    assert cli.main(argv) == 0
    text = capsys.readouterr().out
    header = "| published | ours | labels | published % | ours % | difference |"
    assert header in text
    row = next(line for line in text.splitlines() if line.startswith("| VAE + LinearSVC |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[:4] == ["VAE + LinearSVC", "vae-linear-svm", "100", "66.20"]
    ours = float(cells[4].split(" ")[0])
    assert float(cells[5]) == pytest.approx(ours - 66.2, abs=0.051)
    assert "60000 (ours: 100)" in text and "89.70" in text
    assert "- **VAE + LinearSVC** vs `vae-linear-svm` (seed): ours is" in text
    assert not (Path(stores["--results-dir"]) / "reproduction.md").exists()
    assert cli.main(argv) == 0  # second time: every cell is reused from MLflow
    assert "Plan: 2 cells, 0 to run (2 already finished)" in capsys.readouterr().out


def test_reproduce_dry_run_prints_the_plan_and_writes_nothing(
    tiny_data: Path, tmp_path: Path, stores: dict[str, str], capsys
) -> None:
    """A dry run used to render the table from whatever the store held and overwrite the
    committed results/reproduction.md with it (empty rows where nothing had run yet)."""
    results = Path(stores["--results-dir"])
    results.mkdir()
    (results / "reproduction.md").write_text("the committed table\n")
    argv = ["reproduce", "--datasets", "fashion-mnist", "--methods", "pixel-svm", "--dry-run"]
    argv += ["--labels", "100", "--seeds", "0", "--subset", "300", "--device", "cpu"]
    assert cli.main([*argv, "--data-dir", str(tiny_data), *flatten(stores)]) == 0
    assert "Plan: 1 cells, 1 to run" in capsys.readouterr().out
    assert (results / "reproduction.md").read_text() == "the committed table\n"


def test_perf_grid_is_a_valid_run_command_on_the_full_training_set(tmp_path: Path) -> None:
    args = cli.build_parser().parse_args(["perf", "--data-dir", str(tmp_path)])
    run = perf.grid_run_args(args, tmp_path / "store", tmp_path / "cache", [100, 3000])
    assert run.subset == 0 and run.labels == "100,3000" and run.seeds == "0"
    assert run.methods == ",".join(perf.BASELINES) and run.epochs == args.epochs
    assert run.tracking_uri == f"sqlite:///{tmp_path}/store/mlflow.db"


def test_missing_method_row_says_so() -> None:
    rows = published.rows(["mnist"], ["m2", "vae-rbf-svm"])
    empty = pd.DataFrame()
    text = reproduce.render(rows, empty, {"vae-rbf-svm"}, "seeds 0", {})
    assert "`m2` is not in the method registry yet" in text
    assert "| M2 | m2 | 100 | 88.03 ± 1.71 | – | – |" in text
    assert "no FINISHED `vae-rbf-svm` runs at the published budgets yet" in text


def test_verdict_places_the_published_figure_against_our_interval() -> None:
    row = published.rows(["fashion-mnist"], ["vae-rbf-svm"])[0]  # 64.82 at 100, 76.32 at 600
    summary = pd.DataFrame(
        {
            "method": ["vae-rbf-svm"] * 2,
            "dataset": ["fashion-mnist"] * 2,
            "n_labels": [100, 600],
            "n": [5, 5],
            "mean": [64.0, 70.0],
            "ci_low": [62.5, 68.5],
            "ci_high": [65.5, 71.5],
        }
    )
    ours = reproduce._ours(summary, "vae-rbf-svm", "fashion-mnist")
    text = reproduce.verdict(row, ours, {"vae-rbf-svm"}, ["only 2 epochs"])
    assert "below it at 100 (-0.8), 600 (-6.3) labels" in text
    assert "only 2 epochs; the published figure is a single run." in text
    assert "consistent: the published figure lies in our 95 % interval (at 100)" in text
    assert "below: the published figure lies outside our 95 % interval (at 600)" in text
    pixels = {"method": "pixel-svm", "dataset": "fashion-mnist", "n_labels": 600, "n": 5}
    with_pixels = pd.concat([summary, pd.DataFrame([pixels | {"mean": 78.0}])])
    best = reproduce._best(with_pixels, "fashion-mnist")
    text = reproduce.verdict(row, ours, {"vae-rbf-svm"}, [], best)
    assert "our `pixel-svm` beats it at 600 (78.0) labels" in text
    lucky = {"method": "svm-lucky", "dataset": "fashion-mnist", "n_labels": 600, "n": 1}
    with_lucky = pd.concat([with_pixels, pd.DataFrame([lucky | {"mean": 90.0}])])
    assert reproduce._best(with_lucky, "fashion-mnist")[600] == ("pixel-svm", 78.0)
    summary["mean"] = [70.0, 80.0]
    better = reproduce._ours(summary, "vae-rbf-svm", "fashion-mnist")
    assert "above it at every compared budget" in reproduce.verdict(
        row, better, {"vae-rbf-svm"}, []
    )


def test_kingma_errors_are_stored_as_accuracy() -> None:
    m1m2 = next(r for r in published.ROWS if r.name == "M1 + M2")
    assert m1m2.accuracy == {100: 96.67, 600: 97.41, 1000: 97.6, 3000: 97.82}
    assert m1m2.std[100] == 0.14 and not m1m2.single_run
    assert {r.kind for r in published.ROWS} <= set(published.KINDS)
