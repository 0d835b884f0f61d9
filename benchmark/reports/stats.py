"""How sure are we: intervals over seeds, paired comparisons, and a study-wide ranking.

Every method sees the same labeled images for a given (dataset, budget, seed), so two methods'
scores are paired by seed. With n = 5 seeds:
- a mean's 95 % interval is Student's t over the seeds (a bootstrap of 5 values is unreliable),
  cut to the 0-100 % an accuracy can take;
- a paired difference's interval and p-value come from the paired t-test on the per-seed
  differences. The Wilcoxon signed-rank test, the usual distribution-free choice, cannot reach
  p < 0.05 two-sided with 5 pairs (its smallest p is 2/32 = 0.0625), so it could never call a
  difference significant here; the t-test assumes roughly normal differences instead.
- the ranking over (dataset, budget) blocks uses the Friedman test and Nemenyi's post-hoc test
  (Demšar 2006), through scipy and scikit-posthocs. Few blocks give these tests little power.
All formulas are the libraries'; this module only arranges the data.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from scipy import stats

LEVEL = 0.95
ALPHA = 1 - LEVEL
TIE = 1e-12  # two accuracies this close (same predictions) are a tie
MIN_SEEDS_TO_LEAD = 3  # fewer seeds never make a bold cell, nor the best one of a column


def t_interval(values: np.ndarray | list[float]) -> tuple[float, float]:
    """Student-t 95 % interval of the mean; NaNs for fewer than 2 values."""
    values = np.asarray(values, dtype=float)
    if len(values) < 2:
        return math.nan, math.nan
    mean = float(values.mean())
    if np.ptp(values) == 0:
        return mean, mean
    low, high = stats.t.interval(LEVEL, len(values) - 1, loc=mean, scale=stats.sem(values))
    return float(low), float(high)


@dataclass(frozen=True)
class Paired:
    """A minus B over the seeds both were run with."""

    n: int
    diff: float
    low: float
    high: float
    p_value: float
    wins: int
    ties: int
    losses: int


def paired(a: pd.Series, b: pd.Series) -> Paired:
    """Paired comparison of two methods' scores indexed by seed (seeds in both only)."""
    both = pd.concat([a.rename("a"), b.rename("b")], axis=1, join="inner").dropna()
    d = (both["a"] - both["b"]).to_numpy(dtype=float)
    n = len(d)
    wins, ties = int((d > TIE).sum()), int((np.abs(d) <= TIE).sum())
    if n == 0:
        return Paired(0, math.nan, math.nan, math.nan, math.nan, 0, 0, 0)
    mean = float(d.mean())
    if n < 2:
        return Paired(n, mean, math.nan, math.nan, math.nan, wins, ties, n - wins - ties)
    if np.ptp(d) == 0:  # the same difference on every seed: no spread to test against
        p = 1.0 if abs(mean) <= TIE else 0.0
        return Paired(n, mean, mean, mean, p, wins, ties, n - wins - ties)
    with warnings.catch_warnings():  # differences equal to the last digits: p is still right
        warnings.filterwarnings("ignore", "Precision loss occurred", RuntimeWarning)
        result = stats.ttest_rel(both["a"], both["b"])
    ci = result.confidence_interval(LEVEL)
    return Paired(
        n, mean, float(ci.low), float(ci.high), float(result.pvalue), wins, ties, n - wins - ties
    )


