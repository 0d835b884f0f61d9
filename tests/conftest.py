"""Shared fixtures: a tiny synthetic dataset in torchvision's layout, the real data, tmp stores."""

from __future__ import annotations

import gzip
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

# One thread per test process and per process it starts: the suite must pass on a 2-core
# machine that is busy with other work, where two threads per process thrash.
for _name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, "1")

import torch  # noqa: E402  (after the thread variables, which it reads when imported)

torch.set_num_threads(1)
# ... and subnormal floats flushed, as `run`, `tune` and their workers set: tests compute what
# cells compute, and no test's order can change another's numbers
from benchmark import runtime  # noqa: E402

runtime.cpu_numerics()
REPO = Path(__file__).resolve().parents[1]


def write_idx(path: Path, array: np.ndarray, compress: bool = True) -> Path:
    """Write an IDX file (uint8), as MNIST ships them."""
    magic = 0x0800 | array.ndim
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    raw = header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(raw) if compress else raw)
    return path


def fake_images(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Learnable images: each class lights a different 6x6 square, plus noise."""
    images = rng.integers(0, 60, size=(len(labels), 28, 28), dtype=np.uint8)
    for i, c in enumerate(labels):
        r, k = divmod(int(c), 4)
        images[i, 3 + 7 * r : 9 + 7 * r, 3 + 6 * k : 9 + 6 * k] = 230
    return images


def make_fake_dataset(root: Path, folder: str, n_train: int = 400, n_test: int = 200) -> Path:
    rng = np.random.default_rng(0)
    raw = root / folder / "raw"
    for split, n in (("train", n_train), ("t10k", n_test)):
        labels = np.arange(n) % 10
        rng.shuffle(labels)
        write_idx(raw / f"{split}-images-idx3-ubyte.gz", fake_images(labels, rng))
        write_idx(raw / f"{split}-labels-idx1-ubyte.gz", labels.astype(np.uint8))
    return raw


@pytest.fixture
def tiny_data(tmp_path: Path) -> Path:
    """A data directory with small learnable MNIST and Fashion-MNIST look-alikes."""
    root = tmp_path / "data"
    for folder in ("MNIST", "FashionMNIST"):
        make_fake_dataset(root, folder)
    return root


def real_data_root() -> Path | None:
    """Where the real MNIST and Fashion-MNIST are on this machine, if anywhere: the folder
    $BENCHMARK_DATA_DIR names, ../shared/data beside the clone (CI), or the download cache."""
    from benchmark.data.datasets import default_cache_dir

    candidates = [os.environ.get("BENCHMARK_DATA_DIR"), REPO.parent / "shared" / "data"]
    candidates.append(default_cache_dir())
    for root in candidates:
        if root and all((Path(root) / f / "raw").is_dir() for f in ("MNIST", "FashionMNIST")):
            return Path(root)
    return None


@pytest.fixture(scope="session")
def real_data() -> Path:
    """The real datasets; the tests that need them skip (with the reason) where they are absent,
    so a fresh clone's `python -m pytest` passes. CI points BENCHMARK_DATA_DIR at them."""
    root = real_data_root()
    if root is None and os.environ.get("BENCHMARK_REQUIRE_REAL_DATA"):
        pytest.fail("BENCHMARK_REQUIRE_REAL_DATA is set but the real datasets were not found")
    if root is None:
        pytest.skip(
            "real MNIST/Fashion-MNIST not found ($BENCHMARK_DATA_DIR, ../shared/data or the"
            " download cache); `export BENCHMARK_DATA_DIR=DIR` to run these tests"
        )
    return root


def store_options(root: Path) -> dict[str, str]:
    """Command-line options that keep every store of a run inside `root`."""
    return {
        "--tracking-uri": f"sqlite:///{root}/mlruns/mlflow.db",
        "--storage": f"sqlite:///{root}/mlruns/optuna.db",
        "--results-dir": str(root / "results"),
        "--vae-cache-dir": str(root / "vae-cache"),
    }


@pytest.fixture
def stores(tmp_path: Path) -> dict[str, str]:
    """Command-line options that keep every store of a run inside tmp_path."""
    return store_options(tmp_path)


def flatten(options: dict[str, str]) -> list[str]:
    return [part for item in options.items() for part in item]


def launch_together(
    command: list[str], env: dict[str, str], folder: Path, n: int = 2, timeout: float = 300
) -> tuple[list[int], list[str]]:
    """Start N copies of COMMAND at the same instant; their exit codes and stderr. Stderr goes to
    files: a pipe read only after the other process's would fill and block their workers."""
    logs = [folder / f"launcher-{i}.txt" for i in range(n)]
    procs = []
    for log in logs:
        with open(log, "wb") as err:
            procs.append(subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=err))
    codes = [p.wait(timeout=timeout) for p in procs]
    return codes, [log.read_text() for log in logs]


def archive_row(method: str, seed: int, accuracy: float, **fields: object) -> dict:
    """One run archive row (benchmark.archive.COLUMNS) made by today's code with the method's
    defaults, unless `fields` say otherwise; `params` may be a dict."""
    import json

    import methods
    from benchmark import provenance

    cls = methods.get(method) if method in methods.available() else None
    params = fields.pop("params", cls().params if cls else {})
    row = {
        "method": method,
        "dataset": "mnist",
        "n_labels": 100,
        "seed": seed,
        "subset": 0,
        "params": json.dumps(params, sort_keys=True) if isinstance(params, dict) else params,
        "param_source": "defaults",
        "code_version": provenance.cell_version(cls) if cls else f"{method}@1",
        "accuracy": accuracy,
        "macro_f1": accuracy,
        "fit_seconds": 1.0,
        "vae_train_seconds": 0.0,
        "wall_seconds": 2.0,
        "resumed_share": 0.0,
        "device": "cpu",
        "libraries": provenance.libraries(),
        "denormals": "flushed",
        "git_commit": "abc",
        "data_fingerprint": "data",
        "cell_key": f"{method}/mnist/100/seed{seed}/x",
        "start_time": f"2026-01-01T00:00:{seed:02d}Z",
        "run_id": f"{method}-{seed}-{accuracy}",
        "store": "mlruns/mlflow.db",
        "experiment": "ssl-vae-benchmark",
    }
    row.update(fields)
    return row
