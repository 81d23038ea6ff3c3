"""Shared fixtures: a throwaway workspace (git + DVC) and real settings, shrunk."""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

import pytest

from medml.settings import GateParams, Settings, TaskParams, load_settings

# Prefect reads its home when first imported: point it at a throwaway folder first.
os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="medml-prefect-")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("PREFECT_SERVER_ALLOW_EPHEMERAL_MODE", "true")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")  # as `medml` sets these
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
os.environ["MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL"] = "0.2"  # runs here last seconds

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def needs(what: str, present: bool, how: str) -> pytest.MarkDecorator:
    """Mark tests that need ``what`` (a service or data this machine kind provides): a
    skip with its reason on a developer's machine without it; under CI (``CI=true``) its
    absence is an error at collection, never a silent skip. ``how``: how to get it."""
    if not present and IN_CI:
        raise RuntimeError(f"{what} is missing under CI, where this machine kind provides it: "
                           f"{how}")
    return pytest.mark.skipif(not present, reason=f"needs {what} ({how})")


def tiny_imaging() -> TaskParams:
    """The real imaging settings, shrunk: small images, a tiny CNN, two epochs."""
    base = load_settings(ROOT / "params.yaml").task("imaging")
    return base.model_copy(update={
        "data": {"image_size": 16},
        "train": base.train.model_copy(update={
            "epochs": 2, "batch_size": 32, "model_args": {"channels": [8, 16]}, "threads": 1}),
        "demo": {"n_patients": 24, "images_per_patient": [2, 3], "size": 20},
        "gate": GateParams(floors={"auroc": 0.0}),  # tiny models: the gate's plumbing only
    })


def free_port() -> int:
    """A loopback port free at the time of the call (for servers the tests start)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def make_workspace(parent: Path) -> Path:
    """``parent/ws``: an empty git repository with one commit."""
    ws = parent / "ws"
    ws.mkdir()
    subprocess.run(["git", "init", "-q", str(ws)], check=True)
    subprocess.run(["git", "-C", str(ws), "commit", "-q", "--allow-empty", "-m", "init",
                    "--author", "t <t@t>"], check=True,
                   env={"GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t",
                        "PATH": "/usr/bin:/bin"})
    return ws


def flip_byte(path: Path) -> bytes:
    """Change one byte in the middle of ``path``; returns the original content."""
    original = path.read_bytes()
    data = bytearray(original)
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    return original


def module_settings(factory: pytest.TempPathFactory, name: str) -> Settings:
    """Settings on a fresh workspace and store shared by one test module, built without
    the developer's MEDML_* variables."""
    tmp = factory.mktemp(name)
    ws = make_workspace(tmp)
    with pytest.MonkeyPatch.context() as mp:
        for key in [k for k in os.environ if k.startswith("MEDML_")]:
            mp.delenv(key)
        return Settings(workspace=ws, home=tmp / "home", tasks={"imaging": tiny_imaging()})


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    return make_workspace(tmp_path)


@pytest.fixture
def settings(workspace: Path, tmp_path: Path) -> Settings:
    return Settings(workspace=workspace, home=tmp_path / "home",
                    tasks={"imaging": tiny_imaging()})


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never see the developer's MEDML_* settings."""
    for key in list(os.environ):
        if key.startswith("MEDML_"):
            monkeypatch.delenv(key)


# The full tier: modules that run whole lifecycles, servers, DDP, searches or real-data
# imports (minutes each on 2 cores). `pytest -m "not slow"` leaves them out for the
# edit-test loop; `make test` and CI run everything.
FULL_TIER = {
    "test_approval", "test_cli", "test_distributed", "test_dvc_pull", "test_dvc_stages",
    "test_flow", "test_nlp_flow", "test_promises", "test_registry_lineage", "test_release",
    "test_run_context", "test_server_profile", "test_serving", "test_speech_flow",
    "test_speech_serving", "test_tune", "test_tune_cli",
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.module is not None and item.module.__name__.rsplit(".", 1)[-1] in FULL_TIER:
            item.add_marker(pytest.mark.slow)
