"""`run`: the study's grid of method × dataset × label budget × seed cells."""

from __future__ import annotations

import argparse

from benchmark.options import add_command, add_grid, positive_int


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub,
        "run",
        help="run the method × dataset × labels × seed grid",
        description="Prints the plan (cells, VAEs to train, estimated time), then runs the"
        " cells cheapest first, rewriting RESULTS_DIR's tables as cells finish. Interrupt it"
        " at any time: the same command resumes.",
    )
    add_grid(p, "'all' or a comma-separated list (see `list`)")
    p.add_argument("--latent-dim", type=positive_int, help="VAE latent dimension")
    p.add_argument(
        "--params",
        default="defaults",
        help="tuned: each seed's RESULTS_DIR/tuned/METHOD-DATASET-LABELS-seedSEED.json from `tune`",
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
    from benchmark import launcher

    return launcher.run_grid(args)
