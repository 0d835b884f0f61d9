"""The README's set-up and test commands are the ones CI runs: they cannot drift apart."""

from __future__ import annotations

import re
import subprocess

from conftest import REPO


def _commands(text: str) -> list[str]:
    blocks = re.findall(r"```(?:bash|sh)\n(.*?)```", text, flags=re.S)
    lines = [line.split("  #")[0].strip() for block in blocks for line in block.splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def test_ci_runs_exactly_the_readme_install_and_test_commands() -> None:
    readme = _commands((REPO / "README.md").read_text())
    ci = [
        line.strip()
        for line in (REPO / ".ci" / "run").read_text().splitlines()
        if line.strip().startswith("python -m")
    ]
    install, main_job, tests = readme[0], readme[1], readme[2]
    assert install.startswith("python -m pip install") and main_job.startswith(
        "python -m benchmark run"
    )
    assert tests.startswith("python -m pytest")
    assert ci == [install, tests]


LINK = re.compile(r"!?\[[^\]]*\]\(([^)#\s]+)(?:#[^)]*)?\)")


def test_every_relative_link_and_image_in_the_docs_exists() -> None:
    pages = [REPO / "README.md", REPO / "ARCHITECTURE.md", *sorted((REPO / "docs").rglob("*.md"))]
    broken = []
    for page in pages:
        for target in LINK.findall(page.read_text()):
            if "://" in target or target.startswith("mailto:"):
                continue
            if not (page.parent / target).exists():
                broken.append(f"{page.relative_to(REPO)} -> {target}")
    assert not broken, f"links to nothing: {broken}"


def test_no_committed_text_names_a_machines_path() -> None:
    tracked = subprocess.run(
        ["git", "ls-files", "*.md", "*.csv", "*.py", "*.toml"],
        cwd=REPO,
        capture_output=True,
        text=True,
    ).stdout.split()
    found = [
        name
        for name in tracked
        if (REPO / name).is_file()
        and re.search(r"sqlite:////|/work/|/home/\w", (REPO / name).read_text())
        and not name.startswith("tests/")
    ]
    assert not found, f"absolute machine paths in {found}"


def test_the_readme_is_a_manual_not_a_notebook() -> None:
    assert len((REPO / "README.md").read_bytes()) < 15_000


def test_the_readme_example_method_runs(tiny_data, tmp_path) -> None:
    """The ten lines under 'Adding a method' define a method that registers and runs."""
    import numpy as np
    import torch

    import methods
    from benchmark.study import grid
    from benchmark.study.execute import Workspace, run_cell
    from benchmark.vaes.cache import VAECache

    text = (REPO / "README.md").read_text()
    code = re.search(r"## Adding a method.*?```python\n(.*?)```", text, flags=re.S).group(1)
    namespace: dict = {"__name__": "readme_example"}
    exec(code, namespace)
    try:
        cls = methods.get("pixel-knn")
        params, _ = grid.resolve_params("pixel-knn", "mnist", 20, {})
        cell = grid.Cell("pixel-knn", "mnist", 20, 0, grid.canonical(params))
        ws = Workspace(tiny_data, torch.device("cpu"), VAECache(tmp_path / "c"), progress=False)
        result = run_cell(cell, ws)
        assert cls.version == 1 and np.trace(result.confusion) > 100  # it learns the tiny data
    finally:
        methods.REGISTRY.pop("pixel-knn", None)


def test_the_readme_counts_the_cells_the_plan_would_make() -> None:
    """The README said 400 cells of 10 methods long after the registry had grown to 22."""
    import methods

    text = (REPO / "README.md").read_text()
    found = re.search(r"\((\d+) cells: (\d+) methods ×\s+2 datasets × 4 budgets × 5 seeds", text)
    assert found, "README.md no longer states the plan's cell count"
    n_methods = len(methods.available())
    assert (int(found[1]), int(found[2])) == (n_methods * 40, n_methods)
