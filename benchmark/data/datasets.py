"""Dataset registry and a validating reader for IDX files (MNIST, Fashion-MNIST, KMNIST).

A dataset is a `DatasetSpec`: its name, image shape, class count and names, torchvision's folder
and class (the offline layout and the online download), and whether `--datasets all` includes it.
The class count and image shape flow from here to the splits, the methods (`TrainData`) and the
pictures; adding a dataset in the same IDX layout is adding a spec.

Data is looked up, in order, in ``--data-dir`` / ``BENCHMARK_DATA_DIR``, Debian's package
directory (Fashion-MNIST only), the user cache, and finally torchvision's downloader (only
when no directory was given explicitly, so an offline run fails fast with a useful message).
The test files are read only when the caller asks for the test split.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from benchmark.errors import DataError, UsageError
from benchmark.options import DATA_DIR_ENV

IMAGE_MAGIC = 0x00000803  # unsigned byte, 3 dimensions
LABEL_MAGIC = 0x00000801  # unsigned byte, 1 dimension
SPLIT_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    folder: str  # torchvision's folder name: <root>/<folder>/raw/
    torchvision_class: str
    description: str
    n_classes: int = 10
    image_shape: tuple[int, ...] = (28, 28)
    system_dirs: tuple[str, ...] = ()
    class_names: tuple[str, ...] = ()  # for people (confusion matrices); index = label
    opt_in: bool = False  # left out of `--datasets all`: name it to run it

    def class_name(self, label: int) -> str:
        return self.class_names[label] if label < len(self.class_names) else str(label)


DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        DatasetSpec("mnist", "MNIST", "MNIST", "handwritten digits 0-9, 28x28 grey"),
        DatasetSpec(
            "fashion-mnist",
            "FashionMNIST",
            "FashionMNIST",
            "Zalando clothing images in 10 classes, 28x28 grey",
            system_dirs=("/usr/share/datasets/fashion-mnist",),
            class_names=(
                "T-shirt/top",
                "Trouser",
                "Pullover",
                "Dress",
                "Coat",
                "Sandal",
                "Shirt",
                "Sneaker",
                "Bag",
                "Ankle boot",
            ),
        ),
        DatasetSpec(
            "kmnist",
            "KMNIST",
            "KMNIST",
            "Kuzushiji-MNIST: cursive Japanese characters in 10 classes, 28x28 grey (opt-in)",
            class_names=("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"),
            opt_in=True,
        ),
    )
}
# What `--datasets all` means: the study's datasets, not every one the registry can read.
DEFAULT_DATASETS = [name for name, spec in DATASETS.items() if not spec.opt_in]


def get_spec(name: str) -> DatasetSpec:
    if name not in DATASETS:
        raise UsageError(f"Unknown dataset {name!r}. Available: {', '.join(sorted(DATASETS))}.")
    return DATASETS[name]


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "ssl-vae-benchmark" / "data"


def _file_in(directory: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        if (directory / name).is_file():
            return directory / name
    return None


def _candidate_dirs(spec: DatasetSpec, data_dir: Path | None) -> list[Path]:
    roots = [data_dir] if data_dir is not None else []
    roots.append(default_cache_dir())
    dirs = []
    for root in roots:
        dirs += [root / spec.folder / "raw", root / spec.folder, root]
    if data_dir is None:
        dirs += [Path(d) for d in spec.system_dirs]
    return dirs


def explicit_data_dir(data_dir: str | Path | None) -> Path | None:
    """The directory the user named (option first, then the environment), if any."""
    chosen = data_dir if data_dir is not None else os.environ.get(DATA_DIR_ENV) or None
    return Path(chosen).expanduser() if chosen is not None else None


def locate(spec: DatasetSpec, data_dir: Path | None, download: bool = True) -> Path:
    """Return the directory holding the dataset's train files, downloading as a last resort."""
    for directory in _candidate_dirs(spec, data_dir):
        if all(_file_in(directory, stem) for stem in SPLIT_FILES["train"]):
            return directory
    if data_dir is None and download:
        return _download(spec)
    where = (
        f"{data_dir}/{spec.folder}/raw/" if data_dir else f"$BENCHMARK_DATA_DIR/{spec.folder}/raw/"
    )
    hint = (
        " On Debian, `apt-get install dataset-fashion-mnist` provides it."
        if spec.system_dirs
        else ""
    )
    raise DataError(
        f"Dataset {spec.name!r} not found: put {', '.join(s + '[.gz]' for s in SPLIT_FILES['train'])}"
        f" (and the t10k files) in {where}, or pass --data-dir DIR.{hint}"
    )


