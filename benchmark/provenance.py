"""Which code made a number: hashes of the source files a result depends on, and versions.

A cell's result depends on its method's module, everything that module imports from this
project (found by reading the import statements, transitively), the harness code that splits
and scores, and the numeric libraries. Hashing whole files (not a few functions) means a fix
in a helper — a seeded generator, the pixel scaling — invalidates what it could have changed.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib.metadata
from collections.abc import Iterable
from pathlib import Path

PROJECT_PACKAGES = ("benchmark", "methods")
# The harness code every cell's score passes through: data reading, the split, scoring (whole
# files, with what they import), and the code in benchmark/execute.py that hands a method its
# data and scores it (those objects' source only: the rest of that file is tracking glue, and
# editing it must not rerun a day-long grid).
SCORING_MODULES = ("benchmark.datasets", "benchmark.splits", "benchmark.scoring")
CELL_RUNNER = ("benchmark.execute", ("Workspace", "VAESupply", "train_data", "run_cell"))
LIBRARIES = ("torch", "scikit-learn", "numpy")


ROOT = Path(__file__).resolve().parents[1]


def _source(module: str) -> Path | None:
    """The file of a project module (without importing it), or None for a non-module name."""
    if module.split(".")[0] not in PROJECT_PACKAGES:
        return None
    base = ROOT.joinpath(*module.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _project_imports(path: Path) -> set[str]:
    """Modules of this project named by `import` / `from ... import` statements in a file."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        for name in names:
            if _source(name) is not None:
                found.add(name)
    return found


@functools.cache
def dependencies(module: str) -> tuple[str, ...]:
    """`module` and every project module it imports, directly or not (a package's
    `__init__` counts only when it is imported by name, so `methods/__init__`, which loads
    every method, does not tie one method to all the others)."""
    seen, todo = set(), [module]
    while todo:
        name = todo.pop()
        if name in seen or _source(name) is None:
            continue
        seen.add(name)
        todo.extend(_project_imports(_source(name)))
    return tuple(sorted(seen))


def library_versions(names: Iterable[str] = LIBRARIES) -> dict[str, str]:
    versions = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "absent"
    return versions


@functools.cache
def modules_hash(
    modules: tuple[str, ...], alone: tuple[str, ...] = (), libraries: tuple[str, ...] = LIBRARIES
) -> str:
    """Hash of the files of `modules` and all they import, of the `alone` modules' own files,
    and of the libraries' versions."""
    files = sorted({dep for module in modules for dep in dependencies(module)} | set(alone))
    digest = hashlib.sha256()
    for name in files:
        digest.update(name.encode() + b"\0" + _source(name).read_bytes() + b"\0")
    for lib, version in sorted(library_versions(libraries).items()):
        digest.update(f"{lib}={version}\0".encode())
    return digest.hexdigest()[:12]


@functools.cache
def _objects_source(module: str, names: tuple[str, ...]) -> str:
    """The source of some top-level functions and classes of a project module."""
    text = _source(module).read_text()
    tree = ast.parse(text)
    found = {
        node.name: ast.get_source_segment(text, node)
        for node in tree.body
        if isinstance(node, ast.FunctionDef | ast.ClassDef)
    }
    return "\n".join(found.get(name, f"<missing {name}>") for name in names)


def method_code_version(method_module: str) -> str:
    """The code version of a cell of the method defined in `method_module`."""
    module, names = CELL_RUNNER
    digest = hashlib.sha256(modules_hash((method_module, *SCORING_MODULES)).encode())
    digest.update(_objects_source(module, names).encode())
    return digest.hexdigest()[:12]
