"""Trained VAEs shared between machines through the tracking store's artifacts.

Each machine of a grid has its own VAE cache directory, so before this two machines trained
their own VAE for one (dataset, seed) and paired methods could be scored on different models.
Now the first machine to need a VAE trains it while holding a lock named for its cache key in
the queue's storage (an advisory lock on PostgreSQL, a file lock on SQLite), and publishes the
cache file as an artifact of the VAE's MLflow run before letting go; every other machine waits
on that lock, then downloads the file (checked against its key and checksum by the cache) instead
of training. A machine that dies while training drops its lock with its connection, and the next
one trains the VAE itself.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from benchmark.tracking.client import Tracker
from benchmark.workqueue.locks import store_lock
from methods.vae import TrainedVAE

ARTIFACT_FOLDER = "cache"


def published_run(tracker: Tracker, key: str) -> str | None:
    """The FINISHED VAE run that published KEY's cache file, if any."""
    return tracker.find_run(
        {"kind": "vae", "vae_cache_key": key, "vae_published": "true"}, status="FINISHED"
    )


class SharedVAEs:
    """The `benchmark.vae_cache.SharedStore` of a grid: its tracking store, its queue's locks."""

    def __init__(self, tracker: Tracker, lock_url: str, parent_run_id: str | None) -> None:
        self.tracker, self.lock_url, self.parent_run_id = tracker, lock_url, parent_run_id

    @contextmanager
    def lock(self, key: str) -> Iterator[None]:
        with store_lock(self.lock_url, f"vae-{key}"):
            yield

    def fetch(self, key: str, destination: Path) -> bool:
        run_id = published_run(self.tracker, key)
        if run_id is None:
            return False
        with tempfile.TemporaryDirectory() as tmp:
            local = self.tracker.client.download_artifacts(
                run_id, f"{ARTIFACT_FOLDER}/{destination.name}", tmp
            )
            partial = destination.with_name(f".fetch-{destination.name}")
            shutil.copyfile(local, partial)
            partial.replace(destination)  # atomic, like the cache's own writes
        return True

    def publish(self, key: str, path: Path, trained: TrainedVAE) -> None:
        """The VAE's run: its cache file, config and loss curve. The cell that trained it adds
        the pictures and the MLflow model later (`benchmark.vaes.runs`), with the data it has."""
        config = trained.model.config
        run_id = self.tracker.start_run(
            f"VAE z={config.latent_dim} ({key})",
            {"kind": "vae", "vae_cache_key": key},
            self.parent_run_id,
            started_s_ago=trained.train_seconds,
        )
        status = "FAILED"
        try:
            self.tracker.log_params(run_id, config.as_params())
            for epoch, loss in enumerate(trained.history):
                self.tracker.log_metrics(run_id, {"neg_elbo": loss}, step=epoch)
            self.tracker.log_metrics(run_id, {"train_seconds": trained.train_seconds})
            self.tracker.log_artifact(run_id, path, ARTIFACT_FOLDER)
            self.tracker.set_tags(run_id, {"vae_published": "true"})
            status = "FINISHED"
        finally:
            self.tracker.finish(run_id, status)
