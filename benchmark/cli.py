"""Command-line interface: builds the parser from `benchmark.commands` and dispatches.

Nothing heavy is imported here: each command imports its machinery when it runs, so `--help`
and argument errors answer at once. Logging and warnings are configured here, for the commands,
and never when a module is imported.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import signal
import sys
import threading
import time
from collections.abc import Sequence
from typing import NoReturn

from benchmark import runtime
from benchmark.commands import COMMANDS
from benchmark.errors import UsageError


class Parser(argparse.ArgumentParser):
    """Bad arguments get one line naming the problem and where help is, not the usage text."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="python -m benchmark",
        description="Semi-supervised VAE benchmark: which method wins with few labels?",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"benchmark.commands.{name}").add_parser(sub)
    return parser


def _interrupt_on_sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # a polite `kill` closes the current MLflow run like Ctrl-C does


def _forget_interrupt() -> None:
    """Let exit code 130 stand after a handled Ctrl-C or SIGTERM.

    When the KeyboardInterrupt passed through Python code that a C extension evaluated (torch
    runs some), CPython keeps a mark that it was "unhandled" and, at exit, kills the process
    with SIGINT instead (the test saw -2 about one time in four). Each top-level evaluation
    clears that mark first, so one empty evaluation does.
    """
    import ctypes

    with contextlib.suppress(Exception):
        ctypes.pythonapi.PyRun_SimpleString(b"")


def main(argv: Sequence[str] | None = None) -> int:
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt_on_sigterm)
    parser = build_parser()
    args = parser.parse_args(argv)
    runtime.configure()
    start = time.perf_counter()
    try:
        return args.handler(args)
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        _forget_interrupt()
        print(
            f"\ninterrupted after {time.perf_counter() - start:.0f} s; finished cells are kept,"
            " run the same command again to resume.",
            file=sys.stderr,
        )
        return 130
