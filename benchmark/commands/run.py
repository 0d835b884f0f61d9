"""`run`: the study's grid of method × dataset × label budget × seed cells."""

from __future__ import annotations

import argparse

from benchmark.options import (
    DEFAULT_RESULTS_DIR,
    LOCAL_RESULTS_DIR,
    add_command,
    add_grid,
    positive_int,
)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub,
        "run",
        help="run the method × dataset × labels × seed grid",
        description="Prints the plan (cells, VAEs to train, estimated time), then runs the"
        " cells cheapest first, adding each finished run to RESULTS_DIR/runs.csv and rewriting"
        " the tables there. Cells that the store or a run archive (RESULTS_DIR's, and the"
        " published results/runs.csv) already holds are not run again. Interrupt it at any"
        " time: the same command resumes. The published results change only through `report`.",
    )
    add_grid(p, "'all' or a comma-separated list (see `list`)", LOCAL_RESULTS_DIR)
    p.add_argument("--latent-dim", type=positive_int, help="VAE latent dimension")
    p.add_argument(
        "--params",
        default="defaults",
        help="tuned: each seed's TUNED_DIR/tuned/METHOD-DATASET-LABELS-seedSEED.json from `tune`",
    )
    p.add_argument(
        "--tuned-dir",
        default=DEFAULT_RESULTS_DIR,
        help="the --results-dir `tune` wrote its choices to (with --params tuned)",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        dest="settings",
        metavar="KEY=VALUE",
        help="a parameter for every selected method that has it (repeatable): --set alpha=60",
    )
    p.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    from benchmark.study import launcher

    return launcher.run_grid(args)
