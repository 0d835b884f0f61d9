"""The run archive is the record: merged, never dropped, rebuilt into the same tables, and the
published one is never touched by a user's run."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest
from conftest import REPO, archive_row, flatten

from benchmark.cli import main
from benchmark.reports import archive


def frame(*rows: dict) -> pd.DataFrame:
    return pd.DataFrame(list(rows), columns=archive.COLUMNS)


def test_merging_keeps_every_store_and_one_row_per_run(tmp_path: Path) -> None:
    path = tmp_path / "runs.csv"
    mine = archive_row("pixel-svm", 0, 70.0, run_id="a", store="mlruns/mlflow.db")
    theirs = archive_row("pixel-svm", 1, 71.0, run_id="b", store="http://lab:5000")
    archive.update(path, frame(mine, theirs))
    archive.update(path, frame({**mine, "accuracy": 70.0}))  # the same run merged again
    rows = archive.read(path)
    assert sorted(rows["run_id"]) == ["a", "b"] and len(rows) == 2
    assert set(rows["store"]) == {"mlruns/mlflow.db", "http://lab:5000"}


def test_the_same_rows_give_the_same_bytes(tmp_path: Path) -> None:
    rows = [
        archive_row(m, s, 70.0 + s / 3, run_id=f"{m}{s}")
        for m in ("m2", "pixel-svm")
        for s in (2, 0, 1)
    ]
    one, two = tmp_path / "one.csv", tmp_path / "two.csv"
    archive.write(one, frame(*rows))
    archive.write(two, frame(*reversed(rows)))
    assert one.read_bytes() == two.read_bytes()
    archive.write(two, archive.read(one))  # read back, written again: unchanged
    assert one.read_bytes() == two.read_bytes()


def test_a_damaged_archive_is_refused_with_the_fix(tmp_path: Path) -> None:
    from benchmark.errors import DataError

    path = tmp_path / "runs.csv"
    path.write_text("method,dataset\npixel-svm,mnist\n")
    with pytest.raises(DataError, match="restore it from git"):
        archive.read(path)


def test_store_names_carry_no_machine_path_or_password() -> None:
    assert archive.store_name("sqlite:///mlruns/mlflow.db") == "mlruns/mlflow.db"
    assert archive.store_name("sqlite:////home/ann/work/runs/mlflow.db") == "work/runs/mlflow.db"
    assert (
        archive.store_name("postgresql://ann:secret@db:5432/mlflow")
        == "postgresql://db:5432/mlflow"
    )


def test_the_committed_tables_are_rebuilt_exactly_from_the_committed_archive(
    tmp_path: Path, monkeypatch
) -> None:
    """What a fresh clone does: `report` with no store and no network."""
    committed = REPO / "results"
    if not (committed / archive.ARCHIVE_NAME).exists():
        pytest.fail("results/runs.csv is missing: the published tables have no record")
    monkeypatch.chdir(tmp_path)
    shutil.copytree(committed, tmp_path / "results")
    rebuilt = ("summary.csv", "reproduction.md")
    for name in rebuilt:
        (tmp_path / "results" / name).unlink()
    store = f"sqlite:///{tmp_path}/no-store/mlflow.db"
    assert main(["report", "--tracking-uri", store, "--no-readme"]) == 0
    for name in rebuilt:
        assert (tmp_path / "results" / name).read_bytes() == (committed / name).read_bytes()
    assert not (tmp_path / "no-store").exists()  # reading no store creates none


def test_a_users_run_writes_only_where_git_ignores(
    tiny_data: Path, tmp_path: Path, monkeypatch
) -> None:
    work = tmp_path / "clone"
    work.mkdir()
    monkeypatch.chdir(work)
    args = {"--methods": "pixel-svm", "--datasets": "mnist", "--labels": "20", "--seeds": "0"}
    assert main(["run", *flatten(args), "--data-dir", str(tiny_data)]) == 0
    written = sorted(p.relative_to(work).as_posix() for p in work.rglob("*") if p.is_file())
    assert any(p.startswith("results/local/") for p in written)
    outside = [p for p in written if not p.startswith(("results/local/", "mlruns/"))]
    assert outside == []
    for path in ("results/local/summary.md", "mlruns/mlflow.db"):
        ignored = subprocess.run(["git", "check-ignore", "-q", path], cwd=REPO)
        assert ignored.returncode == 0, f"{path} must be ignored by git"


def test_cells_in_the_published_archive_are_not_run_again(
    tiny_data: Path, stores: dict, tmp_path: Path, monkeypatch, capsys
) -> None:
    """A fresh clone has no store, but the committed archive says which cells are done."""
    args = ["run", "--methods", "pixel-svm", "--datasets", "mnist", "--labels", "20"]
    args += ["--seeds", "0", "--data-dir", str(tiny_data), *flatten(stores)]
    assert main(args) == 0
    made = Path(stores["--results-dir"]) / archive.ARCHIVE_NAME
    clone = tmp_path / "clone"
    (clone / "results").mkdir(parents=True)
    shutil.copy(made, clone / "results" / archive.ARCHIVE_NAME)  # as if published
    monkeypatch.chdir(clone)
    capsys.readouterr()
    fresh = {**stores, "--tracking-uri": f"sqlite:///{clone}/mlruns/mlflow.db"}
    fresh["--results-dir"] = str(clone / "results" / "local")
    args = args[: args.index("--tracking-uri")] + flatten(fresh)
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "Plan: 1 cells, 0 to run (1 already finished)" in out
    assert "| pixel-svm |" in out  # its table comes from the published run


def test_report_sets_every_published_row_against_the_archived_defaults(
    tmp_path: Path, monkeypatch
) -> None:
    """reproduction.md comes from the archive, so it cannot go stale beside summary.md."""
    monkeypatch.chdir(tmp_path)
    rows = [archive_row("vae-linear-svm", s, acc) for s, acc in enumerate([80.0, 81.0, 82.0])]
    archive.write(tmp_path / "results" / archive.ARCHIVE_NAME, frame(*rows))
    store = f"sqlite:///{tmp_path}/no-store/mlflow.db"
    assert main(["report", "--tracking-uri", store, "--no-readme"]) == 0
    text = (tmp_path / "results" / "reproduction.md").read_text().split("## mnist")[1]
    row = next(line for line in text.splitlines() if line.startswith("| VAE + LinearSVC |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[:4] == ["VAE + LinearSVC", "vae-linear-svm", "100", "65.77"]
    assert cells[4].startswith("81.0 (") and cells[4].endswith("(3 seeds)")
    assert cells[5] == "+15.2"
    assert "| Ladder, full | ladder | 100 | 98.94 ± 0.37 | – | – |" in text  # none ran: listed
    assert "no FINISHED `ladder` runs" in text
