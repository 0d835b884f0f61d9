"""The main command as a newcomer meets it: a plan first, cheap cells first, tables as cells
finish, no hang on resume, honest errors about torchvision."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from conftest import REPO, flatten

from benchmark.cli import main
from benchmark.data import datasets, preflight
from benchmark.errors import DataError
from benchmark.study import grid
from benchmark.study.plan import make_plan
from benchmark.workqueue.queue import CellQueue, open_storage, study_name


def run_args(data: Path, stores: dict[str, str], methods: str, **extra: str) -> list[str]:
    options = {
        "--methods": methods,
        "--datasets": "mnist",
        "--labels": "20",
        "--seeds": "0",
        "--epochs": "1",
        "--data-dir": str(data),
        **stores,
        **extra,
    }
    return ["run", *flatten(options)]


def test_dry_run_prints_the_plan_and_writes_nothing(
    tiny_data: Path, stores: dict, tmp_path: Path, capsys
) -> None:
    args = run_args(tiny_data, stores, "pixel-svm,vae-rbf-svm,m2", **{"--seeds": "0,1"})
    before = sorted(tmp_path.rglob("*"))
    assert main([*args, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "Plan: 6 cells, 6 to run (0 already finished), 2 VAE(s) to train." in out
    assert "Estimated time:" in out
    for method in ("pixel-svm", "vae-rbf-svm", "m2"):
        assert method in out
    assert sorted(tmp_path.rglob("*")) == before  # no store, no folder, no table


def test_cheapest_cells_run_first_and_a_long_plan_suggests_a_cheaper_command() -> None:
    cells = grid.build_grid(["m2", "pixel-svm", "vae-rbf-svm"], ["mnist"], [100], [0, 1, 2])
    cells = grid.with_fingerprints(cells, {"mnist": "x"})
    plan = make_plan(cells, cells, 0, lambda cell, config: False, pd.DataFrame())
    order = [c.method for c in plan.pending]
    assert order.index("m2") > max(i for i, m in enumerate(order) if m != "m2")
    assert order[0] != "m2"  # the cheapest of the others first (their order follows the model)
    text = plan.render()
    assert "Cheaper: python -m benchmark run --methods pixel-svm,vae-rbf-svm" in text
    assert "--seeds 0" in text
    # the VAE of each (dataset, seed) is charged once, to the first cell that needs it
    vae_cells = [c for c in plan.pending if c.method == "vae-rbf-svm"]
    assert len(plan.vaes) == 3 and all(plan.seconds[c.key] > 60 for c in vae_cells)


def test_cells_that_resume_from_a_checkpoint_run_first() -> None:
    cells = grid.build_grid(["m2", "pixel-svm"], ["mnist"], [100], [0, 1])
    cells = grid.with_fingerprints(cells, {"mnist": "x"})
    half = {c.key: 0.5 for c in cells if c.method == "m2" and c.seed == 1}
    plan = make_plan(
        cells,
        cells,
        0,
        lambda cell, config: False,
        pd.DataFrame(),
        share_done=lambda cell: half.get(cell.key, 0.0),
    )
    assert [(c.method, c.seed) for c in plan.pending][0] == ("m2", 1) and plan.resumed == 1
    assert [c.method for c in plan.pending][1:] == ["pixel-svm", "pixel-svm", "m2"]


def test_the_plan_finds_a_cached_convolutional_vae_under_the_key_it_was_cached_with() -> None:
    """A conv VAE is cached under its image shape, which the method takes from the data: the
    plan asked the cache without it, so it counted every cached conv VAE as one to train."""
    cells = grid.build_grid(["vae-poisson"], ["mnist"], [100], [0], {"vae_arch": "conv"})
    cells = grid.with_fingerprints(cells, {"mnist": "x"})
    asked = []

    def cached(cell, config) -> bool:
        asked.append(config)
        return config.image_shape == (28, 28)

    plan = make_plan(cells, cells, 0, cached, pd.DataFrame())
    assert [c.arch for c in asked] == ["conv"] and plan.vaes == []


def test_a_cell_that_resumes_from_a_checkpoint_is_estimated_at_what_is_left(
    tiny_data: Path, stores: dict, capsys
) -> None:
    """A resumed cell's ETA counted the whole cell: "~31 min left" for the 15 it had left."""
    from benchmark.cli import build_parser
    from benchmark.study.execute import checkpoint_folder, checkpoint_root
    from benchmark.study.launcher import cells_from_args, checked_cells, plan_for
    from benchmark.study.tables import known_rows
    from methods.training import Checkpoint

    args = build_parser().parse_args(run_args(tiny_data, stores, "m2", **{"--seeds": "0,1"}))
    cells = checked_cells(args, cells_from_args(args))
    known = known_rows(Path(args.results_dir), args.tracking_uri, args.experiment)
    first = plan_for(args, cells, known, force=False)
    root = checkpoint_root(args.vae_cache_dir)
    Checkpoint(checkpoint_folder(root, cells[0]) / "m2.pt").save({"epoch": 3, "epochs": 4})
    resumed = plan_for(args, cells, known, force=False)
    before, after = first.seconds, resumed.seconds
    assert after[cells[0].key] == pytest.approx(0.25 * before[cells[0].key])  # 1 epoch of 4 left
    assert after[cells[1].key] == before[cells[1].key]
    assert resumed.resumed == 1 and "1 resuming from a checkpoint" in resumed.render()


