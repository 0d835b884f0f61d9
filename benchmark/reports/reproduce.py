"""Our results beside the published numbers: `results/reproduction.md` and `reproduce`.

`report` writes results/reproduction.md from the run archive (every published row against
today's defaults, every archived seed), so the committed table is rebuilt with the others and
never goes stale. The `reproduce` command builds the cells some published rows need (method ×
dataset × budget × seed, default parameters) and hands them to the same launcher as `run`, so
finished cells are reused; it prints the comparison of exactly those cells' runs.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import pandas as pd

import methods
from benchmark import options
from benchmark.data import datasets
from benchmark.reports import published, stats
from benchmark.reports import tables as report_mod
from benchmark.reports.markdown import BOLD_MIN_SEEDS
from benchmark.study import grid
from benchmark.study.launcher import exit_code, launch_tracked
from benchmark.study.tables import known_rows

REPRODUCTION = "reproduction.md"


def compared_methods() -> list[str]:
    """Every method some published row is compared with, registered or not."""
    return sorted({row.ours for row in published.ROWS})


def build_cells(args: argparse.Namespace, rows: list[published.PublishedRow]) -> list[grid.Cell]:
    """The cells of the rows whose method is registered, in the order `run` would list them."""
    registered = set(methods.available())
    pairs = sorted({(r.dataset, r.ours) for r in rows if r.ours in registered})
    labels = options.parse_ints(args.labels, "labels")
    seeds = options.parse_ints(args.seeds, "seeds")
    overrides = {"vae_epochs": args.epochs, "epochs": args.epochs}
    results_dir = Path(args.results_dir)
    cells: list[grid.Cell] = []
    for dataset, method in pairs:
        cells += grid.build_grid(
            [method], [dataset], labels, seeds, overrides, "defaults", results_dir, args.subset
        )
    return cells


def run_cells(
    args: argparse.Namespace, cells: list[grid.Cell]
) -> tuple[list[str], list[grid.Cell]]:
    """Launch the cells exactly as `run` does: this invocation's failures, and the cells as
    checked (bound to their data's fingerprint, so their keys find their runs)."""
    names = ("methods", "datasets", "labels", "seeds", "epochs", "subset")
    return launch_tracked(args, cells, "reproduce", {n: getattr(args, n) for n in names})


def our_summary(args: argparse.Namespace, cells: list[grid.Cell]) -> pd.DataFrame:
    """Mean and interval over seeds of exactly these cells' runs (store and run archives)."""
    rows = known_rows(Path(args.results_dir), args.tracking_uri, args.experiment)
    wanted = {(c.key, c.code) for c in cells}
    rows = rows[[(k, v) in wanted for k, v in zip(rows["cell_key"], rows["code_version"])]]
    if rows.empty:
        return pd.DataFrame()
    rows = report_mod.labelled(rows)
    return report_mod.summarize(rows.assign(row=rows["method"]))


def settings_note(args: argparse.Namespace) -> str:
    parts = [f"seeds {args.seeds}", "default parameters"]
    if args.epochs:
        parts.append(f"--epochs {args.epochs}")
    if args.subset:
        parts.append(f"only the first {args.subset:,} training and test images")
    return ", ".join(parts)


Ours = tuple[float, float, float, int]  # mean %, 95 % interval low and high, number of seeds


def _ours(summary: pd.DataFrame, method: str, dataset: str) -> dict[int, Ours]:
    if summary.empty:
        return {}
    methods_ = summary["base_method"] if "base_method" in summary else summary["method"]
    part = summary[(methods_ == method) & (summary["dataset"] == dataset)]
    return {
        int(r.n_labels): (float(r.mean), float(r.ci_low), float(r.ci_high), int(r.n))
        for r in part.itertuples()
    }


def _reason(row: published.PublishedRow, n: int, diff: float, ours: Ours) -> str:
    """Where the published figure lies against our 95 % interval (benchmark.reports.stats)."""
    _, low, high, n_seeds = ours
    if n_seeds < 2:
        return f"only {n_seeds} seed ran, so there is no interval to judge the gap by"
    spread = f" (published ± {row.std[n]})" if n in row.std else ""
    where = stats.published_verdict(row.accuracy[n], low, high)
    if where == "consistent":
        return f"consistent: the published figure{spread} lies in our 95 % interval"
    return f"{where}: the published figure{spread} lies outside our 95 % interval"


def _budgets(items: list[tuple[int, float]]) -> str:
    return ", ".join(f"{n} ({d:+.1f})" for n, d in items) + " labels"


def _best(summary: pd.DataFrame, dataset: str) -> dict[int, tuple[str, float]]:
    """Our best method and its mean accuracy per budget on a dataset, among the rows with
    enough seeds to bold a cell: one lucky seed does not "beat" a published figure."""
    if summary.empty:
        return {}
    part = summary[(summary["dataset"] == dataset) & (summary["n"] >= BOLD_MIN_SEEDS)]
    top = part.loc[part.groupby("n_labels")["mean"].idxmax()]
    return {int(r.n_labels): (r.method, float(r.mean)) for r in top.itertuples()}


def _others(row: published.PublishedRow, below: list, best: dict) -> list[str]:
    """Where another method of ours does beat the published figure that this one misses."""
    wins: dict[str, list[str]] = {}
    for n, _ in below:
        if n in best and best[n][0] != row.ours and best[n][1] > row.accuracy[n]:
            wins.setdefault(best[n][0], []).append(f"{n} ({best[n][1]:.1f})")
    return [f"our `{m}` beats it at {', '.join(at)} labels" for m, at in wins.items()]


def verdict(
    row: published.PublishedRow,
    ours: dict[int, Ours],
    registered: set[str],
    caveats: list[str],
    best: dict[int, tuple[str, float]] | None = None,
) -> str:
    """One generated sentence per published row: where ours is above or below, and why."""
    if row.ours not in registered:
        return f"`{row.ours}` is not in the method registry yet, so there is nothing to compare."
    if row.kind == "reference":
        if not ours:
            return f"no FINISHED `{row.ours}` runs yet."
        n = max(ours)
        gap = ours[n][0] - row.accuracy[published.ALL_LABELS]
        side = "below" if gap < 0 else "above"
        return f"upper reference (all labels): ours with {n} labels is {abs(gap):.1f} points {side} it."
    pairs = [(n, ours[n][0] - acc) for n, acc in sorted(row.accuracy.items()) if n in ours]
    if not pairs:
        return f"no FINISHED `{row.ours}` runs at the published budgets yet."
    above = [(n, d) for n, d in pairs if d >= 0]
    below = [(n, d) for n, d in pairs if d < 0]
    if not below:
        return f"ours is above it at every compared budget: {_budgets(above)}."
    reasons: dict[str, list[int]] = {}
    for n, d in below:
        reasons.setdefault(_reason(row, n, d, ours[n]), []).append(n)
    why = [f"{text} (at {', '.join(map(str, ns))})" for text, ns in reasons.items()] + caveats
    why += _others(row, below, best or {})
    if row.single_run:
        why.append("the published figure is a single run")
    text = f"ours is below it at {_budgets(below)}"
    text += f" and above at {_budgets(above)}" if above else ""
    return f"{text}. Against our 95 % interval: {'; '.join(why)}."


def _cell(
    value: float | None,
    low: float | None = None,
    high: float | None = None,
    seeds: int | None = None,
) -> str:
    if value is None:
        return "–"
    if low is None:
        return f"{value:.2f}"
    text = f"{value:.1f}" + ("" if math.isnan(low) else f" ({low:.1f}–{high:.1f})")
    return text + (f" ({seeds} seed{'s' * (seeds != 1)})" if seeds is not None else "")


def _table_rows(row: published.PublishedRow, ours: dict[int, Ours]) -> list[str]:
    if row.kind == "reference":
        n = max(ours) if ours else None
        mine = _cell(*ours[n]) if n else "–"
        diff = f"{ours[n][0] - row.accuracy[published.ALL_LABELS]:+.1f}" if n else "–"
        return [
            f"| {row.name} | {row.ours} | {published.ALL_LABELS} (ours: {n or '–'}) | {row.accuracy[published.ALL_LABELS]:.2f} | {mine} | {diff} |"
        ]
    lines = []
    for n in sorted(set(row.accuracy) | set(ours)):
        pub = row.accuracy.get(n)
        text = "–" if pub is None else _cell(pub) + (f" ± {row.std[n]}" if n in row.std else "")
        mine = _cell(*ours[n]) if n in ours else "–"
        diff = f"{ours[n][0] - pub:+.1f}" if n in ours and pub is not None else "–"
        lines.append(f"| {row.name} | {row.ours} | {n} | {text} | {mine} | {diff} |")
    return lines


def render(
    rows: list[published.PublishedRow],
    summary: pd.DataFrame,
    registered: set[str],
    settings: str,
    caveats: dict[str, list[str]],
) -> str:
    """results/reproduction.md: one table per dataset, then one sentence per published row."""
    parts = [
        "# Reproduction: our results beside the published numbers\n",
        f"Test accuracy in %. Ours: mean and Student-t 95 % interval over seeds ({settings})."
        " Difference = ours − published, in points; a published figure inside our interval is"
        " 'consistent', else ours is 'below' or 'above' it. Kingma et al. report test error"
        " (mean ± std over label draws); it is shown as 100 − error.\n",
    ]
    for dataset in dict.fromkeys(r.dataset for r in rows):
        parts += [
            f"## {dataset}\n",
            "| published | ours | labels | published % | ours % | difference |",
        ]
        parts.append("|---|---|---|---|---|---|")
        mine = [r for r in rows if r.dataset == dataset]
        for row in mine:
            parts += _table_rows(row, _ours(summary, row.ours, dataset))
        parts.append("")
        best = _best(summary, dataset)
        for row in mine:
            found = _ours(summary, row.ours, dataset)
            parts.append(
                f"- **{row.name}** vs `{row.ours}` ({row.kind}): "
                f"{verdict(row, found, registered, caveats.get(row.ours, []), best)}"
                + (f" {row.note}" if row.note else "")
                + f" Source: {row.source}."
            )
        parts.append("")
    return "\n".join(parts)


def caveats_for(args: argparse.Namespace, method: str) -> list[str]:
    """Settings of this invocation that make a method weaker than its default configuration."""
    found = []
    defaults = methods.get(method).defaults
    default_epochs = defaults.get("vae_epochs", defaults.get("epochs"))
    if args.epochs and default_epochs and args.epochs < int(default_epochs):
        found.append(
            f"these cells trained {args.epochs} epoch(s), not the default {default_epochs}"
        )
    if args.subset:
        found.append(f"only the first {args.subset:,} images were used (--subset)")
    return found


ARCHIVE_SETTINGS = "today's defaults, every seed in the run archive"


def write_from_archive(summary: pd.DataFrame, results_dir: Path) -> Path:
    """results/reproduction.md: every published row against the archive's defaults summary."""
    path = results_dir / REPRODUCTION
    text = render(published.rows(), summary, set(methods.available()), ARCHIVE_SETTINGS, {})
    path.write_text(text)
    return path


def cmd_reproduce(args: argparse.Namespace) -> int:
    names = options.parse_list(args.methods, compared_methods(), "method")
    dataset_names = options.parse_list(
        args.datasets, list(datasets.DATASETS), "dataset", datasets.DEFAULT_DATASETS
    )
    rows = published.rows(dataset_names, names)
    registered = set(methods.available())
    cells = build_cells(args, rows)
    failures, cells = run_cells(args, cells) if cells else ([], cells)
    if args.dry_run:  # the plan is printed; the committed table stays as it is
        return 0
    text = render(
        rows,
        our_summary(args, cells),
        registered,
        settings_note(args),
        {m: caveats_for(args, m) for m in {r.ours for r in rows} & registered},
    )
    print(text)
    print(
        f"`python -m benchmark report` merges these runs into the archive and rewrites"
        f" {Path(args.results_dir) / REPRODUCTION} with every published row."
    )
    return exit_code(failures)
