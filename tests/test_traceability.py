"""Every number traceable to what made it: settings never mix, parameters are typed, tuning
is per seed, bad input is refused before work, and a method cannot reach labels it was not
given. Fast: no test here trains a network."""

from __future__ import annotations

import gc
import json
import re
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import archive_row, flatten

import methods
from benchmark import provenance
from benchmark.cli import main
from benchmark.errors import UsageError
from benchmark.reports import tables as report
from benchmark.study import grid
from benchmark.study.execute import Workspace, train_data
from benchmark.vaes.cache import VAECache, cache_key
from methods.vae import VAE, TrainedVAE, VAEConfig


def run_args(data: Path, stores: dict[str, str], **extra: str) -> list[str]:
    options = {
        "--methods": "pixel-svm",
        "--datasets": "mnist",
        "--labels": "20",
        "--seeds": "0",
        "--data-dir": str(data),
        **stores,
        **extra,
    }
    return ["run", *flatten(options)]


def test_runs_of_other_settings_are_rows_of_their_own_never_replacements() -> None:
    """A later smoke run (--subset) must not replace the study's figures."""
    rows = pd.DataFrame(
        [
            archive_row("pixel-svm", 0, 78.6, start_time="2026-01-01T00:00:01Z"),
            archive_row("pixel-svm", 1, 79.0, start_time="2026-01-01T00:00:02Z"),
            archive_row("pixel-svm", 0, 41.0, subset=5000, start_time="2026-01-01T00:00:03Z"),
        ]
    )
    summary, variants, _ = report.tables(rows)
    assert dict(zip(summary["method"], summary["mean"])) == {"pixel-svm": pytest.approx(78.8)}
    assert dict(zip(variants["method"], variants["mean"])) == {
        "pixel-svm [subset=5000]": pytest.approx(41.0)
    }


def test_runs_are_classified_from_their_params_and_version() -> None:
    other = archive_row("pixel-svm", 0, 30.0, params={"C": "2.0", "gamma": "scale"})
    older = archive_row("pixel-svm", 1, 30.0, code_version="pixel-svm@0+protocol@1")
    summary, variants, _ = report.tables(
        pd.DataFrame([archive_row("pixel-svm", 0, 50), other, older])
    )
    assert list(summary["method"]) == ["pixel-svm"]
    assert sorted(variants["method"]) == [
        "pixel-svm [C=2.0]",
        "pixel-svm [made by pixel-svm@0+protocol@1]",
    ]


def test_set_values_are_parsed_to_the_declared_type() -> None:
    finetune = methods.get("vae-finetune")
    assert finetune(freeze_encoder="False").params["freeze_encoder"] is False
    assert finetune(freeze_encoder="true").params["freeze_encoder"] is True
    assert finetune(epochs="7").params["epochs"] == 7
    assert methods.get("pixel-svm")(gamma="0.5").params["gamma"] == 0.5
    assert methods.get("pixel-svm")(gamma="scale").params["gamma"] == "scale"


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("C=abc", "parameter C='abc' must be float > 0"),
        ("C=-1", "parameter C='-1' must be float > 0"),
        ("gamma=wide", "or scale / auto"),
    ],
)
def test_bad_set_values_exit_2_before_any_data_is_read(
    tmp_path: Path, stores: dict, setting: str, message: str, capsys
) -> None:
    nowhere = tmp_path / "no-data-here"  # reading data first would fail with another message
    assert main(run_args(nowhere, stores, **{"--set": setting})) == 2
    assert message in capsys.readouterr().err


def test_a_budget_larger_than_a_class_exits_2_before_training(
    tiny_data: Path, stores: dict, capsys
) -> None:
    assert main(run_args(tiny_data, stores, **{"--labels": "1000"})) == 2
    err = capsys.readouterr().err
    assert "100 labeled images per class" in err and "use at most 400 labels" in err
    assert "Traceback" not in err
    assert not Path(stores["--tracking-uri"].removeprefix("sqlite:///")).exists()


