"""The grid's progress line: cells done, elapsed time that moves, a cost-weighted ETA, the
current cell.

Cells differ in cost by three orders of magnitude (a pixel SVM in seconds, M2 in half an hour),
so an ETA from cells per second is useless. The bar advances by each finished cell's estimated
seconds (see `benchmark.plan`), and once some are done the remaining estimate is scaled by how
fast the estimates have really been met on this machine. A thread redraws it every second, so
the elapsed time moves during a long cell.
"""

from __future__ import annotations

import threading
import time

from tqdm.auto import tqdm

from benchmark.plan import duration


class GridProgress:
    def __init__(
        self, estimates: dict[str, float], enabled: bool = True, parallel: int = 1
    ) -> None:
        self.estimates = estimates
        self.parallel = max(1, parallel)  # workers that really run at once
        self.total = sum(estimates.values()) or 1.0
        self.done_estimate = 0.0
        self.cells_done = 0
        self.current = ""
        self.start = time.monotonic()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.bar = tqdm(
            total=len(estimates),
            desc="cells",
            bar_format="{desc}: {n_fmt}/{total_fmt} |{bar:20}|{postfix}",
            disable=not enabled,
            dynamic_ncols=True,
        )
        self._thread = threading.Thread(target=self._tick, daemon=True)
        if enabled:
            self._thread.start()

    def remaining_seconds(self) -> float:
        """The estimate of what is left, scaled by the pace measured so far."""
        left = max(0.0, self.total - self.done_estimate)
        elapsed = time.monotonic() - self.start
        if self.done_estimate >= 0.05 * self.total and self.cells_done >= 3:
            return left * elapsed / self.done_estimate  # the measured pace, workers included
        return left / self.parallel

    def status(self) -> str:
        elapsed = time.monotonic() - self.start
        text = f"{duration(elapsed)} elapsed, ~{duration(self.remaining_seconds())} left"
        return text + (f" | {self.current}" if self.current else "")

    def cell_started(self, label: str) -> None:
        with self._lock:
            self.current = label
            self._redraw()

    def cell_finished(self, key: str) -> None:
        with self._lock:
            self.cells_done += 1
            self.done_estimate += self.estimates.get(key, 0.0)
            self.bar.update(1)
            self.current = ""
            self._redraw()

    def set_done(self, keys: list[str]) -> None:
        """For several workers: the keys finished so far (the launcher polls the queue)."""
        with self._lock:
            self.cells_done = len(keys)
            self.done_estimate = sum(self.estimates.get(k, 0.0) for k in keys)
            self.bar.n = min(self.bar.total, len(keys))
            self._redraw()

    def _redraw(self) -> None:
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
