"""One epoch loop for every network the methods train: progress, divergence check, per-epoch
callback, and a checkpoint after every epoch so an interrupted cell resumes where it stopped.

A checkpoint holds the model, the optimizer and the random generator's state, plus whatever the
caller adds (`extra`), so a resumed run on the CPU ends with the same numbers as one that was
never interrupted. It is written atomically (temp file + rename): a kill -9 while writing
leaves the previous epoch's checkpoint, never half a file.
"""

from __future__ import annotations

import io
import logging
import math
import os
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

log = logging.getLogger(__name__)


def from_array(array: np.ndarray) -> torch.Tensor:
    """A tensor sharing the array's memory. The runner makes the images read-only, which
    PyTorch warns it cannot enforce; no method writes to its input, so the warning is
    silenced here."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(np.ascontiguousarray(array))


def adam(params, device: torch.device, **options: Any) -> torch.optim.Adam:
    """Adam for a training loop. On a GPU it is fused: its step counters stay on the device and
    a step does no per-parameter work on the host. On the CPU it is PyTorch's default, whose
    numbers every archived CPU cell was computed with."""
    fused = True if device.type == "cuda" else None
    return torch.optim.Adam(params, fused=fused, **options)


def rows_outside(n_rows: int, *taken: torch.Tensor) -> torch.Tensor:
    """Indices (ascending) of the rows in none of `taken`: the unlabeled ones."""
    free = torch.ones(n_rows, dtype=torch.bool, device=taken[0].device)
    for rows in taken:
        free[rows] = False
    return torch.nonzero(free).flatten()


def labeled_stream(
    n_labeled: int, n_needed: int, generator: torch.Generator, device: torch.device
) -> torch.Tensor:
    """Indices into the labeled set for `n_needed` draws: fresh permutations back to back, so
    each label recurs evenly however small the budget is against the unlabeled pass."""
    reps = -(-n_needed // n_labeled)
    return torch.cat(
        [torch.randperm(n_labeled, generator=generator, device=device) for _ in range(reps)]
    )[:n_needed]


def term_gradient_norms(
    terms: dict[str, torch.Tensor], params: list[torch.Tensor]
) -> dict[str, torch.Tensor]:
    """The norm of each loss term's gradient on `params`, kept on the device: which term drives
    a network (the per-term diagnostic). The graph is retained for the step's own backward and
    nothing is accumulated into `.grad`, so training is unchanged."""
    norms = {}
    for name, term in terms.items():
        grads = torch.autograd.grad(term, params, retain_graph=True, allow_unused=True)
        norms[name] = torch.sqrt(
            sum(
                (g.pow(2).sum() for g in grads if g is not None),
                start=torch.zeros((), device=term.device),
            )
        )
    return norms


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the model is not cached."""


@dataclass(frozen=True)
class Checkpoint:
    """A file where one training loop keeps its latest epoch."""

    path: Path

    def load(self, mmap: bool = False) -> dict[str, Any] | None:
        """The saved state, None if absent or unreadable; `mmap` maps the tensors, not reads them."""
        if not self.path.exists():
            return None
        try:
            return torch.load(self.path, map_location="cpu", weights_only=False, mmap=mmap)
        except Exception as error:  # damaged: start over rather than fail the cell
            log.warning("checkpoint %s is unreadable (%s); starting over.", self.path, error)
            return None

    def save(self, state: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        torch.save(state, buffer)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".tmp-ckpt-")
        with os.fdopen(fd, "wb") as handle:
            handle.write(buffer.getvalue())
        os.replace(tmp, self.path)

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)

    def epochs(self) -> tuple[int, int] | None:
        """(epochs done, epochs planned), read without loading the tensors; None if absent."""
        state = self.load(mmap=True)
        if not isinstance(state, dict) or "epoch" not in state or "epochs" not in state:
            return None  # absent, damaged or not a loop's: the loop starts over
        return int(state["epoch"]), int(state["epochs"])


def loop_progress(folder: Path | None) -> list[tuple[int, int]]:
    """(epochs done, epochs planned) of each loop a cell has checkpointed in `folder`."""
    if folder is None or not folder.is_dir():
        return []
    return list(filter(None, (Checkpoint(p).epochs() for p in sorted(folder.glob("*.pt")))))