@pytest.mark.parametrize("option", ["--results-dir", "--storage", "--vae-cache-dir"])
def test_unusable_output_paths_exit_2_before_training(
    tiny_data: Path, stores: dict, tmp_path: Path, option: str, capsys
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    bad = {
        "--results-dir": str(blocker),
        "--storage": f"sqlite:///{blocker}/optuna.db",
        "--vae-cache-dir": str(blocker / "cache"),
    }[option]
    assert main(run_args(tiny_data, stores, **{option: bad})) == 2
    assert "is a file, not a directory" in capsys.readouterr().err
    assert not Path(stores["--tracking-uri"].removeprefix("sqlite:///")).exists()


def _tune_file(results: Path, seed: int, epochs: int | None) -> Path:
    path = grid.tuned_path(results, "pixel-svm", "mnist", 20, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"seed": seed, "params": {"C": 3.0}, "settings": {"epochs": epochs, "subset": 0}}
    path.write_text(json.dumps(payload))
    return path


def test_tuned_params_come_from_each_seeds_own_file(tmp_path: Path) -> None:
    for seed, c in ((0, 3.0), (1, 7.0)):
        path = _tune_file(tmp_path, seed, None)
        path.write_text(path.read_text().replace("3.0", str(c)))
    cells = grid.build_grid(["pixel-svm"], ["mnist"], [20], [0, 1], {}, "tuned", tmp_path)
    assert [c.param_dict["C"] for c in cells] == [3.0, 7.0]
    assert {c.settings for c in cells} == {"tuned"}


def test_a_missing_seed_file_names_the_tune_command(tmp_path: Path) -> None:
    _tune_file(tmp_path, 0, None)
    with pytest.raises(UsageError, match="--labels 20 --seed 1 --results-dir"):
        grid.build_grid(["pixel-svm"], ["mnist"], [20], [0, 1], {}, "tuned", tmp_path)


def test_a_file_tuned_under_other_epochs_is_refused(tmp_path: Path) -> None:
    _tune_file(tmp_path, 0, 3)
    with pytest.raises(UsageError, match="tuned with epochs=3, but this run has epochs"):
        grid.build_grid(["pixel-svm"], ["mnist"], [20], [0], {}, "tuned", tmp_path)


def test_the_identity_binds_data_and_code() -> None:
    (cell,) = grid.build_grid(["pixel-svm"], ["mnist"], [20], [0])
    (other_data,) = grid.with_fingerprints([cell], {"mnist": "other"})
    assert other_data.key != grid.with_fingerprints([cell], {"mnist": "same"})[0].key
    assert cell.code == f"pixel-svm@1+protocol@{provenance.PROTOCOL_VERSION}"
    (vae_cell,) = grid.build_grid(["vae-rbf-svm"], ["mnist"], [20], [0])
    assert "+vae@" in vae_cell.code  # a VAE method's results also depend on the VAE core


def test_the_version_is_declared_not_read_from_where_the_code_lives(monkeypatch) -> None:
    """Moving a method to another module (or re-wording it) keeps its cells finished."""
    cls = methods.get("pixel-svm")
    before = provenance.cell_version(cls)
    monkeypatch.setattr(cls, "__module__", "methods.somewhere_else")
    assert provenance.cell_version(cls) == before
    monkeypatch.setattr(cls, "version", cls.version + 1)
    assert provenance.cell_version(cls) != before


def test_a_method_without_its_own_version_is_refused() -> None:
    with pytest.raises(TypeError, match="needs its own `version = 1`"):
        type("NoVersion", (methods.get("pixel-svm"),), {"name": "no-version-" + "x"})


def test_vae_cache_key_follows_the_core_version(monkeypatch) -> None:
    import methods.vae as core

    config, device = VAEConfig(latent_dim=2, hidden=(8,), epochs=1), torch.device("cpu")
    before = cache_key("data", config, 0, device)
    monkeypatch.setattr(core, "CORE_VERSION", core.CORE_VERSION + 1)
    assert cache_key("data", config, 0, device) != before


def test_a_cache_file_under_another_key_is_rejected(tmp_path: Path) -> None:
    cache = VAECache(tmp_path)
    model = VAE(16, VAEConfig(latent_dim=2, hidden=(8,), epochs=1))
    cache.save("a" * 20, TrainedVAE(model, [], 0.0))
    cache.path("b" * 20).write_bytes(cache.path("a" * 20).read_bytes())
    assert cache.load("a" * 20, model.mu.weight.device) is not None
    assert cache.load("b" * 20, model.mu.weight.device) is None
    assert not cache.path("b" * 20).exists()


def _reachable(root: object, limit: int = 200_000) -> list[object]:
    """Everything reachable from `root` through object references, without following modules,
    classes or functions' globals (which reach everything by design)."""
    seen, todo, out = {id(root)}, [root], []
    while todo and len(out) < limit:
        obj = todo.pop()
        out.append(obj)
        if isinstance(obj, types.ModuleType | type):
            continue
        if isinstance(obj, types.FunctionType):
            refs = [obj.__closure__ or (), obj.__defaults__ or ()]
        else:
            refs = gc.get_referents(obj)
        for ref in refs:
            if id(ref) not in seen and not isinstance(ref, types.ModuleType):
                seen.add(id(ref))
                todo.append(ref)
    return out


@pytest.mark.parametrize("method", ["vae-rbf-svm", "pixel-svm"])
def test_nothing_reachable_from_train_data_leads_to_unbudgeted_labels(
    tiny_data: Path, method: str
) -> None:
    ws = Workspace(tiny_data, torch.device("cpu"), VAECache(tiny_data / "cache"), progress=False)
    ws.test_arrays("mnist", 0)  # a multi-cell process has read a test set before
    (cell,) = grid.build_grid([method], ["mnist"], [20], [0])
    data = train_data(cell, ws, methods.get(method).uses_vae)
    _, y_train, _ = ws.train_arrays("mnist", 0)
    _, y_test = ws.test_arrays("mnist", 0)
    for obj in _reachable(data):
        if isinstance(obj, np.ndarray) and obj.dtype.kind in "iu" and obj.size >= len(y_test):
            assert not np.array_equal(obj, y_train), "all training labels are reachable"
            assert not np.array_equal(obj, y_test), "the test labels are reachable"
        assert not isinstance(obj, Workspace), "the runner's workspace is reachable"


@pytest.mark.slow
def test_a_finished_cell_whose_code_changed_is_rerun_and_the_plan_says_so(
    tiny_data: Path, stores: dict, monkeypatch, capsys
) -> None:
    assert main(run_args(tiny_data, stores)) == 0
    capsys.readouterr()
    assert main(run_args(tiny_data, stores)) == 0  # same code: nothing to do
    assert "Plan: 1 cells, 0 to run (1 already finished)" in capsys.readouterr().out
    monkeypatch.setattr(provenance, "cell_version", lambda method: "a-fixed-bug")
    assert main(run_args(tiny_data, stores)) == 0
    out = capsys.readouterr().out
    assert "1 to run (0 already finished, 1 to rerun because the code changed)" in out
    from benchmark.tracking.cells import finished_cells
    from benchmark.tracking.client import Tracker

    done = finished_cells(Tracker(stores["--tracking-uri"], "ssl-vae-benchmark"))
    (versions,) = done.values()  # one cell, FINISHED by two versions
    assert "a-fixed-bug" in versions and len(versions) == 2


def test_a_cell_left_queued_by_an_older_launch_runs_under_todays_code_version() -> None:
    """The queue (an Optuna study) outlives a launch. A cell still WAITING from a launch made
    before a code change was popped with that launch's code version, so its run was stamped
    with code that did not make it and looked for its checkpoints in another folder: three
    launches of one unchanged commit logged three code versions, and a 3 h cell restarted."""
    import dataclasses

    import optuna

    from benchmark.workqueue.queue import CellQueue

    cell = grid.build_grid(["pixel-svm"], ["mnist"], [20], [0])[0]
    storage = optuna.storages.InMemoryStorage()
    queue = CellQueue.create(storage, "memory", "grid", [cell])
    queue.enqueue([dataclasses.replace(cell, code="older")], force=False)
    queue.enqueue([cell], force=False)  # a later launch, today's code
    queue.enqueue([cell], force=False)  # and again: queued once, not once per launch
    assert len(queue.trials(optuna.trial.TrialState.WAITING)) == 1
    assert grid.Cell.from_json(queue.study.ask().user_attrs["cell"]).code == cell.code


def test_a_worker_stamps_a_queued_cell_with_its_own_code_version() -> None:
    """Workers of several launches (or machines) share one queue: whoever queued a cell, the
    run is made, and so must be stamped, by the code of the worker that pops it."""
    import dataclasses

    from benchmark.study.cell_run import queued_cell

    cell = grid.build_grid(["pixel-svm"], ["mnist"], [20], [0])[0]
    older = dataclasses.replace(cell, code="older").to_json()
    popped = queued_cell(types.SimpleNamespace(user_attrs={"cell": older}))
    assert popped == cell


def test_the_suggested_tune_command_makes_the_file_the_run_asks_for(
    tiny_data: Path, stores: dict, tmp_path: Path, capsys
) -> None:
    """`run --params tuned --subset N` suggested a `tune` command without --subset: following
    it wrote a file tuned on all images, which the run refused again, suggesting the same."""
    import shlex

    tuned_dir = tmp_path / "tuned-here"
    args = ["--methods", "pixel-svm", "--datasets", "mnist", "--labels", "20", "--seeds", "0"]
    args += ["--subset", "300", "--params", "tuned", "--tuned-dir", str(tuned_dir)]
    run = ["run", *args, "--data-dir", str(tiny_data), *flatten(stores)]
    assert main(run) == 2
    suggested = re.search(r"`(python -m benchmark tune [^`]*)`", capsys.readouterr().err).group(1)
    assert "--subset 300" in suggested and f"--results-dir {tuned_dir}" in suggested
    extra = ["--trials", "1", "--data-dir", str(tiny_data)]
    extra += ["--tracking-uri", stores["--tracking-uri"], "--storage", stores["--storage"]]
    assert main([*shlex.split(suggested)[3:], *extra]) == 0
    assert main(run) == 0  # the file the suggestion wrote is the one the run accepts
