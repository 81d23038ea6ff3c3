"""The layer rules of docs/architecture.md, enforced with import-linter (contracts in
pyproject.toml): the suite fails when a module imports across a rule."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from .conftest import ROOT

LINT = str(Path(sys.executable).with_name("lint-imports"))


def _lint(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run([LINT, "--config", str(root / "pyproject.toml"), "--no-cache"],
                          cwd=root, capture_output=True, text=True, timeout=300)


def test_the_layer_contracts_hold() -> None:
    r = _lint(ROOT)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "4 kept, 0 broken" in r.stdout


def test_a_task_importing_the_gate_breaks_the_contract(tmp_path: Path) -> None:
    """The same contracts on a copy of the code where one task plug-in imports the gate
    (and the library imports Prefect): both are reported, the check fails."""
    for name in ("medml", "flows"):
        shutil.copytree(ROOT / name, tmp_path / name,
                        ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    metrics = tmp_path / "medml" / "tasks" / "imaging" / "metrics.py"
    metrics.write_text(metrics.read_text() + "\nfrom medml import gate  # noqa\n")
    registry = tmp_path / "medml" / "registry.py"
    registry.write_text(registry.read_text() + "\nimport prefect  # noqa\n")
    r = _lint(tmp_path)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "medml.tasks.imaging.metrics -> medml.gate" in r.stdout
    assert "medml.registry -> prefect" in r.stdout
