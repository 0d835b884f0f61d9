"""`report`: tables and plots from the FINISHED runs of one or several tracking stores."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from benchmark.options import DEFAULT_RESULTS_DIR, add_command, add_common


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "report", help="write mean ± std tables and plots from FINISHED runs")
    p.add_argument("--results-dir", default=DEFAULT_RESULTS_DIR)
    p.add_argument(
        "--also-from",
        action="append",
        default=[],
        metavar="URI",
        help="another MLflow tracking URI whose FINISHED runs join the tables (repeatable)",
    )
    p.add_argument(
        "--baseline",
        default="pixel-svm",
        help="the method every other is compared with, paired by seed",
    )
    p.add_argument(
        "--readme",
        metavar="PATH",
        help="also replace the block between <!-- results:start --> and <!-- results:end -->"
        " in this file with the new tables",
    )
    add_common(p, data=False)
    p.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    return report(
        args.tracking_uri,
        args.experiment,
        Path(args.results_dir),
        args.also_from,
        args.baseline,
        args.readme,
    )


def report(
    tracking_uri: str,
    experiment: str,
    results_dir: Path,
    also_from: Sequence[str] = (),
    baseline: str = "pixel-svm",
    readme: str | None = None,
) -> int:
    """Tables from one store, or several (a colleague's, a study run apart): where two hold the
    same cell, the latest run wins, as within one store."""
    import pandas as pd  # pandas, MLflow, matplotlib: only when a report is made

    from benchmark import preflight
    from benchmark import report as report_mod
    from benchmark.errors import UsageError
    from benchmark.tracking import Tracker

    for uri in also_from:
        path = uri.removeprefix("sqlite:///")
        if uri.startswith("sqlite:///") and not Path(path).is_file():
            raise UsageError(f"--also-from {uri}: no such SQLite file {path!r}; check the path.")
    frames = [Tracker(uri, experiment).cell_runs("FINISHED") for uri in (tracking_uri, *also_from)]
    frames = [f for f in frames if not f.empty]
    runs = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    if runs.empty:
        print(f"No FINISHED runs in experiment {experiment!r} yet; nothing to report.")
        return 0
    results_dir = preflight.writable_dir(results_dir, "--results-dir")
    caption = (
        f"Every FINISHED cell in experiment {experiment!r} ({', '.join((tracking_uri, *also_from))});"
        " the latest run of each cell and settings counts; rows whose settings differ from the"
        " defaults say how."
    )
    summary = report_mod.write_report(runs, results_dir, caption, baseline)
    if readme:
        report_mod.update_readme(Path(readme), results_dir)
    print((results_dir / "summary.md").read_text())
    print(f"wrote {results_dir}/summary.csv, summary.md and plots ({len(summary)} rows)")
    return 0
