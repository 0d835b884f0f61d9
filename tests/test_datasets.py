from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
from conftest import make_fake_dataset, write_idx

from benchmark import options
from benchmark.cli import main
from benchmark.data import datasets
from benchmark.errors import DataError


def test_real_mnist_and_fashion_load_with_expected_counts(real_data: Path) -> None:
    mnist = datasets.load("mnist", real_data)
    images, labels = mnist.split("train")
    assert images.shape == (60000, 28, 28) and images.dtype == np.uint8
    assert labels[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert mnist.split("test")[1][:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    fashion = datasets.load("fashion-mnist", real_data)
    assert np.bincount(fashion.labels("train")).tolist() == [6000] * 10
    x = fashion.features("train")
    assert x.dtype == np.float32 and x.shape == (60000, 784) and 0.0 <= x.min() and x.max() <= 1.0


def test_training_data_loads_without_test_files(tiny_data: Path) -> None:
    for path in (tiny_data / "MNIST" / "raw").glob("t10k-*"):
        path.unlink()
    ds = datasets.load("mnist", tiny_data)
    assert ds.features("train").shape == (400, 784)
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte"):
        ds.split("test")


def test_uncompressed_idx_files_are_read(tmp_path: Path) -> None:
    raw = make_fake_dataset(tmp_path, "MNIST")
    for path in raw.glob("*.gz"):
        path.with_suffix("").write_bytes(gzip.decompress(path.read_bytes()))
        path.unlink()
    assert datasets.load("mnist", tmp_path).split("test")[0].shape == (200, 28, 28)


def test_truncated_file_names_the_file(tiny_data: Path) -> None:
    path = tiny_data / "MNIST" / "raw" / "train-images-idx3-ubyte.gz"
    raw = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(raw[:-100]))
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte\.gz: size .* truncated"):
        datasets.load("mnist", tiny_data).split("train")


def test_truncated_gzip_stream_is_reported(tiny_data: Path) -> None:
    path = tiny_data / "MNIST" / "raw" / "train-labels-idx1-ubyte.gz"
    path.write_bytes(path.read_bytes()[:20])
    with pytest.raises(DataError, match="corrupt or truncated"):
        datasets.load("mnist", tiny_data).split("train")


def test_wrong_magic_number_is_reported(tiny_data: Path) -> None:
    raw = tiny_data / "MNIST" / "raw"
    # a label file where an image file should be
    (raw / "train-images-idx3-ubyte.gz").write_bytes(
        (raw / "train-labels-idx1-ubyte.gz").read_bytes()
    )
    with pytest.raises(DataError, match="wrong magic number"):
        datasets.load("mnist", tiny_data).split("train")


def test_count_mismatch_and_label_range(tmp_path: Path) -> None:
    raw = make_fake_dataset(tmp_path, "MNIST")
    write_idx(raw / "train-labels-idx1-ubyte.gz", np.zeros(399, dtype=np.uint8))
    with pytest.raises(DataError, match="400 images but .* 399 labels"):
        datasets.load("mnist", tmp_path).split("train")
    write_idx(raw / "train-labels-idx1-ubyte.gz", np.full(400, 12, dtype=np.uint8))
    with pytest.raises(DataError, match="label 12 out of range"):
        datasets.load("mnist", tmp_path).split("train")


def test_missing_data_says_where_to_put_it(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"--data-dir.*apt-get install dataset-fashion-mnist"):
        datasets.load("fashion-mnist", tmp_path / "empty")


def test_datasets_command_exit_codes(tiny_data: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["datasets", "--data-dir", str(tiny_data)]) == 0
    out = capsys.readouterr().out
    assert "train 400, test 200" in out and "0:40 1:40" in out
    (tiny_data / "FashionMNIST" / "raw" / "t10k-labels-idx1-ubyte.gz").write_bytes(b"garbage")
    assert main(["datasets", "--data-dir", str(tiny_data)]) == 2
    assert "fashion-mnist: not usable" in capsys.readouterr().out


def test_corrupt_data_gives_exit_2_without_traceback(tiny_data: Path) -> None:
    import subprocess
    import sys

    (tiny_data / "MNIST" / "raw" / "train-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8b broken")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmark",
            "run",
            "--datasets",
            "mnist",
            "--data-dir",
            str(tiny_data),
            "--tracking-uri",
            f"sqlite:///{tiny_data}/m.db",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "train-images-idx3-ubyte.gz" in proc.stderr


def test_kmnist_is_opt_in_and_runs_offline_from_idx_files(
    tmp_path: Path, stores: dict, capsys: pytest.CaptureFixture
) -> None:
    """KMNIST proves the registry: one spec, the same IDX layout, read offline; `all` keeps
    meaning the study's MNIST + Fashion-MNIST."""
    from conftest import flatten, make_fake_dataset

    from benchmark.cli import main
    from benchmark.data import datasets

    make_fake_dataset(tmp_path / "data", "KMNIST")
    assert "kmnist" not in options.parse_list(
        "all", datasets.DATASETS, "dataset", datasets.DEFAULT_DATASETS
    )
    assert datasets.load("kmnist", tmp_path / "data", download=False).spec.class_name(1) == "ki"
    run_options = {
        "--methods": "pixel-svm",
        "--datasets": "kmnist",
        "--labels": "20",
        "--seeds": "0",
        "--data-dir": str(tmp_path / "data"),
        **stores,
    }
    assert main(["run", *flatten(run_options)]) == 0
    assert "## kmnist" in (Path(stores["--results-dir"]) / "summary.md").read_text()


def test_class_count_and_image_shape_flow_from_the_spec(tmp_path: Path, monkeypatch) -> None:
    """A 4-class dataset of 6x6 images: its splits label all 4 classes, its budgets are checked
    against 4, and a method's TrainData says 4 classes of 6x6 (the split used to assume 10)."""
    import numpy as np
    import torch
    from conftest import write_idx

    from benchmark.data import datasets
    from benchmark.errors import UsageError
    from benchmark.study import execute, grid
    from benchmark.vaes.cache import VAECache

    spec = datasets.DatasetSpec("tiny4", "Tiny4", "Tiny4", "4 classes", 4, (6, 6), opt_in=True)
    monkeypatch.setitem(datasets.DATASETS, "tiny4", spec)
    rng = np.random.default_rng(0)
    raw = tmp_path / "data" / "Tiny4" / "raw"
    for split, n in (("train", 80), ("t10k", 40)):
        labels = (np.arange(n) % 4).astype(np.uint8)
        write_idx(raw / f"{split}-images-idx3-ubyte.gz", rng.integers(0, 255, (n, 6, 6)))
        write_idx(raw / f"{split}-labels-idx1-ubyte.gz", labels)
    with pytest.raises(UsageError, match="multiple of the 4 classes"):
        grid.build_grid(["pixel-svm"], ["tiny4"], [10], [0])
    (cell,) = grid.build_grid(["pixel-svm"], ["tiny4"], [8], [0])
    ws = execute.Workspace(tmp_path / "data", torch.device("cpu"), VAECache(tmp_path / "c"), False)
    data = execute.train_data(cell, ws, uses_vae=False)
    assert (data.n_classes, data.image_shape) == (4, (6, 6))
    assert sorted(np.bincount(data.y_labeled)) == [2, 2, 2, 2]
