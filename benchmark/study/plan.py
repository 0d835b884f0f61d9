"""What a `run` will do, before it does it: cells per method, VAEs to train, estimated time.

Estimates come from each method's cost model (`Method.estimated_seconds`, calibrated on the
reference 2-core CPU) and the VAE's (`methods.base.vae_seconds`); when the tracking store holds
earlier FINISHED runs, each method's estimate is scaled by how long its runs really took here.
The plan also fixes the order: cells that resume from a checkpoint first (their training is
half paid for), then the cheapest, so an interrupted study has its baselines.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import pandas as pd

import methods
from benchmark.data import datasets
from benchmark.study.grid import Cell
from methods.base import vae_config_from, vae_seconds
from methods.vae import VAEConfig

MNIST_TRAIN = 60_000


@dataclass(frozen=True)
class VAEJob:
    dataset: str
    seed: int
    config: VAEConfig
    seconds: float


@dataclass
class Plan:
    cells: list[Cell]
    pending: list[Cell]  # in run order: cheapest first
    stale: int  # pending cells that have FINISHED runs made by other code
    seconds: dict[str, float]  # cell key -> estimated seconds, VAEs it will train included
    vaes: list[VAEJob]
    calibration: str
    workers: int = 1
    resumed: int = 0  # pending cells that resume from a checkpoint

    @property
    def total_seconds(self) -> float:
        return sum(self.seconds[c.key] for c in self.pending)

    def wall_seconds(self) -> float:
        """Workers run in parallel only as far as cores allow (each uses one thread)."""
        parallel = max(1, min(self.workers, (os.cpu_count() or 1)))
        return self.total_seconds / parallel

    def per_method(self) -> dict[str, tuple[int, int, float]]:
        """method -> (cells, pending cells, estimated seconds of the pending ones)."""
        out: dict[str, tuple[int, int, float]] = {}
        for cell in self.cells:
            n, p, s = out.get(cell.method, (0, 0, 0.0))
            out[cell.method] = (n + 1, p, s)
        for cell in self.pending:
            n, p, s = out[cell.method]
            out[cell.method] = (n, p + 1, s + self.seconds[cell.key])
        return out

    def render(self, command: str = "python -m benchmark run") -> str:
        rows = self.per_method()
        width = max(map(len, rows), default=6)
        lines = [
            f"Plan: {len(self.cells)} cells, {len(self.pending)} to run"
            f" ({len(self.cells) - len(self.pending)} already finished"
            + (f", {self.stale} to rerun because the code changed" if self.stale else "")
            + (f", {self.resumed} resuming from a checkpoint" if self.resumed else "")
            + f"), {len(self.vaes)} VAE(s) to train.",
            f"  {'method':<{width}}  cells  to run  estimated",
        ]
        for method, (n, p, s) in sorted(rows.items(), key=lambda kv: kv[1][2]):
            lines.append(f"  {method:<{width}}  {n:>5}  {p:>6}  {duration(s):>9}")
        vae_total = sum(v.seconds for v in self.vaes)
        if self.vaes:
            lines.append(
                f"  (VAE training, {duration(vae_total)}, is counted in the first cell"
                " that needs each VAE)"
            )
        lines.append(
            f"Estimated time: {duration(self.wall_seconds())} with {self.workers} worker(s)"
            f" ({self.calibration})."
        )
        lines += self._cheaper(command)
        return "\n".join(lines)

    def _cheaper(self, command: str) -> list[str]:
        """A cheaper command when the whole plan would take more than half an hour."""
        if self.wall_seconds() < 1800:
            return []
        rows = self.per_method()
        cheap = [m for m, (_, _, s) in rows.items() if s <= 0.1 * self.total_seconds]
        seeds = sorted({c.seed for c in self.pending})
        tips = []
        if cheap and len(cheap) < len(rows):
            cost = sum(rows[m][2] for m in cheap)
            tips.append(f"--methods {','.join(sorted(cheap))} (~{duration(cost)})")
        if len(seeds) > 1:
            tips.append(
                f"--seeds {seeds[0]} (~{duration(self.total_seconds / len(seeds))}; the same"
                " command with more seeds later reuses it)"
            )
        if not tips:
            return []
        return [f"Cheaper: {command} " + " or ".join(tips) + "; --dry-run shows a plan only."]


def duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds} s"
    minutes = seconds // 60
    if minutes < 60:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60:02d} min"


def _n_train(cell: Cell, sizes: Mapping[str, int]) -> int:
    return cell.subset or sizes.get(cell.dataset, MNIST_TRAIN)


def _vae_config(cell: Cell) -> VAEConfig | None:
    """The VAE a cell trains or reuses, as the cache keys it: a convolutional one takes its
    image shape from the dataset, as `TrainData.get_vae` gives it at run time."""
    if not methods.get(cell.method).uses_vae:
        return None
    config = vae_config_from(cell.param_dict)
    if config.arch == "conv":
        config = replace(config, image_shape=tuple(datasets.get_spec(cell.dataset).image_shape))
    return config


def own_seconds(cell: Cell, n_train: int) -> float:
    n_classes = datasets.get_spec(cell.dataset).n_classes
    cls = methods.get(cell.method)
    return cls.estimated_seconds(cell.n_labels, n_train, cell.param_dict, n_classes)


def _comparable(
    history: pd.DataFrame, machine: str, device: str
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The earlier runs whose seconds say something about this machine: its own, and those of
    other machines with the same kind of device."""
    if history.empty or "wall_seconds" not in history:
        return history.iloc[:0], history.iloc[:0]
    from benchmark.reports.costs import device_kind, machine_of, timed_whole

    timed = timed_whole(history[history["wall_seconds"] > 0])
    mine = machine_of(timed) == machine
    kind = device_kind(timed) == device
    return timed[mine], timed[~mine & kind]


