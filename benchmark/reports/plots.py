"""Figures: a confusion matrix per cell and accuracy against labels per dataset."""

from __future__ import annotations

import itertools
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd


def confusion_png(matrix: np.ndarray, path: Path, title: str, names: tuple[str, ...] = ()) -> Path:
    """Counts in every cell, class names on the axes, the diagonal's share in the title."""
    names = names or tuple(str(i) for i in range(len(matrix)))
    fig, ax = plt.subplots(figsize=(7, 6))
    image = ax.imshow(matrix, cmap="Blues")
    accuracy = np.trace(matrix) / max(1, matrix.sum())
    ax.set(xlabel="predicted", ylabel="true", title=f"{title}  (accuracy {100 * accuracy:.1f} %)")
    ax.set_xticks(range(len(matrix)), names, rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(len(matrix)), names, fontsize=7)
    ax.title.set_fontsize(8)
    high = matrix.max() / 2 if matrix.size else 0
    for (i, j), count in np.ndenumerate(matrix):
        if count:
            colour = "white" if count > high else "black"
            ax.text(j, i, str(count), ha="center", va="center", fontsize=6, color=colour)
    fig.colorbar(image, ax=ax)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def method_style(method: str) -> tuple[tuple[float, ...], str]:
    """One colour and marker per method, the same in every plot and every run: fixed by the
    method's position among the registered methods, not by which methods a table holds."""
    import methods as registry

    names = sorted(registry.available())
    base = method.split(" [")[0]
    i = names.index(base) if base in names else len(names) + sum(map(ord, base)) % 7
    colours = plt.get_cmap("tab10").colors + plt.get_cmap("Dark2").colors
    return colours[i % len(colours)], "osD^v<>p*hX"[i % 11]


def _legend_below(fig, axes, rows: list[str]) -> None:
    """One legend for every panel, under them, so no panel is squeezed or covered."""
    handles, labels = [], []
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            if label not in labels:
                handles.append(handle)
                labels.append(label)
    order = sorted(range(len(labels)), key=lambda i: rows.index(labels[i]))
    fig.legend(
        [handles[i] for i in order],
        [labels[i] for i in order],
        loc="lower center",
        ncol=min(5, len(labels)),
        fontsize=8,
        frameon=False,
    )


