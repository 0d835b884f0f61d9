"""Figures: a confusion matrix per cell and accuracy against labels per dataset."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: workers and CI have no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402


def confusion_png(matrix: np.ndarray, path: Path, title: str) -> Path:
    fig, ax = plt.subplots(figsize=(5, 4.5))
    image = ax.imshow(matrix, cmap="Blues")
    ax.set(xlabel="predicted", ylabel="true", title=title)
    ax.set_xticks(range(len(matrix)))
    ax.set_yticks(range(len(matrix)))
    ax.title.set_fontsize(8)
    fig.colorbar(image, ax=ax)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def accuracy_vs_labels(summary: pd.DataFrame, path: Path) -> Path:
    """One panel per dataset, one line per method, error bars = std over seeds."""
    names = sorted(summary["dataset"].unique())
    # One colour and marker per method in every panel, so a method is found at a glance.
    methods = sorted(summary["method"].unique())
    colours = plt.get_cmap("tab10" if len(methods) <= 10 else "tab20").colors
    style = {m: (colours[i % len(colours)], "osD^v<>p*h"[i % 10]) for i, m in enumerate(methods)}
    fig, axes = plt.subplots(1, len(names), figsize=(6 * len(names), 4.5), squeeze=False)
    for ax, dataset in zip(axes[0], names):
        part = summary[summary["dataset"] == dataset]
        for method, rows in part.groupby("method"):
            rows = rows.sort_values("n_labels")
            colour, marker = style[method]
            ax.errorbar(
                rows["n_labels"],
                rows["accuracy_mean"],
                yerr=rows["accuracy_std"],
                marker=marker,
                color=colour,
                capsize=3,
                label=method,
            )
        ax.set(xscale="log", xlabel="labeled images", ylabel="test accuracy (%)", title=dataset)
        ax.set_xticks(sorted(part["n_labels"].unique()))
        ax.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
