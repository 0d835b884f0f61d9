"""The markdown table on hand-made summaries: no training, no stores."""

from __future__ import annotations

import pandas as pd

from benchmark.report import markdown


def row(method: str, n_labels: int, mean: float, n_seeds: int) -> dict:
    return {
        "method": method,
        "dataset": "mnist",
        "n_labels": n_labels,
        "n_seeds": n_seeds,
        "accuracy_mean": mean,
        "accuracy_std": 0.5,
    }


def test_cells_with_fewer_seeds_are_marked_and_the_best_is_bold() -> None:
    summary = pd.DataFrame(
        [
            row("a", 100, 80.0, 5),
            row("b", 100, 90.0, 3),
            row("a", 600, 85.0, 5),
            row("c", 600, 70.0, 1),
        ]
    )
    table = markdown(summary)
    assert "## mnist (seeds per cell: 5 unless marked)" in table
    assert "| b | **90.0 ± 0.5 (3 seeds)** | – |" in table
    assert "| a | 80.0 ± 0.5 | **85.0 ± 0.5** |" in table
    assert "| c | – | 70.0 (1 seed) |" in table
