"""The methods that use unlabeled images: they learn from few labels, and never see the others.

Learning is checked on an easy two-class task (MNIST 0 vs 1, a few hundred images, 10 labels
per class); isolation by running the real cell path on a dataset whose unlabeled images'
labels were shuffled on disk: nothing a method does may change.
"""

from __future__ import annotations

import collections
import traceback
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch
from conftest import make_fake_dataset, write_idx
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

import methods
from benchmark.data import datasets
from benchmark.data.splits import balanced_split
from benchmark.study import grid
from benchmark.study.execute import Workspace, run_cell
from benchmark.vaes.cache import VAECache
from methods._classifier import shifted
from methods._holdout import ClassifierCurves
from methods.base import TrainData, vae_config_from
from methods.training import term_gradient_norms
from methods.vae import VAEConfig, train_vae

ROOT = Path(methods.__file__).resolve().parents[1]
SSL_METHODS = (
    "m2",
    "m1-m2",
    "vae-finetune",
    "vae-finetune-frozen",
    "vae-gmm-mutual",
    "vae-label-spreading",
    "vae-poisson",
    "vae-self-training",
    "ladder",
    "ladder-conv",
    "aae",
    "adgm",
    "sdgm",
)
HEAVY = {"vae-gmm-mutual", "m2"}  # over ~5 s: in the full suite, not in `-m "not slow"`
SMALL_VAE = {"latent_dim": 4, "vae_hidden": "64,32", "vae_epochs": 10, "vae_batch_size": 64}
SMALL = {
    # 200 images make ~4 steps per epoch: a larger step than the 60,000-image default.
    "m2": {"hidden": 64, "z_dim": 4, "epochs": 15, "batch_size": 64, "lr": 3e-3},
    "m1-m2": {**SMALL_VAE, "hidden": 32, "z_dim": 4, "epochs": 15, "batch_size": 64, "lr": 3e-3},
    "vae-finetune": {**SMALL_VAE, "epochs": 30},
    "vae-finetune-frozen": {**SMALL_VAE, "epochs": 30},
    "vae-gmm-mutual": {**SMALL_VAE, "rounds": 2, "epochs": 2},
    "vae-label-spreading": SMALL_VAE,
    "vae-poisson": SMALL_VAE,
    "vae-self-training": SMALL_VAE,
    "ladder": {
        "hidden": "64,32",
        "denoising_weights": "1000,10,0.1,0.1",
        "epochs": 20,
        "decay_epochs": 5,
        "batch_size": 20,
    },
    "ladder-conv": {
        "layers": "convv:8:5-maxpool:2-convf:16:3-maxpool:2-meanpool-fc",
        "epochs": 20,
        "decay_epochs": 5,
        "batch_size": 20,
    },
    "aae": {"hidden": 64, "z_dim": 4, "epochs": 20, "batch_size": 20, "lr": 1e-3},
    **{
        name: {
            "hidden": "64,64",
            "a_dim": 4,
            "z_dim": 4,
            "epochs": 15,
            "batch_size": 20,
            "labeled_batch_size": 20,
            "lr": 1e-3,
            "lr_decay_every": 10,
        }
        for name in ("adgm", "sdgm")
    },  # fmt: skip
}


@pytest.fixture(scope="module")
def zeros_and_ones(real_data: Path) -> tuple[np.ndarray, np.ndarray]:
    ds = datasets.load("mnist", real_data)
    x, y = ds.features("train")[:1400], ds.labels("train")[:1400]
    keep = y <= 1
    return x[keep], y[keep].astype(np.int64)


@pytest.fixture(scope="module")
def vae_provider():
    """Trains each requested VAE once for the module (the runner's cache, in memory)."""
    trained: dict[tuple[VAEConfig, int], torch.nn.Module] = {}

    def provider(x: np.ndarray):
        def provide(config: VAEConfig):
            key = (config, len(x))
            if key not in trained:
                trained[key] = train_vae(torch.from_numpy(x), config, 0, progress=False).model
            return trained[key]

        return provide

    return provider


