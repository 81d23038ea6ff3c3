"""The release walkthrough of the README, as a user types it: v1 -> champion; a worse v2 is
refused naming its failed checks; a better v3 -> champion; rollback -> v1. A running
`medml serve` (its own process) follows every change on /version without a restart, and
the champion's lineage lists the gate decisions and the alias history in order.

Real Prefect (ephemeral), real MLflow store, real DVC repository; shrunk settings."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from medml.settings import Settings

from .conftest import ROOT, flip_byte, free_port
from .test_cli import _env, medml

MODEL = "release"


def _params(settings: Settings, tmp_path: Path, name: str, floor: float = 0.8,
            **train: object) -> Path:
    import yaml

    s = settings.model_copy(deep=True)
    task = s.tasks["imaging"]  # learns in seconds, seeded; a small test set: wide CIs
    task.demo = {"n_patients": 80, "images_per_patient": [2, 3], "size": 28}
    task.data = {"image_size": 28}
    task.train = task.train.model_copy(update={
        "epochs": 10, "lr": 0.001, "augment": False, "tta": False,
        "model_args": {"channels": [16, 32]}, **train})
    task.gate = task.gate.model_copy(update={"floors": {"auroc": floor},
                                             # ~50 test images: the paired CI is
                                             # wide; v2 (untrained, -0.3) still fails
                                             "non_inferiority": {"auroc": 0.2},
                                             "bootstrap": 200})
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(s.model_dump(mode="json", exclude={"workspace", "home"})))
    return path


def _wait_version(url: str, version: str, seconds: float) -> float:
    """Seconds until GET /version reports ``version``; fails after ``seconds``."""
    start = time.monotonic()
    seen = None
    while time.monotonic() - start < seconds:
        try:
            r = httpx.get(f"{url}/version", timeout=5)
            if r.status_code == 200:
                seen = r.json()["model_version"]
                if seen == version:
                    return time.monotonic() - start
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"/version still says {seen}, not {version}, after {seconds} s")


def _wait_checked_after(url: str, after: datetime, seconds: float) -> datetime:
    """The server's ``checked_at`` (its last resolution of the alias) once it is later than
    ``after``; fails after ``seconds``."""
    start = time.monotonic()
    seen = None
    while time.monotonic() - start < seconds:
        seen = httpx.get(f"{url}/version", timeout=5).json()["checked_at"]
        if seen and datetime.fromisoformat(seen) > after:
            return datetime.fromisoformat(seen)
        time.sleep(0.1)
    raise AssertionError(f"the server last resolved the alias at {seen}, not after {after}, "
                         f"in {seconds} s")


def _pipeline(workspace: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return medml(["pipeline", "--task", "imaging", "--dataset", "demo", "--model", MODEL],
                 workspace, env)


def test_release_walkthrough(settings: Settings, workspace: Path, tmp_path: Path) -> None:
    good = _env(settings, _params(settings, tmp_path, "good"))
    worse = _env(settings, _params(settings, tmp_path, "worse", lr=0.0, epochs=1))
    better = _env(settings, _params(settings, tmp_path, "better", epochs=30))
    r = medml(["data", "generate", "--task", "imaging", "--name", "demo"], workspace, good)
    assert r.returncode == 0, r.stderr

    r = _pipeline(workspace, good)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "alias champion -> version 1" in r.stdout

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [sys.executable, "-m", "medml.cli", "serve", MODEL, "--port", str(port),
         "--poll-s", "1"], cwd=workspace, env=good | {"PYTHONPATH": str(ROOT)},
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        _wait_version(url, "1", 120)  # first load: imports and model download
        pid = server.pid

        r = _pipeline(workspace, worse)  # an untrained model: refused
        assert r.returncode == 1, r.stderr[-3000:]
        refusal = " ".join(r.stderr.split())
        assert "version 2 not promoted" in refusal
        assert "floor:auroc" in refusal and "non_inferiority:auroc" in refusal
        # The server must not move: wait for evidence that it asked the registry after
        # the refusal, rather than for a guessed time. /version's checked_at is the server's
        # time of its last alias resolution; its one poll thread resolves, loads a new
        # version if the alias names one, then waits --poll-s. So a resolution stamped
        # after the refusal, then another one after it, bracket a whole poll that saw the
        # registry as the refusal left it, load included.
        refused_at = datetime.now(UTC)
        first = _wait_checked_after(url, refused_at, 60)
        second = _wait_checked_after(url, first, 60)
        info = httpx.get(f"{url}/version").json()
        assert info["model_version"] == "1", (refused_at, first, second, info)

        r = _pipeline(workspace, better)
        assert r.returncode == 0, r.stderr[-3000:]
        assert "alias champion -> version 3" in r.stdout
        assert _wait_version(url, "3", 10) < 10

        r = medml(["rollback", MODEL, "--by", "dr-who", "--reason", "drill"], workspace, good)
        assert r.returncode == 0, r.stderr
        assert "champion 3 -> 1" in r.stdout
        assert _wait_version(url, "1", 10) < 10
        info = httpx.get(f"{url}/version").json()
        assert info["alias"] == "champion" and info["run_id"] and info["data_version"]
        assert server.poll() is None and server.pid == pid  # no restart
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(30)

    r = medml(["lineage", f"{MODEL}@champion", "--format", "json"], workspace, good)
    assert r.returncode == 0, r.stderr
    pack = json.loads(r.stdout)
    assert pack["model"]["version"] == "1"
    assert [(g["version"], g["passed"]) for g in pack["gate_decisions"]] == [
        ("1", True), ("2", False), ("3", True)]
    refused = pack["gate_decisions"][1]
    assert any(c["check"] == "non_inferiority:auroc" and not c["passed"]
               for c in refused["checks"])
    champion = [(h["from_version"], h["to_version"], h["who"])
                for h in pack["alias_history"] if h["alias"] == "champion"]
    assert champion[0][:2] == (None, "1") and champion[1][:2] == ("1", "3")
    assert champion[2] == ("3", "1", "dr-who")
    assert [h["seq"] for h in pack["alias_history"]] == sorted(
        h["seq"] for h in pack["alias_history"])

    for fmt, marker in (("md", "## Gate decisions"), ("html", "<!DOCTYPE html>")):
        r = medml(["lineage", f"{MODEL}@champion", "-f", fmt], workspace, good)
        assert r.returncode == 0 and marker in r.stdout, r.stderr
    r = medml(["lineage", f"{MODEL}@champion", "-f", "pdf"], workspace, good)
    assert r.returncode == 2 and "unknown format 'pdf'" in r.stderr


@pytest.fixture
def released(settings: Settings, workspace: Path, tmp_path: Path):
    env = _env(settings, _params(settings, tmp_path, "good", floor=0.0, epochs=1))
    assert medml(["data", "generate", "--task", "imaging", "--name", "demo"], workspace,
                 env).returncode == 0
    r = _pipeline(workspace, env)
    assert r.returncode == 0, r.stderr[-3000:]
    return env


def test_lineage_verify_names_one_changed_byte(settings: Settings, workspace: Path,
                                               released: dict[str, str]) -> None:
    r = medml(["lineage", "verify", f"{MODEL}@champion"], workspace, released)
    assert r.returncode == 0, r.stdout + r.stderr

    image = sorted((workspace / "data" / "demo").rglob("*.npy"))[3]
    original = flip_byte(image)
    r = medml(["lineage", "verify", f"{MODEL}@champion"], workspace, released)
    image.write_bytes(original)
    assert r.returncode == 1
    assert "CHANGED" in r.stdout and image.name in r.stdout

    weights = max((p for p in settings.state_dir.rglob("*") if p.is_file()
                   and "artifacts" in p.parts and p.suffix in (".pt", ".pth", ".bin")),
                  key=lambda p: p.stat().st_size)
    original = flip_byte(weights)
    r = medml(["lineage", "verify", f"{MODEL}@champion"], workspace, released)
    weights.write_bytes(original)
    assert r.returncode == 1
    assert "CHANGED" in r.stdout and weights.name in r.stdout
    r = medml(["lineage", "verify", f"{MODEL}@champion"], workspace, released)
    assert r.returncode == 0
