"""The README's set-up and test commands are the ones CI runs: they cannot drift apart."""

from __future__ import annotations

import re

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
