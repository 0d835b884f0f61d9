"""Launching a grid (for `run` and `reproduce`): check every cell, print the plan, open the parent
run, run the queue, and rewrite the tables after each finished cell."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

import methods
from benchmark import options, provenance, runtime
from benchmark.data import datasets, preflight
from benchmark.devices import resolve_device, sharing_hint
from benchmark.options import DEFAULT_STORAGE, sqlite_path
from benchmark.reports import archive
from benchmark.study import grid
from benchmark.study.execute import checkpoint_folder, checkpoint_root
from benchmark.study.plan import Plan, make_plan
from benchmark.study.tables import TableWriter, command_text, known_rows
from benchmark.tracking import views as mlflow_views
from benchmark.tracking.client import Tracker
from benchmark.tracking.launchers import close_dead_launchers, start_launcher_run
from benchmark.vaes.cache import VAECache, cache_key
from benchmark.workqueue.dispatch import launch
from benchmark.workqueue.workers import RunOptions
from methods import training
from methods.vae import VAEConfig


def checked_cells(args: argparse.Namespace, cells: list[grid.Cell]) -> list[grid.Cell]:
    """Every check possible before training (paths, device, data, class sizes); the cells
    bound to the fingerprints of the data they will read. A dry run creates no folder."""
    create = not getattr(args, "dry_run", False)
    preflight.writable_dir(args.results_dir, "--results-dir", create)
    preflight.writable_dir(args.vae_cache_dir, "--vae-cache-dir", create)
    preflight.storage_url(args.storage or DEFAULT_STORAGE, "--storage")
    preflight.sqlite_parent(args.storage or DEFAULT_STORAGE, "--storage", create)
    preflight.sqlite_parent(args.tracking_uri, "--tracking-uri", create)
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
        Path(getattr(args, "tuned_dir", args.results_dir)),
        args.subset,
    )


def plan_for(
    args: argparse.Namespace, cells: list[grid.Cell], known: pd.DataFrame, force: bool
) -> Plan:
    """Which checked cells still have to run, in which order, and how long they should take:
    a cell is done when the store or a run archive (`known`) holds a run of its version."""
    device = resolve_device(args.device)
    cache = VAECache(args.vae_cache_dir)
    done = archive.finished([known])
    pending = cells if force else [c for c in cells if c.code not in done.get(c.key, ())]
    stale = 0 if force else sum(1 for c in pending if done.get(c.key))

    def cached(cell: grid.Cell, config: VAEConfig) -> bool:
        return cache.path(cache_key(cell.fingerprint, config, cell.seed, device)).exists()

    def share_done(cell: grid.Cell) -> float:
        folder = checkpoint_folder(checkpoint_root(args.vae_cache_dir), cell)
        return training.share_done(training.loop_progress(folder))

    machine = provenance.machine()
    return make_plan(
        cells, pending, stale, cached, known, args.workers, None, machine, device.type, share_done
    )


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
    known = known_rows(Path(args.results_dir), args.tracking_uri, args.experiment)
    plan = plan_for(args, cells, known, force)
    print(plan.render(f"python -m benchmark {kind if kind != 'grid' else 'run'}"), flush=True)
    if getattr(args, "dry_run", False) or not plan.pending:
        return [], cells
    threads, denormals = runtime.choose_threads(args.workers), runtime.cpu_numerics()
    print(f"Threads: {threads}; subnormal floats {denormals}.", flush=True)
    if hint := sharing_hint(device, args.workers):
        print(hint, flush=True)
    tracker = Tracker(args.tracking_uri, args.experiment)
    close_dead_launchers(tracker)
    command = command_text(sys.argv[1:] or [kind])
    parent = start_launcher_run(
        tracker, f"{kind} ({len(cells)} cells)", {"kind": kind, "command": command}
    )
    tracker.log_params(parent, {**params, "device": str(device), "n_cells": len(cells)})
    link = mlflow_views.save_grid_views(tracker, parent)
    note = f"This grid's cells and their scores, grouped: [{link}]({link})"
    tracker.set_tags(parent, {"view": link, "mlflow.note.content": note})
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
        archived = archive.finished([known])
        failures = launch(cells, options, tracker, args.workers, force, plan, on_change, archived)
        if tables is not None:
            tables.write(final=True)
        status = "FAILED" if failures else "FINISHED"
    finally:
        tracker.finish(parent, status)
        print(f"Compare the cells in MLflow: {link}{_ui_hint(args.tracking_uri)}", flush=True)
    return failures, cells


def _ui_hint(tracking_uri: str) -> str:
    """How to start the UI for a local store (a tracking server is its own UI)."""
    db = sqlite_path(tracking_uri)
    if db is None:
        return ""
    folder = db.parent
    return (
        f"\n  (start the UI first: mlflow ui --backend-store-uri {tracking_uri}"
        f" --default-artifact-root {folder / 'artifacts'})"
    )


def run_grid(args: argparse.Namespace) -> int:
    cells = checked_cells(args, cells_from_args(args))
    names = ("methods", "datasets", "labels", "seeds", "epochs", "latent_dim", "params", "settings")
    params = {name: getattr(args, name) for name in (*names, "workers", "subset")}
    tables = TableWriter(args, cells)
    failures, cells = launch_tracked(args, cells, "grid", params, args.force, tables)
    if not args.dry_run and not tables.parent_run_id:  # nothing ran: show what is known
        tables.cells = cells
        tables.write(final=True)
    return exit_code(failures)


def exit_code(failures: list[str]) -> int:
    """List the failed cells on stderr; 1 if there were any."""
    if failures:
        print(f"{len(failures)} cell(s) failed:", file=sys.stderr)
        for line in failures:
            print(f"  {line}", file=sys.stderr)
    return 1 if failures else 0
