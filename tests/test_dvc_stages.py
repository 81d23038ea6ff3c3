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
from medml.data.versioning import data_version, dir_hash, open_repo
from medml.settings import Settings

from .conftest import ROOT, SHARED_DATA, make_workspace, needs

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


# ------------------------------------------------------------ every chain of dvc.yaml
def _conll_sentences(path: Path) -> int:
    """Sentences of an IOB file counted independently of the importer: blocks of token
    lines between blank lines (each becomes one document; NCBI has no -DOCSTART-)."""
    blocks, inside = 0, False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            blocks += not inside
            inside = True
        else:
            inside = False
    return blocks


NCBI = SHARED_DATA / "nlp" / "ncbi-disease"
FSDD = SHARED_DATA / "speech" / "fsdd" / "recordings"
BREASTMNIST = SHARED_DATA / "imaging" / "breastmnist.npz"
# chain -> (its dataset folder, task, rows per split, patient ids pseudonymised by deid)
CHAINS = {
    "breastmnist": ("breastmnist-28", "imaging", {"train": 546, "val": 78, "test": 156}, False),
    "nlp_demo": ("nlp-demo", "nlp", None, True),
    "ncbi_disease": ("ncbi-disease", "nlp", {"train": 5424, "val": 923, "test": 940}, False),
    "speech_demo": ("speech-demo", "speech", None, True),
    "fsdd": ("fsdd", "speech", {"train": 2400, "val": 300, "test": 300}, True),
}
SOURCES = {"breastmnist": BREASTMNIST, "ncbi_disease": NCBI, "fsdd": FSDD}


def _present(chain: str) -> bool:
    return chain not in SOURCES or SOURCES[chain].exists()


def _chain_param(chain: str, slow: bool = False):
    marks = [needs(f"the shared data {SOURCES[chain]}" if chain in SOURCES else chain,
                   _present(chain), "../shared/data, beside the project")]
    if slow:
        marks.append(pytest.mark.slow)
    return pytest.param(chain, marks=marks, id=chain)


def _project_copy(tmp_path: Path) -> Path:
    """The project's layout in ``tmp_path``: ``ws`` (git: dvc.yaml, params.yaml, medml/)
    beside ``shared`` (the real shared data, linked), as ``../shared/data`` is read."""
    ws = make_workspace(tmp_path)
    (tmp_path / "shared").symlink_to(ROOT.parent / "shared", target_is_directory=True)
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy(ROOT / name, ws / name)
    shutil.copytree(ROOT / "medml", ws / "medml", ignore=shutil.ignore_patterns("__pycache__"))
    return ws


def _dvc(ws: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([str(Path(sys.executable).parent / "dvc"), *args], cwd=ws, env=env,
                          capture_output=True, text=True, timeout=900)


@pytest.mark.parametrize("chain", [
    _chain_param("breastmnist"), _chain_param("nlp_demo"),
    _chain_param("ncbi_disease", slow=True),  # 105-140 s on 2 cores
    _chain_param("speech_demo"), _chain_param("fsdd", slow=True)])  # 3000 wavs: 80-90 s
def test_every_dvc_yaml_chain_builds_its_dataset_and_is_locked(
        chain: str, tmp_path: Path) -> None:
    """`dvc repro` of a chain's last stage, as a user runs it in the project: all three
    stages run, in order, each output is a dataset with the same examples, the last one
    de-identified and split as expected, and dvc.lock pins every stage (`dvc status` clean)."""
    ws = _project_copy(tmp_path)
    stages = [f"{chain}_raw", f"{chain}_deid", f"{chain}_split"]
    dvc_yaml = yaml.safe_load((ws / "dvc.yaml").read_text())["stages"]
    assert set(stages) <= set(dvc_yaml)
    name, task, counts, pseudonymised = CHAINS[chain]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDML_")} | {
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": str(ROOT), "MEDML_HOME": str(tmp_path / "home")}
    assert _dvc(ws, "init", "-q", env=env).returncode == 0

    r = _dvc(ws, "repro", stages[-1], env=env)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    ran = [line.split("'")[1] for line in r.stdout.splitlines() if line.startswith("Running stage")]
    assert ran == stages

    outs = [ws / dvc_yaml[s]["outs"][0] for s in stages]
    assert outs[-1] == ws / "data" / name
    raw, deid, final = (load_manifest(p) for p in outs)
    for p in outs:
        assert load_meta(p).task == task
    # the same examples through the three stages, none lost or added
    assert sorted(raw["id"]) == sorted(deid["id"]) == sorted(final["id"])
    assert final["split"].notna().all()
    if counts is not None:
        assert final["split"].value_counts().to_dict() == counts
    if chain == "ncbi_disease":  # one document per sentence of the source files
        assert {s: _conll_sentences(NCBI / f"{f}.tsv") for s, f in
                (("train", "train"), ("val", "devel"), ("test", "test"))} == counts
        assert final["document_id"].nunique() == len(final)
    if chain == "fsdd":
        assert len(final) == len(list(FSDD.glob("*.wav"))) == 3000
    if pseudonymised:  # the raw ids are the source's, the deid ones keyed pseudonyms
        assert not raw["patient_id"].astype(str).str.startswith("pt-").any()
        assert deid["patient_id"].str.startswith("pt-").all()
        assert (final["patient_id"] == final["id"].map(deid.set_index("id")["patient_id"])).all()
    meta = load_meta(outs[-1])
    assert meta.extra["deidentified"] and (outs[-1] / "deid_report.json").is_file()

    # dvc.lock: every stage, with its command and the hash of what it wrote
    lock = yaml.safe_load((ws / "dvc.lock").read_text())["stages"]
    assert set(stages) <= set(lock)
    for stage, out in zip(stages, outs, strict=True):
        assert lock[stage]["cmd"] == dvc_yaml[stage]["cmd"]
        (locked,) = lock[stage]["outs"]
        assert locked["path"] == out.relative_to(ws).as_posix()
        assert locked["md5"].removesuffix(".dir") == dir_hash(ws, out).md5
    if chain in SOURCES:  # the shared source is a pinned dependency
        src = os.path.relpath(SOURCES[chain], ROOT)
        assert src in {d["path"] for d in lock[stages[0]]["deps"]}
    assert data_version(ws, outs[-1]).tracked_by == "dvc.lock"
    st = _dvc(ws, "status", *stages, env=env)
    assert st.returncode == 0 and "up to date" in st.stdout, st.stdout + st.stderr
