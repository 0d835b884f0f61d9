"""`perf`: the harness's speed against a plain PyTorch loop, a small grid, every method."""

from __future__ import annotations

import argparse

from benchmark.options import DEFAULT_RESULTS_DIR, add_command, add_common, add_device, positive_int


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "perf", help="time the harness against a plain loop, a grid, each method")
    add_device(p)
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--threads", type=positive_int, help="torch CPU threads (default: torch's)")
    p.add_argument("--repeats", type=positive_int, default=3, help="timed epochs per side")
    p.add_argument("--epoch-rows", type=positive_int, help="rows per timed epoch (default all)")
    p.add_argument("--subset", type=int, default=0, help="grid on the first N images (0: all)")
    p.add_argument("--epochs", type=positive_int, default=1, help="VAE epochs in the grid")
    p.add_argument("--fit-subset", type=positive_int, default=10000, help="rows for fit timing")
    p.add_argument("--methods", default="all", help="methods whose fit/predict is timed")
    p.add_argument("--quick", action="store_true", help="tiny sizes: checks the command runs")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--results-dir", default=DEFAULT_RESULTS_DIR)
    add_common(p, tracking=False)
    p.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    from benchmark.reports.perf import cmd_perf

    return cmd_perf(args)
