"""Launching a grid (for `run` and `reproduce`): check every cell, print the plan, open the parent
run, run the queue, and rewrite the tables after each finished cell."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import pandas as pd

import methods
from benchmark import datasets, grid, options, preflight
from benchmark import report as report_mod
from benchmark.devices import resolve_device
from benchmark.options import DEFAULT_STORAGE
from benchmark.plan import Plan, make_plan
from benchmark.runner import RunOptions, launch, pending_cells
from benchmark.tracking import Tracker
from benchmark.vae_cache import VAECache, cache_key
from methods.vae import VAEConfig


def checked_cells(args: argparse.Namespace, cells: list[grid.Cell]) -> list[grid.Cell]:
    """Every check possible before training (paths, device, data, class sizes); the cells
    bound to the fingerprints of the data they will read."""
    preflight.writable_dir(args.results_dir, "--results-dir")
    preflight.writable_dir(args.vae_cache_dir, "--vae-cache-dir")
    preflight.sqlite_parent(args.storage or DEFAULT_STORAGE, "--storage")
    preflight.sqlite_parent(args.tracking_uri, "--tracking-uri")
    resolve_device(args.device)
    budgets: dict[str, set[int]] = {}
    for cell in cells:
        budgets.setdefault(cell.dataset, set()).add(cell.n_labels)
    subset = max((c.subset for c in cells), default=0)
    return grid.with_fingerprints(cells, preflight.check_data(budgets, args.data_dir, subset))


def cells_from_args(args: argparse.Namespace) -> list[grid.Cell]:
    method_names = options.parse_list(args.methods, methods.available(), "method")
    dataset_names = options.parse_list(
        args.datasets, list(datasets.DATASETS), "dataset", datasets.DEFAULT_DATASETS
    )
    settings = options.parse_settings(args.settings)
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
        options.parse_ints(args.labels, "labels"),
        options.parse_ints(args.seeds, "seeds"),
        overrides,
        args.params,
        Path(args.results_dir),
        args.subset,
    )


def plan_for(
    args: argparse.Namespace, cells: list[grid.Cell], tracker: Tracker, force: bool
) -> Plan:
    """Which checked cells still have to run, in which order, and how long they should take."""
    device = resolve_device(args.device)
    cache = VAECache(args.vae_cache_dir)
    pending, stale = pending_cells(cells, tracker, force)

    def cached(cell: grid.Cell, config: VAEConfig) -> bool:
        return cache.path(cache_key(cell.fingerprint, config, cell.seed, device)).exists()

    history = tracker.cell_runs("FINISHED") if pending else pd.DataFrame()
    return make_plan(cells, pending, stale, cached, history, args.workers)


def launch_tracked(
    args: argparse.Namespace,
    cells: list[grid.Cell],
    kind: str,
    params: dict[str, object],
    force: bool = False,
    tables: TableWriter | None = None,
) -> tuple[list[str], list[grid.Cell]]:
    """Check everything, print the plan, open a parent run of this `kind` and run the cells:
    the failures and the cells as run (bound to their data's fingerprint). `tables` is
    called whenever a cell has finished. With `args.dry_run` it stops after the plan.

    `run` and `reproduce` both go through here, so their cells are executed and recorded alike.
    """
    if any(not c.fingerprint for c in cells):
        cells = checked_cells(args, cells)
    device = resolve_device(args.device)
    tracker = Tracker(args.tracking_uri, args.experiment)
    plan = plan_for(args, cells, tracker, force)
    print(plan.render(f"python -m benchmark {kind if kind != 'grid' else 'run'}"), flush=True)
    if getattr(args, "dry_run", False) or not plan.pending:
        return [], cells
    tracker.close_dead_launchers()
    parent = tracker.start_launcher_run(
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
        if tables is not None:
            tables.parent_run_id = parent
        on_change = tables.write if tables is not None else None
        failures = launch(cells, options, tracker, args.workers, force, plan, on_change)
        if tables is not None:
            tables.write(final=True)
        status = "FAILED" if failures else "FINISHED"
    finally:
        tracker.finish(parent, status)
    return failures, cells


def run_grid(args: argparse.Namespace) -> int:
    cells = checked_cells(args, cells_from_args(args))
    names = ("methods", "datasets", "labels", "seeds", "epochs", "latent_dim", "params", "settings")
    params = {name: getattr(args, name) for name in (*names, "workers", "subset")}
    tables = TableWriter(args, cells)
    failures, _ = launch_tracked(args, cells, "grid", params, args.force, tables)
    return exit_code(failures)


class TableWriter:
    """Rewrites results/ from this run's own cells (never from runs of other settings in the
    same store), after every finished cell, so an interrupted study leaves its finished part
    readable. The caption names the command and the settings."""

    def __init__(self, args: argparse.Namespace, cells: list[grid.Cell]) -> None:
        self.args, self.cells = args, cells
        self.results_dir = Path(args.results_dir)
        self.tracker: Tracker | None = None
        self.parent_run_id: str | None = None  # the grid's parent run: it carries the study

    def caption(self) -> str:
        settings = sorted({c.settings for c in self.cells})
        return (
            f"Made by `python -m benchmark {' '.join(sys.argv[1:]) or 'run'}`; settings:"
            f" {'; '.join(settings)}; only this command's cells (see `report` for the whole"
            " store)."
        )

    def _to_parent(self, summary: pd.DataFrame, step: int) -> None:
        """The study on the grid's parent run: the tables (md, csv, and HTML, which MLflow's
        artifact viewer renders), the plots, and one metric per (method, dataset, budget) mean,
        stepped by finished cells, so the chart view compares methods at a glance."""
        assert self.tracker is not None and self.parent_run_id is not None
        html = self.results_dir / "summary.html"
        summary.round(2).to_html(html, index=False, na_rep="–")
        for name in (
            "summary.md",
            "summary.csv",
            "summary.html",
            "accuracy_vs_labels.png",
            "differences_vs_baseline.png",
            "critical_difference.png",
        ):
            if (self.results_dir / name).exists():
                self.tracker.log_artifact(self.parent_run_id, self.results_dir / name, "study")
        metrics = {  # MLflow allows letters, digits and _-./: in names
            re.sub(
                r"[^\w\-./:]", "_", f"mean_accuracy/{r.dataset}/{int(r.n_labels)}/{r.method}"
            ): r.mean
            for r in summary.itertuples()
        }
        self.tracker.log_metrics(self.parent_run_id, metrics, step=step)

    def write(self, final: bool = False) -> None:
        """Rewrite the tables; between cells a failure here is reported, never fatal to the
        grid (the final write at the end raises as usual)."""
        if final:
            return self._write(final=True)
        try:
            self._write(final=False)
        except Exception as error:
            print(f"warning: could not update {self.results_dir}: {error}", file=sys.stderr)

    def _write(self, final: bool) -> None:
        self.tracker = self.tracker or Tracker(self.args.tracking_uri, self.args.experiment)
        runs = self.tracker.cell_runs("FINISHED")
        keys = {(c.key, c.code) for c in self.cells}
        if not runs.empty:
            own = [(k, v) in keys for k, v in zip(runs["cell_key"], runs["code_version"])]
            runs = runs[own]
        if runs.empty:
            if final:
                print("No FINISHED cells to tabulate.")
            return
        summary = report_mod.write_report(runs, self.results_dir, self.caption())
        if self.parent_run_id:
            self._to_parent(summary, step=len(runs))
        if final:
            print((self.results_dir / "summary.md").read_text())
            print(
                f"wrote {self.results_dir}/summary.csv, summary.md and plots ({len(summary)} rows)"
            )


def exit_code(failures: list[str]) -> int:
    """List the failed cells on stderr; 1 if there were any."""
    if failures:
        print(f"{len(failures)} cell(s) failed:", file=sys.stderr)
        for line in failures:
            print(f"  {line}", file=sys.stderr)
    return 1 if failures else 0
