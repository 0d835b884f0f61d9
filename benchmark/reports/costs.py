"""What cells cost: the plan's built-in estimate against the measured seconds, per method.

The estimate is each method's cost model (`Method.estimated_seconds`) for exactly the cells
that ran; the measured time is the cell's wall time less the VAE training it did (the plan
charges a VAE separately). The ratio is what the plan's calibration multiplies the model by.
"""

from __future__ import annotations

import json

import pandas as pd

import methods
from benchmark.data import datasets
from benchmark.errors import UsageError

TRAIN_IMAGES = 60_000


def estimate(row) -> float:
    """The built-in estimate of an archive row's cell (NaN for a method no longer known)."""
    try:
        cls = methods.get(row.method)
        known = {k: v for k, v in json.loads(row.params).items() if k in cls.defaults}
        known = {**{k: v for k, v in cls.new_params.items() if k not in known}, **known}
        spec = datasets.get_spec(row.dataset)
    except (UsageError, ValueError):
        return float("nan")
    n_train = row.subset or TRAIN_IMAGES
    return cls.estimated_seconds(row.n_labels, n_train, cls(**known).params, spec.n_classes)


def timed_whole(rows: pd.DataFrame) -> pd.DataFrame:
    """The rows whose run timed the whole cell: one that resumed from a checkpoint timed only
    what was left, and would teach the plan that the method is cheaper than it is."""
    resumed = rows.get("resumed_share", pd.Series(0.0, index=rows.index))
    return rows[pd.to_numeric(resumed, errors="coerce").fillna(0.0) <= 0]


def measured_seconds(rows: pd.DataFrame) -> pd.Series:
    """A cell's own seconds: its wall time less the VAE training it did."""
    return (rows["wall_seconds"] - rows["vae_train_seconds"].fillna(0)).clip(lower=0)


def with_seconds(rows: pd.DataFrame) -> pd.DataFrame:
    """The rows with each cell's measured seconds and its built-in model's estimate."""
    return rows.assign(
        measured=measured_seconds(rows), estimated=[estimate(r) for r in rows.itertuples()]
    )


def _text(rows: pd.DataFrame, column: str) -> pd.Series:
    """A column as text, '' where the archive did not record it (older rows, older archives)."""
    return rows.get(column, pd.Series("", index=rows.index)).fillna("").astype(str)


def machine_of(rows: pd.DataFrame) -> pd.Series:
    """Each row's machine."""
    return _text(rows, "machine")


def device_kind(rows: pd.DataFrame) -> pd.Series:
    """Each row's kind of device ("cpu", "cuda"), without a device index."""
    return _text(rows, "device").str.split(":").str[0]


def held_out_plan(rows: pd.DataFrame) -> pd.Series:
    """What the calibrated plan would have said of each cell had the cell not run yet: its
    built-in estimate times the median measured/estimated ratio of the other cells of its
    method on its machine (else its cells on other machines of the kind, at this machine's
    pace; else a twin's; else 1), as `plan.calibrate` does. A cell never calibrates itself,
    so this is an honest check of the plan."""
    from benchmark.study.plan import borrowed, clip_factor, with_twins

    ratio = rows["measured"] / rows["estimated"]
    ratio = ratio.where((rows["measured"] > 0) & (rows["estimated"] > 0))
    machine = machine_of(rows)
    kind = device_kind(rows)
    planned = pd.Series(float("nan"), index=rows.index)
    for _, here in rows.groupby(machine):
        medians = ratio[here.index].groupby(here["method"]).median().dropna()
        elsewhere_rows = (machine != machine[here.index[0]]) & (kind == kind[here.index[0]])
        elsewhere = ratio[elsewhere_rows].groupby(rows.loc[elsewhere_rows, "method"]).median()
        lent = {m: clip_factor(float(r)) for m, r in elsewhere.dropna().items()}
        for method, cells in here.groupby("method"):
            others = {m: clip_factor(float(r)) for m, r in medians.items() if m != method}
            alone = with_twins(borrowed(others, lent)).get(method, 1.0)
            for idx in cells.index:
                rest = ratio[cells.index.drop(idx)].dropna()
                factor = clip_factor(float(rest.median())) if len(rest) else alone
                planned[idx] = rows.at[idx, "estimated"] * factor
    return planned


