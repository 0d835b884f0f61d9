"""Which computation made a number: declared versions, library versions and the git commit.

A cell's result depends on its method's computation, on the shared VAE core when the method
uses it, and on the harness protocol (how data is read and scaled, how the labeled split is
drawn, how the test set is scored). Each of these declares a version that is bumped when its
computation changes, so moving a module or editing a docstring re-runs nothing, while a real
change does. `tests/test_fingerprints.py` enforces the bump: it records what each computes on
tiny data at a fixed seed and fails when that changes under the same version.

The numeric libraries are pinned (pyproject.toml), and each run records the versions it used.
"""

from __future__ import annotations

import functools
import importlib.metadata
import subprocess
from collections.abc import Iterable
from pathlib import Path

# Bump when reading or scaling the images, drawing the labeled split, or scoring changes.
PROTOCOL_VERSION = 1
LIBRARIES = ("torch", "scikit-learn", "numpy", "scipy")
ROOT = Path(__file__).resolve().parents[1]


def cell_version(method: type) -> str:
    """The version a cell of `method` (a Method class) is made by, e.g. 'm2@1+protocol@1', or
    'vae-rbf-svm@1+vae@1+protocol@1' for a method on the shared VAE."""
    from methods.vae import CORE_VERSION

    parts = [f"{method.name}@{method.version}"]
    if method.uses_vae:
        parts.append(f"vae@{CORE_VERSION}")
    parts.append(f"protocol@{PROTOCOL_VERSION}")
    return "+".join(parts)


def vae_version() -> str:
    """What a trained VAE's weights depend on besides its config, seed and data."""
    from methods.vae import CORE_VERSION

    return f"vae@{CORE_VERSION}+protocol@{PROTOCOL_VERSION}"


def library_versions(names: Iterable[str] = LIBRARIES) -> dict[str, str]:
    versions = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "absent"
    return versions


@functools.cache
def libraries() -> str:
    """The numeric libraries' versions as one text, e.g. 'numpy=2.4.6 scikit-learn=1.9.1 ...'."""
    return " ".join(f"{k}={v}" for k, v in sorted(library_versions().items()))


@functools.cache
def machine() -> str:
    """The hardware a run's seconds were measured on, in words: the CPU model and its cores,
    and the GPU when torch sees one. The plan calibrates its estimates with runs of the same."""
    import os
    import platform

    cpu = platform.processor() or "cpu"
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        cpu = next(line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    text = f"{cpu}, {os.cpu_count()} cores"
    try:
        import torch

        if torch.cuda.is_available():
            text += f", {torch.cuda.get_device_name(0)}"
    except ImportError:
        pass
    return text


@functools.cache
def git_commit() -> str:
    """The commit this process's code was loaded from, '-dirty' if tracked files differed,
    'unknown' outside a git checkout. Read once per process: the code it runs is the code it
    loaded, even if the checkout moves on meanwhile."""
    try:
        out = subprocess.run(
            ["git", "status", "--porcelain=v2", "--branch", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    lines = out.splitlines()
    oid = next((line.split()[2] for line in lines if line.startswith("# branch.oid")), "unknown")
    dirty = any(not line.startswith("#") for line in lines)
    return oid + ("-dirty" if dirty else "")