@pytest.mark.slow
@pytest.mark.parametrize("name", SSL_METHODS)
def test_learns_zeros_versus_ones_from_ten_labels_each(
    name: str, zeros_and_ones: tuple[np.ndarray, np.ndarray], vae_provider
) -> None:
    x, y = zeros_and_ones
    x_train, y_train, x_eval, y_eval = x[:200], y[:200], x[200:], y[200:]
    split = balanced_split(y_train, 20, 0, "mnist", n_classes=2)
    curves: dict[str, list[float]] = {}
    data = TrainData(
        x=x_train,
        labeled=split.labeled,
        y_labeled=split.labels,
        n_classes=2,
        seed=0,
        vae=vae_provider(x_train),
        log_metric=lambda k, v, s: curves.setdefault(k, []).append(v),
    )
    method = methods.get(name)(**SMALL[name])
    method.fit(data)
    accuracy = np.mean(method.predict(x_eval) == y_eval)
    assert accuracy > 0.9, f"{name}: {accuracy:.3f} on 0 vs 1 (chance 0.5)"
    # A validation curve where the method holds out a slice (M2's family trains on every label),
    # for the methods that train for epochs.
    if "epochs" in method.params:
        curve = "val_accuracy" if method.params.get("val_fraction") else "labeled_accuracy"
        assert curve in curves and len(curves[curve]) >= 2, sorted(curves)
    if name in ("adgm", "sdgm"):  # the per-term diagnostic: both label and image terms act
        for term in ("weighted_cross_entropy", "unlabeled"):
            assert curves[f"classifier_grad_{term}"][-1] > 0, term


def test_shift_moves_each_image_by_its_own_draw_within_the_bound() -> None:
    """One lit pixel per image, away from the border: it stays lit once, at most 2 rows and
    columns away, and the images do not all move alike; the same seed moves them the same."""
    x = torch.zeros(60, 2, 28, 28)  # two channels: an image's channels move together
    x[:, :, 14, 14] = 1.0
    moved = [
        shifted(x.reshape(60, -1), (2, 28, 28), 2, torch.Generator().manual_seed(3)) for _ in "ab"
    ]
    assert torch.equal(moved[0], moved[1])
    out = moved[0].reshape(60, 2, 28, 28)
    assert torch.equal(out[:, 0], out[:, 1]) and (out.sum(dim=(1, 2, 3)) == 2).all()
    lit = out[:, 0].reshape(60, -1).argmax(dim=1)
    rows, cols = lit // 28, lit % 28
    assert (rows - 14).abs().max() <= 2 and (cols - 14).abs().max() <= 2
    assert len(set(zip(rows.tolist(), cols.tolist()))) > 10  # of 25 possible moves


def test_term_gradient_norms_are_each_terms_own_and_leave_grad_alone() -> None:
    w = torch.tensor([3.0, 4.0], requires_grad=True)
    terms = {"linear": (w * torch.tensor([1.0, 2.0])).sum(), "square": (w**2).sum() / 2}
    norms = term_gradient_norms(terms, [w])
    assert float(norms["linear"]) == pytest.approx(5**0.5)  # d/dw = (1, 2)
    assert float(norms["square"]) == pytest.approx(5.0)  # d/dw = w = (3, 4)
    assert w.grad is None
    sum(terms.values()).backward()  # the step's own backward still has its graph
    assert w.grad.tolist() == [4.0, 6.0]


def test_classifier_curves_log_label_fit_and_label_free_settling() -> None:
    logged: list[tuple[str, float, int]] = []
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 0.0], [0.0, 2.0]])
    labeled, y = torch.tensor([0, 1]), torch.tensor([0, 0])  # the second label is wrong
    curves = ClassifierCurves(lambda *a: logged.append(a), x, labeled, y, torch.tensor([2, 3]))
    identity, swap = nn.Linear(2, 2, bias=False), nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        identity.weight.copy_(torch.eye(2))
        swap.weight.copy_(torch.tensor([[0.0, 1.0], [1.0, 0.0]]))
    curves.log(identity, 0)  # the first epoch has nothing to compare with
    curves.log(identity, 1)
    curves.log(swap, 2)  # both probe images change class
    assert logged == [
        ("labeled_accuracy", 0.5, 0),
        ("labeled_accuracy", 0.5, 1),
        ("probe_changed_class", 0.0, 1),
        ("labeled_accuracy", 0.5, 2),
        ("probe_changed_class", 1.0, 2),
    ]
    assert not swap.training


