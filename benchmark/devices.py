"""Choosing the torch device once, from the user's --device option."""

from __future__ import annotations

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