def epochs_done(progress: list[tuple[int, int]]) -> int:
    """The epochs every checkpointed loop has done (0 when none): where a resumed cell's
    curves pick up."""
    return min((done for done, _ in progress), default=0)


def share_done(progress: list[tuple[int, int]]) -> float:
    """The share of a cell's training its checkpoints already hold (0 when none): the mean over
    its loops' checkpoints of epochs done / epochs planned."""
    shares = [done / planned for done, planned in progress if planned > 0]
    return min(1.0, sum(shares) / len(shares)) if shares else 0.0


@dataclass
class Loop:
    """What a training loop is made of; `run_epoch(epoch)` trains one epoch, returns its loss."""

    name: str
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    generator: torch.Generator
    epochs: int
    run_epoch: Callable[[int], float]
    on_epoch: Callable[[int, float], None] | None = None
    checkpoint: Checkpoint | None = None
    progress: bool = False
    # Checkpoints cost a write of the model and optimizer: at most one per this many seconds
    # (and always after the last epoch). BENCHMARK_CHECKPOINT_SECONDS overrides it.
    checkpoint_seconds: float = field(
        default_factory=lambda: float(os.environ.get("BENCHMARK_CHECKPOINT_SECONDS", "20"))
    )
    hint: str = "lower the learning rate"
    # Extra state to checkpoint (e.g. the best epoch so far): get() -> dict, set(dict).
    get_extra: Callable[[], dict[str, Any]] = field(default=lambda: {})
    set_extra: Callable[[dict[str, Any]], None] = field(default=lambda state: None)
    # Called with the model once after a checkpoint is restored, before the next epoch: to
    # rebuild what the per-epoch callback compares with (the curves' previous predictions).
    on_resume: Callable[[torch.nn.Module], None] | None = None


def _fits(model: torch.nn.Module, saved: dict[str, Any]) -> bool:
    """Whether a saved state dict has exactly the model's tensors, by name and shape."""
    own = model.state_dict()
    return own.keys() == saved.keys() and all(
        tuple(own[k].shape) == tuple(saved[k].shape) for k in own
    )


def run_loop(loop: Loop) -> list[float]:
    """Train `loop.epochs` epochs (fewer if resuming); the mean loss of every epoch."""
    history: list[float] = []
    start = 0
    state = loop.checkpoint.load() if loop.checkpoint else None
    if state is not None and not _fits(loop.model, state.get("model", {})):
        log.warning(
            "checkpoint %s holds a different network (the code changed); starting over.",
            loop.checkpoint.path,
        )
        state = None
    if state is not None and state.get("epochs") == loop.epochs:
        device = next(loop.model.parameters()).device
        loop.model.load_state_dict(state["model"])
        loop.optimizer.load_state_dict(state["optimizer"])
        loop.generator.set_state(state["generator"].to("cpu"))
        loop.set_extra(state.get("extra", {}))
        history, start = list(state["history"]), int(state["epoch"])
        loop.model.to(device)
        if loop.on_resume is not None:
            loop.on_resume(loop.model)
        print(
            f"{loop.name}: resuming at epoch {start + 1} of {loop.epochs} from {loop.checkpoint.path}",
            flush=True,
        )
    bar = tqdm(
        range(start, loop.epochs),
        desc=loop.name,
        unit="epoch",
        disable=not loop.progress,
        leave=False,
        initial=start,
        total=loop.epochs,
    )
    saved = time.monotonic()
    for epoch in bar:
        loop.model.train()
        loss = loop.run_epoch(epoch)
        if not math.isfinite(loss):
            raise TrainingDiverged(
                f"{loop.name} loss became {loss} at epoch {epoch + 1}; {loop.hint}."
            )
        history.append(loss)
        bar.set_postfix(loss=f"{loss:.3f}")
        if loop.on_epoch is not None:
            loop.on_epoch(epoch, loss)
        due = time.monotonic() - saved >= loop.checkpoint_seconds or epoch + 1 == loop.epochs
        if loop.checkpoint is not None and due:
            saved = time.monotonic()
            loop.checkpoint.save(
                {
                    "epoch": epoch + 1,
                    "epochs": loop.epochs,
                    "model": loop.model.state_dict(),
                    "optimizer": loop.optimizer.state_dict(),
                    "generator": loop.generator.get_state(),
                    "history": history,
                    "extra": loop.get_extra(),
                }
            )
    loop.model.eval()
    return history
