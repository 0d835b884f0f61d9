"""Command-line interface: parsing and dispatch only; the work lives in the other modules."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from benchmark import datasets
from benchmark.devices import DEVICE_CHOICES
from benchmark.errors import UsageError
from benchmark.tracking import DEFAULT_EXPERIMENT, DEFAULT_TRACKING_URI

Handler = Callable[[argparse.Namespace], int]


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def add_common(parser: argparse.ArgumentParser, *, data: bool = True, tracking: bool = True):
    if data:
        parser.add_argument(
            "--data-dir",
            help=f"dataset root (torchvision layout); default ${datasets.DATA_DIR_ENV}",
        )
    if tracking:
        parser.add_argument("--tracking-uri", default=DEFAULT_TRACKING_URI, help="MLflow URI")
        parser.add_argument("--experiment", default=DEFAULT_EXPERIMENT, help="MLflow experiment")


def cmd_datasets(args: argparse.Namespace) -> int:
    usable = True
    for name in datasets.DATASETS:
        try:
            ds = datasets.load(name, args.data_dir)
            _, y = ds.split("train")
            counts = np.bincount(y, minlength=ds.spec.n_classes)
            test = ds.split("test")[1]
            print(f"{name}: {ds.directory}")
            print(f"  train {len(y)}, test {len(test)}")
            print("  train per class: " + " ".join(f"{c}:{n}" for c, n in enumerate(counts)))
        except UsageError as error:
            usable = False
            print(f"{name}: not usable: {error}")
    return 0 if usable else 2


def cmd_list(args: argparse.Namespace) -> int:
    import methods

    names = methods.available()
    width = max(map(len, [*names, *datasets.DATASETS])) + 2
    print("methods:")
    for name in names:
        cls = methods.get(name)
        print(f"  {name:<{width}}{'[VAE] ' if cls.uses_vae else ''}{cls.description}")
    print("datasets:")
    for spec in datasets.DATASETS.values():
        print(f"  {spec.name:<{width}}{spec.description}")
    return 0


def add_run(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run the method × dataset × labels × seed grid")
    p.add_argument("--methods", default="all", help="'all' or a comma-separated list")
    p.add_argument("--datasets", default="all", help="'all' or mnist,fashion-mnist")
    p.add_argument("--labels", default="100,600,1000,3000", help="label budgets")
    p.add_argument("--seeds", default="0,1,2,3,4")
    p.add_argument("--epochs", type=positive_int, help="training epochs (VAE and M2-style models)")
    p.add_argument("--latent-dim", type=positive_int, help="VAE latent dimension")
    p.add_argument("--params", default="defaults", help="defaults, or tuned (results/tuned/*.json)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        dest="settings",
        metavar="KEY=VALUE",
        help="a parameter for every selected method that has it (repeatable): --set alpha=60",
    )
    p.add_argument("--device", default="auto", choices=DEVICE_CHOICES)
    p.add_argument("--storage", help="Optuna storage URL (default sqlite:///mlruns/optuna.db)")
    p.add_argument("--results-dir", default="results")
    p.add_argument("--vae-cache-dir", default="mlruns/vae-cache")
    p.add_argument("--workers", type=positive_int, default=1, help="worker processes here")
    p.add_argument("--force", action="store_true", help="rerun cells that already finished")
    p.add_argument(
        "--subset",
        type=positive_int,
        default=0,
        help="use only the first N training and test images (quick smoke runs)",
    )
    add_common(p)
    p.set_defaults(handler=cmd_run)


def cmd_run(args: argparse.Namespace) -> int:
    from benchmark import study

    return study.run(args)


def add_report(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="write mean ± std tables and plots from FINISHED runs")
    p.add_argument("--results-dir", default="results")
    p.add_argument(
        "--also-from",
        action="append",
        default=[],
        metavar="URI",
        help="another MLflow tracking URI whose FINISHED runs join the tables (repeatable)",
    )
    add_common(p, data=False)
    p.set_defaults(handler=cmd_report)


def cmd_report(args: argparse.Namespace) -> int:
    from benchmark import study

    return study.report(args.tracking_uri, args.experiment, Path(args.results_dir), args.also_from)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmark",
        description="Semi-supervised VAE benchmark: which method wins with few labels?",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("datasets", help="show where each dataset was found and its class counts")
    add_common(p, tracking=False)
    p.set_defaults(handler=cmd_datasets)
    sub.add_parser("list", help="list methods and datasets").set_defaults(handler=cmd_list)
    add_run(sub)
    add_report(sub)
    for module in _extensions():
        module.add_parser(sub)
    return parser


def _extensions() -> list:
    """Subcommands that live in their own modules (tune, perf, reproduce), when present."""
    import importlib

    found = []
    for name in ("benchmark.tune", "benchmark.perf", "benchmark.reproduce"):
        try:
            found.append(importlib.import_module(name))
        except ModuleNotFoundError as error:
            if error.name != name:
                raise
    return found


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
