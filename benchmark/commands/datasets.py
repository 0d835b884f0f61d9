"""`datasets`: where each dataset was found, and its class counts."""

from __future__ import annotations

import argparse

from benchmark.options import add_command, add_common


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "datasets", help="show where each dataset was found and its class counts")
    add_common(p, tracking=False)
    p.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    import numpy as np

    from benchmark.data import datasets
    from benchmark.errors import UsageError

    usable = True
    for name in datasets.DATASETS:
        try:
            # an opt-in dataset is looked for, never downloaded, just to be listed
            ds = datasets.load(name, args.data_dir, download=not datasets.DATASETS[name].opt_in)
            _, y = ds.split("train")
            counts = np.bincount(y, minlength=ds.spec.n_classes)
            test = ds.split("test")[1]
            print(f"{name}: {ds.directory}")
            print(f"  train {len(y)}, test {len(test)}")
            print("  train per class: " + " ".join(f"{c}:{n}" for c, n in enumerate(counts)))
        except UsageError as error:
            spec = datasets.DATASETS[name]
            if spec.opt_in:  # not part of the default study: its absence is no failure
                print(f"{name} (opt-in, not in `--datasets all`): not found ({error})")
                continue
            usable = False
            print(f"{name}: not usable: {error}")
    return 0 if usable else 2