def cell_table(runs: pd.DataFrame, baseline: str) -> pd.DataFrame:
    """Per (method row, dataset, budget): n, mean, std, t interval, and the paired difference
    to `baseline` (the row labelled so) with its interval, p-value and wins/ties/losses.

    `runs` has one row per (method, dataset, n_labels, seed) with `accuracy` in percent.
    """
    rows = []
    for (dataset, budget), block in runs.groupby(["dataset", "n_labels"]):
        by_method = {m: g.set_index("seed")["accuracy"] for m, g in block.groupby("method")}
        reference = by_method.get(baseline)
        # the best among the methods with seeds enough to be bold: a one-seed run that scores
        # highest would otherwise leave its column without a bold cell
        leaders = [m for m in by_method if len(by_method[m]) >= MIN_SEEDS_TO_LEAD] or by_method
        best = max(leaders, key=lambda m: by_method[m].mean())
        for method, scores in by_method.items():
            low, high = t_interval(scores.to_numpy())
            # an accuracy lies in 0-100 %: a t interval of two far-apart seeds can pass 100
            low, high = max(low, 0.0), min(high, 100.0)
            row = {
                "method": method,
                "dataset": dataset,
                "n_labels": budget,
                "n": len(scores),
                "mean": float(scores.mean()),
                "std": float(scores.std(ddof=1)) if len(scores) > 1 else 0.0,
                "ci_low": low,
                "ci_high": high,
            }
            vs_best = paired(scores, by_method[best])
            # bold: the best, and every method the paired test cannot tell apart from it
            row["top"] = method == best or (
                vs_best.n >= 2 and not (vs_best.diff < 0 and vs_best.p_value < ALPHA)
            )
            if reference is not None and method != baseline:
                c = asdict(paired(scores, reference))
                names = {"diff": "diff_vs_baseline", "low": "diff_ci_low", "n": "n_paired"}
                names |= {"high": "diff_ci_high"}
                row.update({names.get(k, k): v for k, v in c.items()})
            rows.append(row)
    return pd.DataFrame(rows)


@dataclass(frozen=True)
class Ranking:
    ranks: pd.Series  # average rank per method (1 = best)
    blocks: int
    statistic: float
    p_value: float
    nemenyi: pd.DataFrame | None  # pairwise p-values, methods × methods
    caveat: str


def ranking(table: pd.DataFrame) -> Ranking | None:
    """Average rank of each method over (dataset, budget) blocks where every ranked method was
    run; the Friedman test and Nemenyi's pairwise p-values. None if fewer than 2 methods share
    at least 2 blocks.

    Which blocks: all of them, or those of one method's coverage, whichever leaves the most
    (block, method) scores to rank; so a method run in a few blocks only cannot shrink the
    ranking to nothing, and one run in the same blocks as the others stays in it."""
    wide = table.pivot_table(index=["dataset", "n_labels"], columns="method", values="mean")
    present = wide.notna()
    choices = {tuple(present.index)} | {tuple(present.index[present[m]]) for m in present}
    best: tuple[int, int] = (0, 0)
    for blocks in sorted(choices):
        methods = present.columns[present.loc[list(blocks)].all()]
        score = (len(blocks) * len(methods), len(blocks))
        if len(blocks) >= 2 and len(methods) >= 2 and score > best:
            best, chosen = score, wide.loc[list(blocks), methods]
    if best == (0, 0):
        return None
    wide = chosen
    ranks = wide.rank(axis=1, ascending=False).mean().sort_values()
    statistic, p_value, nemenyi = math.nan, math.nan, None
    if wide.shape[1] >= 3:
        statistic, p_value = stats.friedmanchisquare(*[wide[c].to_numpy() for c in wide.columns])
        import scikit_posthocs as sp

        nemenyi = sp.posthoc_nemenyi_friedman(wide.to_numpy())
        nemenyi.index = nemenyi.columns = list(wide.columns)
    caveat = (
        f"{wide.shape[0]} blocks (dataset × budget) and {wide.shape[1]} methods run in all of"
        " them; methods missing from a block are left out of the ranking."
    )
    if wide.shape[0] < 10:
        caveat += (
            " With fewer than about 10 blocks the Friedman and Nemenyi tests have little power:"
            " read the ranks as a summary, not as proof."
        )
    return Ranking(ranks, wide.shape[0], float(statistic), float(p_value), nemenyi, caveat)


def published_verdict(published: float, low: float, high: float) -> str:
    """'consistent' when the published figure lies in our interval, else 'below'/'above'
    (where OUR figure lies relative to it)."""
    if math.isnan(low):
        return "one seed: no interval"
    if low <= published <= high:
        return "consistent"
    return "below" if high < published else "above"
