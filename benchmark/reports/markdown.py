"""The tables as Markdown: per dataset the accuracies, the paired differences to the baseline
and to each method's supervised-only reference, a ranking, the README's block, the variants."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from benchmark.errors import UsageError
from benchmark.reports import stats

DEFAULT_BASELINE = "pixel-svm"


def baseline_row(rows: pd.DataFrame, baseline: str) -> str:
    """The row the others are paired with: the baseline's defaults, or, in a table of one
    command's cells that ran it with other settings, its only row."""
    own = rows.loc[rows["method"] == baseline, "row"].unique()
    return own[0] if baseline not in own and len(own) == 1 else baseline


def _interval(low: float, high: float) -> str:
    return "" if pd.isna(low) else f" ({low:.1f}–{high:.1f})"


BOLD_MIN_SEEDS = stats.MIN_SEEDS_TO_LEAD  # fewer seeds never make a bold cell


def _accuracy_cell(row: pd.Series, usual: int) -> str:
    text = f"{row['mean']:.1f}{_interval(row['ci_low'], row['ci_high'])}"
    if row["n"] != usual:
        text += f" ({int(row['n'])} seed{'s' if row['n'] > 1 else ''})"
    if row.get("mixed_libraries") is True:
        text += " †"
    if row.get("on_gpu") is True:
        text += " ‡"
    return f"**{text}**" if row["top"] and row["n"] >= BOLD_MIN_SEEDS else text


def _difference_cell(row: pd.Series, prefix: str = "diff_vs_baseline") -> str:
    names = {
        "diff_vs_baseline": ("diff_ci_low", "diff_ci_high", "p_value"),
        "diff_vs_reference": ("ref_ci_low", "ref_ci_high", "ref_p_value"),
    }[prefix]
    if pd.isna(row[prefix]):
        return "–"
    text = f"{row[prefix]:+.1f}"
    if not pd.isna(row[names[0]]):
        text += f" ({row[names[0]]:+.1f}, {row[names[1]]:+.1f})"
    if not pd.isna(row[names[2]]):
        text += f", p={row[names[2]]:.2g}"
    if prefix == "diff_vs_baseline":
        text += f", {int(row['wins'])}/{int(row['ties'])}/{int(row['losses'])}"
    return text


def _pivot(part: pd.DataFrame, render, first: str = "method") -> list[str]:
    budgets = sorted(part["n_labels"].unique())
    lines = [f"| {first} | " + " | ".join(f"{b} labels" for b in budgets) + " |"]
    lines.append("|---|" + "---|" * len(budgets))
    for method, rows in part.groupby("method", sort=False):
        by_budget = {int(r["n_labels"]): r for _, r in rows.iterrows()}
        cells = [render(by_budget[b]) if b in by_budget else "–" for b in budgets]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return lines


def _ordered(part: pd.DataFrame) -> pd.DataFrame:
    """Each method's supervised-only reference right below it; otherwise by name."""
    names = sorted(part["method"].unique())
    references = dict(zip(part["method"], part.get("reference", pd.Series(dtype=object))))
    order: list[str] = []
    for name in names:
        if name in order:
            continue
        order.append(name)
        for other in names:
            if references.get(other) == name and other not in order:
                order.append(other)
    rank = {m: i for i, m in enumerate(order)}
    return part.sort_values(
        ["method", "n_labels"], key=lambda c: c.map(rank) if c.name == "method" else c
    )


def _dataset_section(part: pd.DataFrame, baseline: str, paired: bool = True) -> list[str]:
    part = _ordered(part)
    usual = int(part["n"].mode().max())
    lines = [f"## {part['dataset'].iloc[0]} (seeds per cell: {usual} unless marked)\n"]
    lines += _pivot(part, lambda r: _accuracy_cell(r, usual))
    if not paired:
        return lines + [""]
    others = part[part["method"] != baseline]
    if (part["method"] == baseline).any() and others["diff_vs_baseline"].notna().any():
        lines.append(
            f"\nPaired difference to `{baseline}` in points: mean (95 % interval), p-value,"
            " wins/ties/losses over seeds\n"
        )
        lines += _pivot(others, _difference_cell)
    with_ref = part[part["diff_vs_reference"].notna()]
    if not with_ref.empty:
        lines.append(
            "\nPaired difference to the method's supervised-only reference (what the unlabeled"
            " images bought), in points: mean (95 % interval), p-value\n"
        )
        labelled_ = with_ref.assign(method=with_ref["method"] + " − " + with_ref["reference"])
        lines += _pivot(labelled_, lambda r: _difference_cell(r, "diff_vs_reference"))
    return lines + [""]


def markdown(
    summary: pd.DataFrame,
    caption: str = "",
    baseline: str = DEFAULT_BASELINE,
    rank: stats.Ranking | None = None,
    title: str = "Test accuracy (%): mean and 95 % interval over seeds",
) -> str:
    """Per dataset: accuracy with 95 % intervals (bold: the best and every method a paired test
    cannot tell from it, on 3 seeds or more), then paired differences; a ranking at the end."""
    parts = [f"# {title}\n"]
    if caption:
        parts.append(caption + "\n")
    baseline = baseline_row(
        summary.rename(columns={"method": "row", "base_method": "method"}), baseline
    )
    for _, part in summary.groupby("dataset"):
        parts += _dataset_section(part, baseline)
    parts.append(FOOTNOTE.format(baseline=baseline))
    parts += marks_notes(summary)
    if rank is not None:
        parts.append(ranking_markdown(rank))
    return "\n".join(parts)


