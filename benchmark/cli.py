"""Command-line interface: builds the parser from `benchmark.commands` and dispatches.

Nothing heavy is imported here: each command imports its machinery when it runs, so `--help`
and argument errors answer at once. Logging and warnings are configured here, for the commands,
and never when a module is imported.
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
import threading
import time
from collections.abc import Sequence

from benchmark.commands import COMMANDS
from benchmark.errors import UsageError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmark",
        description="Semi-supervised VAE benchmark: which method wins with few labels?",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"benchmark.commands.{name}").add_parser(sub)
    return parser


def _interrupt_on_sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # a polite `kill` closes the current MLflow run like Ctrl-C does


def main(argv: Sequence[str] | None = None) -> int:
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt_on_sigterm)
    parser = build_parser()
    args = parser.parse_args(argv)
    start = time.perf_counter()
    try:
        return args.handler(args)
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            f"\ninterrupted after {time.perf_counter() - start:.0f} s; finished cells are kept,"
            " run the same command again to resume.",
            file=sys.stderr,
        )
        return 130