def cost_table(rows: pd.DataFrame) -> pd.DataFrame:
    """Per method: cells, measured and estimated seconds per cell (medians) and in total,
    measured / estimated (1 = the built-in model is right here), and measured / what the
    calibrated plan would have said of each cell before it ran (`held_out_plan`). Cells
    resumed from a checkpoint are left out (`timed_whole`)."""
    rows = with_seconds(timed_whole(rows))
    rows = rows.assign(planned=held_out_plan(rows))
    rows = rows.assign(close=(rows["measured"] / rows["planned"]).between(0.75, 1.0 / 0.75))
    table = rows.groupby(row_label(rows)).agg(
        cells=("measured", "size"),
        measured_median_s=("measured", "median"),
        estimated_median_s=("estimated", "median"),
        measured_total_s=("measured", "sum"),
        estimated_total_s=("estimated", "sum"),
        planned_total_s=("planned", "sum"),
        close=("close", "sum"),
    )
    table["ratio"] = table["measured_total_s"] / table["estimated_total_s"]
    table["plan_ratio"] = table["measured_total_s"] / table["planned_total_s"]
    table.index.name = "method"
    return table.reset_index().sort_values("measured_total_s", ignore_index=True)


def row_label(rows: pd.DataFrame) -> pd.Series:
    """The table's row of each cell: its method, and a row of its own for the cells that ran
    on a GPU (seconds 30x apart would make one median of both meaningless)."""
    device = rows.get("device", pd.Series("", index=rows.index)).fillna("").astype(str)
    return rows["method"] + device.map(lambda d: " (GPU)" if d.startswith("cuda") else "")


def vae_costs(rows: pd.DataFrame) -> tuple[int, float, float]:
    """(VAEs trained, measured seconds, the plan's estimate) over the cells that trained one."""
    from methods.base import vae_config_from, vae_seconds

    trained = rows[rows["vae_train_seconds"] > 0]
    estimate = 0.0
    for row in trained.itertuples():
        params = json.loads(row.params)
        cls = methods.get(row.method)
        config = vae_config_from(
            cls(**{k: v for k, v in params.items() if k in cls.defaults}).params
        )
        estimate += vae_seconds(config, row.subset or TRAIN_IMAGES)
    return len(trained), float(trained["vae_train_seconds"].sum()), estimate


def costs_markdown(table: pd.DataFrame, vaes: tuple[int, float, float], machines: list[str]) -> str:
    lines = [
        "# What cells cost: the plan's estimate against measured time\n",
        "Seconds per cell (median) and in total, for the archived cells of each method;"
        " measured = the cell's wall time less the VAE training it did. *Built-in* is the"
        " method's cost model alone; *plan* is what `run` would have planned for each cell"
        " before it ran: the built-in model calibrated by the other cells of the method on the"
        " same machine (the cell itself held out; with none there, by its cells on other"
        " machines of the kind, at this machine's pace). A ratio within 0.75–1.33 is right to"
        " ±25 %; the last column counts the cells planned that well. A cell resumed from a"
        " checkpoint is left out: its run timed only what was left. Measured on:"
        f" {', '.join(machines) or 'unknown machines'}.\n",
        "| method | cells | measured / cell | built-in / cell | measured total"
        " | built-in total | measured / built-in | plan total | measured / plan | cells ±25 % |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in table.itertuples():
        lines.append(
            f"| {r.method} | {r.cells} | {r.measured_median_s:.0f} s | {r.estimated_median_s:.0f} s"
            f" | {r.measured_total_s / 60:.0f} min | {r.estimated_total_s / 60:.0f} min"
            f" | {r.ratio:.2f} | {r.planned_total_s / 60:.0f} min | {r.plan_ratio:.2f}"
            f" | {r.close} of {r.cells} |"
        )
    n, measured, estimated = vaes
    if n:
        lines.append(
            f"| (VAE training) | {n} VAEs | {measured / n:.0f} s | {estimated / n:.0f} s"
            f" | {measured / 60:.0f} min | {estimated / 60:.0f} min | {measured / estimated:.2f}"
            " | | | |"
        )
    return "\n".join(lines) + "\n"
