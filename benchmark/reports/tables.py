"""Tables and plots from the run archive: the defaults table that answers the question, the
variants beside it, intervals and paired comparisons (pure pandas; files in one folder).

summary.csv / summary.md hold each method with today's defaults only, one row per method,
dataset and budget, with its paired difference to the baseline and to its supervised-only
reference; every other setting (or an older version of a method) goes to variants.csv /
variants.md under a short label.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd

import methods
from benchmark import provenance
from benchmark.errors import UsageError
from benchmark.reports import plots, stats
from benchmark.study.grid import settings_label

DEFAULT_BASELINE = "pixel-svm"
IDENTITY = ["method", "dataset", "n_labels", "seed", "settings"]
MAX_INLINE_KEYS = 3  # a variant differing in more keys is named, with a legend


def settings_of(method: str, params: dict[str, object], param_source: str = "") -> str:
    """What a run's parameters change from the method's current defaults, including
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


def _version_note(method: str, code_version: str) -> str:
    """'' for a run of today's version, else which version made it."""
    try:
        current = provenance.cell_version(methods.get(method))
    except UsageError:
        return ""
    return "" if code_version == current else f"made by {code_version or 'an unversioned run'}"


def labelled(rows: pd.DataFrame) -> pd.DataFrame:
    """Archive rows with `settings` (what differs from today's defaults and version) and
    `current` (True for today's defaults made by today's version)."""
    settings = []
    for row in rows.itertuples():
        params = {**json.loads(row.params), "subset": row.subset}
        text = settings_of(row.method, params, row.param_source)
        note = _version_note(row.method, row.code_version)
        if note:
            text = note if text == "defaults" else f"{text}, {note}"
        settings.append(text)
    return rows.assign(settings=settings, current=[s == "defaults" for s in settings])


def latest_per_cell(rows: pd.DataFrame) -> pd.DataFrame:
    """One run per (method, dataset, n_labels, seed, settings): the most recent one wins."""
    rows = rows.sort_values(["start_time", "run_id"], kind="stable")
    return rows.drop_duplicates(IDENTITY, keep="last")


def _reference_of(method: str) -> str | None:
    try:
        return methods.get(method).reference
    except UsageError:
        return None


def summarize(rows: pd.DataFrame, baseline: str = DEFAULT_BASELINE) -> pd.DataFrame:
    """One row per (row label, dataset, budget): n, mean, std, 95 % t interval over seeds, the
    paired difference to `baseline` and to the method's supervised-only reference, in %.
    `rows` are labelled archive rows of one table; `row` names a table row."""
    rows = latest_per_cell(rows)
    table = stats.cell_table(rows.assign(method=rows["row"]), _baseline_row(rows, baseline))
    for column in STAT_COLUMNS:
        if column not in table:
            table[column] = float("nan")
    base = rows.drop_duplicates("row").set_index("row")["method"]
    table = table.assign(base_method=table["method"].map(base))
    table = table.assign(reference=table["base_method"].map(_reference_of))
    extra = rows.groupby(["row", "dataset", "n_labels"]).agg(
        macro_f1_mean=("macro_f1", "mean"),
        mixed_libraries=("libraries", lambda v: v.nunique() > 1),
        seconds_mean=("wall_seconds", "mean"),
    )
    table = table.join(extra, on=["method", "dataset", "n_labels"])
    table = _with_reference(table, rows.assign(method=rows["row"]))
    front = ["method", "base_method", "dataset", "n_labels"]
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
REFERENCE_COLUMNS = ("diff_vs_reference", "ref_ci_low", "ref_ci_high", "ref_p_value")


def _baseline_row(rows: pd.DataFrame, baseline: str) -> str:
    """The row the others are paired with: the baseline's defaults, or, in a table of one
    command's cells that ran it with other settings, its only row."""
    own = rows.loc[rows["method"] == baseline, "row"].unique()
    return own[0] if baseline not in own and len(own) == 1 else baseline


def _with_reference(table: pd.DataFrame, rows: pd.DataFrame) -> pd.DataFrame:
    """The paired difference of each row to its reference's row at the same dataset and budget."""
    scores = {k: g.set_index("seed")["accuracy"] for k, g in rows.groupby(IDENTITY[:3])}
    found = {c: [] for c in REFERENCE_COLUMNS}
    for row in table.itertuples():
        ref = scores.get((row.reference, row.dataset, row.n_labels)) if row.reference else None
        own = scores[(row.method, row.dataset, row.n_labels)]
        p = stats.paired(own, ref) if ref is not None else None
        values = (p.diff, p.low, p.high, p.p_value) if p and p.n else (float("nan"),) * 4
        for column, value in zip(REFERENCE_COLUMNS, values):
            found[column].append(value)
    return table.assign(**found)


