"""The statistics and tables on hand-made run tables with known answers: no training, no stores."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import archive_row
from scipy import stats as sst

from benchmark.reports import stats
from benchmark.reports.markdown import markdown, readme_block
from benchmark.reports.tables import tables


def runs(scores: dict[str, list[float]], dataset: str = "mnist", budget: int = 100) -> list[dict]:
    """Archive rows: method -> accuracy (%) per seed. Methods outside the registry stand for
    registered ones with their defaults."""
    return [
        archive_row(method, seed, acc, dataset=dataset, n_labels=budget)
        for method, values in scores.items()
        for seed, acc in enumerate(values)
    ]


def summarize(rows: pd.DataFrame) -> pd.DataFrame:
    """The defaults table of archive rows."""
    return tables(rows)[0]


BASE = [70.0, 72.0, 69.0, 71.0, 73.0]


def test_t_interval_agrees_with_scipy_on_a_hand_case() -> None:
    values = np.array([70.0, 72.0, 69.0, 71.0, 73.0])
    low, high = stats.t_interval(values)
    # mean 71, sample std sqrt(2.5), t(0.975, 4) = 2.776: 71 ± 2.776 * sqrt(2.5) / sqrt(5)
    half = sst.t.ppf(0.975, 4) * np.sqrt(2.5) / np.sqrt(5)
    assert (low, high) == pytest.approx((71 - half, 71 + half))
    assert half == pytest.approx(1.963, abs=1e-3)
    assert all(np.isnan(stats.t_interval([70.0])))


def test_an_accuracy_interval_stops_at_100_percent() -> None:
    """Two seeds 3 points apart near the top gave "96.4-100.1" in the table."""
    table = summarize(pd.DataFrame(runs({"pixel-svm": [78.0, 79.0], "ladder": [97.0, 99.5]})))
    row = table[table["method"] == "ladder"].iloc[0]
    assert row["ci_high"] == 100.0 and 0 < row["ci_low"] < 97.0
    assert stats.t_interval([97.0, 99.5])[1] > 100  # the cut is the table's, not the formula's


def test_a_method_better_by_a_fixed_margin_on_every_seed_is_significant() -> None:
    noisy = [b + 2.0 + e for b, e in zip(BASE, [0.1, -0.1, 0.2, 0.0, -0.2])]
    table = summarize(pd.DataFrame(runs({"pixel-svm": BASE, "vae-rbf-svm": noisy})))
    row = table[table["method"] == "vae-rbf-svm"].iloc[0]
    assert row["diff_vs_baseline"] == pytest.approx(2.0)
    assert row["p_value"] < 0.001 and row["diff_ci_low"] > 0
    assert (row["wins"], row["ties"], row["losses"]) == (5, 0, 0)
    assert bool(row["top"]) and not bool(table[table["method"] == "pixel-svm"].iloc[0]["top"])


def test_identical_methods_are_not_significant_and_both_bold() -> None:
    table = summarize(pd.DataFrame(runs({"pixel-svm": BASE, "vae-linear-svm": BASE})))
    row = table[table["method"] == "vae-linear-svm"].iloc[0]
    assert row["diff_vs_baseline"] == 0 and row["p_value"] == 1.0
    assert (row["wins"], row["ties"], row["losses"]) == (0, 5, 0)
    assert table["top"].all()


def test_a_tiny_mean_lead_with_noise_is_not_bold_alone() -> None:
    """Bold is 'not significantly worse than the best', not equality after rounding."""
    close = [b + d for b, d in zip(BASE, [1.5, -1.0, 0.8, -0.9, 0.1])]  # +0.1 on average
    table = summarize(pd.DataFrame(runs({"pixel-svm": BASE, "vae-gmm": close})))
    assert table["top"].all()
    text = markdown(table)
    assert "**71.0 (69.0–73.0)**" in text and "p=0.85, 3/0/2" in text


def test_summary_csv_columns_and_footnote() -> None:
    table = summarize(pd.DataFrame(runs({"pixel-svm": BASE, "m2": [b + 1 for b in BASE]})))
    wanted = {"mean", "std", "n", "ci_low", "ci_high", "diff_vs_baseline", "diff_ci_low"}
    wanted |= {"diff_ci_high", "p_value", "wins", "ties", "losses"}
    assert wanted <= set(table.columns)
    text = markdown(table)
    assert "paired t-test" in text and "little power" in text


def test_cells_with_fewer_seeds_are_marked() -> None:
    rows = runs({"pixel-svm": BASE, "vae-gmm": BASE[:3]}) + runs({"m2": [70.0]}, budget=600)
    text = markdown(summarize(pd.DataFrame(rows)))
    assert "## mnist (seeds per cell: 5 unless marked)" in text
    assert "(3 seeds)" in text and "| m2 | – | 70.0 (1 seed) |" in text  # never bold on 1 seed


def test_ranking_over_blocks_with_friedman_and_the_caveat() -> None:
    rows = []
    for i, budget in enumerate((100, 600, 1000, 3000)):
        for dataset in ("mnist", "fashion-mnist"):
            scores = {
                "pixel-svm": BASE,
                "vae-rbf-svm": [b + 3 for b in BASE],
                "vae-gmm": [b - 3 for b in BASE],
            }
            rows += runs({m: [v + i for v in s] for m, s in scores.items()}, dataset, budget)
    rank = stats.ranking(summarize(pd.DataFrame(rows)))
    assert list(rank.ranks.index) == ["vae-rbf-svm", "pixel-svm", "vae-gmm"]
    assert list(rank.ranks) == [1.0, 2.0, 3.0]
    assert rank.blocks == 8 and rank.p_value < 0.01
    assert "little power" in rank.caveat
    assert rank.nemenyi.loc["vae-rbf-svm", "vae-gmm"] < 0.05


def test_the_ranking_keeps_its_blocks_when_a_method_covers_few() -> None:
    """One method run on MNIST only, another on Fashion-MNIST plus MNIST at 100 labels: the
    blocks every ranked method shared fell to one, and the ranking and its plot vanished."""
    rows = []
    for dataset in ("mnist", "fashion-mnist"):
        for i, budget in enumerate((100, 600, 1000, 3000)):
            scores = {"pixel-svm": BASE, "vae-rbf-svm": [b + 3 for b in BASE]}
            scores["vae-gmm"] = [b - 3 for b in BASE]
            if dataset == "mnist":
                scores["ladder-conv-supervised"] = [b + 5 for b in BASE]
            if dataset == "fashion-mnist" or budget == 100:
                scores["ladder"] = [b + 6 for b in BASE]
            rows += runs({m: [v + i for v in s] for m, s in scores.items()}, dataset, budget)
    rank = stats.ranking(summarize(pd.DataFrame(rows)))
    assert rank is not None and rank.blocks == 8
    assert list(rank.ranks.index) == ["vae-rbf-svm", "pixel-svm", "vae-gmm"]


def test_a_one_seed_run_does_not_take_the_bold_from_its_column() -> None:
    rows = runs({"pixel-svm": BASE, "vae-rbf-svm": [b + 3 for b in BASE], "m2": [99.0]})
    table = summarize(pd.DataFrame(rows)).set_index("method")
    assert bool(table.loc["vae-rbf-svm", "top"]) and not bool(table.loc["pixel-svm", "top"])
    assert "**" in markdown(table.reset_index())


def test_cells_run_on_a_gpu_or_with_other_libraries_are_marked() -> None:
    rows = runs({"pixel-svm": BASE})
    rows += [archive_row("m2", 0, 80.0, device="cuda", libraries="torch=2.11.0")]
    rows += [archive_row("m2", 1, 81.0)]
    text = markdown(summarize(pd.DataFrame(rows)))
    assert (
        "80.5 (74.1–86.9) (2 seeds) † ‡" in text
        and "\n‡: some seeds of this cell ran on a CUDA GPU" in text
    )
    assert "| pixel-svm | **71.0 (69.0–73.0)** |" in text  # CPU runs, pinned libraries: no mark
    block = readme_block(summarize(pd.DataFrame(rows)), "results")
    assert "† ‡ |" in block and "\n‡: some seeds" in block and "\n†: the seeds" in block


def test_published_verdict_uses_our_interval() -> None:
    assert stats.published_verdict(70.0, 69.0, 71.0) == "consistent"
    assert stats.published_verdict(75.0, 69.0, 71.0) == "below"
    assert stats.published_verdict(65.0, 69.0, 71.0) == "above"


def test_readme_block_is_regenerated_from_the_tables(tmp_path) -> None:
    from benchmark.reports.markdown import update_readme
    from benchmark.reports.tables import write_report

    results = tmp_path / "results"
    write_report(pd.DataFrame(runs({"pixel-svm": BASE, "m2": BASE})), results, "made by a test")
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- results:start -->\nold table\n<!-- results:end -->\nrest\n")
    update_readme(readme, results)
    text = readme.read_text()
    assert "old table" not in text and text.endswith("rest\n")
    assert "### mnist" in text and "| m2 |" in text and "Paired" not in text.split("(")[0]
    assert "![accuracy against labels](results/accuracy_vs_labels.png)" in text
    assert "[results/summary.md](results/summary.md)" in text


def test_a_run_made_under_older_defaults_is_not_filed_under_todays() -> None:
    """Its `settings` tag said "defaults" when it ran; the defaults have moved since (m2's
    val_fraction, m1-m2's sample_features), so its row must say how it differs."""
    import methods

    def run(method: str, seed: int, **changed: str) -> dict:
        params = {k: str(v) for k, v in methods.get(method).defaults.items()}
        params.update(changed)
        params = {k: v for k, v in params.items() if v != "<absent>"}
        return archive_row(method, seed, 80.0, params=params)

    table, variants, _ = tables(
        pd.DataFrame(
            [run("m2", 0), run("m2", 1, val_fraction="0.5"), run("m2", 2, alpha="<absent>")]
            + [run("m1-m2", 0, sample_features="<absent>", decoder_variance="<absent>")]
            + runs({"pixel-svm": BASE[:2]})
        )
    )
    assert set(table["method"]) == {"m2", "pixel-svm"}
    assert set(variants["method"]) == {
        "m2 [val_fraction=0.5]",
        "m2 [alpha not logged]",
        # m1-m2 trained on means with a shared decoder sigma before these parameters existed
        "m1-m2 [decoder_variance=shared, sample_features=False]",
    }


def test_the_winner_of_a_budget_is_named_with_its_paired_margin() -> None:
    from benchmark.reports.tables import winners

    better = [b + 2.0 + e for b, e in zip(BASE, [0.1, -0.1, 0.2, 0.0, -0.2])]
    rows = pd.DataFrame(runs({"pixel-svm": BASE, "vae-rbf-svm": better, "m2": [99.0]}))
    (line,) = winners(rows)
    assert line.startswith("mnist, 100 labels: `vae-rbf-svm` wins with 73.0 % on the 5 seeds")
    assert "+2.0 points over `pixel-svm`" in line and "5/0/0" in line  # one seed cannot win

    # a method with three seeds (the minimum) competes, on the three seeds all have
    best = [b + 5.0 for b in BASE[:3]]
    rows = pd.DataFrame(runs({"pixel-svm": BASE, "vae-rbf-svm": better, "m2": best}))
    (line,) = winners(rows)
    assert line.startswith("mnist, 100 labels: `m2` wins with")
    assert "on the 3 seeds" in line and "over `vae-rbf-svm`" in line and "3/0/0" in line


def test_the_critical_difference_diagram_is_the_same_picture_in_every_process(tmp_path) -> None:
    """scikit-posthocs iterates over sets of the labels; with method names, their order (and
    the drawing) followed each process's string hashing, so every report rewrote the PNG."""
    import os
    import subprocess
    import sys

    script = (
        "import sys, numpy as np, pandas as pd\n"
        "from benchmark.reports import plots, stats\n"
        "names = ['pixel-svm', 'vae-rbf-svm', 'vae-gmm', 'm2', 'vae-poisson', 'ladder']\n"
        "rng = np.random.default_rng(0)\n"
        "p = pd.DataFrame(rng.uniform(0, 0.2, (6, 6)), index=names, columns=names)\n"
        "rank = stats.Ranking(pd.Series(np.linspace(2, 4, 6), index=names), 8, 1, 0.01,"
        " (p + p.T) / 2, '')\n"
        "plots.critical_difference(rank, __import__('pathlib').Path(sys.argv[1]))\n"
    )
    pictures = []
    for seed in ("1", "2", "3"):
        path = tmp_path / f"cd-{seed}.png"
        env = {**os.environ, "PYTHONHASHSEED": seed, "MPLBACKEND": "Agg"}
        subprocess.run([sys.executable, "-c", script, str(path)], env=env, check=True)
        pictures.append(path.read_bytes())
    assert pictures[0] == pictures[1] == pictures[2]