def test_the_share_a_checkpoint_holds_is_epochs_done_over_planned(tmp_path: Path) -> None:
    from methods.training import Checkpoint, loop_progress, share_done

    assert share_done(loop_progress(tmp_path / "none")) == 0.0
    Checkpoint(tmp_path / "a.pt").save({"epoch": 3, "epochs": 4})
    Checkpoint(tmp_path / "b.pt").save({"epoch": 1, "epochs": 4})
    (tmp_path / "c.pt").write_bytes(b"damaged")  # unreadable: starts over, counts nothing
    assert share_done(loop_progress(tmp_path)) == pytest.approx(0.5)


def test_torchvision_that_fails_to_import_is_named_as_such(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "torchvision.datasets", None)
    monkeypatch.setitem(sys.modules, "torchvision", None)
    with pytest.raises(DataError, match="torchvision, needed only to download"):
        datasets._download(datasets.get_spec("mnist"))


@pytest.mark.slow
def test_a_trial_interrupted_before_its_first_heartbeat_does_not_hang_the_rerun(
    tiny_data: Path, stores: dict
) -> None:
    """Ctrl-C right after a worker popped a cell, before its heartbeat thread beat once, left a
    RUNNING trial that no one ever failed: every later run waited on it forever."""
    os.environ["BENCHMARK_HEARTBEAT_SECONDS"] = "1"
    try:
        args = run_args(tiny_data, stores, "pixel-svm", **{"--seeds": "0,1"})
        assert main([*args, "--dry-run"]) == 0  # creates nothing in the queue
        cells = grid.build_grid(["pixel-svm"], ["mnist"], [20], [0, 1])
        cells = grid.with_fingerprints(cells, preflight.check_data({"mnist": {20}}, str(tiny_data)))
        storage = open_storage(stores["--storage"])
        name = study_name("ssl-vae-benchmark", cells)
        queue = CellQueue.create(storage, stores["--storage"], name, cells)
        queue.enqueue(cells, force=False)
        queue.study.ask()  # popped: RUNNING, and the process "dies" before any heartbeat
    finally:
        os.environ.pop("BENCHMARK_HEARTBEAT_SECONDS")
    env = {**os.environ, "BENCHMARK_HEARTBEAT_SECONDS": "1", "PYTHONPATH": str(REPO)}
    done = subprocess.run(  # a hang is the failure: the timeout only bounds it
        [sys.executable, "-m", "benchmark", *args], env=env, capture_output=True, timeout=600
    )
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    from mlflow.tracking import MlflowClient

    client = MlflowClient(stores["--tracking-uri"])
    experiment = client.get_experiment_by_name("ssl-vae-benchmark")
    runs = [
        r
        for r in client.search_runs([experiment.experiment_id])
        if "cell_key" in r.data.tags and r.info.status == "FINISHED"
    ]
    assert sorted(r.data.params["seed"] for r in runs) == ["0", "1"]


