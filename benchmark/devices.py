"""Choosing the torch device once, from the user's --device option."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import torch

from benchmark.errors import UsageError
from benchmark.options import DEVICE_CHOICES


def resolve_device(choice: str = "auto") -> torch.device:
    if choice not in DEVICE_CHOICES:
        raise UsageError(f"--device {choice!r} is not one of {', '.join(DEVICE_CHOICES)}.")
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if choice == "cuda" and not torch.cuda.is_available():
        raise UsageError(
            "--device cuda was asked for but no CUDA GPU is visible; use --device cpu."
        )
    return torch.device(choice)


def seeded_generator(seed: int, device: torch.device) -> torch.Generator:
    """A private RNG on the device, so nothing depends on torch's global state."""
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    return generator


def mps_running(env: Mapping[str, str] = os.environ) -> bool:
    """Whether a CUDA MPS control daemon listens where this process's CUDA would look."""
    pipes = Path(env.get("CUDA_MPS_PIPE_DIRECTORY", "/tmp/nvidia-mps"))
    return (pipes / "control").exists()


def sharing_hint(device: torch.device, workers: int, env: Mapping[str, str] = os.environ) -> str:
    """A line for `run` when several workers will share one GPU without the MPS daemon,
    which lets their small kernels run side by side instead of taking turns; else ''."""
    if device.type != "cuda" or workers < 2 or mps_running(env):
        return ""
    return (
        f"{workers} workers share one GPU by taking turns: start the CUDA MPS daemon first"
        " (nvidia-cuda-mps-control -d) to run their kernels side by side (about 2x the"
        " cells an hour on an H200; docs/findings/2026-12-04-night.md)."
    )
