"""The `run` and `report` commands: validate everything, launch the grid, write the tables."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

import methods
from benchmark import datasets, grid
from benchmark import report as report_mod
from benchmark.devices import resolve_device
from benchmark.errors import UsageError
from benchmark.runner import DEFAULT_STORAGE, RunOptions, launch
from benchmark.tracking import Tracker


def _check_data(names: list[str], data_dir: str | None) -> None:
    """Fail before any training if a dataset's train or test files are missing or malformed."""
    for name in names:
        ds = datasets.load(name, data_dir)
        ds.split("train")
        for stem in datasets.SPLIT_FILES["test"]:
            if datasets._file_in(ds.directory, stem) is None:
                raise UsageError(f"Dataset {name!r}: {stem}[.gz] missing in {ds.directory}.")


def cells_from_args(args: argparse.Namespace) -> list[grid.Cell]:
    method_names = grid.parse_list(args.methods, methods.available(), "method")
    dataset_names = grid.parse_list(args.datasets, list(datasets.DATASETS), "dataset")
    settings = grid.parse_settings(args.settings)
    grid.check_settings(settings, method_names)
    overrides = {
        "vae_epochs": args.epochs,
        "epochs": args.epochs,
        "latent_dim": args.latent_dim,
        **settings,
    }
    return grid.build_grid(
        method_names,
        dataset_names,
        grid.parse_ints(args.labels, "labels"),
        grid.parse_ints(args.seeds, "seeds"),
        overrides,
        args.params,
        Path(args.results_dir),
        args.subset,
    )


def launch_tracked(
    args: argparse.Namespace,
    cells: list[grid.Cell],
    kind: str,
    params: dict[str, object],
    force: bool = False,
) -> list[str]:
    """Validate data and device, open a parent run of this `kind`, run the cells; the failures.

    `run` and `reproduce` both go through here, so their cells are executed and recorded alike.
    """
    device = resolve_device(args.device)
    _check_data(sorted({c.dataset for c in cells}), args.data_dir)
    tracker = Tracker(args.tracking_uri, args.experiment)
    parent = tracker.start_run(
        f"{kind} ({len(cells)} cells)", {"kind": kind, "command": " ".join(sys.argv)}
    )
    tracker.log_params(parent, {**params, "device": str(device), "n_cells": len(cells)})
    options = RunOptions(
        tracking_uri=args.tracking_uri,
        experiment=args.experiment,
        storage=args.storage or DEFAULT_STORAGE,
        data_dir=args.data_dir,
        device=args.device,
        vae_cache_dir=args.vae_cache_dir,
        parent_run_id=parent,
    )
    status = "KILLED"
    try:
        failures = launch(cells, options, tracker, args.workers, force)
        status = "FAILED" if failures else "FINISHED"
    finally:
        tracker.finish(parent, status)
    return failures


def run(args: argparse.Namespace) -> int:
    cells = cells_from_args(args)
    names = ("methods", "datasets", "labels", "seeds", "epochs", "latent_dim", "params", "settings")
    params = {name: getattr(args, name) for name in (*names, "workers", "subset")}
    failures = launch_tracked(args, cells, "grid", params, args.force)
    report(args.tracking_uri, args.experiment, Path(args.results_dir))
    return exit_code(failures)


def exit_code(failures: list[str]) -> int:
    """List the failed cells on stderr; 1 if there were any."""
    if failures:
        print(f"{len(failures)} cell(s) failed:", file=sys.stderr)
        for line in failures:
            print(f"  {line}", file=sys.stderr)
    return 1 if failures else 0


def report(
    tracking_uri: str, experiment: str, results_dir: Path, also_from: Sequence[str] = ()
) -> int:
    """Tables from one store, or several (a colleague's, a study run apart): where two hold the
    same cell, the latest run wins, as within one store."""
    for uri in also_from:
        path = uri.removeprefix("sqlite:///")
        if uri.startswith("sqlite:///") and not Path(path).is_file():
            raise UsageError(f"--also-from {uri}: no such SQLite file {path!r}; check the path.")
    frames = [Tracker(uri, experiment).cell_runs("FINISHED") for uri in (tracking_uri, *also_from)]
    frames = [f for f in frames if not f.empty]
    runs = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    if runs.empty:
        print(f"No FINISHED runs in experiment {experiment!r} yet; nothing to report.")
        return 0
    summary = report_mod.write_report(runs, results_dir)
    print((results_dir / "summary.md").read_text())
    print(
        f"wrote {results_dir}/summary.csv, summary.md, accuracy_vs_labels.png ({len(summary)} rows)"
    )
    return 0
