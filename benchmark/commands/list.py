"""`list`: the registered methods and datasets."""

from __future__ import annotations

import argparse

from benchmark.options import add_command


def add_parser(sub: argparse._SubParsersAction) -> None:
    add_command(sub, "list", help="list methods and datasets").set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    import methods
    from benchmark.data import datasets

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
