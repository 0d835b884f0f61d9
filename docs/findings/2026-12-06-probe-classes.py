"""Which images keep changing class while an `aae` cell trains (the diagnosis of 2026-12-06).

A diagnostic beside running cells, not part of the harness. `watch` reads each cell's checkpoint
as the training loop rewrites it (every epoch at the default 20 s) and saves the class it gives
every training image; `analyse` says which predicted classes the changes move between. The last
two lines of `analyse` read the training labels of images the method saw unlabeled: they name
what the changing images are and choose nothing.

    PYTHONPATH=. python docs/findings/2026-12-06-probe-classes.py watch OUT SEED=CKPT [SEED=...]
    PYTHONPATH=. python docs/findings/2026-12-06-probe-classes.py analyse OUT SEED [SEED ...]

from the repository root (the script imports `benchmark` and `methods` from there).

A cell checkpoints to `checkpoints/<cell key>/aae.pt` beside its `--vae-cache-dir`;
`run` prints the path when it resumes. Set BENCHMARK_DATA_DIR; hidden=1000, z_dim=10 are
`aae`'s defaults.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from benchmark.data.datasets import load
from methods.aae import AAENet

NAMES = ["T-shirt", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
         "Boot"]  # fmt: skip


def watch(out: Path, cells: dict[str, Path]) -> None:
    """Save each new checkpoint's predicted classes as OUT/seed<S>-epoch<E>.npy, until killed."""
    torch.set_num_threads(1)
    x = torch.from_numpy(load("fashion-mnist", download=False).features("train"))
    out.mkdir(parents=True, exist_ok=True)
    seen: dict[str, float] = {}
    while True:
        for seed, path in cells.items():
            if not path.exists() or seen.get(seed) == path.stat().st_mtime:
                continue
            seen[seed] = path.stat().st_mtime
            state = torch.load(path, map_location="cpu", weights_only=False)
            net = AAENet(x.shape[1], 10, 1000, 10)
            net.load_state_dict(state["model"])
            net.eval()
            with torch.no_grad():
                guess = torch.cat([net(part).argmax(1) for part in x.split(10_000)])
            np.save(
                out / f"seed{seed}-epoch{state['epoch']:03d}.npy", guess.numpy().astype(np.int8)
            )
        time.sleep(15)


def analyse(out: Path, seeds: list[str]) -> None:
    """Per seed: changes per epoch, who makes them, between which predicted classes."""
    y = load("fashion-mnist", download=False).labels("train")
    for seed in seeds:
        files = sorted(out.glob(f"seed{seed}-epoch*.npy"))
        epochs = [int(f.stem.split("epoch")[1]) for f in files]
        preds = np.stack([np.load(f).astype(np.int64) for f in files])
        steps = [i for i in range(1, len(files)) if epochs[i] == epochs[i - 1] + 1]
        moved = [preds[i] != preds[i - 1] for i in steps]
        flips = np.sum(moved, axis=0)
        print(f"== seed {seed}: epochs {epochs[0]}-{epochs[-1]}, {len(steps)} epoch-to-epoch steps")
        print("changed class (%):", " ".join(f"{100 * m.mean():.1f}" for m in moved))
        print(f"changed at least once {100 * (flips > 0).mean():.1f} %, three times or more "
              f"{100 * (flips >= 3).mean():.1f} % (making "
              f"{100 * flips[flips >= 3].sum() / max(1, flips.sum()):.0f} % of the changes)")  # fmt: skip
        pairs: Counter[tuple[int, int]] = Counter()
        for i, m in zip(steps, moved):
            pairs.update(tuple(sorted(p)) for p in zip(preds[i - 1][m], preds[i][m]))
        total = sum(pairs.values())
        print("between predicted classes:", ", ".join(
            f"{NAMES[a]}/{NAMES[b]} {100 * n / total:.0f} %" for (a, b), n in pairs.most_common(6)))  # fmt: skip
        for i in range(0, len(files), 5):
            share = 100 * np.bincount(preds[i], minlength=10) / len(y)
            print(f"  epoch {epochs[i]:3d}: predicted Pullover {share[2]:.1f} Coat {share[4]:.1f}"
                  f" Shirt {share[6]:.1f} %, others {share[[0, 1, 3, 5, 7, 8, 9]].min():.1f}-"
                  f"{share[[0, 1, 3, 5, 7, 8, 9]].max():.1f} %")  # fmt: skip
        # Diagnosis only: what the changing images are, and the training images' accuracy.
        by_class = np.bincount(y, weights=flips, minlength=10) / max(1, flips.sum())
        print("true class of the changes:", ", ".join(
            f"{NAMES[c]} {100 * by_class[c]:.0f} %" for c in np.argsort(-by_class)[:5]))  # fmt: skip
        accuracy = [100 * (p == y).mean() for p in preds]
        print(f"training-image accuracy: {min(accuracy):.1f}-{max(accuracy):.1f} %")


if __name__ == "__main__":
    command, folder, rest = sys.argv[1], Path(sys.argv[2]), sys.argv[3:]
    if command == "watch":
        watch(folder, {s: Path(p) for s, p in (a.split("=", 1) for a in rest)})
    else:
        analyse(folder, rest)
