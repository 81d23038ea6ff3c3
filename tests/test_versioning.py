"""DVC versioning: dataset hashes from .dvc files and from dvc.lock stage outputs."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import yaml

from medml import lifecycle
from medml.data.versioning import data_version, open_repo
from medml.settings import Settings

from .conftest import ROOT


def test_dvc_add_version_and_remote(settings: Settings, workspace: Path) -> None:
    v = lifecycle.create_dataset(settings, "imaging", "d1", seed=0)
    assert v.tracked_by == "d1.dvc" and len(v.md5) == 32 and v.nfiles > 10
    assert v.git_commit and len(v.git_commit) == 40
    again = lifecycle.create_dataset(settings, "imaging", "d1", seed=0, overwrite=True)
    assert again.md5 == v.md5  # generation is deterministic: same seed, same version
    other = lifecycle.create_dataset(settings, "imaging", "d1", seed=1, overwrite=True)
    assert other.md5 != v.md5
    assert (settings.state_dir / "dvc-remote" / "files" / "md5").is_dir()


def test_dvc_yaml_stage_reproduces_once_and_is_versioned(settings: Settings,
                                                         workspace: Path) -> None:
    params = settings.model_dump(mode="json", exclude={"workspace", "home"})
    (workspace / "params.yaml").write_text(yaml.safe_dump(params))
    cmd = (f"{sys.executable} -m medml.cli data generate --task imaging "
           "--out data/gen --overwrite")
    (workspace / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"gen": {
        "cmd": cmd, "params": ["tasks.imaging.demo"], "outs": ["data/gen"]}}}))
    repo = open_repo(workspace, settings.remote_url)
    import os

    os.environ["PYTHONPATH"] = str(ROOT)
    with contextlib.chdir(workspace):
        assert [s.addressing for s in repo.reproduce()] == ["gen"]
        assert repo.reproduce() == []  # nothing changed: nothing runs
    v = data_version(workspace, workspace / "data" / "gen")
    assert v.tracked_by == "dvc.lock" and len(v.md5) == 32
    lock = yaml.safe_load((workspace / "dvc.lock").read_text())
    assert lock["stages"]["gen"]["outs"][0]["md5"].startswith(v.md5)