def _import_torchvision_datasets():
    """torchvision's dataset module, or a DataError that says torchvision itself is broken.

    A CPU-only torch beside PyPI's CUDA build of torchvision fails at import ("operator
    torchvision::nms does not exist"); that is not a network problem and must not read as one.
    """
    try:
        import torchvision.datasets as tvd  # imported late: only online users need it
    except Exception as error:
        raise DataError(
            f"torchvision, needed only to download the datasets, failed to import ({error})."
            " This usually means its build does not match torch's (a CUDA torchvision beside a"
            " CPU torch); install the torchvision built for your torch, or skip the download:"
            f" put the IDX files in DIR/<MNIST|FashionMNIST>/raw/ and pass --data-dir DIR"
            f" or set {DATA_DIR_ENV}=DIR."
        ) from None
    return tvd


def _download(spec: DatasetSpec) -> Path:
    root = default_cache_dir()
    tvd = _import_torchvision_datasets()
    try:
        getattr(tvd, spec.torchvision_class)(root=str(root), train=True, download=True)
        getattr(tvd, spec.torchvision_class)(root=str(root), train=False, download=True)
    except Exception as error:  # network errors come in many types
        raise DataError(
            f"Dataset {spec.name!r} is not on this machine and could not be downloaded ({error})."
            f" Put its IDX files in DIR/{spec.folder}/raw/ and pass --data-dir DIR"
            f" or set {DATA_DIR_ENV}=DIR."
            + (" On Debian, `apt-get install dataset-fashion-mnist`." if spec.system_dirs else "")
        ) from None
    return root / spec.folder / "raw"


def read_idx(path: Path, magic: int) -> np.ndarray:
    """Read one IDX file, checking its magic number and that its size matches its header."""
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, zlib.error) as error:
        raise DataError(
            f"{path}: cannot be read as gzip ({error}); the file is corrupt or truncated."
        ) from None
    if len(raw) < 4 or int.from_bytes(raw[:4], "big") != magic:
        found = raw[:4].hex() if len(raw) >= 4 else "fewer than 4 bytes"
        raise DataError(
            f"{path}: wrong magic number ({found}, expected {magic:08x}); not an IDX file of this kind."
        )
    n_dims = magic & 0xFF
    header = 4 + 4 * n_dims
    if len(raw) < header:
        raise DataError(f"{path}: truncated header ({len(raw)} bytes).")
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(n_dims))
    expected = header + int(np.prod(dims))
    if len(raw) != expected:
        raise DataError(
            f"{path}: size {len(raw)} bytes does not match its header {dims} ({expected} bytes);"
            " the file is truncated or corrupt."
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


@dataclass
class Dataset:
    """One dataset on disk. Splits are read lazily so the test files are touched only on demand."""

    spec: DatasetSpec
    directory: Path
    _cache: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict, repr=False)
    _fingerprint: str | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return self.spec.name

    def split(self, which: str) -> tuple[np.ndarray, np.ndarray]:
        """(images uint8 [N, 28, 28], labels uint8 [N]) of 'train' or 'test', validated."""
        if which not in self._cache:
            self._cache[which] = self._read(which)
        return self._cache[which]

    def _read(self, which: str) -> tuple[np.ndarray, np.ndarray]:
        image_stem, label_stem = SPLIT_FILES[which]
        paths = [_file_in(self.directory, stem) for stem in (image_stem, label_stem)]
        missing = [stem for stem, p in zip((image_stem, label_stem), paths) if p is None]
        if missing:
            raise DataError(
                f"Dataset {self.name!r}: {', '.join(missing)}[.gz] missing in {self.directory}."
            )
        images = read_idx(paths[0], IMAGE_MAGIC)
        labels = read_idx(paths[1], LABEL_MAGIC)
        if images.shape[0] != labels.shape[0]:
            raise DataError(
                f"{paths[0]} holds {images.shape[0]} images but {paths[1]} holds"
                f" {labels.shape[0]} labels; the two files must agree."
            )
        if images.shape[1:] != self.spec.image_shape:
            raise DataError(
                f"{paths[0]}: images of shape {images.shape[1:]}, but {self.name!r} has"
                f" {self.spec.image_shape}; is this the right dataset's file?"
            )
        if labels.size and int(labels.max()) >= self.spec.n_classes:
            raise DataError(
                f"{paths[1]}: label {int(labels.max())} out of range 0-{self.spec.n_classes - 1}."
            )
        return images, labels

    def features(self, which: str) -> np.ndarray:
        """Images as float32 rows in [0, 1], the form every method receives."""
        images, _ = self.split(which)
        return images.reshape(len(images), -1).astype(np.float32) / 255.0

    def labels(self, which: str) -> np.ndarray:
        return self.split(which)[1].astype(np.int64)

    @property
    def image_shape(self) -> tuple[int, ...]:
        return self.spec.image_shape

    def fingerprint(self) -> str:
        """Hash of the training images only: what the VAE sees, so its cache key."""
        if self._fingerprint is None:
            images, _ = self.split("train")
            self._fingerprint = hashlib.sha256(images.tobytes()).hexdigest()[:16]
        return self._fingerprint


def load(name: str, data_dir: str | Path | None = None, download: bool = True) -> Dataset:
    spec = get_spec(name)
    return Dataset(spec, locate(spec, explicit_data_dir(data_dir), download=download))
