"""Every registered method, run through the real cell path on tiny data.

A new method file is tested here the moment it exists: no list to update.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import methods
from benchmark.cli import main
from benchmark.study import grid
from benchmark.study.execute import Workspace, run_cell
from benchmark.vaes.cache import VAECache

FAST = {"vae_epochs": 1, "epochs": 1, "latent_dim": 4}


def test_every_method_module_imports() -> None:
    methods.available()
    assert methods.BROKEN == {}


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(n, marks=pytest.mark.slow) if n == "vae-gmm-mutual" else n
        for n in methods.available()
    ],
)
def test_method_contract(name: str, tiny_data: Path, tmp_path: Path) -> None:
    cls = methods.get(name)
    assert cls.name == name and cls.description and "\n" not in cls.description
    assert isinstance(cls.defaults, dict)
    params, _ = grid.resolve_params(name, "mnist", 20, FAST)
    cell = grid.Cell(name, "mnist", 20, 0, grid.canonical(params))
    results = []
    for _ in range(2):
        ws = Workspace(tiny_data, torch.device("cpu"), VAECache(tmp_path / "cache"), progress=False)
        results.append(run_cell(cell, ws))
    result = results[0]
    accuracy = np.trace(result.confusion) / result.confusion.sum()  # the score is its matrix's
    assert result.scores["test_accuracy"] == pytest.approx(accuracy)
    assert result.confusion.shape == (10, 10) and result.confusion.sum() == 200
    assert result.fit_seconds >= 0 and result.cuda_peak_mb is None  # no CUDA peak on the CPU
    # same seed, same numbers on the CPU (the second run also reuses the cached VAE)
    assert results[1].scores == result.scores
    assert np.array_equal(results[1].confusion, result.confusion)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_cell_on_cuda_records_its_peak_memory(tiny_data: Path, tmp_path: Path) -> None:
    params, _ = grid.resolve_params("supervised-mlp", "mnist", 20, FAST)
    cell = grid.Cell("supervised-mlp", "mnist", 20, 0, grid.canonical(params))
    ws = Workspace(tiny_data, torch.device("cuda"), VAECache(tmp_path / "cache"), progress=False)
    assert run_cell(cell, ws).cuda_peak_mb > 0


def test_unknown_parameter_is_rejected() -> None:
    with pytest.raises(Exception, match="Unknown parameter"):
        methods.get("pixel-svm")(kernel="poly")


def test_list_shows_every_method(capsys: pytest.CaptureFixture) -> None:
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in methods.available())


@pytest.mark.parametrize("name", methods.available())
def test_every_numeric_parameter_declares_its_constraint_on_the_class(name: str) -> None:
    """Constraints live on each method (scikit-learn's declared style), not in a global table
    keyed on parameter names: a number without a declared range would take any value."""
    cls = methods.get(name)
    numeric = [
        k for k, v in cls.defaults.items() if isinstance(v, int | float) and not isinstance(v, bool)
    ]
    assert [k for k in numeric if k not in cls.rules] == []
    with pytest.raises(Exception, match="must be"):
        cls(**{numeric[0]: -1}) if numeric else cls(no_such_parameter=1)