def test_the_eta_weighs_cells_by_cost_and_learns_the_pace(monkeypatch) -> None:
    from benchmark.study import progress as progress_mod

    clock = [1000.0]
    monkeypatch.setattr(progress_mod.time, "monotonic", lambda: clock[0])
    estimates = {"a": 10.0, "b": 10.0, "c": 10.0, "m2": 1500.0}
    p = progress_mod.GridProgress(estimates, enabled=False, parallel=1)
    assert p.remaining_seconds() == pytest.approx(1530.0)  # the model's estimate at the start
    for key in ("a", "b", "c"):
        clock[0] += 20.0  # this machine runs at half the modelled speed
        p.cell_finished(key)
    # three cheap cells are not yet 5 % of the work: the plan's estimate still stands
    assert p.remaining_seconds() == pytest.approx(1500.0)
    p.estimates["big"] = 200.0
    p.total += 200.0
    clock[0] += 400.0
    p.cell_finished("big")
    assert p.remaining_seconds() == pytest.approx(1500.0 * 460.0 / 230.0)
    assert "7 min elapsed" in p.status()
    p.close()


def test_the_eta_counts_down_during_a_long_cell_and_says_when_it_is_overrun(monkeypatch) -> None:
    from benchmark.study import progress as progress_mod

    clock = [1000.0]
    monkeypatch.setattr(progress_mod.time, "monotonic", lambda: clock[0])
    p = progress_mod.GridProgress({"m2-s0": 3600.0, "m2-s1": 3600.0}, enabled=False)
    p.cell_started("m2 seed 0")
    clock[0] += 1800.0  # half-way through the first cell, nothing finished yet
    assert p.remaining_seconds() == pytest.approx(5400.0)
    assert "~1 h 30 min left" in p.status()
    clock[0] += 6000.0  # the cell runs past its estimate and the second one's
    assert "past the estimate" in p.status()
    p.cell_finished("m2-s0")  # a finished cell restarts the count from the next one's estimate
    assert p.remaining_seconds() == pytest.approx(3600.0)
    p.close()


def test_a_log_gets_one_line_per_finished_cell_and_a_minutes_beat(monkeypatch, capsys) -> None:
    """`run ... > log` wrote the redrawn progress line hundreds of times into each line."""
    from benchmark.study import progress as progress_mod

    clock = [1000.0]
    monkeypatch.setattr(progress_mod.time, "monotonic", lambda: clock[0])
    p = progress_mod.GridProgress({"a": 10.0, "b": 600.0}, terminal=False)
    p.cell_started("a")
    p.cell_finished("a")
    p.cell_started("b")
    for _ in range(150):  # the redraw thread's ticks during a long cell, 1 s apart
        clock[0] += 1.0
        with p._lock:
            p._redraw()
    p.cell_finished("b")
    p.close()
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert "\r" not in err and len(lines) == 4  # two finished cells, two minutes' beats
    assert "1/2 cells" in lines[0] and "1/2 cells" in lines[2]
    assert "2/2 cells" in lines[-1]


def test_a_bad_option_value_is_one_line_not_the_usage_text(capsys) -> None:
    with pytest.raises(SystemExit) as stop:
        main(["run", "--workers", "0"])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--workers: must be at least 1, got 0" in err
    assert "usage:" not in err and "--help" in err


