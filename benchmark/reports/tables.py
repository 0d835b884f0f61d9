"""Tables and plots from the run archive: the defaults table that answers the question, the
variants beside it, intervals and paired comparisons (pure pandas; files in one folder).

summary.csv / summary.md hold each method with today's defaults only, one row per method,
dataset and budget, with its paired difference to the baseline and to its supervised-only
reference; every other setting (or an older version of a method) goes to variants.csv /
variants.md under a short label.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

import methods
from benchmark import provenance
from benchmark.errors import UsageError
from benchmark.reports import plots, stats
from benchmark.reports.markdown import (
    BOLD_MIN_SEEDS,
    DEFAULT_BASELINE,
    PLOTS,
    baseline_row,
    markdown,
    variants_markdown,
)
from benchmark.study.grid import settings_label

IDENTITY = ["method", "dataset", "n_labels", "seed", "settings"]
MAX_INLINE_KEYS = 3  # a variant differing in more keys is named, with a legend


def settings_of(method: str, params: dict[str, object], param_source: str = "") -> str:
    """What a run's parameters change from the method's current defaults, including
    parameters the method has gained since the run was made: at their `former_values` (what
    the method did before them) where it declares one, else named as not logged."""
    try:
        cls = methods.get(method)
        known = {k: v for k, v in params.items() if k in cls.defaults}
        earlier = {**cls.former_values, **cls.new_params}
        former = {k: v for k, v in earlier.items() if k not in known}
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
    table = stats.cell_table(rows.assign(method=rows["row"]), baseline_row(rows, baseline))
    for column in STAT_COLUMNS:
        if column not in table:
            table[column] = float("nan")
    base = rows.drop_duplicates("row").set_index("row")["method"]
    table = table.assign(base_method=table["method"].map(base))
    table = table.assign(reference=table["base_method"].map(_reference_of))
    extra = rows.groupby(["row", "dataset", "n_labels"]).agg(
        macro_f1_mean=("macro_f1", "mean"),
        mixed_libraries=("libraries", lambda v: v.nunique() > 1),
        on_gpu=("device", lambda v: bool((v.astype(str) == "cuda").any())),
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
    text = variants_markdown(variants, variant_summary, baseline)
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


def winners(rows: pd.DataFrame, min_seeds: int = BOLD_MIN_SEEDS) -> list[str]:
    """Per dataset and budget, one sentence: the method with the best mean (today's defaults)
    among those with `min_seeds` seeds or more, ranked on the seeds they all ran (a 3-seed
    method is compared with 5-seed ones on its 3), and its paired difference to the
    runner-up on the seeds the two share."""
    defaults, _ = split_rows(rows)
    defaults = latest_per_cell(defaults)
    lines = []
    for (dataset, budget), block in defaults.groupby(["dataset", "n_labels"]):
        scores = {m: g.set_index("seed")["accuracy"] for m, g in block.groupby("method")}
        scores = {m: s for m, s in scores.items() if len(s) >= min_seeds}
        if len(scores) < 2:
            continue
        common = sorted(set.intersection(*(set(s.index) for s in scores.values())))
        if len(common) < min_seeds:
            continue
        ranked = sorted(scores, key=lambda m: scores[m][common].mean(), reverse=True)
        best, second = ranked[:2]
        p = stats.paired(scores[best], scores[second])
        interval = "" if pd.isna(p.low) else f" (95 % interval {p.low:+.1f} to {p.high:+.1f})"
        p_text = "" if pd.isna(p.p_value) else f", paired t-test p = {p.p_value:.2g}"
        lines.append(
            f"{dataset}, {int(budget)} labels: `{best}` wins with"
            f" {scores[best][common].mean():.1f} % on the {len(common)} seeds every method"
            f" compared ran, {p.diff:+.1f} points over `{second}`{interval}{p_text},"
            f" {p.wins}/{p.ties}/{p.losses} wins/ties/losses over {p.n} seeds."
        )
    return lines
