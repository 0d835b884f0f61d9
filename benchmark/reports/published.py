"""Published accuracies this project compares itself with, kept as data beside their sources.

Each row names the method of ours it is set against. Kingma et al. report test *error*; it is
stored here as accuracy (100 − error, same std). Kinds: "seed" rows are the single-run recipes
this project started from, which our default configuration is expected to beat; "paper" rows
are published semi-supervised results; "reference" rows use every training label and bound
what a method can reach, they are not targets.
"""

from __future__ import annotations

from dataclasses import dataclass, field

KINGMA_2014 = (
    "Kingma, Rezende, Mohamed, Welling 2014, Semi-supervised Learning with Deep Generative"
    " Models, Table 1 (MNIST test error %, mean ± std)"
)
XIAO_2017 = (
    "Xiao, Rasul, Vollgraf 2017, Fashion-MNIST: a Novel Image Dataset for Benchmarking Machine"
    " Learning Algorithms, benchmark table (RBF SVC, C = 10, all 60,000 labels)"
)
PYRO_SSVAE = (
    "Pyro's semi-supervised VAE tutorial (M2, all classes enumerated, auxiliary loss 46;"
    " MNIST test accuracy %)"
)
RASMUS_2015 = (
    "Rasmus, Valpola, Honkala, Berglund, Raiko 2015, Semi-Supervised Learning with Ladder"
    " Networks, Table 1 (MNIST test error %, mean ± std over 10 runs)"
)
RASMUS_2015_CONV = (
    "Rasmus, Valpola, Honkala, Berglund, Raiko 2015, Semi-Supervised Learning with Ladder"
    " Networks, the convolutional MNIST results (Conv-Small, Γ-model; test error %, mean ± std)"
)
MAKHZANI_2015 = (
    "Makhzani, Shlens, Jaitly, Goodfellow, Frey 2015, Adversarial Autoencoders, Table 2"
    " (MNIST test error %, mean ± std)"
)
MAALOE_2016 = (
    "Maaløe, Sønderby, Sønderby, Winther 2016, Auxiliary Deep Generative Models, Table 1"
    " (MNIST test error %, mean ± std)"
)
CALDER_2020 = (
    "Calder, Cook, Thorpe, Slepcev 2020, Poisson Learning: Graph Based Semi-Supervised Learning"
    " at Very Low Label Rates (Fashion-MNIST, VAE features, scored on the unlabeled training"
    " images)"
)
SEED_RBF = "Seed recipe: VAE (latent 10, Softplus MLP) + RBF SVM, numpy seed 42, single run"
SEED_LINEAR = (
    "Seed recipe: VAE (Xavier init, Adam) + LinearSVC(random_state=0, tol=1e-5), single run"
)
KINDS = ("seed", "paper", "reference")
ALL_LABELS = 60000  # the budget of the "reference" rows: every training image labelled


@dataclass(frozen=True)
class PublishedRow:
    dataset: str
    ours: str  # the registered method it is compared with
    name: str  # the method as the source calls it
    source: str
    kind: str
    accuracy: dict[int, float]  # label budget -> test accuracy %
    std: dict[int, float] = field(default_factory=dict)  # empty: single run
    note: str = ""

    @property
    def single_run(self) -> bool:
        return not self.std


def _from_error(error: dict[int, tuple[float, float]]) -> tuple[dict, dict]:
    """Kingma et al. give (error %, std); accuracy is 100 − error with the same spread."""
    return (
        {n: round(100.0 - e, 2) for n, (e, _) in error.items()},
        {n: s for n, (_, s) in error.items()},
    )


def _kingma(ours: str, name: str, error: dict[int, tuple[float, float]], note: str):
    accuracy, std = _from_error(error)
    return PublishedRow("mnist", ours, name, KINGMA_2014, "paper", accuracy, std, note)


