"""Worker processes: each pops cells from the queue and runs them until none is left.

One worker runs in the launcher's process; several are spawned processes with one torch thread
each, which die with their launcher (even a kill -9) and turn SIGINT or SIGTERM into one quiet
stop: the cell's run is closed as KILLED and the launcher says how to resume.
"""

from __future__ import annotations

import _thread
import multiprocessing as mp
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
from optuna.trial import FrozenTrial, TrialState

from benchmark import runtime
from benchmark.devices import resolve_device
from benchmark.study.cell_run import CellRunner
from benchmark.study.execute import Workspace, checkpoint_root
from benchmark.study.grid import Cell
from benchmark.study.progress import GridProgress
from benchmark.tracking.client import Tracker
from benchmark.vaes.cache import VAECache
from benchmark.vaes.share import SharedVAEs
from benchmark.workqueue.queue import CellQueue, cell_key, open_storage


@dataclass(frozen=True)
class RunOptions:
    """What a worker needs to join a grid: its stores, data, device and parent run."""

    tracking_uri: str
    experiment: str
    storage: str
    data_dir: str | None
    device: str
    vae_cache_dir: str
    parent_run_id: str
    progress: bool = True


def close_stale_run(tracker: Tracker):
    """The callback that closes a dead worker's run as KILLED when its trial goes stale."""

    def close(trial) -> None:
        run_id = trial.user_attrs.get("mlflow_run_id")
        if run_id:
            tracker.set_tags(run_id, {"error": "worker died (heartbeat lost); cell retried"})
            tracker.finish(run_id, "KILLED")

    return close


def work(
    options: RunOptions,
    name: str,
    progress: GridProgress | None = None,
    on_change: Callable[[], None] | None = None,
) -> None:
    """Pop and run cells until the queue is empty and no other worker holds one."""
    runtime.quiet_optuna()
    tracker = Tracker(options.tracking_uri, options.experiment)
    queue = CellQueue(
        open_storage(options.storage, close_stale_run(tracker)), options.storage, name
    )
    ws = Workspace(
        options.data_dir,
        resolve_device(options.device),
        VAECache(
            options.vae_cache_dir,
            shared=SharedVAEs(tracker, options.storage, options.parent_run_id),
        ),
        options.progress and sys.stderr.isatty(),  # epoch bars only where they redraw
        checkpoint_root=checkpoint_root(options.vae_cache_dir),
    )
    runner = CellRunner(tracker, ws, options.storage, options.parent_run_id)
    seen: set[int] = set()
    while True:
        trial = queue.pop()
        if trial is not None:
            cell_json = trial.user_attrs.get("cell")
            if progress is not None and cell_json:
                progress.cell_started(Cell.from_json(cell_json).label)
            state = queue.run(trial, runner)
            if state != TrialState.PRUNED:
                if progress is not None:
                    progress.cell_finished(cell_key(trial))
                if on_change is not None:
                    on_change()
            continue
        if not queue.trials(TrialState.RUNNING):
            return
        queue.beat_running_once(seen)
        time.sleep(1.0)  # the next pop fails the trials gone stale: their cells come back


def _die_with_parent() -> None:
    """Linux: the kernel sends this worker SIGTERM when its launcher dies, even by kill -9, so
    no orphan keeps working (and its cell's run is closed as KILLED, as after Ctrl-C)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: workers finish their cell and exit
        return
    # A launcher killed while this worker was still starting died before the request above,
    # so the kernel will never send the signal: this worker was adopted, and must not work on.
    parent = mp.parent_process()
    if parent is not None and os.getppid() != parent.pid:
        sys.exit(0)


def _worker_main(options: RunOptions, name: str) -> None:
    _die_with_parent()
    runtime.configure()
    _install_interrupts()
    torch.set_num_threads(1)
    runtime.cpu_numerics()
    try:
        work(options, name)
    except KeyboardInterrupt:  # stopped by the launcher (or Ctrl-C): the cell's run is closed
        sys.exit(130)  # already; the launcher tells the user what to do, not a traceback


_STOPPING = threading.Event()


def _interrupt(signum: int, frame: object) -> None:
    """The launcher's SIGTERM stops the worker, once: a second one cannot interrupt the
    worker's own clean-up with a traceback."""
    if _STOPPING.is_set():
        return
    _STOPPING.set()
    raise KeyboardInterrupt


