"""`report`: tables and plots from the FINISHED runs of one or several tracking stores."""

from __future__ import annotations

import argparse
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
    from benchmark import study

    return study.report(
        args.tracking_uri,
        args.experiment,
        Path(args.results_dir),
        args.also_from,
        args.baseline,
        args.readme,
    )
