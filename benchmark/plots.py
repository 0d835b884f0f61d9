"""Figures: a confusion matrix per cell and accuracy against labels per dataset."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import matplotlib.ticker
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


def _log_budget_axis(ax, budgets) -> None:
    ax.set_xscale("log")
    ax.set_xticks(sorted(budgets))
    ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())  # no stray minor labels


def accuracy_vs_labels(summary: pd.DataFrame, path: Path) -> Path:
    """One panel per dataset, one line per method with its 95 % t interval as a band; methods
    are nudged sideways so markers at a budget do not hide each other; single-seed points are
    hollow (no interval)."""
    names = sorted(summary["dataset"].unique())
    fig, axes = plt.subplots(1, len(names), figsize=(7 * len(names), 5), squeeze=False)
    rows_all = sorted(summary["method"].unique())
    for ax, dataset in zip(axes[0], names):
        part = summary[summary["dataset"] == dataset]
        for method, rows in part.groupby("method"):
            rows = rows.sort_values("n_labels")
            colour, marker = method_style(method)
            nudge = 1 + 0.025 * (rows_all.index(method) - len(rows_all) / 2)
            x = rows["n_labels"].to_numpy() * nudge
            n = rows["n"].to_numpy()
            ax.plot(x, rows["mean"], color=colour, lw=1.4, label=f"{method}")
            ax.fill_between(x, rows["ci_low"], rows["ci_high"], color=colour, alpha=0.12, lw=0)
            single = n < 2
            ax.scatter(x[~single], rows["mean"][~single], color=colour, marker=marker, s=28)
            ax.scatter(
                x[single],
                rows["mean"][single],
                facecolors="none",
                edgecolors=colour,
                marker=marker,
                s=40,
            )
        _log_budget_axis(ax, part["n_labels"].unique())
        ax.set(xlabel="labeled images", ylabel="test accuracy (%)", title=dataset)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    return _finish(
        fig, path, "Mean over seeds; bands: 95 % t interval; hollow markers: one seed (no interval)"
    )


def _finish(fig, path: Path, title: str) -> Path:
    """Every study plot says what its marks are, in the same place."""
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def forest(summary: pd.DataFrame, baseline: str, path: Path) -> Path | None:
    """Paired difference to the baseline with its 95 % interval, one panel per (dataset,
    budget): which method wins, by how much, how sure."""
    part = summary.dropna(subset=["diff_vs_baseline"])
    if part.empty:
        path.unlink(missing_ok=True)
        return None
    blocks = sorted({(d, int(b)) for d, b in zip(part["dataset"], part["n_labels"])})
    cols = min(4, len(blocks))
    n_rows = -(-len(blocks) // cols)
    methods_ = sorted(part["method"].unique())
    fig, axes = plt.subplots(
        n_rows,
        cols,
        figsize=(max(7.0, 3.6 * cols), 0.35 * len(methods_) * n_rows + 1.8),
        squeeze=False,
    )
    for ax, (dataset, budget) in zip(axes.flat, blocks):
        rows = part[(part["dataset"] == dataset) & (part["n_labels"] == budget)]
        for y, method in enumerate(methods_):
            row = rows[rows["method"] == method]
            if row.empty:
                continue
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
        ax.axvline(0, color="grey", lw=0.8)
        ax.set_yticks(range(len(methods_)))
        ax.set_yticklabels(methods_ if ax in axes[:, 0] else [], fontsize=7)
        ax.set_title(f"{dataset}, {budget} labels", fontsize=8)
        ax.tick_params(axis="x", labelsize=7)
        ax.grid(axis="x", alpha=0.3)
    for ax in list(axes.flat)[len(blocks) :]:
        ax.axis("off")
    return _finish(
        fig,
        path,
        f"Accuracy minus {baseline}'s (points), paired by seed; bars: 95 % t interval;"
        " hollow: one seed",
    )


def critical_difference(rank, path: Path) -> Path:
    """Demšar's critical-difference diagram (scikit-posthocs): average ranks, with bars joining
    the methods Nemenyi's test cannot tell apart."""
    import scikit_posthocs as sp

    fig, ax = plt.subplots(figsize=(8, 0.4 * len(rank.ranks) + 1.5))
    colours = {m: method_style(m)[0] for m in rank.ranks.index}
    sp.critical_difference_diagram(
        rank.ranks,
        rank.nemenyi,
        ax=ax,
        color_palette=colours,
        label_fmt_left="{label} ({rank:.2f})  ",
        label_fmt_right="  ({rank:.2f}) {label}",
    )
    ax.set_title(f"Average rank over {rank.blocks} (dataset, budget) blocks", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