def accuracy_vs_labels(summary: pd.DataFrame, path: Path) -> Path:
    """One panel per dataset, the label budgets as categories on x, one line per method with
    its 95 % t interval as error bars (nudged sideways so they do not hide each other);
    hollow markers: one seed, no interval. The legend sits under the panels."""
    names = sorted(summary["dataset"].unique())
    rows = sorted(summary["method"].unique())
    fig, axes = plt.subplots(1, len(names), figsize=(5.5 * len(names), 4.6), squeeze=False)
    budgets = sorted(int(b) for b in summary["n_labels"].unique())
    position = {b: i for i, b in enumerate(budgets)}
    for ax, dataset in zip(axes[0], names):
        part = summary[summary["dataset"] == dataset]
        for method, found in part.groupby("method"):
            found = found.sort_values("n_labels")
            colour, marker = method_style(method)
            nudge = 0.3 * (rows.index(method) - (len(rows) - 1) / 2) / max(1, len(rows))
            x = np.array([position[int(b)] for b in found["n_labels"]]) + nudge
            mean = found["mean"].to_numpy()
            low = np.where(found["ci_low"].isna(), mean, found["ci_low"])
            high = np.where(found["ci_high"].isna(), mean, found["ci_high"])
            ax.errorbar(
                x,
                mean,
                yerr=[mean - low, high - mean],
                color=colour,
                lw=1.3,
                capsize=2,
                marker=None,
                label=method,
            )
            single = found["n"].to_numpy() < 2
            ax.scatter(x[~single], mean[~single], color=colour, marker=marker, s=26, zorder=3)
            ax.scatter(
                x[single],
                mean[single],
                facecolors="white",
                edgecolors=colour,
                marker=marker,
                s=34,
                zorder=3,
            )
        ax.set_xticks(range(len(budgets)), [str(b) for b in budgets])
        ax.set_xlim(-0.5, len(budgets) - 0.5)
        ax.set(xlabel="labeled images", ylabel="test accuracy (%)", title=dataset)
        ax.grid(alpha=0.3)
    _legend_below(fig, axes[0], rows)
    legend_rows = -(-len(rows) // 5)
    fig.subplots_adjust(bottom=0.13 + 0.045 * legend_rows, top=0.88, wspace=0.22)
    fig.suptitle(
        "Mean over seeds; bars: 95 % t interval; hollow markers: one seed (no interval)",
        fontsize=9,
    )
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _finish(fig, path: Path, title: str) -> Path:
    """Every study plot says what its marks are, in the same place."""
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def forest(summary: pd.DataFrame, baseline: str, path: Path) -> Path | None:
    """Paired difference to the baseline with its 95 % interval: a row of panels per dataset,
    a column per budget, a line per method: which method wins, by how much, how sure."""
    part = summary.dropna(subset=["diff_vs_baseline"])
    if part.empty:
        path.unlink(missing_ok=True)
        return None
    names = sorted(part["dataset"].unique())
    budgets = sorted(int(b) for b in part["n_labels"].unique())
    methods_ = sorted(part["method"].unique())
    fig, axes = plt.subplots(
        len(names),
        len(budgets),
        figsize=(max(7.0, 2.6 * len(budgets) + 1.8), 0.3 * len(methods_) * len(names) + 1.6),
        squeeze=False,
        sharey=True,
    )
    for (i, dataset), (j, budget) in itertools.product(enumerate(names), enumerate(budgets)):
        ax = axes[i][j]
        rows = part[(part["dataset"] == dataset) & (part["n_labels"] == budget)]
        for y, method in enumerate(methods_):
            _forest_point(ax, rows[rows["method"] == method], y, method)
        ax.axvline(0, color="grey", lw=0.8)
        ax.set_yticks(range(len(methods_)), methods_, fontsize=7)
        ax.set_ylim(len(methods_) - 0.4, -0.6)  # first method on top
        ax.tick_params(axis="x", labelsize=7)
        ax.grid(axis="x", alpha=0.3)
        if i == 0:
            ax.set_title(f"{budget} labels", fontsize=8)
        if j == 0:
            ax.set_ylabel(dataset, fontsize=8)
    return _finish(
        fig,
        path,
        f"Accuracy minus {baseline}'s (points), paired by seed; bars: 95 % t interval;"
        " hollow: one seed",
    )


def _forest_point(ax, row: pd.DataFrame, y: int, method: str) -> None:
    if row.empty:
        return
    r = row.iloc[0]
    colour, marker = method_style(method)
    low, high = r["diff_ci_low"], r["diff_ci_high"]
    if not pd.isna(low):
        ax.plot([low, high], [y, y], color=colour, lw=2)
    hollow = pd.isna(low)  # one paired seed: no interval
    ax.scatter(
        [r["diff_vs_baseline"]],
        [y],
        facecolors="none" if hollow else colour,
        edgecolors=colour,
        marker=marker,
        zorder=3,
    )


def critical_difference(rank, path: Path) -> Path:
    """Demšar's critical-difference diagram (scikit-posthocs): average ranks, with bars joining
    the methods Nemenyi's test cannot tell apart."""
    import scikit_posthocs as sp

    fig, ax = plt.subplots(figsize=(8, 0.4 * len(rank.ranks) + 1.5))
    # The diagram iterates over sets of its labels, whose order follows Python's per-process
    # string hashing: it is drawn with integer labels (hashed the same in every process),
    # then the method names are written in, so the same archive gives the same picture.
    names = list(rank.ranks.index)
    number = {name: i for i, name in enumerate(names)}
    artists = sp.critical_difference_diagram(
        rank.ranks.rename(index=number),
        rank.nemenyi.rename(index=number, columns=number),
        ax=ax,
        color_palette={number[m]: method_style(m)[0] for m in names},
        label_fmt_left="{label}",
        label_fmt_right="{label}",
    )
    for text in artists["labels"]:
        name = names[int(text.get_text())]
        value = rank.ranks[name]
        left = text.get_horizontalalignment() == "right"
        text.set_text(f"{name} ({value:.2f})  " if left else f"  ({value:.2f}) {name}")
    ax.set_title(f"Average rank over {rank.blocks} (dataset, budget) blocks", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
