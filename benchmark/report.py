"""Aggregating FINISHED runs into tables with intervals and paired comparisons, then files in
results/: summary.csv (machine-readable), summary.md, and the plots."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

import methods
from benchmark import plots, stats
from benchmark.errors import UsageError
from benchmark.grid import settings_label

IDENTITY = ["method", "dataset", "n_labels", "seed", "settings"]


def settings_of(method: str, params: dict[str, str], param_source: str = "") -> str:
    """What a run's logged parameters change from the method's current defaults, including
    parameters the method has gained since the run was made: at their `former_values` (what
    the method did before them) where it declares one, else named as not logged."""
    try:
        cls = methods.get(method)
        known = {k: v for k, v in params.items() if k in cls.defaults}
        former = {k: v for k, v in cls.former_values.items() if k not in known}
        logged = cls(**known, **former).params
    except UsageError:
        return "unknown (a method or parameter that no longer exists)"
    subset = int(params.get("subset", 0) or 0)
    label = settings_label(method, logged, subset, param_source.startswith("tuned"))
    unlogged = [f"{k} not logged" for k in sorted(cls.defaults) if k not in {**known, **former}]
    if not unlogged:
        return label
    return ", ".join(([] if label == "defaults" else [label]) + unlogged)


def _current_settings(method: str, tag: object, params: dict[str, str] | None) -> str:
    """A run's `settings` tag says what differed from the defaults of its day; defaults move
    (`m2`'s val_fraction did), so an untuned run is labelled again from its logged parameters
    and a row called "defaults" only holds runs made with today's defaults."""
    tag = tag if isinstance(tag, str) and tag else ""
    if params and "tuned" not in tag:
        return settings_of(method, params)
    return tag or settings_of(method, params or {})


def with_settings(runs: pd.DataFrame) -> pd.DataFrame:
    """`settings` filled for every run, and `row` = the method, with its settings if not the
    defaults, so runs of other settings are rows of their own, never merged or replaced."""
    settings = runs["settings"] if "settings" in runs else pd.Series([None] * len(runs))
    params = runs["params"] if "params" in runs else pd.Series([{}] * len(runs))
    filled = [
        _current_settings(m, s, p if isinstance(p, dict) else None)
        for s, m, p in zip(settings, runs["method"], params)
    ]
    runs = runs.assign(settings=filled)
    label = [m if s == "defaults" else f"{m} [{s}]" for m, s in zip(runs["method"], filled)]
    return runs.assign(row=label)


def latest_per_cell(runs: pd.DataFrame) -> pd.DataFrame:
    """One run per (method, dataset, n_labels, seed, settings): the most recent one wins."""
    runs = with_settings(runs)
    return runs.sort_values("start_time").drop_duplicates(IDENTITY, keep="last")


DEFAULT_BASELINE = "pixel-svm"


def summarize(runs: pd.DataFrame, baseline: str = DEFAULT_BASELINE) -> pd.DataFrame:
    """One row per (method and settings, dataset, budget): n, mean, std, 95 % t interval over
    seeds, and the paired difference to `baseline` (see `benchmark.stats`), in percent.
    `method` is the row label (the method and, unless default, its settings)."""
    runs = latest_per_cell(runs).assign(
        accuracy=lambda d: 100 * d["test_accuracy"], macro_f1=lambda d: 100 * d["test_macro_f1"]
    )
    runs = runs.assign(base_method=runs["method"], method=runs["row"])
    table = stats.cell_table(runs, baseline)
    labels = runs.drop_duplicates("method").set_index("method")[["base_method", "settings"]]
    f1 = runs.groupby(["method", "dataset", "n_labels"])["macro_f1"].mean().rename("macro_f1_mean")
    table = table.join(labels, on="method").join(f1, on=["method", "dataset", "n_labels"])
    for column in STAT_COLUMNS:
        if column not in table:
            table[column] = float("nan")
    front = ["method", "base_method", "settings", "dataset", "n_labels"]
    rest = [c for c in table.columns if c not in front]
    return table[front + rest].sort_values(["dataset", "method", "n_labels"], ignore_index=True)


STAT_COLUMNS = (
    "diff_vs_baseline",
    "diff_ci_low",
    "diff_ci_high",
    "p_value",
    "wins",
    "ties",
    "losses",
    "n_paired",
)


def _interval(low: float, high: float) -> str:
    return "" if pd.isna(low) else f" ({low:.1f}–{high:.1f})"


def _accuracy_cell(row: pd.Series, usual: int) -> str:
    text = f"{row['mean']:.1f}{_interval(row['ci_low'], row['ci_high'])}"
    if row["n"] != usual:
        text += f" ({int(row['n'])} seed{'s' if row['n'] > 1 else ''})"
    return f"**{text}**" if row["top"] else text


def _difference_cell(row: pd.Series) -> str:
    if pd.isna(row["diff_vs_baseline"]):
        return "–"
    text = f"{row['diff_vs_baseline']:+.1f}"
    if not pd.isna(row["diff_ci_low"]):
        text += f" ({row['diff_ci_low']:+.1f}, {row['diff_ci_high']:+.1f})"
    if not pd.isna(row["p_value"]):
        text += f", p={row['p_value']:.2g}"
    wtl = f"{int(row['wins'])}/{int(row['ties'])}/{int(row['losses'])}"
    return f"{text}, {wtl}"


def _pivot(part: pd.DataFrame, render) -> list[str]:
    budgets = sorted(part["n_labels"].unique())
    lines = ["| method | " + " | ".join(f"{b} labels" for b in budgets) + " |"]
    lines.append("|---|" + "---|" * len(budgets))
    for method, rows in part.groupby("method"):
        by_budget = {int(r["n_labels"]): r for _, r in rows.iterrows()}
        cells = [render(by_budget[b]) if b in by_budget else "–" for b in budgets]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return lines


def markdown(
    summary: pd.DataFrame,
    caption: str = "",
    baseline: str = DEFAULT_BASELINE,
    rank: stats.Ranking | None = None,
) -> str:
    """Per dataset: accuracy with 95 % intervals (bold: the best and every method a paired test
    cannot tell from it), then paired differences to the baseline; a ranking at the end."""
    parts = ["# Test accuracy (%): mean and 95 % interval over seeds\n"]
    if caption:
        parts.append(caption + "\n")
    for dataset, part in summary.groupby("dataset"):
        usual = int(part["n"].mode().max())
        parts.append(f"## {dataset} (seeds per cell: {usual} unless marked)\n")
        parts += _pivot(part, lambda r, usual=usual: _accuracy_cell(r, usual))
        others = part[part["method"] != baseline]
        if (part["method"] == baseline).any() and others["diff_vs_baseline"].notna().any():
            parts.append(
                f"\nPaired difference to `{baseline}` in points: mean (95 % interval),"
                " p-value, wins/ties/losses over seeds\n"
            )
            parts += _pivot(others, _difference_cell)
        parts.append("")
    parts.append(FOOTNOTE.format(baseline=baseline))
    if rank is not None:
        parts.append(ranking_markdown(rank))
    return "\n".join(parts)


FOOTNOTE = (
    "Intervals are Student-t 95 % intervals over seeds (n per cell as marked; so few seeds give"
    " wide intervals and little power). Differences are paired by seed (every method gets the same"
    " labeled images for a seed): paired t-test, chosen because with 5 pairs the Wilcoxon"
    " signed-rank test cannot go below p = 0.0625. Bold: the best mean and every method whose"
    " paired difference to it is not significant at 0.05 (not a rounding tie). The baseline is"
    " `{baseline}` (`report --baseline`)."
)


def ranking_markdown(rank: stats.Ranking) -> str:
    lines = ["\n## Ranking over the (dataset, budget) blocks\n"]
    lines.append("| method | average rank (1 = best) |")
    lines.append("|---|---|")
    lines += [f"| {m} | {r:.2f} |" for m, r in rank.ranks.items()]
    if not pd.isna(rank.p_value):
        lines.append(
            f"\nFriedman test over {rank.blocks} blocks: chi² = {rank.statistic:.2f},"
            f" p = {rank.p_value:.2g}. Nemenyi's pairwise test decides the bars of"
            " `results/critical_difference.png`."
        )
    lines.append(f"\n{rank.caveat}")
    return "\n".join(lines)


README_START, README_END = "<!-- results:start -->", "<!-- results:end -->"


def update_readme(readme: Path, results_dir: Path) -> None:
    """Replace the README's results block with summary.md (headings one level down) and the
    plots, so the README shows exactly what the tables say."""
    if not readme.is_file():
        raise UsageError(f"--readme {readme}: no such file.")
    text = readme.read_text()
    if README_START not in text or README_END not in text:
        raise UsageError(f"--readme {readme}: it has no {README_START} ... {README_END} block.")
    body = (results_dir / "summary.md").read_text().split("\n", 1)[1].strip()
    body = body.replace("\n## ", "\n### ")
    rel = os.path.relpath(results_dir, readme.parent)
    plots_md = "\n".join(
        f"![{name}]({rel}/{name}.png)"
        for name in ("accuracy_vs_labels", "differences_vs_baseline", "critical_difference")
        if (results_dir / f"{name}.png").exists()
    )
    head, rest = text.split(README_START, 1)
    tail = rest.split(README_END, 1)[1]
    readme.write_text(f"{head}{README_START}\n{body}\n\n{plots_md}\n{README_END}{tail}")


def write_report(
    runs: pd.DataFrame, results_dir: Path, caption: str = "", baseline: str = DEFAULT_BASELINE
) -> pd.DataFrame:
    results_dir.mkdir(parents=True, exist_ok=True)
    summary = summarize(runs, baseline)
    rank = stats.ranking(summary)
    summary.round(4).to_csv(results_dir / "summary.csv", index=False)
    (results_dir / "summary.md").write_text(markdown(summary, caption, baseline, rank))
    plots.accuracy_vs_labels(summary, results_dir / "accuracy_vs_labels.png")
    plots.forest(summary, baseline, results_dir / "differences_vs_baseline.png")
    critical = results_dir / "critical_difference.png"
    if rank is not None and rank.nemenyi is not None:
        plots.critical_difference(rank, critical)
    else:
        critical.unlink(missing_ok=True)
    return summary