def test_aae_critics_read_through_noise_only_when_asked() -> None:
    """critic_noise=0 (the archived cells' value) hands back the critic itself and draws
    nothing, so those cells compute what they computed; above 0 the critic sees x + std·ε."""
    critic, x = nn.Identity(), torch.ones(4, 3)
    quiet = methods.get("aae")(critic_noise=0.0)
    generator = torch.Generator().manual_seed(0)
    assert quiet._critic(critic, generator) is critic
    assert torch.equal(generator.get_state(), torch.Generator().manual_seed(0).get_state())
    noisy = methods.get("aae")(critic_noise=0.3)._critic(critic, generator)
    seen = noisy(x) - x
    expected = 0.3 * torch.randn(4, 3, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(seen, expected)


def test_only_the_semi_supervised_aae_searches_critic_noise() -> None:
    """aae-supervised trains no critic, so `tune` spends no trials on its noise."""
    space = {
        name: set(methods.get(name).search_space(optuna.trial.FixedTrial(fixed)))
        for name, fixed in [
            ("aae", {"lr": 1e-4, "z_dim": 10, "epochs": 20, "critic_noise": 0.3}),
            ("aae-supervised", {"lr": 1e-4, "z_dim": 10, "epochs": 20}),
        ]
    }
    assert space["aae"] - space["aae-supervised"] == {"critic_noise"}


@pytest.mark.slow
def test_fitting_leaves_the_shared_vae_untouched(
    zeros_and_ones: tuple[np.ndarray, np.ndarray], vae_provider
) -> None:
    x, y = zeros_and_ones
    split = balanced_split(y[:200], 20, 0, "mnist", n_classes=2)
    provide = vae_provider(x[:200])
    data = TrainData(x[:200], split.labeled, split.labels, n_classes=2, seed=0, vae=provide)
    for name in ("vae-finetune", "vae-gmm-mutual"):
        params = {**SMALL[name], "epochs": 1, "rounds": 1} if "mutual" in name else SMALL[name]
        config = vae_config_from({**methods.get(name).defaults, **params})
        before = {k: v.clone() for k, v in data.get_vae(config).state_dict().items()}
        methods.get(name)(**params).fit(data)
        after = data.get_vae(config).state_dict()
        assert all(torch.equal(before[k], after[k]) for k in before), name


class _HostReads(TorchDispatchMode):
    """Counts, per line of this project, the ops that make the host wait for a device value
    (`.item()`, `float(t)`, data-dependent shapes) or copy host data onto the device."""

    WAITS = ("_local_scalar_dense", "nonzero", "masked_select", "unique", "lift_fresh")

    def __init__(self) -> None:
        super().__init__()
        self.lines: collections.Counter[str] = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.__name__.split(".")[0] in self.WAITS:
            stack = traceback.extract_stack()
            # CPU Adam reads its step counters on the host; on a GPU `adam()` is fused instead
            if not any("torch/optim" in f.filename for f in stack):
                ours = [f for f in stack if f"{ROOT}/methods/" in f.filename]
                if ours:
                    where = f"{Path(ours[-1].filename).relative_to(ROOT)}:{ours[-1].lineno}"
                    self.lines[f"{func.__name__} at {where}"] += 1
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize(
    "name", [n for n in methods.available() if "epochs" in methods.get(n).defaults]
)
def test_no_host_wait_per_training_step(name: str, vae_provider) -> None:
    """On a GPU, a host read of a device value per step stalls every step. Twice the unlabeled
    images (twice the steps of an epoch) must leave every line's count unchanged."""
    counts = []
    for n_images in (420, 820):
        rng = np.random.default_rng(0)
        x = rng.random((n_images, 784), dtype=np.float32)
        labels = np.arange(20) % 10
        base = SMALL.get(name.removesuffix("-supervised"), SMALL_VAE)
        params = {**base, "epochs": 1}
        params = {k: v for k, v in params.items() if k in methods.get(name).defaults}
        if "decay_epochs" in params:
            params["decay_epochs"] = 1
        data = TrainData(x, np.arange(20), labels, n_classes=10, seed=0, vae=vae_provider(x))
        with _HostReads() as reads:
            methods.get(name)(**params).fit(data)
        counts.append(reads.lines)
    grows = {line: (counts[0][line], counts[1][line]) for line in counts[0] | counts[1]}
    grows = {line: pair for line, pair in grows.items() if pair[0] != pair[1]}
    assert not grows, f"{name} waits on the device every step: {grows}"


def _shuffle_unlabeled_labels(root: Path, labeled: np.ndarray) -> np.ndarray:
    """Rewrite the training labels on disk with every unlabeled image's label shuffled."""
    path = root / "MNIST" / "raw" / "train-labels-idx1-ubyte.gz"
    labels = datasets.read_idx(path, datasets.LABEL_MAGIC).copy()
    unlabeled = np.setdiff1d(np.arange(len(labels)), labeled)
    shuffled = labels.copy()
    shuffled[unlabeled] = np.random.default_rng(1).permutation(labels[unlabeled])
    assert (shuffled != labels).sum() > len(unlabeled) // 2
    write_idx(path, shuffled)
    return shuffled


@pytest.mark.parametrize(
    "name",
    [pytest.param(n, marks=pytest.mark.slow) if n in HEAVY else n for n in SSL_METHODS],
)
def test_labels_of_unlabeled_images_never_reach_the_method(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fast = {**SMALL[name], "epochs": 1, "vae_epochs": 1}
    cell = grid.Cell(
        name, "mnist", 20, 0, grid.canonical(grid.resolve_params(name, "mnist", 20, fast)[0])
    )
    predictions: list[np.ndarray] = []
    cls = methods.get(name)
    monkeypatch.setattr(
        cls,
        "predict",
        lambda self, x, _p=cls.predict: predictions.append(_p(self, x)) or predictions[-1],
    )
    for variant in ("original", "shuffled"):
        root = tmp_path / variant
        make_fake_dataset(root, "MNIST")
        train_labels = datasets.load("mnist", root).labels("train")
        split = balanced_split(train_labels, 20, 0, "mnist", 10)
        if variant == "shuffled":
            _shuffle_unlabeled_labels(root, split.labeled)
        # The split is the protocol's business (it reads every label); hold it fixed.
        monkeypatch.setattr(Workspace, "split", lambda self, cell, _s=split: _s)
        ws = Workspace(root, torch.device("cpu"), VAECache(tmp_path / variant / "cache"), False)
        run_cell(cell, ws)
    assert np.array_equal(predictions[0], predictions[1])


def test_poisson_learning_solves_each_component_of_a_disconnected_graph() -> None:
    """Two chains joined to nothing else, each with labels of two classes, and a third chain
    without labels: scores stay finite, each chain follows its own labels, and the unlabeled
    one scores zero. Solved as one system, a chain's sources do not sum to zero and its
    scores grow without bound (to ~1e14 here)."""
    from scipy import sparse

    from methods.vae_poisson import poisson_by_component

    def chain(n: int) -> sparse.csr_matrix:
        return sparse.diags([np.ones(n - 1), np.ones(n - 1)], [-1, 1], format="csr")

    weights = sparse.block_diag([chain(10), chain(10), chain(5)], format="csr")
    labeled = np.array([0, 9, 10, 19])
    labels = np.array([0, 1, 2, 3])
    scores = poisson_by_component(weights, labeled, labels, n_classes=4)
    assert np.isfinite(scores).all() and np.abs(scores).max() < 100
    predicted = scores.argmax(axis=1)
    assert list(predicted[:3]) == [0, 0, 0] and list(predicted[7:10]) == [1, 1, 1]
    assert list(predicted[10:13]) == [2, 2, 2] and list(predicted[17:20]) == [3, 3, 3]
    assert (scores[20:] == 0).all()


def test_poisson_on_raw_latent_means_is_not_drowned_by_collapsed_units() -> None:
    """Two informative latent units (two classes) beside 18 collapsed ones (noise around the
    prior's mean, std 1e-3), as a VAE leaves them. Standardising gives the collapsed units as
    much weight as the informative ones and the kNN graph partly follows noise; the
    reference's raw means keep the classes apart."""
    from methods.base import TrainData
    from methods.vae_poisson import VAEPoisson

    rng = np.random.default_rng(0)
    n = 400
    y = np.repeat([0, 1], n // 2)
    informative = rng.normal(0, 0.5, (n, 2)) + np.where(y[:, None] == 0, -1.0, 1.0)
    z = np.hstack([informative, rng.normal(0, 1e-3, (n, 18))]).astype(np.float32)
    labeled = np.array([0, 1, n - 2, n - 1])
    data = TrainData(np.zeros((n, 4), np.float32), labeled, y[labeled], n_classes=2, seed=0)
    accuracy = {}
    for scaling in ("none", "standardise"):
        method = VAEPoisson(scaling=scaling)
        method.fit_features(z, data)
        accuracy[scaling] = (method.predict_features(z) == y).mean()
    assert accuracy["none"] >= 0.99, accuracy
    assert accuracy["standardise"] <= accuracy["none"] - 0.04, accuracy
