"""The layers point one way, and no module needs another to have been imported first.

    commands (benchmark/commands, cli)          what the user types
      harness (benchmark/*)                     data, splits, cache, queue, tracking, reports
        methods (methods/*)                     one file per method, on the contract
          leaf (benchmark.errors, .devices, .options)

Methods may import only methods and the leaf; the leaf imports nothing of the project.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

LEAF = {"benchmark.errors", "benchmark.devices", "benchmark.options"}
PACKAGES = ("benchmark", "methods")


def project_modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def imports(path: Path, modules: dict[str, Path], top_level_only: bool) -> set[str]:
    """The project modules PATH imports (at import time only, or anywhere in it)."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                found.add(full if full in modules else node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name in modules}


def graph(top_level_only: bool) -> dict[str, set[str]]:
    modules = project_modules()
    return {name: imports(path, modules, top_level_only) - {name} for name, path in modules.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in edges:
        if v not in index:
            visit(v)
    return found


def test_the_checker_sees_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycles_at_import_time() -> None:
    assert cycles(graph(top_level_only=True)) == []


def test_methods_import_only_methods_and_the_leaf() -> None:
    edges = graph(top_level_only=False)  # lazy imports inside functions count too
    wrong = {
        name: sorted(d for d in deps if not d.startswith("methods") and d not in LEAF)
        for name, deps in edges.items()
        if name.startswith("methods")
    }
    assert {k: v for k, v in wrong.items() if v} == {}


def test_the_leaf_imports_nothing_above_it() -> None:
    edges = graph(top_level_only=False)
    assert {name: sorted(edges[name] - LEAF) for name in LEAF} == {n: [] for n in LEAF}


@pytest.mark.slow
def test_every_module_imports_on_its_own() -> None:
    """Each module imported first, in a fresh copy of the project's modules: one that works only
    after another has been imported (a hidden cycle) fails here."""
    names = sorted(n for n in project_modules() if not n.endswith("__main__"))
    script = f"""
import importlib, sys
failures = []
for name in {names!r}:
    for loaded in [m for m in sys.modules if m.split(".")[0] in {PACKAGES!r}]:
        del sys.modules[loaded]
    try:
        importlib.import_module(name)
    except Exception as error:
        failures.append(f"{{name}}: {{type(error).__name__}}: {{error}}")
print("\\n".join(failures))
"""
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip() == ""


@pytest.mark.slow
def test_importing_the_harness_configures_no_logging_or_warnings() -> None:
    """Only the CLI (and its workers) set logging levels, warning filters and the plot backend
    (the libraries' own import-time filters are in place before the harness is imported)."""
    script = """
import logging, os, warnings
import matplotlib.pyplot, mlflow, numpy, optuna, pandas, scipy.stats, scikit_posthocs, sklearn, torch
before = (list(warnings.filters), {n: logging.getLogger(n).level for n in ("alembic", "optuna",
          "mlflow.tracking")}, os.environ.get("MPLBACKEND"))
import benchmark.workqueue.dispatch, benchmark.tracking.client, benchmark.vaes.runs, benchmark.tune.study, methods
methods.available()
after = (list(warnings.filters), {n: logging.getLogger(n).level for n in ("alembic", "optuna",
         "mlflow.tracking")}, os.environ.get("MPLBACKEND"))
print(before[1:] == after[1:], [f for f in after[0] if f not in before[0]])
"""
    env_free = {k: v for k, v in __import__("os").environ.items() if k != "MPLBACKEND"}
    out = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env=env_free,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip() == "True []", out.stdout


def test_modules_stay_small_and_the_harness_is_in_sub_packages() -> None:
    long = {
        str(path.relative_to(REPO)): n
        for path in project_modules().values()
        if (n := len(path.read_text().splitlines())) > 400
    }
    assert long == {}, f"modules over 400 lines: {long}"
    packages = {p.parent.name for p in (REPO / "benchmark").glob("*/__init__.py")}
    assert {
        "data",
        "study",
        "workqueue",
        "tracking",
        "vaes",
        "tune",
        "reports",
        "commands",
    } <= packages


def test_architecture_md_names_every_module() -> None:
    """ARCHITECTURE.md's tree lists each module of benchmark/ and methods/ by file name."""
    text = (REPO / "ARCHITECTURE.md").read_text()
    missing = [
        str(path.relative_to(REPO))
        for path in project_modules().values()
        if path.name != "__init__.py" and path.name not in text
    ]
    assert missing == [], f"ARCHITECTURE.md does not show {missing}"
