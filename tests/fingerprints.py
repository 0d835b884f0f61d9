"""What each versioned computation gives on tiny data at a fixed seed, for test_fingerprints.

Three kinds of computation carry a declared version (benchmark/provenance.py): every method,
the shared VAE core, and the harness protocol (reading and scaling images, the labeled split,
scoring). Their fingerprints here are compared with the ones recorded in fingerprints.json
under the same version. Only public entry points are used, so the same functions can be run
against an older commit to show that it computes what today's code does. They run with one
torch thread: another thread count sums in another order, and a test image near a boundary
may change class.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

RECORD = Path(__file__).with_name("fingerprints.json")
# Small, but enough for each method to learn the tiny data: a fingerprint of a method that has
# learned nothing (one class for every image) would not change when its computation does.
FAST = {"vae_epochs": 30, "vae_batch_size": 32, "latent_dim": 10, "epochs": 3}
PARAMS = {  # those that learn slowly
    "m1-m2": {"epochs": 30, "batch_size": 40},
    "vae-finetune": {"epochs": 30},
    "vae-finetune-frozen": {"epochs": 30},
    "aae": {"epochs": 1, "lr": 1e-3, "adversarial_lr": 1e-3, "batch_size": 20},
    "aae-supervised": {"epochs": 1, "lr": 1e-3, "adversarial_lr": 1e-3, "batch_size": 20},
    "ladder": {"batch_size": 20},
    "ladder-supervised": {"batch_size": 20},
    "ladder-conv": {"batch_size": 20},
    "ladder-conv-supervised": {"batch_size": 20},
    **{
        name: {
            "hidden": "64,64",
            "a_dim": 4,
            "z_dim": 4,
            "epochs": 2,
            "batch_size": 20,
            "labeled_batch_size": 20,
            "lr": 1e-3,
        }
        for name in ("adgm", "adgm-supervised", "sdgm", "sdgm-supervised")
    },  # fmt: skip
}
# Test images a method may classify differently on another CPU, where vector kernels sum in
# another order: training that amplifies float noise (an adversarial game, a sampled auxiliary
# latent) moves a few blended images across a boundary. Set to about twice the disagreement
# between one and two torch threads, a harsher perturbation than another CPU; 0 elsewhere.
FLOAT_NOISE = {
    "aae": 40,
    **{n: 6 for n in ("adgm", "sdgm", "adgm-supervised", "sdgm-supervised")},
    # convolutions: 9 and 1 of 200 differed between two CPUs, 42 and 4 between thread counts
    "vae-finetune": 20,
    "vae-finetune-frozen": 8,
    # the convolutional Γ-model: 3 and 8 of 200 between thread counts (two sets of defaults),
    # its reference 16 and 5
    "ladder-conv": 16,
    "ladder-conv-supervised": 32,
}
N_LABELS, SEED, DATASET = 20, 0, "mnist"


def tiny_root(folder: Path) -> Path:
    """conftest's fake MNIST (seeded: the same bytes on every machine) with a test set of
    blends of two classes' images: predictions near the decision boundaries, so a change in
    what a method computes moves some of them, where clean test images are all right."""
    from conftest import fake_images, make_fake_dataset, write_idx

    raw = make_fake_dataset(folder, "MNIST")
    rng = np.random.default_rng(1)
    first, second = rng.integers(0, 10, 200), rng.integers(0, 10, 200)
    weight = rng.uniform(0.3, 0.7, size=(200, 1, 1))
    blend = weight * fake_images(first, rng) + (1 - weight) * fake_images(second, rng)
    write_idx(raw / "t10k-images-idx3-ubyte.gz", blend.round().astype(np.uint8))
    write_idx(raw / "t10k-labels-idx1-ubyte.gz", first.astype(np.uint8))
    return folder


def _workspace(root: Path) -> Any:
    from benchmark.study.execute import Workspace
    from benchmark.vaes.cache import VAECache

    return Workspace(root, torch.device("cpu"), VAECache(root / "cache"), progress=False)


def fingerprint_params(name: str) -> dict[str, Any]:
    """The parameters a method is fingerprinted with: its defaults, made small."""
    from benchmark.study import grid

    params, _ = grid.resolve_params(name, DATASET, N_LABELS, {**FAST, **PARAMS.get(name, {})})
    return params


def method_fingerprint(name: str, root: Path) -> str:
    """The class predicted for each of the 200 tiny test images, as a string of digits."""
    import methods
    from benchmark.study import grid
    from benchmark.study.execute import train_data

    torch.set_num_threads(1)
    torch.manual_seed(SEED)
    params = fingerprint_params(name)
    cell = grid.Cell(name, DATASET, N_LABELS, SEED, grid.canonical(params))
    ws = _workspace(root)
    method = methods.get(name)(**params)
    method.fit(train_data(cell, ws, method.uses_vae))
    x_test, _ = ws.test_arrays(DATASET, 0)
    return "".join(str(int(c)) for c in np.asarray(method.predict(x_test)))


def vae_fingerprint(root: Path) -> list[float]:
    """Sum and sum of squares of a tiny VAE's latent means over the training images: any change
    in what the core computes moves them far beyond float noise across CPUs."""
    from methods.vae import VAEConfig, train_vae

    torch.set_num_threads(1)
    x, _, _ = _workspace(root).train_arrays(DATASET, 0)
    config = VAEConfig(latent_dim=4, hidden=(32,), epochs=2, batch_size=64)
    trained = train_vae(torch.from_numpy(x.copy()), config, seed=SEED, progress=False)
    z = trained.model.latent_means(x).astype(np.float64)
    return [round(float(z.sum()), 6), round(float((z**2).sum()), 6)]


def protocol_fingerprint(root: Path) -> str:
    """Hash of the scaled training images, nested labeled splits, and the scores of fixed
    predictions: what every cell's score passes through besides its method."""
    from benchmark.data import scoring
    from benchmark.data.splits import balanced_split

    x, y, _ = _workspace(root).train_arrays(DATASET, 0)
    digest = hashlib.sha256(np.ascontiguousarray(x).tobytes())
    for n_labels in (20, 40):
        for seed in (0, 1):
            digest.update(balanced_split(y, n_labels, seed, DATASET, 10).labeled.tobytes())
    rng = np.random.default_rng(0)
    truth, guess = rng.integers(0, 10, 300), rng.integers(0, 10, 300)
    scores = {**scoring.classification_scores(truth, guess)}
    scores.update(scoring.clustering_scores(truth, guess))
    digest.update(json.dumps({k: round(v, 9) for k, v in sorted(scores.items())}).encode())
    return digest.hexdigest()[:16]


def recorded() -> dict[str, Any]:
    return json.loads(RECORD.read_text()) if RECORD.exists() else {}


def write_record(record: dict[str, Any]) -> None:
    RECORD.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
