"""`tune`: an Optuna study of one method's search space, scored by CV inside the budget."""

from __future__ import annotations

import argparse

from benchmark.options import (
    DEFAULT_CACHE_DIR,
    DEFAULT_RESULTS_DIR,
    DEFAULT_STORAGE,
    add_command,
    add_common,
    add_device,
    positive_int,
)

DEFAULT_TRIALS = 20


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub,
        "tune",
        help="Optuna study of one method's search space, scored by CV inside the labeled budget",
        description=(
            "Tune one method for one dataset, label budget and seed. Each trial's score is the"
            " mean stratified k-fold CV accuracy (k = min(5, labels per class)) on the labeled"
            " images of the budget; the test set is never read. Running the same command again"
            " continues the study. The best parameters are written to"
            " RESULTS_DIR/tuned/METHOD-DATASET-LABELS-seedSEED.json; `run --params tuned` uses"
            " each seed's own file, so tune every seed you run."
        ),
    )
    p.add_argument("--method", required=True, help="one method (see `list`)")
    p.add_argument("--dataset", required=True, help="mnist or fashion-mnist")
    p.add_argument("--labels", type=int, required=True, help="label budget, e.g. 100")
    p.add_argument("--seed", type=int, default=0, help="labeled split, folds, VAE and sampler")
    p.add_argument(
        "--trials",
        type=int,
        help=f"trials the sampler runs in this call, after any --try; earlier ones are kept"
        f" (default: {DEFAULT_TRIALS}, or 0 with --try)",
    )
    p.add_argument(
        "--try",
        dest="tries",
        action="append",
        default=[],
        metavar="KEY=VALUE[,KEY=VALUE]",
        help="a trial at the defaults but for these values of the search space, run first unless"
        " the study already scored it; repeat it to compare settings by CV, e.g. --try shift=0"
        " --try shift=2",
    )
    p.add_argument("--epochs", type=positive_int, help="training epochs (VAE and M2-style models)")
    p.add_argument("--storage", default=DEFAULT_STORAGE, help="Optuna storage URL")
    p.add_argument("--study-name", help="default: tune-METHOD-DATASET-LABELS-seedSEED")
    p.add_argument("--results-dir", default=DEFAULT_RESULTS_DIR)
    p.add_argument("--vae-cache-dir", default=DEFAULT_CACHE_DIR, help="shared with `run`")
    add_device(p)
    p.add_argument(
        "--subset",
        type=positive_int,
        default=0,
        help="use only the first N training images (quick smoke runs)",
    )
    add_common(p)
    p.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    from benchmark.tune.request import request_from_args

    if args.trials is None:
        args.trials = 0 if args.tries else DEFAULT_TRIALS
    request = request_from_args(args)
    from benchmark.tune import (
        study as tune_study,  # optuna, MLflow and torch training: only once input is valid
    )

    return tune_study.run_study(request, args)