ROWS: tuple[PublishedRow, ...] = (
    PublishedRow(
        "fashion-mnist",
        "vae-rbf-svm",
        "VAE (z=10) + RBF SVM",
        SEED_RBF,
        "seed",
        {100: 64.82, 600: 76.32, 1000: 76.47, 3000: 79.90},
    ),
    PublishedRow(
        "fashion-mnist",
        "vae-linear-svm",
        "VAE + LinearSVC",
        SEED_LINEAR,
        "seed",
        {100: 66.2, 600: 70.76, 1000: 72.12, 3000: 75.73},
    ),
    PublishedRow(
        "mnist",
        "vae-linear-svm",
        "VAE + LinearSVC",
        SEED_LINEAR,
        "seed",
        {100: 65.77, 1000: 79.81, 3000: 81.99},
        note="The 600-label figure was not kept by the source.",
    ),
    _kingma(
        "vae-rbf-svm",
        "M1 + TSVM",
        {100: (11.82, 0.25), 600: (5.72, 0.049), 1000: (4.24, 0.07), 3000: (3.49, 0.04)},
        "Closest method of ours: M1 features with an RBF SVC instead of a transductive SVM,"
        " latent 10 instead of 50. No maintained multiclass TSVM exists in Python (the binary"
        " ones would need a one-vs-rest wrapper of our own), so vae-rbf-svm stands in for it.",
    ),
    _kingma(
        "m2",
        "M2",
        {100: (11.97, 1.71), 600: (4.94, 0.13), 1000: (3.60, 0.56), 3000: (3.92, 0.63)},
        "Trained for thousands of epochs; ours runs Pyro's 50.",
    ),
    PublishedRow(
        "mnist",
        "m2",
        "M2 + auxiliary loss",
        PYRO_SSVAE,
        "paper",
        {100: 93.2, 600: 94.4, 1000: 94.9, 3000: 95.8},
        note=(
            "Same settings as our defaults, but reported at the epoch with the best accuracy on"
            " 10,000 labeled validation images (a selection this project forbids); Pyro"
            " interleaves labeled batches, we mix labels into every step and train on all of"
            " them."
        ),
    ),
    _kingma(
        "m1-m2",
        "M1 + M2",
        {100: (3.33, 0.14), 600: (2.59, 0.05), 1000: (2.40, 0.02), 3000: (2.18, 0.04)},
        "Trained for 3,000 epochs at Adam 3e-4 with a 500-500 M1; ours runs his schedule for"
        " 300 epochs at 3e-3 on a 512-256 M1 by default (see the README's Methods).",
    ),
    PublishedRow(
        "mnist",
        "ladder",
        "Ladder, full",
        RASMUS_2015,
        "paper",
        {100: 98.94, 1000: 99.16},
        {100: 0.37, 1000: 0.08},
        note=(
            "150 epochs, the rate decaying to zero over the last 50; ours runs 40, decaying over"
            " the last 15, by default (the 1-hour cell), and the published schedule as a variant."
        ),
    ),
    PublishedRow(
        "mnist",
        "ladder-conv",
        "Ladder, Conv-Small Γ-model",
        RASMUS_2015_CONV,
        "paper",
        {100: 99.11},
        {100: 0.50},
        note=(
            "150 epochs (the reference code's default), the rate decaying over the last third;"
            " ours runs 5, decaying over the last 3, by default: an epoch of Conv-Small takes"
            " about 12 min on one CPU core."
        ),
    ),
    PublishedRow(
        "mnist",
        "aae",
        "Semi-supervised AAE",
        MAKHZANI_2015,
        "paper",
        {100: 98.10, 1000: 98.40},
        {100: 0.10},
        note="Public re-implementations report about 95 % at 100 labels; ours trains 100 epochs.",
    ),
    *(
        PublishedRow(
            "mnist",
            method,
            method.upper(),
            MAALOE_2016,
            "paper",
            {100: accuracy},
            {100: std},
            note=(
                "1,000 epochs, Adam at 3e-4, five draws of the auxiliary latent a per step; ours"
                " 50 epochs at 1e-3 (chosen by the unlabeled bound) and one draw."
            ),
        )
        for method, accuracy, std in (("adgm", 99.04, 0.02), ("sdgm", 98.68, 0.07))
    ),
    PublishedRow(
        "fashion-mnist",
        "vae-poisson",
        "Poisson learning on VAE features",
        CALDER_2020,
        "paper",
        {100: 75.0},
        note=(
            "Scored transductively on the unlabeled training images; ours uses their VAE's"
            " settings and classifies the test images inductively from their nearest"
            " training images."
        ),
    ),
    PublishedRow(
        "fashion-mnist",
        "pixel-svm",
        "Raw-pixel RBF SVC, all labels",
        XIAO_2017,
        "reference",
        {ALL_LABELS: 89.7},
        note="Upper reference: every training image labelled.",
    ),
    PublishedRow(
        "mnist",
        "pixel-svm",
        "Raw-pixel RBF SVC, all labels",
        XIAO_2017,
        "reference",
        {ALL_LABELS: 97.3},
        note="Upper reference: every training image labelled.",
    ),
)


def rows(datasets: list[str] | None = None, methods: list[str] | None = None) -> list[PublishedRow]:
    """The published rows for the given datasets and our methods (all when None)."""
    return [
        r
        for r in ROWS
        if (datasets is None or r.dataset in datasets) and (methods is None or r.ours in methods)
    ]
