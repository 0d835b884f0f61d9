"""A computation that changes must change its version, or its old cells would count as current.

Each method, the VAE core and the protocol are run on tiny data at a fixed seed and compared
with tests/fingerprints.json. A different result under the same version fails with the fix:
bump the version (its cells then run again). After a bump, record the new fingerprints with

    BENCHMARK_UPDATE_FINGERPRINTS=1 python -m pytest tests/test_fingerprints.py

which refuses, as the test does, to record a changed result under an unchanged version.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
from pathlib import Path
from typing import Any

import pytest
from fingerprints import (
    FLOAT_NOISE,
    fingerprint_params,
    method_fingerprint,
    protocol_fingerprint,
    recorded,
    tiny_root,
    vae_fingerprint,
    write_record,
)

import methods
from benchmark import provenance
from methods import vae as vae_core

UPDATE = bool(os.environ.get("BENCHMARK_UPDATE_FINGERPRINTS"))
RECORD_CMD = "BENCHMARK_UPDATE_FINGERPRINTS=1 python -m pytest tests/test_fingerprints.py"
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_root(tmp_path_factory.mktemp("fingerprint-data"))


def check(section: str, name: str, version: object, value: Any, where: str, same=None) -> None:
    """Compare with the record; in update mode, record a new version's value."""
    record = recorded()
    entry = record.get(section, {}).get(name)
    same = same or (lambda a, b: a == b)
    if entry is not None and entry["version"] == version and not same(entry["value"], value):
        pytest.fail(
            f"{name} computes something other than what version {version} recorded in"
            f" tests/fingerprints.json. If that is intended, bump the version ({where}): every"
            f" cell made by version {version} will run again. If not, the change altered its"
            " results by accident."
        )
    if entry is not None and entry["version"] == version:
        return
    if not UPDATE:
        was = (
            "has no fingerprint" if entry is None else f"was recorded at version {entry['version']}"
        )
        pytest.fail(f"{name} (version {version}) {was}; record it with `{RECORD_CMD}`.")
    record.setdefault(section, {})[name] = {"version": version, "value": value}
    write_record(record)


def _where(cls: type) -> str:
    path = Path(inspect.getsourcefile(cls)).resolve().relative_to(REPO)
    core = " (or the VAE core's, if its own test fails too)" if cls.uses_vae else ""
    return f"`version = {cls.version + 1}` in {path}, class {cls.__name__}{core}"


def _slow(name: str) -> Any:
    return pytest.param(name, marks=pytest.mark.slow) if name == "vae-gmm-mutual" else name


@pytest.mark.parametrize("name", [_slow(n) for n in methods.available()])
def test_method_computes_what_its_version_recorded(name: str, root: Path) -> None:
    cls = methods.get(name)
    # a VAE method's result also follows the core's; new defaults are recorded anew, not bumped
    version = provenance.cell_version(cls)
    params = json.dumps(fingerprint_params(name), sort_keys=True)
    version += " " + hashlib.sha256(params.encode()).hexdigest()[:8]
    noise = FLOAT_NOISE.get(name, 0)

    def same(a: str, b: str) -> bool:
        return len(a) == len(b) and sum(x != y for x, y in zip(a, b)) <= noise

    check("methods", name, version, method_fingerprint(name, root), _where(cls), same)


def test_vae_core_computes_what_its_version_recorded(root: Path) -> None:
    def close(a: list[float], b: list[float]) -> bool:
        return all(abs(x - y) <= 1e-4 * max(1.0, abs(x)) for x, y in zip(a, b))

    where = f"CORE_VERSION = {vae_core.CORE_VERSION + 1} in methods/vae.py"
    check("core", "vae", vae_core.CORE_VERSION, vae_fingerprint(root), where, close)


def test_protocol_computes_what_its_version_recorded(root: Path) -> None:
    where = f"PROTOCOL_VERSION = {provenance.PROTOCOL_VERSION + 1} in benchmark/provenance.py"
    check("core", "protocol", provenance.PROTOCOL_VERSION, protocol_fingerprint(root), where)


def test_every_recorded_method_still_exists() -> None:
    gone = sorted(set(recorded().get("methods", {})) - set(methods.available()))
    assert not gone, f"tests/fingerprints.json records removed methods {gone}; delete them there."


def test_a_changed_result_under_the_same_version_fails(monkeypatch) -> None:
    record = {"methods": {"x": {"version": "x@1", "value": "0123"}}}
    monkeypatch.setitem(globals(), "recorded", lambda: record)
    with pytest.raises(pytest.fail.Exception, match="bump the version"):
        check("methods", "x", "x@1", "0124", "here")
    check("methods", "x", "x@1", "0123", "here")  # the same result passes