FOOTNOTE = (
    "Intervals are Student-t 95 % intervals over seeds (n per cell as marked; so few seeds give"
    " wide intervals and little power). Differences are paired by seed (every method gets the same"
    " labeled images for a seed): paired t-test, chosen because with 5 pairs the Wilcoxon"
    " signed-rank test cannot go below p = 0.0625. Bold: the best mean and every method whose"
    " paired difference to it is not significant at 0.05, on 3 seeds or more. The baseline is"
    " `{baseline}` (`report --baseline`)."
)
MIXED_NOTE = (
    "\n†: the seeds of this cell ran with different library versions (the `libraries` column"
    " of the run archive says which)."
)
GPU_NOTE = (
    "\n‡: some seeds of this cell ran on a CUDA GPU: another device's arithmetic, and the"
    " libraries that machine had (the `device` and `libraries` columns of the run archive)."
)


def marks_notes(summary: pd.DataFrame) -> list[str]:
    """The notes of the marks (†, ‡) that some cell of the table carries."""
    notes = (("mixed_libraries", MIXED_NOTE), ("on_gpu", GPU_NOTE))
    return [note for column, note in notes if summary.get(column, pd.Series(dtype=bool)).any()]


def ranking_markdown(rank: stats.Ranking) -> str:
    lines = ["\n## Ranking over the (dataset, budget) blocks\n"]
    lines.append("| method | average rank (1 = best) |")
    lines.append("|---|---|")
    lines += [f"| {m} | {r:.2f} |" for m, r in rank.ranks.items()]
    if not pd.isna(rank.p_value):
        lines.append(
            f"\nFriedman test over {rank.blocks} blocks: chi² = {rank.statistic:.2f},"
            f" p = {rank.p_value:.2g}. Nemenyi's pairwise test decides the bars of"
            " `critical_difference.png`."
        )
    lines.append(f"\n{rank.caveat}")
    return "\n".join(lines)


README_START, README_END = "<!-- results:start -->", "<!-- results:end -->"
PLOTS = ("accuracy_vs_labels", "differences_vs_baseline", "critical_difference")


def readme_block(
    summary: pd.DataFrame, rel: str, baseline: str = DEFAULT_BASELINE, variants: bool = False
) -> str:
    """The README's results: the defaults' accuracy tables and the headline plot; the paired
    differences and the ranking stay in summary.md, which the block links to."""
    lines = []
    for _, part in summary.groupby("dataset"):
        lines += _dataset_section(part, baseline, paired=False)
    lines.append(
        f"Mean and Student-t 95 % interval over seeds; bold: not significantly below the best"
        f" (paired t-test, 3 seeds or more). Paired differences to `{baseline}` and to each"
        f" method's supervised-only reference, p-values and the ranking:"
        f" [{rel}/summary.md]({rel}/summary.md)"
        + (f"; other settings: [{rel}/variants.md]({rel}/variants.md)" if variants else "")
        + ".\n"
    )
    lines += [note.lstrip("\n") + "\n" for note in marks_notes(summary)]
    lines.append(f"![accuracy against labels]({rel}/accuracy_vs_labels.png)")
    return "\n".join(lines).replace("\n## ", "\n### ").replace("## ", "### ", 1)


def update_readme(readme: Path, results_dir: Path) -> None:
    """Replace the README's results block with the defaults' tables (from summary.csv) and the
    headline plot, so the README shows exactly what the tables say."""
    if not readme.is_file():
        raise UsageError(f"--readme {readme}: no such file.")
    text = readme.read_text()
    if README_START not in text or README_END not in text:
        raise UsageError(f"--readme {readme}: it has no {README_START} ... {README_END} block.")
    rel = Path(os.path.relpath(results_dir, readme.parent)).as_posix()
    try:
        summary = pd.read_csv(results_dir / "summary.csv")
    except (FileNotFoundError, pd.errors.EmptyDataError):
        summary = pd.DataFrame()
    variants = (results_dir / "variants.md").exists()
    body = readme_block(summary, rel, variants=variants) if not summary.empty else "No runs yet."
    head, rest = text.split(README_START, 1)
    tail = rest.split(README_END, 1)[1]
    readme.write_text(f"{head}{README_START}\n{body}\n{README_END}{tail}")


def legend(variants: pd.DataFrame) -> dict[str, str]:
    """Named variant -> its full settings."""
    pairs = variants.drop_duplicates("row")[["row", "settings"]].sort_values("row")
    return {r: s for r, s in zip(pairs["row"], pairs["settings"]) if "(variant" in r}


def variants_markdown(variants: pd.DataFrame, summary: pd.DataFrame, baseline: str) -> str:
    title = "Variants and diagnostics: test accuracy (%), mean and 95 % interval over seeds"
    caption = (
        "Runs with settings other than today's defaults, or made by an older version of a"
        f" method; the paired difference is to `{baseline}` with its defaults."
    )
    text = markdown(summary, caption, baseline, None, title)
    names = legend(variants)
    if names:
        text += "\n\n## Named variants\n\n| variant | settings |\n|---|---|\n"
        text += "\n".join(f"| {name} | {settings} |" for name, settings in names.items())
    return text + "\n"
