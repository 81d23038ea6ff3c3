"""The project's own dvc.yaml, run by real DVC in a throwaway git repository: the demo
dataset's raw -> deid -> split stages rebuild only what changed, and an older commit's
data comes back byte for byte with `dvc checkout`."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from medml.data.dataset import load_manifest, load_meta, sha256_file
from medml.data.versioning import data_version, open_repo
from medml.settings import Settings

from .conftest import ROOT

CHAIN = ["imaging_demo_raw", "imaging_demo_deid", "imaging_demo_split"]
OUT = "data/imaging-demo"


def _git(ws: Path, *args: str) -> str:
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t", "PATH": "/usr/bin:/bin"}
    return subprocess.run(["git", "-C", str(ws), *args], check=True, env=env,
                          capture_output=True, text=True).stdout.strip()


def _files(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): sha256_file(p)
            for p in sorted(root.rglob("*")) if p.is_file()}


def _params(settings: Settings, seed: int) -> str:
    params = settings.model_dump(mode="json", exclude={"workspace", "home", "deid_key"})
    params["tasks"]["imaging"]["split"]["seed"] = seed
    return yaml.safe_dump(params)


def test_project_dvc_yaml_reruns_only_what_changed_and_restores_old_data(
        settings: Settings, workspace: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # the project's dvc.yaml and the sources its stages depend on
    shutil.copy(ROOT / "dvc.yaml", workspace / "dvc.yaml")
    shutil.copytree(ROOT / "medml", workspace / "medml",
                    ignore=shutil.ignore_patterns("__pycache__"))
    (workspace / "params.yaml").write_text(_params(settings, seed=0))
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    monkeypatch.setenv("MEDML_HOME", str(settings.state_dir))
    repo = open_repo(workspace, settings.remote_url)
    with contextlib.chdir(workspace):
        ran = [s.addressing for s in repo.reproduce(CHAIN[-1])]
        assert ran == CHAIN
        assert repo.reproduce(CHAIN[-1]) == []  # nothing changed: nothing runs
    first = _files(workspace / OUT)
    meta, manifest = load_meta(workspace / OUT), load_manifest(workspace / OUT)
    assert meta.extra["deidentified"] and meta.patient_level_split
    assert manifest["patient_id"].str.startswith("pt-").all()
    assert (manifest["split_by"] == "patient").all()
    assert (manifest.groupby("patient_id")["split"].nunique() == 1).all()
    assert (workspace / OUT / "deid_report.json").is_file()
    v1 = data_version(workspace, workspace / OUT)
    _git(workspace, "add", "-A")
    _git(workspace, "commit", "-q", "-m", "data v1")
    commit1 = _git(workspace, "rev-parse", "HEAD")

    # one data param changes: only the split stage runs again
    (workspace / "params.yaml").write_text(_params(settings, seed=7))
    with contextlib.chdir(workspace):
        assert [s.addressing for s in repo.reproduce(CHAIN[-1])] == ["imaging_demo_split"]
    second = _files(workspace / OUT)
    assert second != first
    assert {k: v for k, v in second.items() if k.startswith("images/")} == {
        k: v for k, v in first.items() if k.startswith("images/")}  # same examples
    assert data_version(workspace, workspace / OUT).md5 != v1.md5
    _git(workspace, "add", "-A")
    _git(workspace, "commit", "-q", "-m", "data v2")

    # the older commit's data, byte for byte
    _git(workspace, "checkout", "-q", commit1)
    with contextlib.chdir(workspace):
        open_repo(workspace, settings.remote_url).checkout(targets=CHAIN, force=True)
    assert _files(workspace / OUT) == first
    assert data_version(workspace, workspace / OUT).md5 == v1.md5
