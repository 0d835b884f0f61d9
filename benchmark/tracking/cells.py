"""What the tracking store says about cells: which are done, which failed, which were orphaned."""

from __future__ import annotations

from benchmark.tracking.client import Tracker, literal


def finished_cells(tracker: Tracker) -> dict[str, set[str]]:
    """Cell key -> the code versions it has FINISHED runs of ('' for runs before versions)."""
    done: dict[str, set[str]] = {}
    for run in tracker.runs("attributes.status = 'FINISHED'"):
        tags = run.data.tags
        if "cell_key" in tags:
            done.setdefault(tags["cell_key"], set()).add(tags.get("code_version", ""))
    return done


def has_finished(tracker: Tracker, cell_key: str, code_version: str) -> bool:
    """A FINISHED run of this cell made by this code version exists."""
    query = (
        f"tags.cell_key = {literal(cell_key)} and attributes.status = 'FINISHED'"
        f" and tags.code_version = {literal(code_version)}"
    )
    return next(iter(tracker.runs(query)), None) is not None


def close_orphans(tracker: Tracker, cell_key: str) -> int:
    """Mark KILLED the RUNNING runs of a cell that is about to start again.

    The queue hands a cell to one worker at a time, so any run of it still RUNNING belongs to a
    worker that died, possibly before it could record its run id for the retry to close.
    """
    query = f"tags.cell_key = {literal(cell_key)} and attributes.status = 'RUNNING'"
    orphans = [run.info.run_id for run in tracker.runs(query)]
    for run_id in orphans:
        tracker.set_tags(run_id, {"error": "its worker died; the cell was started again"})
        tracker.finish(run_id, "KILLED")
    return len(orphans)


def carry_curves(tracker: Tracker, run_id: str, cell_key: str, epochs_done: int) -> str | None:
    """Give a resumed cell's new run the curves of the epochs its checkpoint holds, from the
    latest interrupted run of the cell, so the UI shows the whole training; that run's id."""
    query = f"tags.cell_key = {literal(cell_key)}"
    stopped = [
        run
        for run in tracker.runs(query)
        if run.info.run_id != run_id and run.info.status in ("KILLED", "FAILED")
    ]
    if not stopped or epochs_done <= 0:
        return None
    source = max(stopped, key=lambda run: run.info.start_time).info.run_id
    tracker.copy_curves(source, run_id, epochs_done)
    tracker.set_tags(run_id, {"resumed_from_run": source})
    return source


def failed_cells(tracker: Tracker, parent_id: str) -> dict[str, str]:
    """Cell key -> error of the grid's FAILED cell runs."""
    query = f"attributes.status = 'FAILED' and tags.mlflow.parentRunId = {literal(parent_id)}"
    return {
        run.data.tags["cell_key"]: run.data.tags.get("error", "")
        for run in tracker.runs(query)
        if "cell_key" in run.data.tags
    }
