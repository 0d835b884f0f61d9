from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmark.data import datasets
from benchmark.vaes import cache as vae_cache
from benchmark.vaes.cache import VAECache, cache_key
from methods.training import TrainingDiverged
from methods.vae import VAE, VAEConfig, train_vae

SMALL = VAEConfig(latent_dim=4, hidden=(64, 32), epochs=3, batch_size=64)


@pytest.fixture(scope="module")
def x_small(real_data: Path) -> torch.Tensor:
    return torch.from_numpy(datasets.load("mnist", real_data).features("train")[:1000])


def test_loss_decreases_on_a_small_subset(x_small: torch.Tensor) -> None:
    trained = train_vae(
        x_small, VAEConfig(latent_dim=4, hidden=(64, 32), epochs=5), 0, progress=False
    )
    assert trained.history[-1] < 0.9 * trained.history[0]
    z = trained.model.latent_means(x_small[:10].numpy())
    assert z.shape == (10, 4) and z.dtype == np.float32


@pytest.mark.slow
def test_same_seed_gives_bit_identical_weights(x_small: torch.Tensor) -> None:
    a = train_vae(x_small, SMALL, 7, progress=False).model.state_dict()
    b = train_vae(x_small, SMALL, 7, progress=False).model.state_dict()
    c = train_vae(x_small, SMALL, 8, progress=False).model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_sizes_come_from_data_and_config() -> None:
    model = VAE(50, VAEConfig(latent_dim=3, hidden=(20, 10, 5)))
    mu, logvar = model.encode(torch.zeros(2, 50))
    assert mu.shape == logvar.shape == (2, 3)
    assert model.decode_logits(mu).shape == (2, 50)


def test_nan_loss_raises_and_caches_nothing(tmp_path: Path, x_small: torch.Tensor) -> None:
    cache = VAECache(tmp_path)
    bad = x_small.clone()
    bad[3, 5] = float("nan")
    with pytest.raises(TrainingDiverged, match="lower the learning rate"):
        cache.get_or_train(bad, "nan-data", SMALL, 0, progress=False)
    assert not list(tmp_path.glob("*.pt"))


def test_cache_hit_skips_training(tmp_path: Path, x_small: torch.Tensor, monkeypatch) -> None:
    cache = VAECache(tmp_path)
    first, hit, path = cache.get_or_train(x_small, "fp", SMALL, 0, progress=False)
    assert not hit and path.exists()

    def fail(*args, **kwargs):
        raise AssertionError("trained although the cache had the model")

    monkeypatch.setattr(vae_cache, "train_vae", fail)
    second, hit, _ = cache.get_or_train(x_small, "fp", SMALL, 0, progress=False)
    assert hit
    assert all(
        torch.equal(v, second.model.state_dict()[k]) for k, v in first.model.state_dict().items()
    )


def test_key_changes_with_config_seed_and_data() -> None:
    cpu = torch.device("cpu")
    base = cache_key("fp", SMALL, 0, cpu)
    assert base == cache_key(
        "fp", VAEConfig(latent_dim=4, hidden=(64, 32), epochs=3, batch_size=64), 0, cpu
    )
    assert base != cache_key(
        "fp", VAEConfig(latent_dim=5, hidden=(64, 32), epochs=3, batch_size=64), 0, cpu
    )
    assert base != cache_key("fp", SMALL, 1, cpu)
    assert base != cache_key("other", SMALL, 0, cpu)


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_corrupt_cache_entry_is_retrained(
    tmp_path: Path, x_small: torch.Tensor, damage: str
) -> None:
    cache = VAECache(tmp_path)
    _, _, path = cache.get_or_train(x_small, "fp", SMALL, 0, progress=False)
    blob = bytearray(path.read_bytes())
    if damage == "truncate":
        blob = blob[: len(blob) // 2]
    else:
        blob[len(blob) // 2] ^= 0xFF
    path.write_bytes(bytes(blob))
    retrained, hit, _ = cache.get_or_train(x_small, "fp", SMALL, 0, progress=False)
    assert not hit and retrained.history
    assert cache.get_or_train(x_small, "fp", SMALL, 0, progress=False)[1]  # healthy again


def test_features_of_shared_arrays_are_encoded_once(x_small: torch.Tensor) -> None:
    trained = train_vae(x_small, SMALL, 0, progress=False)
    shared = x_small.numpy().copy()
    shared.setflags(write=False)
    first = trained.model.latent_means(shared)
    assert trained.model.latent_means(shared) is first  # remembered
    assert trained.model.latent_means(shared.copy()) is not first  # writable: recomputed
    train_vae(x_small, SMALL, 0, model=trained.model, progress=False)  # weights change
    again = trained.model.latent_means(shared)
    assert again is not first and not np.array_equal(again, first)


class DictStore:
    """A `SharedStore` in memory: what the tracking server's artifact store is across machines."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}

    def lock(self, key: str):
        return contextlib.nullcontext()

    def fetch(self, key: str, destination: Path) -> bool:
        if key not in self.files:
            return False
        destination.write_bytes(self.files[key])
        return True

    def publish(self, key: str, path: Path, trained) -> None:
        self.files[key] = path.read_bytes()


def test_a_second_machine_fetches_the_published_vae(
    tmp_path: Path, x_small: torch.Tensor, monkeypatch
) -> None:
    """Each machine has its own cache; before the shared store each trained its own VAE."""
    shared = DictStore()
    first, hit, path = VAECache(tmp_path / "a", shared).get_or_train(
        x_small, "fp", SMALL, 0, progress=False
    )
    assert not hit and list(shared.files) == [path.stem.removeprefix("vae-")]

    def fail(*args, **kwargs):
        raise AssertionError("trained although another machine had published the model")

    monkeypatch.setattr(vae_cache, "train_vae", fail)
    second, hit, other = VAECache(tmp_path / "b", shared).get_or_train(
        x_small, "fp", SMALL, 0, progress=False
    )
    assert hit and other.read_bytes() == path.read_bytes()
    assert all(
        torch.equal(v, second.model.state_dict()[k]) for k, v in first.model.state_dict().items()
    )


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_vae_trains_on_cuda_and_its_cpu_copy_gives_the_same_features(x_small) -> None:
    trained = train_vae(x_small.cuda(), SMALL, 0, progress=False)
    assert next(trained.model.parameters()).is_cuda and trained.history[-1] < trained.history[0]
    on_gpu = trained.model.latent_means(x_small[:200].numpy())
    on_cpu = trained.model.cpu().latent_means(x_small[:200].numpy())
    assert np.allclose(on_gpu, on_cpu, atol=1e-4)


def test_the_plan_counts_a_convolutional_vae_by_its_convolutions() -> None:
    """The plan once priced a conv VAE by the MLP's layer sizes: 170 s against ~900 s measured."""
    from methods.base import CONV_MAC_COST, vae_seconds
    from methods.vae import conv_encoder_macs

    # 28x28: 14x14x32 outputs of 16 taps, 7x7x64 of 16x32 taps, then 64x7x7 -> 256
    assert conv_encoder_macs((28, 28), 256) == 14 * 14 * 32 * 16 + 7 * 7 * 64 * 512 + 3136 * 256
    mlp, conv = VAEConfig(), VAEConfig(arch="conv", image_shape=(28, 28))
    ratio = (vae_seconds(conv, 60_000) - 1) / (vae_seconds(mlp, 60_000) - 1)
    expected = (CONV_MAC_COST * conv_encoder_macs((28, 28), 256) + 2560) / (
        784 * 512 + 512 * 256 + 2560
    )
    assert abs(ratio - expected) < 1e-9 and ratio > 5
