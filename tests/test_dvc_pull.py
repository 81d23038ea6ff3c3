"""A teammate's clone: the dataset's .dvc file travels with git, its content with the DVC
remote. `git clone`, the remote configured as a user does (the embedded remote lives in
`.dvc/config.local`, which git never carries), `dvc pull`: the same bytes, the same
version for a run."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from medml import lifecycle, lineage
from medml.data.dataset import sha256_file
from medml.settings import Settings

GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t", "PATH": "/usr/bin:/bin"}


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], check=True, env=GIT_ENV, capture_output=True,
                          text=True).stdout.strip()


def _dvc(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(Path(sys.executable).parent / "dvc"), *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def _files(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): sha256_file(p)
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_a_fresh_clone_pulls_the_dataset_from_the_remote(
        settings: Settings, workspace: Path, tmp_path: Path) -> None:
    v = lifecycle.create_dataset(settings, "imaging", "d1", seed=0)
    original = _files(settings.data_dir / "d1")
    assert len(original) == v.nfiles
    _git("-C", str(workspace), "add", "-A")
    _git("-C", str(workspace), "commit", "-q", "-m", "dataset d1")
    tracked = _git("-C", str(workspace), "ls-files").splitlines()
    assert "data/d1.dvc" in tracked and ".dvc/config" in tracked
    assert not any(t.startswith("data/d1/") for t in tracked)  # the content is DVC's
    assert ".dvc/config.local" not in tracked
    # only the remote holds the content now: the original's cache is gone
    shutil.rmtree(workspace / ".dvc" / "cache")

    clone = tmp_path / "clone"
    _git("clone", "-q", str(workspace), str(clone))
    assert (clone / "data" / "d1.dvc").is_file() and not (clone / "data" / "d1").exists()
    assert not (clone / ".dvc" / "config.local").exists()
    r = _dvc(clone, "pull")  # no remote in the clone yet
    assert r.returncode != 0 and "no remote" in (r.stdout + r.stderr).lower()

    # the user's step: the same remote, local to this clone as it was to the original
    r = _dvc(clone, "remote", "add", "--local", "--default", "medml-local", settings.remote_url)
    assert r.returncode == 0, r.stderr
    r = _dvc(clone, "pull")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert _files(clone / "data" / "d1") == original

    theirs = settings.model_copy(update={"workspace": clone})
    ctx = lifecycle.open_run(theirs, "d1", task="imaging")
    assert ctx.path == clone / "data" / "d1"
    assert ctx.data_md5 == v.md5 and ctx.version.tracked_by == "d1.dvc"
    assert ctx.git_commit == _git("-C", str(workspace), "rev-parse", "HEAD")
    assert len(ctx.manifest()) == len(lifecycle.open_run(settings, "d1").manifest())
    assert lineage.verify_data(theirs, "d1", v.md5) == []