def test_a_bad_storage_url_exits_2_before_the_plan_and_leaves_no_run(
    tiny_data: Path, stores: dict, tmp_path: Path, capsys
) -> None:
    args = run_args(tiny_data, stores, "pixel-svm", **{"--storage": "foo://nowhere"})
    assert main(args) == 2
    captured = capsys.readouterr()
    assert "--storage 'foo://nowhere' cannot be opened here" in captured.err
    assert "Plan:" not in captured.out
    assert not (tmp_path / "mlruns").exists()  # no store, so no KILLED parent run in it


def test_the_plan_calibrates_with_this_machines_runs_first(tiny_data: Path) -> None:
    """Earlier runs of this machine scale each method's estimate; without them, runs of the
    same kind of device do; a GPU plan ignores CPU runs."""
    import json

    from conftest import archive_row

    from benchmark.study.plan import calibrate

    params = json.dumps(methods_defaults("pixel-svm"))
    rows = pd.DataFrame(
        [
            archive_row("pixel-svm", 0, 70.0, params=params, wall_seconds=30.0, machine="A"),
            archive_row("pixel-svm", 1, 70.0, params=params, wall_seconds=3.0, machine="B"),
        ]
    )
    factors_a, where_a = calibrate(rows, "A", "cpu")
    factors_b, _ = calibrate(rows, "B", "cpu")
    assert factors_a["pixel-svm"] == pytest.approx(10 * factors_b["pixel-svm"])
    assert "this machine" in where_a
    assert "other cpu machines" in calibrate(rows, "C", "cpu")[1]
    assert calibrate(rows, "C", "cuda")[0] == {}


def test_a_method_never_timed_here_takes_other_machines_pace_rescaled() -> None:
    """A new machine that has timed only the baselines still plans the Ladder from its runs
    elsewhere, scaled by how much slower this machine ran the methods both timed."""
    from conftest import archive_row

    from benchmark.study.plan import calibrate

    rows = pd.DataFrame(
        [
            archive_row("pixel-svm", 0, 70.0, wall_seconds=30.0, machine="A"),
            archive_row("pixel-svm", 0, 70.0, wall_seconds=10.0, machine="B"),
            archive_row("supervised-mlp", 0, 70.0, wall_seconds=500.0, machine="B"),
        ]
    )
    on_a, where = calibrate(rows, "A", "cpu")
    on_b, _ = calibrate(rows, "B", "cpu")
    assert on_a["supervised-mlp"] == pytest.approx(3 * on_b["supervised-mlp"])
    assert "1 method(s) on this machine; 1 more from other cpu machines" in where
    assert "supervised-mlp" not in calibrate(rows, "A", "cuda")[0]


def test_a_method_never_timed_takes_its_twins_calibration() -> None:
    """sdgm-supervised does adgm-supervised's work (same cost model, same defaults): once the
    latter has run, the former is planned at its measured pace too, and no one else is."""
    import json

    from conftest import archive_row

    from benchmark.study.plan import calibrate
    from methods import get

    params = methods_defaults("adgm-supervised")
    estimate = get("adgm-supervised").estimated_seconds(100, 60000, params)
    row = archive_row(
        "adgm-supervised", 0, 76.0, params=json.dumps(params), wall_seconds=3 * estimate,
        fit_seconds=3 * estimate, machine="A",
    )  # fmt: skip
    factors, _ = calibrate(pd.DataFrame([row]), "A", "cpu")
    assert factors["adgm-supervised"] == pytest.approx(3.0, rel=0.05)
    assert factors["sdgm-supervised"] == factors["adgm-supervised"]
    assert "adgm" not in factors and "ladder-supervised" not in factors


