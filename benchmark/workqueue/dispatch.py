"""Running a grid's cells: queue the pending ones once, run the workers, report what failed."""

from __future__ import annotations

from collections.abc import Callable

from benchmark import runtime
from benchmark.study.grid import Cell
from benchmark.study.plan import Plan
from benchmark.tracking.cells import failed_cells, finished_cells
from benchmark.tracking.client import Tracker
from benchmark.workqueue.locks import store_lock
from benchmark.workqueue.queue import QUEUE_LOCK, CellQueue, open_storage, study_name
from benchmark.workqueue.workers import RunOptions, close_stale_run, run_workers


def pending_cells(
    cells: list[Cell], tracker: Tracker, force: bool, archived: dict[str, set[str]] | None = None
) -> tuple[list[Cell], int]:
    """The cells without a FINISHED run by today's version, in the store or in the run
    archives (`archived`: cell key -> versions), and how many of them have one made by another
    version (a fix since then could change their numbers, so they run again)."""
    if force:
        return list(cells), 0
    done = finished_cells(tracker)
    for key, versions in (archived or {}).items():
        done.setdefault(key, set()).update(versions)
    pending = [c for c in cells if c.code not in done.get(c.key, ())]
    return pending, sum(1 for c in pending if done.get(c.key))


def launch(
    cells: list[Cell],
    options: RunOptions,
    tracker: Tracker,
    n_workers: int,
    force: bool,
    plan: Plan | None = None,
    on_change: Callable[[], None] | None = None,
    archived: dict[str, set[str]] | None = None,
) -> list[str]:
    """Enqueue the grid (in the plan's order: cheapest first), run the workers, and return the
    failures of this invocation. `on_change` is called after each finished cell."""
    runtime.quiet_optuna()
    name = study_name(options.experiment, cells)
    storage = open_storage(options.storage, close_stale_run(tracker))
    with store_lock(options.storage, QUEUE_LOCK):  # launchers started together: one at a time
        queue = CellQueue.create(storage, options.storage, name, cells)
        # what is pending is read again under the lock: another launcher may have run cells
        # since the plan was made, and each cell is queued once
        asked = cells if plan is None else plan.pending
        pending, _ = pending_cells(asked, tracker, force, archived)
        estimates = {c.key: 1.0 for c in pending} if plan is None else plan.seconds
        queue.enqueue(pending, force)
    if pending:
        run_workers(options, name, n_workers, {c.key: estimates[c.key] for c in pending}, on_change)
    return _failures(tracker, options.parent_run_id, pending, archived)


def _failures(
    tracker: Tracker, parent_id: str, pending: list[Cell], archived: dict[str, set[str]] | None
) -> list[str]:
    """This invocation's FAILED cells, and any pending cell left without a FINISHED run (a dead
    worker, a retry budget spent: nothing may end silently unfinished)."""
    failed = failed_cells(tracker, parent_id)
    failures = [f"{key}: {error}" for key, error in failed.items()]
    if pending:
        left, _ = pending_cells(pending, tracker, False, archived)
        failures += [
            f"{c.key}: not finished (no FINISHED run; run the same command again)"
            for c in left
            if c.key not in failed
        ]
    return failures
