"""`reproduce`: run (or reuse) the cells behind published numbers and compare with them."""

from __future__ import annotations

import argparse

from benchmark.options import add_command, add_grid


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub, "reproduce", help="run (or reuse) the cells behind published numbers and compare"
    )
    add_grid(p, "'all' or methods named by published rows")
    p.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    from benchmark.reports.reproduce import cmd_reproduce

    return cmd_reproduce(args)