def test_the_cost_table_checks_each_cell_against_a_plan_made_without_it() -> None:
    """A cell's planned time comes from the other cells of its method on its machine (when it
    is alone there: its cells on other machines of the kind, else a twin's, else the built-in
    model), never from its own time."""
    import json

    from conftest import archive_row

    from benchmark.reports.costs import cost_table, estimate
    from methods import get

    def row(method: str, seed: int, times: float, machine: str) -> dict:
        params = methods_defaults(method)
        seconds = times * get(method).estimated_seconds(100, 60000, params)
        return archive_row(
            method, seed, 70.0, params=json.dumps(params), wall_seconds=seconds, machine=machine
        )

    rows = pd.DataFrame(
        [row("pixel-svm", s, t, "A") for s, t in enumerate([2.0, 3.0, 4.0])]
        + [row("adgm-supervised", 0, 2.0, "A"), row("sdgm-supervised", 0, 3.0, "A")]
        + [row("pixel-svm", 0, 5.0, "B")]
    )
    built_in = estimate(next(rows.itertuples()))
    table = cost_table(rows).set_index("method")
    # on A: 2x planned at 3.5x, 3x at 3x, 4x at 2.5x; on B, alone: at A's 3x (no method
    # timed on both machines to rescale it by)
    assert table.at["pixel-svm", "planned_total_s"] == pytest.approx((3.5 + 3 + 2.5 + 3) * built_in)
    assert table.at["pixel-svm", "close"] == 1  # only 3x against 3x is within 25 %
    assert table.at["sdgm-supervised", "plan_ratio"] == pytest.approx(3.0 / 2.0)  # its twin's
    assert table.at["adgm-supervised", "plan_ratio"] == pytest.approx(2.0 / 3.0)

    # cells that ran on a GPU get a row of their own, not a share of the CPU's median
    gpu = pd.DataFrame([{**row("pixel-svm", 1, 0.1, "C"), "device": "cuda"}])
    table = cost_table(pd.concat([rows, gpu], ignore_index=True)).set_index("method")
    assert table.at["pixel-svm", "cells"] == 4 and table.at["pixel-svm (GPU)", "cells"] == 1
    assert table.at["pixel-svm (GPU)", "measured_median_s"] == pytest.approx(0.1 * built_in)


def methods_defaults(name: str) -> dict:
    import methods

    return methods.get(name)().params


def test_a_resumed_cell_is_archived_as_such_and_calibrates_nothing(
    tiny_data: Path, stores: dict, tmp_path: Path
) -> None:
    """A resumed cell's run times only what was left (12 min of a 57-min cell): its archive
    row says how much its checkpoints held, and neither the plan nor the cost table takes it
    for the whole cell's time."""
    import json

    from conftest import archive_row

    from benchmark.cli import build_parser
    from benchmark.reports import archive
    from benchmark.reports.costs import cost_table
    from benchmark.study.execute import checkpoint_folder, checkpoint_root
    from benchmark.study.launcher import cells_from_args, checked_cells
    from benchmark.study.plan import calibrate
    from methods.training import Checkpoint

    argv = run_args(tiny_data, stores, "m2", **{"--results-dir": str(tmp_path / "results")})
    args = build_parser().parse_args(argv)
    cell = checked_cells(args, cells_from_args(args))[0]
    folder = checkpoint_folder(checkpoint_root(args.vae_cache_dir), cell)
    Checkpoint(folder / "m2.pt").save({"epoch": 3, "epochs": 4})  # not this network's: redone
    assert main(argv) == 0
    rows = archive.read(tmp_path / "results" / archive.ARCHIVE_NAME)
    assert rows["resumed_share"].tolist() == [0.75]

    params = json.dumps(methods_defaults("pixel-svm"))
    whole = archive_row("pixel-svm", 0, 70.0, params=params, wall_seconds=30.0, machine="A")
    rest = {**whole, "seed": 1, "wall_seconds": 3.0, "resumed_share": 0.9, "run_id": "r"}
    both = pd.DataFrame([whole, rest])
    assert calibrate(both, "A")[0] == calibrate(both.iloc[:1], "A")[0]
    assert cost_table(both).at[0, "cells"] == 1
