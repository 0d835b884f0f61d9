"""Aggregating FINISHED runs into mean ± std tables: pure pandas, then files in results/."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

import methods
from benchmark import plots
from benchmark.errors import UsageError
from benchmark.grid import settings_label

IDENTITY = ["method", "dataset", "n_labels", "seed", "settings"]


def settings_of(method: str, params: dict[str, str], param_source: str = "") -> str:
    """What a run's logged parameters change from the method's current defaults (for runs
    logged before the `settings` tag existed)."""
    try:
        cls = methods.get(method)
        logged = cls(**{k: v for k, v in params.items() if k in cls.defaults}).params
    except UsageError:
        return "unknown (a method or parameter that no longer exists)"
    subset = int(params.get("subset", 0) or 0)
    return settings_label(method, logged, subset, param_source.startswith("tuned"))


def with_settings(runs: pd.DataFrame) -> pd.DataFrame:
    """`settings` filled for every run, and `row` = the method, with its settings if not the
    defaults, so runs of other settings are rows of their own, never merged or replaced."""
    settings = runs["settings"] if "settings" in runs else pd.Series([None] * len(runs))
    params = runs["params"] if "params" in runs else pd.Series([{}] * len(runs))
    filled = [
        s if isinstance(s, str) and s else settings_of(m, p or {})
        for s, m, p in zip(settings, runs["method"], params)
    ]
    runs = runs.assign(settings=filled)
    label = [m if s == "defaults" else f"{m} [{s}]" for m, s in zip(runs["method"], filled)]
    return runs.assign(row=label)


def latest_per_cell(runs: pd.DataFrame) -> pd.DataFrame:
    """One run per (method, dataset, n_labels, seed, settings): the most recent one wins."""
    runs = with_settings(runs)
    return runs.sort_values("start_time").drop_duplicates(IDENTITY, keep="last")


def summarize(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean and sample std over seeds, in percent (std is 0 for a single seed); `method` is
    the row label (the method and, unless default, its settings)."""
    runs = latest_per_cell(runs).assign(
        accuracy=lambda d: 100 * d["test_accuracy"], macro_f1=lambda d: 100 * d["test_macro_f1"]
    )
    runs = runs.assign(base_method=runs["method"], method=runs["row"])
    grouped = runs.groupby(["method", "base_method", "settings", "dataset", "n_labels"])
    summary = grouped.agg(
        n_seeds=("seed", "nunique"),
        accuracy_mean=("accuracy", "mean"),
        accuracy_std=("accuracy", "std"),
        macro_f1_mean=("macro_f1", "mean"),
        macro_f1_std=("macro_f1", "std"),
    )
    return summary.fillna({"accuracy_std": 0.0, "macro_f1_std": 0.0}).reset_index()


def markdown(summary: pd.DataFrame, caption: str = "") -> str:
    """One table per dataset: methods as rows, budgets as columns, best mean in bold."""
    parts = ["# Test accuracy (%), mean ± std over seeds\n"]
    if caption:
        parts.append(caption + "\n")
    for dataset, part in summary.groupby("dataset"):
        budgets = sorted(part["n_labels"].unique())
        usual = int(part["n_seeds"].mode().max())
        parts.append(f"## {dataset} (seeds per cell: {usual} unless marked)\n")
        parts.append("| method | " + " | ".join(f"{b} labels" for b in budgets) + " |")
        parts.append("|---|" + "---|" * len(budgets))
        best = part.groupby("n_labels")["accuracy_mean"].max()
        for method, rows in part.groupby("method"):
            cells = []
            for budget in budgets:
                row = rows[rows["n_labels"] == budget]
                if row.empty:
                    cells.append("–")
                    continue
                mean, std = row["accuracy_mean"].iloc[0], row["accuracy_std"].iloc[0]
                n = int(row["n_seeds"].iloc[0])
                text = f"{mean:.1f} ± {std:.1f}" if n > 1 else f"{mean:.1f}"  # no spread of one
                if n != usual:
                    text += f" ({n} seed{'s' if n > 1 else ''})"
                cells.append(f"**{text}**" if round(mean, 1) == round(best[budget], 1) else text)
            parts.append(f"| {method} | " + " | ".join(cells) + " |")
        parts.append("")
    return "\n".join(parts)


def write_report(runs: pd.DataFrame, results_dir: Path, caption: str = "") -> pd.DataFrame:
    results_dir.mkdir(parents=True, exist_ok=True)
    summary = summarize(runs)
    summary.round(3).to_csv(results_dir / "summary.csv", index=False)
    (results_dir / "summary.md").write_text(markdown(summary, caption))
    plots.accuracy_vs_labels(summary, results_dir / "accuracy_vs_labels.png")
    return summary
