"""DVC versioning: dataset hashes from .dvc files and from dvc.lock stage outputs, and the
read-only look at what DVC recorded (directory hash, registered listing, lineage verify)."""

from __future__ import annotations

import contextlib
import hashlib
import shutil
import sys
from pathlib import Path

import pytest
import yaml

from medml import lifecycle, lineage
from medml.data.versioning import data_version, dir_hash, open_repo, registered_listing, track
from medml.settings import Settings

from .conftest import ROOT, flip_byte


def test_dvc_add_version_and_remote(settings: Settings, workspace: Path) -> None:
    v = lifecycle.create_dataset(settings, "imaging", "d1", seed=0)
    assert v.tracked_by == "d1.dvc" and len(v.md5) == 32 and v.nfiles > 10
    assert v.git_commit and len(v.git_commit) == 40
    again = lifecycle.create_dataset(settings, "imaging", "d1", seed=0, overwrite=True)
    assert again.md5 == v.md5  # generation is deterministic: same seed, same version
    other = lifecycle.create_dataset(settings, "imaging", "d1", seed=1, overwrite=True)
    assert other.md5 != v.md5
    assert (settings.state_dir / "dvc-remote" / "files" / "md5").is_dir()


def test_dvc_yaml_stage_reproduces_once_and_is_versioned(
        settings: Settings, workspace: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    params = settings.model_dump(mode="json", exclude={"workspace", "home"})
    (workspace / "params.yaml").write_text(yaml.safe_dump(params))
    cmd = (f"{sys.executable} -m medml.cli data generate --task imaging "
           "--out data/gen --overwrite")
    (workspace / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"gen": {
        "cmd": cmd, "params": ["tasks.imaging.demo"], "outs": ["data/gen"]}}}))
    repo = open_repo(workspace, settings.remote_url)
    monkeypatch.setenv("PYTHONPATH", str(ROOT))  # for the stage's subprocess, this test only
    with contextlib.chdir(workspace):
        assert [s.addressing for s in repo.reproduce()] == ["gen"]
        assert repo.reproduce() == []  # nothing changed: nothing runs
    v = data_version(workspace, workspace / "data" / "gen")
    assert v.tracked_by == "dvc.lock" and len(v.md5) == 32
    lock = yaml.safe_load((workspace / "dvc.lock").read_text())
    assert lock["stages"]["gen"]["outs"][0]["md5"].startswith(v.md5)


def _snapshot(*roots: Path) -> dict[str, tuple[str, int]]:
    """Every file under ``roots``: its sha256 and mode (DVC protects cache files by mode)."""
    out = {}
    for root in roots:
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for p in files:
            out[str(p)] = (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mode)
    return out


def test_dir_hash_is_dvcs_and_the_listing_is_read_from_cache_then_remote(
        settings: Settings, workspace: Path) -> None:
    v = lifecycle.create_dataset(settings, "imaging", "d1", seed=0)
    path = settings.data_dir / "d1"
    recorded = yaml.safe_load((path.parent / v.tracked_by).read_text())["outs"][0]
    h = dir_hash(workspace, path)
    assert h.md5 == recorded["md5"].removesuffix(".dir") == v.md5
    assert len(h.files) == recorded["nfiles"] and "manifest.csv" in h.files

    cache, remote = workspace / ".dvc" / "cache", Path(settings.remote_url)
    before = _snapshot(remote, path)
    assert registered_listing(workspace, v.md5) == h.files  # from the local cache
    assert registered_listing(workspace, "0" * 32) is None
    shutil.rmtree(cache)
    assert registered_listing(workspace, f"{v.md5}.dir") == h.files  # from the local remote
    assert not cache.exists() and _snapshot(remote, path) == before  # read-only


def test_verify_data_names_the_changed_file_and_writes_nothing(settings: Settings,
                                                                workspace: Path) -> None:
    v = lifecycle.create_dataset(settings, "imaging", "d1", seed=0)
    path = settings.data_dir / "d1"
    assert lineage.verify_data(settings, "d1", v.md5) == []
    image = sorted((path / "images").glob("*.npy"))[0]
    flip_byte(image)
    dvc = workspace / ".dvc"
    watched = (dvc / "cache", dvc / "config", dvc / "config.local", Path(settings.remote_url),
               path, path.parent / v.tracked_by)
    before = _snapshot(*watched)
    problems = lineage.verify_data(settings, "d1", v.md5)
    assert _snapshot(*watched) == before
    rel = image.relative_to(path).as_posix()
    now = dir_hash(workspace, path).md5
    assert problems == [f"data: d1/{rel} changed",
                        f"data: dataset 'd1' content hash is {now}, registered {v.md5}"]

    track(workspace, path, settings.remote_url)  # re-versioned after registration
    problems = lineage.verify_data(settings, "d1", f"{v.md5}.dir")
    assert f"data: d1/{rel} changed" in problems
    assert problems[-1] == (f"data: DVC now tracks 'd1' at {now} (re-versioned since this "
                            "model was registered)")
