"""The `perf` command: what the harness costs, measured on this machine in one run.

Three figures: one VAE epoch through the harness against a hand-written PyTorch loop over the
same model, batch size and data (interleaved, medians); the end-to-end `run` of a small grid
with a cold and then a warm VAE cache (fresh tracking stores each time, so every cell runs
again); and each registered method's fit and predict time at a small and a large label budget.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import resource
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch.nn import functional as F

import methods
from benchmark import options, runtime
from benchmark.devices import resolve_device
from benchmark.errors import UsageError
from benchmark.study import grid
from benchmark.study.execute import Workspace, train_data
from benchmark.vaes.cache import VAECache
from methods.base import VAE_DEFAULTS, vae_config_from
from methods.vae import VAE, VAEConfig, train_vae

BASELINES = ("pixel-svm", "vae-gmm", "vae-linear-svm", "vae-rbf-svm")
FIT_BUDGETS = (100, 3000)
FULL_GRID_DATASET_SEEDS = 2 * len(grid.DEFAULT_SEEDS)  # both datasets × the default seeds
VAE_EPOCHS = int(VAE_DEFAULTS["vae_epochs"])
# --quick: enough to exercise every path in seconds, not to measure anything.
QUICK = {"epoch_rows": 2048, "repeats": 1, "subset": 500, "epochs": 1, "fit_subset": 500}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def harness_epoch(x: torch.Tensor, config: VAEConfig, seed: int) -> float:
    start = time.perf_counter()
    train_vae(x, replace(config, epochs=1), seed, progress=False)
    _sync(x.device)
    return time.perf_counter() - start


def plain_epoch(x: torch.Tensor, config: VAEConfig, seed: int) -> float:
    """One epoch as written by hand: same model and minibatches, PyTorch's default Adam."""
    start = time.perf_counter()
    generator = torch.Generator(device=x.device).manual_seed(seed)
    model = VAE(x.shape[1], config)
    model.init_weights(torch.Generator().manual_seed(seed))
    model.to(x.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    order = torch.randperm(len(x), generator=generator, device=x.device)
    for begin in range(0, len(x), config.batch_size):
        batch = x[order[begin : begin + config.batch_size]]
        mu, logvar = model.encode(batch)
        eps = torch.randn(mu.shape, generator=generator, device=x.device)
        logits = model.decode_logits(mu + eps * torch.exp(0.5 * logvar))
        recon = F.binary_cross_entropy_with_logits(logits, batch, reduction="sum")
        kl = 0.5 * torch.sum(mu.pow(2) + logvar.exp() - 1.0 - logvar)
        loss = (recon + config.beta * kl) / len(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    _sync(x.device)
    return time.perf_counter() - start


def time_epochs(x: torch.Tensor, config: VAEConfig, repeats: int) -> dict[str, Any]:
    """Interleaved harness/plain epochs, so load changes on a shared machine hit both alike."""
    harness_epoch(x[:512], config, 0)  # warm-up: first-call allocations and kernel choice
    plain_epoch(x[:512], config, 0)
    harness, plain = [], []
    for seed in range(repeats):
        harness.append(harness_epoch(x, config, seed))
        plain.append(plain_epoch(x, config, seed))
    h, p = statistics.median(harness), statistics.median(plain)
    return {
        "vae_epoch_seconds": h,
        "plain_epoch_seconds": p,
        "vae_epoch_ratio": h / p,
        "harness_epoch_runs": harness,
        "plain_epoch_runs": plain,
    }


def grid_run_args(
    args: argparse.Namespace, store: Path, cache: Path, labels: list[int]
) -> argparse.Namespace:
    """The `run` command for the baseline grid, parsed by the real CLI (so checked up front)."""
    from benchmark import cli

    argv = ["run", "--methods", ",".join(BASELINES), "--datasets", args.dataset, "--seeds", "0"]
    argv += ["--labels", ",".join(map(str, labels)), "--epochs", str(args.epochs)]
    argv += ["--device", args.device, "--vae-cache-dir", str(cache)]
    argv += ["--subset", str(args.subset)] if args.subset else []
    argv += ["--tracking-uri", f"sqlite:///{store}/mlflow.db"]
    argv += ["--storage", f"sqlite:///{store}/optuna.db", "--results-dir", str(store / "results")]
    argv += ["--data-dir", args.data_dir] if args.data_dir else []
    return cli.build_parser().parse_args(argv)


def time_grid(run_args: argparse.Namespace) -> float:
    """Wall seconds of `python -m benchmark run`, end to end."""
    from benchmark.study import launcher

    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):  # keep --json output a single object
        code = launcher.run_grid(run_args)
    if code != 0:
        raise RuntimeError(f"The perf grid run failed (exit {code}); see the messages above.")
    return time.perf_counter() - start


def time_methods(
    ws: Workspace, args: argparse.Namespace, names: list[str], budgets: list[int]
) -> list[dict[str, Any]]:
    """Fit and predict seconds per method and budget; the shared VAE's training is excluded."""
    x, _, _ = ws.train_arrays(args.dataset, args.fit_subset)
    rows = []
    overrides = {"vae_epochs": args.epochs, "epochs": args.epochs}
    for cell in grid.build_grid(
        names, [args.dataset], budgets, [0], overrides, subset=args.fit_subset
    ):
        method = methods.get(cell.method)(**cell.param_dict)
        data = replace(train_data(cell, ws, method.uses_vae), progress=False)
        start = time.perf_counter()
        method.fit(data)
        fit = time.perf_counter() - start - (sum(data.vae.seconds) if data.vae else 0.0)
        start = time.perf_counter()
        method.predict(x)  # training rows: timing never needs the test set
        predict = time.perf_counter() - start
        rows.append({"method": cell.method, "n_labels": cell.n_labels, "fit_seconds": fit})
        rows[-1].update(predict_seconds=predict, predict_rows=len(x))
    return rows


def peak_rss_mb() -> float:
    """Largest resident set of this process or any child it waited for (Linux: KiB)."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, children) / 1024


def _settings(args: argparse.Namespace) -> None:
    """Apply --quick and check sizes before anything slow starts."""
    if args.quick:
        for key, value in QUICK.items():
            setattr(args, key, value)
    if args.threads:
        torch.set_num_threads(args.threads)
    runtime.cpu_numerics()  # as `run` computes
    if args.subset and args.subset < grid.DEFAULT_LABELS[0]:
        raise UsageError(f"--subset {args.subset} leaves no label budget; use 0 or >= 100.")
    if args.fit_subset < FIT_BUDGETS[0]:
        raise UsageError(f"--fit-subset {args.fit_subset} must be at least {FIT_BUDGETS[0]}.")


def _describe(args: argparse.Namespace, device: torch.device, labels: list[int]) -> dict:
    """The settings every figure depends on, stored beside the figures."""
    return {
        "device": str(device),
        "threads": torch.get_num_threads(),
        "denormals": runtime.denormals(),
        "torch": torch.__version__,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "dataset": args.dataset,
        "vae_config": vae_config_from(VAE_DEFAULTS).as_params(),
        "repeats": args.repeats,
        "grid_methods": list(BASELINES),
        "grid_labels": labels,
        "grid_epochs": args.epochs,
        "grid_subset": args.subset,
        "grid_cells": len(BASELINES) * len(labels),
        "fit_subset": args.fit_subset,
        "quick": args.quick,
    }


def measure(args: argparse.Namespace) -> dict[str, Any]:
    _settings(args)
    device = resolve_device(args.device)
    names = options.parse_list(args.methods, methods.available(), "method")
    labels = [n for n in grid.DEFAULT_LABELS if not args.subset or n <= args.subset]
    result: dict[str, Any] = _describe(args, device, labels)
    with tempfile.TemporaryDirectory(prefix="benchmark-perf-") as tmp:
        cache = Path(tmp) / "vae-cache"
        runs = {k: grid_run_args(args, Path(tmp) / k, cache, labels) for k in ("cold", "warm")}
        ws = Workspace(args.data_dir, device, VAECache(cache), progress=False)
        x = ws.train_arrays(args.dataset, 0)[0][: args.epoch_rows]  # None: every row
        result["epoch_rows"] = len(x)
        result.update(
            time_epochs(torch.from_numpy(x).to(device), vae_config_from(VAE_DEFAULTS), args.repeats)
        )
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        result["grid_cold_seconds"] = time_grid(runs["cold"])
        result["grid_warm_seconds"] = time_grid(runs["warm"])
        fit_budgets = [n for n in FIT_BUDGETS if n <= args.fit_subset]
        result["method_timings"] = time_methods(ws, args, names, fit_budgets)
    result["peak_rss_mb"] = peak_rss_mb()
    if device.type == "cuda":
        result["cuda_peak_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    per_dataset_seed = result["grid_warm_seconds"] + VAE_EPOCHS * result["vae_epoch_seconds"]
    result["estimated_full_grid_seconds"] = (
        FULL_GRID_DATASET_SEEDS * per_dataset_seed if args.subset == 0 else None
    )
    return result


def _mb(value: float | None) -> str:
    return "–" if value is None else f"{value:,.0f} MB"


def _epoch_section(r: dict[str, Any]) -> list[str]:
    runs = {
        k: ", ".join(f"{t:.2f}" for t in r[k]) for k in ("harness_epoch_runs", "plain_epoch_runs")
    }
    return [
        f"## One VAE epoch ({r['epoch_rows']:,} {r['dataset']} training images)\n",
        f"Config {r['vae_config']}; {r['repeats']} epoch(s) per side, interleaved harness,"
        " plain, harness, plain…; the plain loop indexes minibatches from a permutation and"
        " uses `torch.optim.Adam` with PyTorch's defaults.\n",
        "| loop | median s | runs s |\n|---|---|---|",
        f"| harness (`train_vae`) | {r['vae_epoch_seconds']:.2f} | {runs['harness_epoch_runs']} |",
        f"| plain PyTorch | {r['plain_epoch_seconds']:.2f} | {runs['plain_epoch_runs']} |",
        f"\nRatio harness / plain: **{r['vae_epoch_ratio']:.2f}** (target ≤ 1.10).\n",
    ]


def _grid_section(r: dict[str, Any]) -> list[str]:
    subset = f"first {r['grid_subset']:,}" if r["grid_subset"] else "all"
    lines = [
        f"## Grid: {len(r['grid_methods'])} baselines × {r['dataset']} × labels"
        f" {', '.join(map(str, r['grid_labels']))} × seed 0 ({r['grid_cells']} cells)\n",
        f"`run` end to end, {r['grid_epochs']} VAE epoch(s), {subset} training and test images,"
        " fresh MLflow and Optuna stores for each run; the warm run reuses the cold run's VAE.\n",
        "| VAE cache | wall s |\n|---|---|",
        f"| cold | {r['grid_cold_seconds']:.1f} |\n| warm | {r['grid_warm_seconds']:.1f} |",
        f"\nPeak RSS (this process, all phases, or its largest child): {_mb(r['peak_rss_mb'])};"
        f" CUDA peak allocated: {_mb(r.get('cuda_peak_mb'))}.\n",
    ]
    if r["estimated_full_grid_seconds"] is not None:
        lines.append(
            f"Estimated full default grid (2 datasets × {len(grid.DEFAULT_SEEDS)} seeds,"
            f" {VAE_EPOCHS} VAE epochs, same cells): {FULL_GRID_DATASET_SEEDS} × (warm grid +"
            f" {VAE_EPOCHS} × harness epoch)"
            f" ≈ **{r['estimated_full_grid_seconds'] / 60:.0f} min** (target < 30 min).\n"
        )
    return lines


def markdown(r: dict[str, Any]) -> str:
    """results/perf.md: every figure with the setting that produced it."""
    quick = " — QUICK MODE: sizes too small to mean anything" if r["quick"] else ""
    lines = [
        "# Harness performance (`python -m benchmark perf`)\n",
        f"{r['machine']}, torch {r['torch']}, {r['threads']} CPU thread(s), subnormal floats"
        f" {r.get('denormals', 'kept')}, device {r['device']}{quick}.\n",
        *_epoch_section(r),
        *_grid_section(r),
        f"## Fit and predict per method (first {r['fit_subset']:,} training images)\n",
        f"VAE methods use {r['grid_epochs']} VAE epoch(s) (also `epochs` for methods that train"
        " their own networks); fit excludes training the shared VAE; predict runs on the same"
        " training rows (timing never reads the test set).\n",
        "| method | labels | fit s | predict s |\n|---|---|---|---|",
    ]
    lines += [
        f"| {t['method']} | {t['n_labels']} | {t['fit_seconds']:.2f} | {t['predict_seconds']:.2f} |"
        for t in r["method_timings"]
    ]
    return "\n".join(lines) + "\n"


def write_markdown(result: dict[str, Any], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(markdown(result))
    return path


def cmd_perf(args: argparse.Namespace) -> int:
    result = measure(args)
    path = write_markdown(result, Path(args.results_dir) / "perf.md")
    if args.json:
        print(json.dumps(result))
    else:
        print(path.read_text())
        print(f"wrote {path}")
    return 0
