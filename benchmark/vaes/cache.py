"""On-disk cache of trained VAEs, so every method and label budget reuses one model.

The key hashes the data fingerprint, the full config, the seed, the device type, and the
declared versions of the VAE core and of the protocol that reads and scales the pixels, so a
change in what they compute invalidates old entries while moving or re-wording code does not. Entries are written atomically
(temp file + rename) with a SHA-256 of their payload and their own key inside it: an
unreadable, mismatching or misplaced entry (a valid file under another key) is reported,
deleted and retrained. A lock file stops two workers from training the same VAE at once.

Across machines each has its own cache directory; a `SharedStore` (the harness gives one that
uses the tracking server's artifact store) makes them agree: under its lock for the key, a
missing entry is fetched from it if another machine published it, else trained here and
published before the lock is released, so a (dataset, seed) is scored on one VAE everywhere.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import logging
import os
import tempfile
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict
from pathlib import Path
from typing import Protocol

import torch

from benchmark import options
from benchmark.provenance import vae_version
from methods.training import Checkpoint
from methods.vae import VAE, EpochCallback, TrainedVAE, VAEConfig, train_vae

log = logging.getLogger(__name__)
DEFAULT_CACHE_DIR = Path(options.DEFAULT_CACHE_DIR)


def cache_key(fingerprint: str, config: VAEConfig, seed: int, device: torch.device) -> str:
    blob = json.dumps(
        {
            "data": fingerprint,
            "config": config.identity(),
            "seed": seed,
            "device": device.type,
            "code": vae_version(),
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


class SharedStore(Protocol):
    """Where machines that share a grid exchange trained VAEs (see the module docstring)."""

    def lock(self, key: str) -> AbstractContextManager[object]: ...

    def fetch(self, key: str, destination: Path) -> bool: ...

    def publish(self, key: str, path: Path, trained: TrainedVAE) -> None: ...


class VAECache:
    def __init__(
        self, directory: str | Path = DEFAULT_CACHE_DIR, shared: SharedStore | None = None
    ) -> None:
        self.directory = Path(directory)
        self.shared = shared

    def path(self, key: str) -> Path:
        return self.directory / f"vae-{key}.pt"

    def load(self, key: str, device: torch.device) -> TrainedVAE | None:
        path = self.path(key)
        if not path.exists():
            return None
        try:
            blob = path.read_bytes()
            digest, payload = blob[:64].decode(), blob[65:]
            if hashlib.sha256(payload).hexdigest() != digest:
                raise ValueError("checksum mismatch")
            entry = torch.load(io.BytesIO(payload), map_location=device, weights_only=True)
            if entry.get("key") != key:
                raise ValueError(f"it holds the VAE of key {entry.get('key')}, not {key}")
            model = VAE(entry["n_inputs"], VAEConfig(**entry["config"]))
            model.load_state_dict(entry["state_dict"])
        except Exception as error:  # any damage means: retrain
            log.warning("VAE cache entry %s is unreadable (%s); retraining it.", path, error)
            path.unlink(missing_ok=True)
            return None
        model.to(device).eval()
        return TrainedVAE(model, list(entry["history"]), 0.0)

    def save(self, key: str, trained: TrainedVAE) -> Path:
        model = trained.model
        entry = {
            "key": key,
            "n_inputs": model.n_inputs,
            "config": asdict(model.config),
            "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "history": trained.history,
            "train_seconds": trained.train_seconds,
        }
        buffer = io.BytesIO()
        torch.save(entry, buffer)
        payload = buffer.getvalue()
        self.directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".tmp-vae-")
        with os.fdopen(fd, "wb") as handle:
            handle.write(hashlib.sha256(payload).hexdigest().encode() + b"\n" + payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.path(key))
        return self.path(key)

    def get_or_train(
        self,
        x: torch.Tensor,
        fingerprint: str,
        config: VAEConfig,
        seed: int,
        progress: bool = True,
        on_epoch: EpochCallback | None = None,
    ) -> tuple[TrainedVAE, bool, Path]:
        """(model, was_cached, cache file). Training failures propagate and cache nothing.

        on_epoch is called only when the VAE is trained here; if it raises (a pruner stopping
        the trial), the half-trained model is not cached.
        """
        key = cache_key(fingerprint, config, seed, x.device)
        self.directory.mkdir(parents=True, exist_ok=True)
        shared = self.shared
        with open(self.directory / f"vae-{key}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # a second worker waits here, then hits the cache
            with shared.lock(key) if shared is not None else nullcontext():
                cached = self.load(key, x.device)
                if cached is None and shared is not None and shared.fetch(key, self.path(key)):
                    cached = self.load(key, x.device)  # another machine trained it
                    self._checkpoint(key).clear()
                if cached is not None:
                    return cached, True, self.path(key)
                trained = self._train(key, x, config, seed, progress, on_epoch)
                path = self.save(key, trained)
                if shared is not None:  # before the lock goes: others fetch, never retrain
                    shared.publish(key, path, trained)
                self._checkpoint(key).clear()
                return trained, False, path

    def _checkpoint(self, key: str) -> Checkpoint:
        return Checkpoint(self.directory / f"vae-{key}.ckpt")

    def _train(
        self,
        key: str,
        x: torch.Tensor,
        config: VAEConfig,
        seed: int,
        progress: bool,
        on_epoch: EpochCallback | None,
    ) -> TrainedVAE:
        checkpoint = self._checkpoint(key)
        try:
            return train_vae(
                x,
                config,
                seed,
                on_epoch=on_epoch,
                progress=progress,
                desc=f"VAE z={config.latent_dim}",
                checkpoint=checkpoint,
            )
        except Exception:  # diverged or pruned: nothing to resume; an interrupt keeps it
            checkpoint.clear()
            raise
