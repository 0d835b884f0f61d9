"""`report`: merge tracking stores into the run archive, then rebuild tables and plots from it.

This is the step that changes the published results: with the default RESULTS_DIR it merges
the store's FINISHED runs into results/runs.csv and rebuilds results/ and the README's block.
On a fresh clone, with no store, it rebuilds them from the committed archive alone.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from benchmark.options import DEFAULT_RESULTS_DIR, add_command, add_common, sqlite_path

README = Path("README.md")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub,
        "report",
        help="merge a store's runs into the run archive; tables and plots from the archive",
    )
    p.add_argument(
        "--results-dir",
        default=DEFAULT_RESULTS_DIR,
        help="where the archive (runs.csv), the tables and the plots are",
    )
    p.add_argument(
        "--also-from",
        action="append",
        default=[],
        metavar="URI",
        help="another MLflow tracking URI whose FINISHED runs join the archive (repeatable)",
    )
    p.add_argument(
        "--baseline",
        default="pixel-svm",
        help="the method every other is compared with, paired by seed",
    )
    p.add_argument(
        "--readme",
        metavar="PATH",
        help="replace the block between <!-- results:start --> and <!-- results:end --> in this"
        f" file (default: {README} when writing the default --results-dir)",
    )
    p.add_argument("--no-readme", action="store_true", help="leave the README alone")
    add_common(p, data=False)
    p.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    readme = args.readme
    if readme is None and not args.no_readme and args.results_dir == DEFAULT_RESULTS_DIR:
        readme = str(README) if README.is_file() else None
    return report(
        args.tracking_uri,
        args.experiment,
        Path(args.results_dir),
        args.also_from,
        args.baseline,
        None if args.no_readme else readme,
    )


def report(
    tracking_uri: str,
    experiment: str,
    results_dir: Path,
    also_from: Sequence[str] = (),
    baseline: str = "pixel-svm",
    readme: str | None = None,
) -> int:
    """Merge each store's FINISHED runs into RESULTS_DIR/runs.csv (rows of other stores stay),
    then write the tables from the whole archive."""
    from benchmark.data import preflight
    from benchmark.errors import UsageError
    from benchmark.reports import archive, costs, reproduce
    from benchmark.reports import tables as report_mod
    from benchmark.reports.markdown import update_readme
    from benchmark.study.tables import store_rows

    for uri in also_from:
        path = sqlite_path(uri)
        if path is not None and not path.is_file():
            raise UsageError(f"--also-from {uri}: no such SQLite file {path!r}; check the path.")
    results_dir = preflight.writable_dir(results_dir, "--results-dir")
    new = archive.merge(*(store_rows(uri, experiment) for uri in (tracking_uri, *also_from)))
    rows = archive.update(results_dir / archive.ARCHIVE_NAME, new)
    if rows.empty:
        print(f"No runs in {results_dir / archive.ARCHIVE_NAME} or the stores; nothing to report.")
        return 0
    stores = sorted(set(rows["store"]))
    caption = (
        f"Made by `python -m benchmark report` from the run archive `{archive.ARCHIVE_NAME}`"
        f" ({len(rows)} runs from {len(stores)} store(s)). Each method with today's defaults;"
        " other settings are in `variants.md`."
    )
    summary = report_mod.write_report(rows, results_dir, caption, baseline)
    verdicts = report_mod.winners(rows)
    (results_dir / "winners.md").write_text(
        "# Which method wins each budget\n\nToday's defaults, 3 seeds or more; the paired"
        " difference is to the runner-up on the same labeled images.\n\n"
        + "".join(f"- {line}\n" for line in verdicts)
    )
    machines = sorted(set(rows["machine"]) - {""}) or [
        "machines not recorded (runs before 2026-12-02)"
    ]
    table = costs.cost_table(rows)
    (results_dir / "costs.md").write_text(
        costs.costs_markdown(table, costs.vae_costs(rows), machines)
    )
    reproduce.write_from_archive(summary, results_dir)
    if readme:
        update_readme(Path(readme), results_dir)
    print((results_dir / "summary.md").read_text())
    print(
        f"archive: {len(rows)} runs ({len(new)} from the stores read now);"
        f" wrote {results_dir}/summary.md, summary.csv, reproduction.md and plots"
        f" ({len(summary)} rows)"
    )
    return 0