def split_rows(rows: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(today's defaults, everything else), each with its `row` label."""
    rows = labelled(rows)
    defaults = rows[rows["current"]]
    variants = rows[~rows["current"]]
    return defaults.assign(row=defaults["method"]), variants.assign(row=_variant_labels(variants))


def _variant_labels(variants: pd.DataFrame) -> list[str]:
    """'method [k=v, k=v]' for a few keys, else 'method (variant N)', numbered per method in
    order of their settings, so the same archive always gives the same names."""
    names: dict[tuple[str, str], str] = {}
    for method, group in variants.groupby("method"):
        for i, text in enumerate(sorted(group["settings"].unique()), start=1):
            short = text.count("=") <= MAX_INLINE_KEYS and len(text) <= 60
            names[(method, text)] = f"{method} [{text}]" if short else f"{method} (variant {i})"
    return [names[(m, s)] for m, s in zip(variants["method"], variants["settings"])]


def legend(variants: pd.DataFrame) -> dict[str, str]:
    """Named variant -> its full settings."""
    pairs = variants.drop_duplicates("row")[["row", "settings"]].sort_values("row")
    return {r: s for r, s in zip(pairs["row"], pairs["settings"]) if "(variant" in r}


def _interval(low: float, high: float) -> str:
    return "" if pd.isna(low) else f" ({low:.1f}–{high:.1f})"


BOLD_MIN_SEEDS = 3  # fewer seeds never make a bold cell


def _accuracy_cell(row: pd.Series, usual: int) -> str:
    text = f"{row['mean']:.1f}{_interval(row['ci_low'], row['ci_high'])}"
    if row["n"] != usual:
        text += f" ({int(row['n'])} seed{'s' if row['n'] > 1 else ''})"
    if row.get("mixed_libraries") is True:
        text += " †"
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
    order: list[str] = []
    for name in names:
        if name in order:
            continue
        order.append(name)
        for other in names:
            if _reference_of(other) == name and other not in order:
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
    baseline = _baseline_row(
        summary.rename(columns={"method": "row", "base_method": "method"}), baseline
    )
    for _, part in summary.groupby("dataset"):
        parts += _dataset_section(part, baseline)
    parts.append(FOOTNOTE.format(baseline=baseline))
    if summary.get("mixed_libraries", pd.Series(dtype=bool)).any():
        parts.append(MIXED_NOTE)
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


def _variants_markdown(variants: pd.DataFrame, summary: pd.DataFrame, baseline: str) -> str:
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


def tables(
    rows: pd.DataFrame, baseline: str = DEFAULT_BASELINE, variants_apart: bool = True
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(defaults summary, variants summary, variant rows) of archive rows. Variants are paired
    with the baseline's defaults, which join their table for that and leave it after. With
    variants_apart=False (a command's own cells, whatever their settings) every row is in the
    first summary, labelled with its settings."""
    defaults, variants = split_rows(rows)
    if not variants_apart:
        defaults, variants = pd.concat([defaults, variants]), variants.iloc[:0]
    summary = summarize(defaults, baseline) if not defaults.empty else pd.DataFrame()
    if variants.empty:
        return summary, pd.DataFrame(), variants
    base = defaults[defaults["method"] == baseline]
    both = summarize(pd.concat([variants, base]), baseline)
    return summary, both[both["method"] != baseline].reset_index(drop=True), variants


def write_report(
    rows: pd.DataFrame,
    results_dir: Path,
    caption: str = "",
    baseline: str = DEFAULT_BASELINE,
    variants_apart: bool = True,
) -> pd.DataFrame:
    """summary.* and the plots from today's defaults, variants.* from the rest; the summary."""
    results_dir.mkdir(parents=True, exist_ok=True)
    summary, variant_summary, variants = tables(rows, baseline, variants_apart)
    _write_table(summary, results_dir / "summary.csv")
    rank = stats.ranking(summary) if not summary.empty else None
    if summary.empty:
        text = f"# No runs with today's defaults yet\n\n{caption}\n"
    else:
        text = markdown(summary, caption, baseline, rank) + "\n"
    (results_dir / "summary.md").write_text(text)
    _write_plots(summary, rank, results_dir, baseline)
    if variants.empty:
        for name in ("variants.csv", "variants.md"):
            (results_dir / name).unlink(missing_ok=True)
        return summary
    _write_table(variant_summary, results_dir / "variants.csv")
    text = _variants_markdown(variants, variant_summary, baseline)
    (results_dir / "variants.md").write_text(text)
    return summary


def _write_table(table: pd.DataFrame, path: Path) -> None:
    table.round(4).to_csv(path, index=False, lineterminator="\n")


def _write_plots(summary, rank, results_dir: Path, baseline: str) -> None:
    paths = {name: results_dir / f"{name}.png" for name in PLOTS}
    if summary.empty:
        for path in paths.values():
            path.unlink(missing_ok=True)
        return
    plots.accuracy_vs_labels(summary, paths["accuracy_vs_labels"])
    plots.forest(summary, baseline, paths["differences_vs_baseline"])
    if rank is not None and rank.nemenyi is not None:
        plots.critical_difference(rank, paths["critical_difference"])
    else:
        paths["critical_difference"].unlink(missing_ok=True)