def _ratios(rows: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, float]]:
    """The rows with their measured and estimated seconds, and each method's median ratio."""
    from benchmark.reports.costs import with_seconds

    rows = with_seconds(rows)
    rows = rows[(rows["estimated"] > 0) & (rows["measured"] > 0)]
    ratios = (rows["measured"] / rows["estimated"]).groupby(rows["method"]).median()
    return rows, {m: clip_factor(float(r)) for m, r in ratios.items()}


def borrowed(own: dict[str, float], elsewhere: dict[str, float]) -> dict[str, float]:
    """`own` factors, and for the methods never timed here the factors of other machines of
    the same kind, scaled by this machine's pace: the median of own / elsewhere over the
    methods timed in both places (1 when there are none)."""
    common = [m for m in own if m in elsewhere]
    pace = float(pd.Series([own[m] / elsewhere[m] for m in common]).median()) if common else 1.0
    return {**{m: clip_factor(f * pace) for m, f in elsewhere.items()}, **own}


def with_twins(factors: dict[str, float]) -> dict[str, float]:
    """A method never timed here takes the factor of its twin: a timed method with the same
    cost model and the same defaults (`sdgm-supervised` from `adgm-supervised`), whose cells
    do the same work."""
    import methods

    registered = set(methods.available())
    timed = [methods.get(m) for m in factors if m in registered]
    found = dict(factors)
    for name in sorted(registered - set(factors)):
        cls = methods.get(name)
        for other in timed:
            same_model = other.estimated_seconds.__func__ is cls.estimated_seconds.__func__
            if same_model and other.defaults == cls.defaults:
                found[name] = factors[other.name]
                break
    return found


def clip_factor(ratio: float) -> float:
    """A calibration factor kept within reason: one freak cell must not plan weeks or seconds."""
    return min(50.0, max(0.02, ratio))


def calibrate(
    history: pd.DataFrame, machine: str = "", device: str = "cpu"
) -> tuple[dict[str, float], str]:
    """Per-method factors (measured / estimated seconds of a cell, VAE training apart), and
    "vae" for the VAE's, from earlier runs (archive rows: the store's and the archives')."""
    from benchmark.reports import costs

    mine, others = _comparable(history, machine, device)
    rows, where = (mine, "this machine") if not mine.empty else (others, f"other {device} machines")
    if rows.empty:
        return {}, "built-in cost model of a 2-core CPU; no earlier runs to calibrate with"
    rows, own = _ratios(rows)
    factors = own
    lent = ""
    if not mine.empty and not others.empty:  # methods never timed here: others' pace, rescaled
        factors = borrowed(own, _ratios(others)[1])
        if len(factors) > len(own):
            lent = f"; {len(factors) - len(own)} more from other {device} machines at its pace"
    factors = with_twins(factors)
    vaes, measured, estimated = costs.vae_costs(history.loc[rows.index])
    if vaes and estimated > 0:
        factors["vae"] = measured / estimated
    if not factors:
        return {}, "built-in cost model of a 2-core CPU; no earlier runs to calibrate with"
    return factors, (
        f"cost model calibrated by {len(rows)} earlier run(s) of {len(own)} method(s) on"
        f" {where}{lent}"
    )


def make_plan(
    cells: list[Cell],
    pending: list[Cell],
    stale: int,
    cached: Any,
    history: pd.DataFrame,
    workers: int = 1,
    sizes: Mapping[str, int] | None = None,
    machine: str = "",
    device: str = "cpu",
    share_done: Callable[[Cell], float] = lambda cell: 0.0,
) -> Plan:
    """Order the pending cells (resumed ones, then cheapest first) and estimate each one's time,
    calibrated by the earlier runs (`history`) of this `machine`, else of the same `device` type.

    `cached(dataset, seed, config) -> bool` says whether a VAE is already in the cache;
    `share_done(cell)` how much of a cell's training an interrupted run left in checkpoints,
    so a resumed cell is estimated at what is left of it.
    """
    sizes = sizes or {}
    factors, calibration = calibrate(history, machine, device)
    done = {c.key: share_done(c) for c in pending}
    own = {
        c.key: own_seconds(c, _n_train(c, sizes)) * factors.get(c.method, 1.0) * (1.0 - done[c.key])
        for c in pending
    }
    # stable: keeps the (dataset, seed) mix
    order = sorted(pending, key=lambda c: (done[c.key] == 0, own[c.key]))
    seconds, vaes, seen = dict(own), [], set()
    for cell in order:
        config = _vae_config(cell)
        job = (cell.dataset, cell.seed, config)
        if config is None or job in seen:
            continue
        seen.add(job)
        if not cached(cell, config):
            cost = vae_seconds(config, _n_train(cell, sizes)) * factors.get("vae", 1.0)
            vaes.append(VAEJob(cell.dataset, cell.seed, config, cost))
            seconds[cell.key] += cost
    resumed = sum(1 for share in done.values() if share > 0)
    return Plan(cells, order, stale, seconds, vaes, calibration, workers, resumed)
