"""Each trained VAE as an MLflow run of its own: the core every method shares, made visible.

The run spans the training (its start is set back by the training seconds, so the UI's
Duration is the training's) and holds the VAE's config, its training loss per epoch and
seconds, a grid of training images over their reconstructions, samples from the prior, a 2-D
PCA of latent means coloured by class (a picture for people: no method sees those labels). The
encoder is an MLflow 3 logged model ("vae-DATASET-seedS-zZ", under the experiment's Models, with the
config as its parameters and the final loss and seconds as its metrics), saved in MLflow's safe
`pt2` format: `mlflow.pytorch.load_model("models:/MODEL_ID")` gives a module whose forward
returns latent means. Cells tag the runs of the VAEs they used.
"""

from __future__ import annotations

import copy
import tempfile
from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
from torch import nn

from benchmark.tracking.client import Tracker
from benchmark.vaes.share import published_run
from methods.vae import VAE, TrainedVAE

SAMPLE = 2000  # training images for the latent picture


class LatentMeans(nn.Module):
    """The VAE's encoder as a model whose forward gives the features methods use."""

    def __init__(self, vae: VAE) -> None:
        super().__init__()
        self.vae = vae

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.vae.encode(x)[0]


def _image_grid(
    rows: list[np.ndarray], path: Path, title: str, shape: tuple[int, ...] = (28, 28)
) -> Path:
    fig, axes = plt.subplots(len(rows), len(rows[0]), figsize=(len(rows[0]), len(rows) + 0.4))
    for r, row in enumerate(rows):
        for c, image in enumerate(row):
            ax = axes[r][c] if len(rows) > 1 else axes[c]
            ax.imshow(image.reshape(shape), cmap="gray", vmin=0, vmax=1)
            ax.axis("off")
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


@torch.no_grad()
def pictures(
    vae: VAE,
    x: np.ndarray,
    y: np.ndarray,
    folder: Path,
    seed: int,
    shape: tuple[int, ...] = (28, 28),
) -> list[Path]:
    vae = vae.eval()
    device = next(vae.parameters()).device
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(x), size=min(SAMPLE, len(x)), replace=False)
    xs = torch.from_numpy(x[pick]).to(device)
    mu, _ = vae.encode(xs[:8])
    recon = torch.sigmoid(vae.decode_logits(mu)).cpu().numpy()
    made = [
        _image_grid(
            [x[pick[:8]], recon],
            folder / "reconstructions.png",
            "training images (top) and their reconstructions from the latent mean",
            shape,
        )
    ]
    z = torch.from_numpy(rng.standard_normal((16, vae.config.latent_dim)).astype(np.float32))
    samples = torch.sigmoid(vae.decode_logits(z.to(device))).cpu().numpy()
    made.append(
        _image_grid(
            [samples[:8], samples[8:]], folder / "samples.png", "decoded samples z ~ N(0, I)", shape
        )
    )
    from sklearn.decomposition import PCA

    means = vae.encode(xs)[0].cpu().numpy()
    flat = (
        PCA(n_components=2, random_state=seed).fit_transform(means) if means.shape[1] > 2 else means
    )
    fig, ax = plt.subplots(figsize=(6, 5))
    points = ax.scatter(flat[:, 0], flat[:, 1], c=y[pick], cmap="tab10", s=4, alpha=0.7)
    ax.legend(*points.legend_elements(), title="class", fontsize=7, loc="best", markerscale=0.8)
    ax.set(xlabel="PC 1", ylabel="PC 2")
    ax.set_title(
        f"latent means of {len(pick)} training images (PCA), coloured by class", fontsize=8
    )
    fig.tight_layout()
    fig.savefig(folder / "latent_pca.png", dpi=90)
    plt.close(fig)
    made.append(folder / "latent_pca.png")
    return made


@dataclass(frozen=True)
class VAEData:
    """The training images a VAE was trained on, and what names them (for its run)."""

    dataset: str
    seed: int
    fingerprint: str
    x: np.ndarray
    y: np.ndarray  # labels: only for the latent picture's colours, never seen by a method
    shape: tuple[int, ...] = (28, 28)


def log_vae_run(
    tracker: Tracker, parent_id: str | None, key: str, trained: TrainedVAE, data: VAEData
) -> str:
    """One run for one trained VAE, with its pictures and model; returns its id. The run the
    grid published the VAE's cache file in (`benchmark.vaes.share`) is completed, not repeated."""
    dataset, seed, x, y = data.dataset, data.seed, data.x, data.y
    config = trained.model.config
    name = f"VAE {dataset} seed={seed} z={config.latent_dim}"
    tags = {"dataset": dataset, "seed": str(seed), "data_fingerprint": data.fingerprint}
    run_id = published_run(tracker, key)
    published = run_id is not None
    if run_id is None:
        tags = {"kind": "vae", "vae_cache_key": key, **tags}
        run_id = tracker.start_run(name, tags, parent_id, started_s_ago=trained.train_seconds)
    else:
        tracker.set_tags(run_id, {"mlflow.runName": name, **tags})
    status = "FAILED"
    try:
        tracker.log_params(run_id, {**config.as_params(), "dataset": dataset, "seed": seed})
        if not published:
            for epoch, loss in enumerate(trained.history):
                tracker.log_metrics(run_id, {"neg_elbo": loss}, step=epoch)
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            for path in pictures(trained.model, x, y, folder, seed, data.shape):
                tracker.log_artifact(run_id, path)
            model_name = f"vae-{dataset}-seed{seed}-z{config.latent_dim}"
            model_id = _log_model(tracker, run_id, trained.model, x[:5], model_name)
        final = {"final_neg_elbo": trained.history[-1]} if trained.history else {}
        seconds = {"train_seconds": trained.train_seconds}
        tracker.log_metrics(run_id, {**final, **seconds}, model_id=model_id)
        note = (
            f"The shared {config.arch} VAE of {dataset}, seed {seed}, latent {config.latent_dim}:"
            f" trained {trained.train_seconds:.0f} s on every training image, no label read."
            f" Its encoder is the logged model `{model_name}` ({model_id}):"
            f' `mlflow.pytorch.load_model("models:/{model_id}")` gives the latent means.'
        )
        tracker.set_tags(run_id, {"model_id": model_id, "mlflow.note.content": note})
        status = "FINISHED"
    finally:
        if not published:  # a published run is FINISHED already: its cache file is what counts
            tracker.finish(run_id, status)
    return run_id


def _log_model(tracker: Tracker, run_id: str, vae: VAE, example: np.ndarray, name: str) -> str:
    """The encoder as an MLflow 3 logged model of the run; its model id."""
    import mlflow
    import mlflow.pytorch
    from mlflow.models import infer_signature

    model = LatentMeans(copy.deepcopy(vae).cpu().eval())
    with torch.no_grad():
        output = model(torch.from_numpy(example)).numpy()
    # log_model reads MLflow's process-wide store and experiment: point them at the tracker's
    mlflow.set_tracking_uri(tracker.uri)
    mlflow.set_experiment(experiment_id=tracker.experiment_id)
    info = mlflow.pytorch.log_model(
        model,
        name=name,
        run_id=run_id,
        signature=infer_signature(example, output),
        input_example=example,
        serialization_format="pt2",  # a graph, not a pickle: loading runs no stored code
        params={k: str(v) for k, v in vae.config.as_params().items()},
        pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"],
    )
    return info.model_id
