"""What a grid leaves in its results folder while it runs: the archive of its runs and tables.

After every finished cell the store's FINISHED runs are merged into RESULTS_DIR/runs.csv (so
an interrupted or lost machine keeps every finished cell), and the tables are rebuilt from the
archived runs of this command's cells, wherever they were made: runs of another store that the
published archive holds count too, since `run` does not repeat them.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pandas as pd

from benchmark.reports import archive
from benchmark.reports import tables as report_mod
from benchmark.study import grid
from benchmark.tracking.client import Tracker, finished_runs

# the options that say which cells a command asks for (paths and stores say where, not what)
WHAT_OPTIONS = (
    "--methods",
    "--datasets",
    "--labels",
    "--seeds",
    "--epochs",
    "--latent-dim",
    "--params",
    "--set",
    "--subset",
)


def command_text(argv: list[str]) -> str:
    """The command as the user typed it, keeping only the options that say what ran."""
    words, keep = ["python -m benchmark", *argv[:1]], False
    for word in argv[1:]:
        option = word.split("=", 1)[0]
        if word.startswith("--"):
            keep = option in WHAT_OPTIONS
            if keep:
                words.append(word)
        elif keep:
            words.append(word)
    return " ".join(words)


def store_rows(uri: str, experiment: str) -> pd.DataFrame:
    """The FINISHED cell runs of a store as archive rows (nothing is created if it is absent)."""
    return archive.from_runs(finished_runs(uri, experiment), archive.store_name(uri), experiment)


def known_rows(results_dir: Path, uri: str, experiment: str) -> pd.DataFrame:
    """Every run a grid can count as done: the store's, RESULTS_DIR's archive, the published one."""
    sources = [archive.read(archive.PUBLISHED_ARCHIVE), archive.read(results_dir / "runs.csv")]
    return archive.merge(*sources, store_rows(uri, experiment))


class TableWriter:
    """Merges the store into RESULTS_DIR/runs.csv and rewrites RESULTS_DIR's tables from this
    command's cells after every finished cell; logs them on the grid's parent run."""

    def __init__(self, args, cells: list[grid.Cell]) -> None:
        self.args, self.cells = args, cells
        self.results_dir = Path(args.results_dir)
        self.archive_path = self.results_dir / archive.ARCHIVE_NAME
        self.tracker: Tracker | None = None
        self.parent_run_id: str | None = None  # the grid's parent run: it carries the study

    def caption(self, n_runs: int) -> str:
        return (
            f"Made by `{command_text(sys.argv[1:] or ['run'])}`: this command's cells only"
            f" ({n_runs} runs); their runs are in `{archive.ARCHIVE_NAME}` beside this file."
            " `python -m benchmark report` publishes a store's runs in results/."
        )

    def write(self, final: bool = False) -> None:
        """Rewrite the tables; between cells a failure here is reported, never fatal to the
        grid (the final write at the end raises as usual)."""
        if final:
            return self._write(final=True)
        try:
            self._write(final=False)
        except Exception as error:
            print(f"warning: could not update {self.results_dir}: {error}", file=sys.stderr)

    def _write(self, final: bool) -> None:
        new = store_rows(self.args.tracking_uri, self.args.experiment)
        own = archive.update(self.archive_path, new)
        rows = archive.merge(archive.read(archive.PUBLISHED_ARCHIVE), own)
        wanted = {(c.key, c.code) for c in self.cells}
        rows = rows[[(k, v) in wanted for k, v in zip(rows["cell_key"], rows["code_version"])]]
        if rows.empty:
            if final:
                print("No FINISHED cells to tabulate.")
            return
        caption = self.caption(len(rows))
        summary = report_mod.write_report(rows, self.results_dir, caption, variants_apart=False)
        if self.parent_run_id and not summary.empty:
            self._to_parent(summary, step=len(rows))
        if final:
            print((self.results_dir / "summary.md").read_text())
            print(f"wrote {self.results_dir}/summary.md, summary.csv and plots ({len(rows)} runs)")

    def _to_parent(self, summary: pd.DataFrame, step: int) -> None:
        """The study on the grid's parent run: the tables (md, csv, and HTML, which MLflow's
        artifact viewer renders), the plots, and one metric per (method, dataset, budget) mean,
        stepped by finished cells, so the chart view compares methods at a glance."""
        self.tracker = self.tracker or Tracker(self.args.tracking_uri, self.args.experiment)
        html = self.results_dir / "summary.html"
        summary.round(2).to_html(html, index=False, na_rep="–")
        names = ("summary.md", "summary.csv", "summary.html", "variants.md")
        for name in (*names, *(f"{p}.png" for p in report_mod.PLOTS)):
            if (self.results_dir / name).exists():
                self.tracker.log_artifact(self.parent_run_id, self.results_dir / name, "study")
        metrics = {  # MLflow allows letters, digits and _-./: in names
            re.sub(
                r"[^\w\-./:]", "_", f"mean_accuracy/{r.dataset}/{int(r.n_labels)}/{r.method}"
            ): r.mean
            for r in summary.itertuples()
        }
        self.tracker.log_metrics(self.parent_run_id, metrics, step=step)