def _install_interrupts() -> None:
    """SIGTERM raises KeyboardInterrupt in this worker, once; SIGINT stays ignored, as the
    worker was started with it ignored: a terminal's Ctrl-C reaches the whole process group,
    and only the launcher acts on it, stopping its workers with SIGTERM. Should the SIGTERM
    land inside a finaliser (a `__del__` or weakref callback, e.g. SQLAlchemy's during garbage
    collection), Python cannot raise it there: it would print "Exception ignored ...
    Traceback" and carry on. The hook below prints nothing and has a helper thread deliver it
    again 50 ms later, when the main thread is out of the finaliser."""
    signal.signal(signal.SIGTERM, _interrupt)
    default = sys.unraisablehook

    def redeliver() -> None:
        timer = threading.Timer(0.05, _thread.interrupt_main, args=(signal.SIGTERM,))
        timer.daemon = True
        timer.start()

    def hook(unraisable: sys.UnraisableHookArgs) -> None:
        if not isinstance(unraisable.exc_value, KeyboardInterrupt):
            default(unraisable)
            return
        _STOPPING.clear()  # that stop was swallowed: the next delivery must raise again
        try:
            redeliver()
        except KeyboardInterrupt:  # a second one landed in here: it is delivered later too
            redeliver()

    sys.unraisablehook = hook


def run_workers(
    options: RunOptions,
    name: str,
    n_workers: int,
    estimates: dict[str, float],
    on_change: Callable[[], None] | None = None,
) -> None:
    """Run the queue with n_workers processes; the progress line weighs cells by cost."""
    parallel = min(n_workers, os.cpu_count() or 1)
    progress = GridProgress(estimates, enabled=options.progress, parallel=parallel)
    try:
        if n_workers == 1:
            work(options, name, progress, on_change)
            return
        _run_processes(options, name, n_workers, progress, on_change)
    finally:
        progress.close()


_ENDED = (TrialState.COMPLETE, TrialState.FAIL)


def done_keys(trials: list[FrozenTrial], before: set[int], wanted: set[str]) -> list[str]:
    """The cells of `wanted` whose trial ended since the launcher started and that no trial
    still runs or waits for: a stale trial that is retried, or a cell another launcher queued
    afresh, is not done yet, and each cell counts once."""
    active = {cell_key(t) for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)}
    ended = {cell_key(t) for t in trials if t.state in _ENDED and t.number not in before}
    return sorted((ended - active) & wanted)


def _run_processes(
    options: RunOptions,
    name: str,
    n_workers: int,
    progress: GridProgress,
    on_change: Callable[[], None] | None,
) -> None:
    quiet = replace(options, progress=False)
    context = mp.get_context("spawn")
    procs = [context.Process(target=_worker_main, args=(quiet, name)) for _ in range(n_workers)]
    # Started with SIGINT ignored (a disposition a new process keeps): a Ctrl-C while one is
    # still starting Python would otherwise print a "Fatal Python error" traceback from it.
    default = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        for p in procs:
            p.start()
    finally:
        signal.signal(signal.SIGINT, default)
    queue = CellQueue(open_storage(options.storage), options.storage, name)
    before = {t.number for t in queue.trials(*_ENDED)}
    seen_done = 0
    try:
        while any(p.is_alive() for p in procs):
            trials = queue.trials()
            done = done_keys(trials, before, set(progress.estimates))
            running = [
                Cell.from_json(t.user_attrs["cell"]).label
                for t in trials
                if t.state == TrialState.RUNNING and "cell" in t.user_attrs
            ]
            progress.current = "; ".join(running)
            progress.set_done(done)
            if len(done) != seen_done and on_change is not None:
                seen_done = len(done)
                on_change()
            time.sleep(2.0)
    finally:
        for p in procs:
            p.join(timeout=1) if not p.is_alive() else p.terminate()
    crashed = [f"worker {i} (exit code {p.exitcode})" for i, p in enumerate(procs) if p.exitcode]
    if crashed:
        print(f"warning: {', '.join(crashed)} ended abnormally; see above.", file=sys.stderr)
