"""The grid's progress line: cells done, elapsed time that moves, a cost-weighted ETA, the
current cell.

Cells differ in cost by three orders of magnitude (a pixel SVM in seconds, M2 in half an hour),
so an ETA from cells per second is useless. The bar advances by each finished cell's estimated
seconds (see `benchmark.study.plan`), and once some are done the remaining estimate is scaled by how
fast the estimates have really been met on this machine. Until then, the time spent since the
last cell finished is taken off the estimate, so the ETA counts down during a long cell instead
of standing still for hours. A thread redraws it every second, so both move during a long cell.

When stderr is not a terminal (a log file), there is no redrawn line: one line is printed per
finished cell, and one a minute while none finishes.
"""

from __future__ import annotations

import sys
import threading
import time

from tqdm.auto import tqdm

from benchmark.study.plan import duration


class GridProgress:
    LOG_EVERY_S = 60.0

    def __init__(
        self,
        estimates: dict[str, float],
        enabled: bool = True,
        parallel: int = 1,
        terminal: bool | None = None,
    ) -> None:
        self.estimates = estimates
        self.parallel = max(1, parallel)  # workers that really run at once
        self.total = sum(estimates.values()) or 1.0
        self.done_estimate = 0.0
        self.cells_done = 0
        self.current = ""
        self.start = time.monotonic()
        self.last_finish = self.start  # when cells_done last changed
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.terminal = sys.stderr.isatty() if terminal is None else terminal
        self.logging = enabled and not self.terminal
        self.last_line = self.start
        self.bar = tqdm(
            total=len(estimates),
            desc="cells",
            bar_format="{desc}: {n_fmt}/{total_fmt} |{bar:20}|{postfix}",
            disable=not enabled or not self.terminal,
            dynamic_ncols=True,
        )
        self._thread = threading.Thread(target=self._tick, daemon=True)
        if enabled and (self.terminal or self.logging):
            self._thread.start()

    def remaining_seconds(self) -> float:
        """The estimate of what is left, scaled by the pace measured so far; before there is a
        pace, the plan's estimate less the time the cells in flight have already run."""
        left = max(0.0, self.total - self.done_estimate)
        now = time.monotonic()
        if self.done_estimate >= 0.05 * self.total and self.cells_done >= 3:
            return left * (now - self.start) / self.done_estimate  # workers included
        return max(0.0, left / self.parallel - (now - self.last_finish))

    def status(self) -> str:
        elapsed = time.monotonic() - self.start
        remaining = self.remaining_seconds()
        # cells are left but their estimate is used up: the ETA can only say so
        overdue = remaining <= 0.0 and self.cells_done < len(self.estimates)
        left = "past the estimate" if overdue else f"~{duration(remaining)} left"
        text = f"{duration(elapsed)} elapsed, {left}"
        return text + (f" | {self.current}" if self.current else "")

    def cell_started(self, label: str) -> None:
        with self._lock:
            self.current = label
            self._redraw()

    def cell_finished(self, key: str) -> None:
        with self._lock:
            self.cells_done += 1
            self.last_finish = time.monotonic()
            self.done_estimate += self.estimates.get(key, 0.0)
            self.bar.update(1)
            self.current = ""
            self._redraw(finished=True)

    def set_done(self, keys: list[str]) -> None:
        """For several workers: the keys finished so far (the launcher polls the queue)."""
        with self._lock:
            finished = len(keys) != self.cells_done
            if finished:
                self.last_finish = time.monotonic()
            self.cells_done = len(keys)
            self.done_estimate = sum(self.estimates.get(k, 0.0) for k in keys)
            self.bar.n = min(self.bar.total, len(keys))
            self._redraw(finished)

    def _redraw(self, finished: bool = False) -> None:
        if self.logging:
            now = time.monotonic()
            if finished or now - self.last_line >= self.LOG_EVERY_S:
                self.last_line = now
                stamp = time.strftime("%H:%M:%S")
                done = f"{self.cells_done}/{len(self.estimates)} cells"
                print(f"[{stamp}] {done}, {self.status()}", file=sys.stderr, flush=True)
            return
        self.bar.set_postfix_str(self.status(), refresh=False)
        self.bar.refresh()

    def _tick(self) -> None:
        while not self._stop.wait(1.0):
            with self._lock:
                self._redraw()

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2)
        self.bar.close()
