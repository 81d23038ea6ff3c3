"""DVC owns data: track a dataset directory, push it to the remote, read its version.

A dataset ``data/NAME`` is versioned either by ``data/NAME.dvc`` (``medml data import``
or ``generate``) or as an output of a ``dvc.yaml`` stage (``dvc.lock``). Its version is
DVC's content hash of the directory, plus the git revision of the workspace.

``dir_hash`` and ``registered_listing`` answer "what changed since DVC recorded it?"
through DVC's own API and write nothing: the directory is hashed into an in-memory object
database, and the recorded ``.dir`` listing is only read from the cache or a local remote.
"""

from __future__ import annotations

import contextlib
import io
import logging
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple

import yaml

from medml.errors import NotFoundError


@dataclass(frozen=True)
class DataVersion:
    """Which data, exactly: DVC's directory hash, file count, and the git revision."""

    name: str
    path: str  # relative to the workspace
    md5: str  # DVC content hash of the directory (".dir" suffix stripped)
    nfiles: int
    git_commit: str | None
    git_dirty: bool
    tracked_by: str  # the .dvc file or "dvc.lock"

    def as_dict(self) -> dict:
        return asdict(self)


def git_revision(path: Path) -> tuple[str | None, bool]:
    """HEAD commit of the git repository holding ``path`` and whether it has changes."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=path, capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                                    cwd=path, capture_output=True, text=True).stdout.strip())
        return head, dirty
    except (subprocess.CalledProcessError, FileNotFoundError):
        return None, False


@contextlib.contextmanager
def _quiet():
    # DVC logs git hints at INFO and prints on stdout; keep our CLI's output clean.
    dvc_log = logging.getLogger("dvc")
    level = dvc_log.level
    dvc_log.setLevel(logging.WARNING)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        dvc_log.setLevel(level)


def open_repo(workspace: Path, remote_url: str):
    """The DVC repo at ``workspace`` (initialised on first use) with a default remote.

    The remote is written to ``.dvc/config.local`` only when none is configured, so a
    team's shared remote in ``.dvc/config`` wins over the embedded local one.
    """
    from dvc.repo import Repo

    workspace = Path(workspace)
    with _quiet():
        if not (workspace / ".dvc").is_dir():
            Repo.init(str(workspace), no_scm=not (workspace / ".git").exists())
        repo = Repo(str(workspace))
        repo.scm_context.quiet = True
        if not repo.config["core"].get("remote"):
            with repo.config.edit(level="local") as conf:
                conf["remote"]["medml-local"] = {"url": str(remote_url)}
                conf["core"]["remote"] = "medml-local"
            repo = Repo(str(workspace))
            repo.scm_context.quiet = True
    return repo


def track(workspace: Path, dataset_path: Path, remote_url: str) -> DataVersion:
    """``dvc add`` the dataset directory and ``dvc push`` it; return its version."""
    repo = open_repo(workspace, remote_url)
    target = Path(dataset_path).resolve().relative_to(Path(workspace).resolve())
    with _quiet(), contextlib.chdir(workspace):  # DVC resolves targets from the cwd
        repo.add(str(target))
        repo.push(targets=[str(target)])
    return data_version(workspace, Path(dataset_path))


class DirHash(NamedTuple):
    """A directory as DVC hashes it: the ``.dir`` hash and the per-file listing."""

    md5: str  # DVC's directory hash (".dir" suffix stripped)
    files: dict[str, str]  # relative posix path -> md5 of the file


@contextlib.contextmanager
def _existing_repo(workspace: Path):
    """The DVC repo at ``workspace`` when it has one (never initialised here), else None."""
    from dvc.repo import Repo

    if not (Path(workspace) / ".dvc").is_dir():
        yield None
        return
    with _quiet(), Repo(str(workspace)) as repo:
        yield repo


def _files(tree) -> dict[str, str]:
    return {"/".join(key): hi.value for key, _, hi in tree if hi is not None}


def dir_hash(workspace: Path, dataset_path: Path) -> DirHash:
    """DVC's hash of directory ``dataset_path`` as ``dvc add`` would record it now, with the
    workspace's ``.dvcignore``; built in memory (``dry_run``, an in-memory object database
    without DVC's state), so neither the cache nor the workspace is written."""
    from dvc_data.hashfile.build import build
    from dvc_data.hashfile.db import HashFileDB
    from dvc_objects.fs import LocalFileSystem, MemoryFileSystem

    path = str(Path(dataset_path).resolve())
    if not Path(path).is_dir():
        raise NotFoundError(f"{dataset_path}: no such dataset directory")
    odb = HashFileDB(MemoryFileSystem(), "/medml-dir-hash", read_only=True)
    with _existing_repo(workspace) as repo:
        fs = repo.fs if repo is not None else LocalFileSystem()
        ignore = repo.dvcignore if repo is not None else None
        _, _, tree = build(odb, path, fs, "md5", dry_run=True, ignore=ignore)
    return DirHash(tree.hash_info.value.removesuffix(".dir"), _files(tree))


def registered_listing(workspace: Path, md5: str) -> dict[str, str] | None:
    """The per-file listing (relative path -> md5) DVC recorded for directory hash ``md5``:
    its ``.dir`` object read from the workspace's cache (as configured: ``cache.dir``,
    ``.dvc/config.local``...), else from the default remote when that is a local folder.
    None when neither holds it (or the workspace is no DVC repository). Read-only."""
    from dvc.config import NoRemoteError
    from dvc_data.hashfile.hash_info import HashInfo
    from dvc_data.hashfile.tree import Tree
    from dvc_objects.errors import ObjectFormatError
    from dvc_objects.fs import Schemes

    oid = f"{md5.removesuffix('.dir')}.dir"
    with _existing_repo(workspace) as repo:
        if repo is None:
            return None
        odbs = [repo.cache.local, repo.cache.legacy]
        try:
            remote = repo.cloud.get_remote()
        except NoRemoteError:
            remote = None
        if remote is not None and remote.fs.protocol == Schemes.LOCAL:  # never the network
            odbs += [remote.odb, remote.legacy_odb]
        for odb in odbs:
            if odb is None:
                continue
            try:
                return _files(Tree.load(odb, HashInfo(odb.hash_name, oid)))
            except (FileNotFoundError, ObjectFormatError):
                continue
    return None


def data_version(workspace: Path, dataset_path: Path) -> DataVersion:
    """The recorded DVC version of a dataset directory."""
    workspace = Path(workspace).resolve()
    rel = Path(dataset_path).resolve().relative_to(workspace)
    commit, dirty = git_revision(workspace)
    dvc_file = workspace / f"{rel}.dvc"
    if dvc_file.is_file():
        out = yaml.safe_load(dvc_file.read_text())["outs"][0]
        return DataVersion(rel.name, str(rel), out["md5"].removesuffix(".dir"),
                           int(out.get("nfiles", 0)), commit, dirty, str(dvc_file.name))
    lock = workspace / "dvc.lock"
    if lock.is_file():
        stages = (yaml.safe_load(lock.read_text()) or {}).get("stages", {})
        for stage in stages.values():
            for out in stage.get("outs", []):
                if Path(out["path"]) == rel:
                    return DataVersion(rel.name, str(rel), out["md5"].removesuffix(".dir"),
                                       int(out.get("nfiles", 0)), commit, dirty, "dvc.lock")
    raise NotFoundError(
        f"{rel}: not versioned by DVC (no {rel}.dvc and no dvc.lock output); "
        "create it with `medml data import` / `medml data generate` or `dvc repro`"
    )
