"""Command-line defaults and argument helpers shared by every command: a leaf module.

It imports nothing heavy (no torch, pandas or MLflow), so `--help` and argument errors are
instant; the commands import their machinery only once their arguments are parsed.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from pathlib import Path

from benchmark.errors import UsageError

DATA_DIR_ENV = "BENCHMARK_DATA_DIR"
DEFAULT_TRACKING_URI = "sqlite:///mlruns/mlflow.db"
DEFAULT_EXPERIMENT = "ssl-vae-benchmark"
DEFAULT_STORAGE = "sqlite:///mlruns/optuna.db"  # run's queues and tune's studies: one file
DEFAULT_CACHE_DIR = "mlruns/vae-cache"
DEFAULT_RESULTS_DIR = "results"  # the published tables and run archive, kept in git
LOCAL_RESULTS_DIR = "results/local"  # where `run` writes by default; git ignores it
DEVICE_CHOICES = ("auto", "cpu", "cuda")
DEFAULT_LABELS = "100,600,1000,3000"
DEFAULT_SEEDS = "0,1,2,3,4"


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default, except where it is None or False (nothing to show)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default in (None, False, [], argparse.SUPPRESS) or "%(default)" in (
            action.help or ""
        ):
            return action.help or ""
        return super()._get_help_string(action)


def sqlite_path(uri: str) -> Path | None:
    """The database file of a sqlite:/// URI (relative or absolute), or None for another URI."""
    return Path(uri[len("sqlite:///") :]) if uri.startswith("sqlite:///") else None


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def add_command(sub: argparse._SubParsersAction, name: str, **kwargs) -> argparse.ArgumentParser:
    """A subcommand whose help shows the defaults."""
    return sub.add_parser(name, formatter_class=HelpFormatter, **kwargs)


def add_common(parser: argparse.ArgumentParser, *, data: bool = True, tracking: bool = True):
    if data:
        parser.add_argument(
            "--data-dir",
            help=f"dataset root (torchvision layout); default ${DATA_DIR_ENV}, then the"
            " system and cache folders (see `datasets`)",
        )
    if tracking:
        parser.add_argument("--tracking-uri", default=DEFAULT_TRACKING_URI, help="MLflow URI")
        parser.add_argument("--experiment", default=DEFAULT_EXPERIMENT, help="MLflow experiment")


def add_device(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--device", default="auto", choices=DEVICE_CHOICES, help="auto: CUDA when there is one"
    )


def add_grid(
    parser: argparse.ArgumentParser, methods_help: str, results_dir: str = DEFAULT_RESULTS_DIR
) -> None:
    """The options of commands that launch grid cells (`run`, `reproduce`)."""
    parser.add_argument("--methods", default="all", help=methods_help)
    parser.add_argument("--datasets", default="all", help="'all' or e.g. mnist,fashion-mnist")
    parser.add_argument("--labels", default=DEFAULT_LABELS, help="label budgets")
    parser.add_argument("--seeds", default=DEFAULT_SEEDS, help="seeds (each its own split)")
    parser.add_argument(
        "--epochs", type=positive_int, help="training epochs (VAE and M2-style models)"
    )
    add_device(parser)
    parser.add_argument("--storage", default=DEFAULT_STORAGE, help="Optuna storage URL")
    parser.add_argument("--vae-cache-dir", default=DEFAULT_CACHE_DIR, help="trained VAEs")
    parser.add_argument("--workers", type=positive_int, default=1, help="worker processes here")
    parser.add_argument(
        "--results-dir", default=results_dir, help="tables, plots and the archive of its runs"
    )
    parser.add_argument(
        "--subset",
        type=positive_int,
        default=0,
        help="use only the first N training and test images (quick smoke runs)",
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="print the plan (cells, VAEs, time) and exit"
    )
    parser.add_argument("--force", action="store_true", help="rerun cells that already finished")
    add_common(parser)


# Parsing the comma-separated and KEY=VALUE options into checked values (UsageError if not).


def parse_list(
    text: str, choices: Iterable[str], what: str, all_means: Iterable[str] | None = None
) -> list[str]:
    """'all' (the choices, or `all_means`) or a comma-separated list of checked names."""
    choices = list(choices)
    if text.strip() == "all":
        return list(all_means) if all_means is not None else choices
    names = [t.strip() for t in text.split(",") if t.strip()]
    for name in names:
        if name not in choices:
            raise UsageError(f"Unknown {what} {name!r}. Available: {', '.join(choices)}.")
    if not names:
        raise UsageError(f"No {what} given; use 'all' or a comma-separated list.")
    return list(dict.fromkeys(names))


def parse_ints(text: str, what: str) -> list[int]:
    try:
        values = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise UsageError(f"--{what} expects comma-separated integers, got {text!r}.") from None
    if not values:
        raise UsageError(f"--{what} is empty.")
    return list(dict.fromkeys(values))


def parse_settings(items: list[str], option: str = "--set") -> dict[str, str]:
    """`--set KEY=VALUE` pairs as text; each method parses VALUE to its parameter's type."""
    settings: dict[str, str] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"{option} expects KEY=VALUE (e.g. {option} epochs=10), got {item!r}.")
        settings[key.strip()] = text.strip()
    return settings
