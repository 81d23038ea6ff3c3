"""The command line as a user runs it: exit codes, one-line errors, kill -9 and resume."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import mlflow
import numpy as np
import pydicom
import yaml
from pydicom.data import get_testdata_file

from medml.settings import Settings

from .conftest import ROOT, free_port


def _env(settings: Settings, params: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDML_")}
    env.update({"MEDML_HOME": str(settings.state_dir), "MEDML_PARAMS": str(params),
                "PREFECT_HOME": str(settings.state_dir / "prefect"), "COLUMNS": "200",
                "PYTHONPATH": str(ROOT)})
    return env


def _params(settings: Settings, tmp_path: Path, **train: object) -> Path:
    s = settings.model_copy(deep=True)
    s.tasks["imaging"].train = s.tasks["imaging"].train.model_copy(update=train)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(s.model_dump(mode="json", exclude={"workspace", "home"})))
    return path


def medml(args: list[str], cwd: Path, env: dict[str, str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "medml.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600, **kw)


def _store_snapshot(settings: Settings, workspace: Path) -> set[str]:
    roots = [workspace / "data", settings.state_dir]
    return {str(p) for r in roots if r.exists() for p in r.rglob("*")}


def _bad_inputs(tmp: Path) -> dict[str, tuple[str, Path, str]]:
    rng = np.random.default_rng(0)
    tmp.mkdir(parents=True)
    good = tmp / "breastmnist.npz"
    np.savez(good, **{f"{s}_images": rng.integers(0, 255, (4, 28, 28), dtype=np.uint8)
                      for s in ("train", "val", "test")},
             **{f"{s}_labels": np.array([[0], [1], [0], [1]]) for s in ("train", "val", "test")})
    truncated = tmp / "cut.npz"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    assert not zipfile.is_zipfile(truncated)

    dcm = tmp / "dicom"
    for cls, name in (("a", "CT_small.dcm"), ("b", "MR_small.dcm")):
        (dcm / cls).mkdir(parents=True)
        ds = pydicom.dcmread(get_testdata_file(name))
        if cls == "b":
            del ds.PixelData
        ds.save_as(dcm / cls / name)

    png = tmp / "png"
    from PIL import Image

    for cls in ("benign", "malignant"):
        (png / cls).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 255, (16, 16), dtype=np.uint8)).save(
                png / cls / f"{i}.png")
    (png / "malignant" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    return {"npz": ("medmnist", truncated, "cut.npz"),
            "dicom": ("dicom", dcm, "MR_small.dcm"),
            "png": ("folder", png, "broken.png")}


def test_bad_imports_exit_2_with_one_line_and_leave_stores_alone(
        settings: Settings, workspace: Path, tmp_path: Path) -> None:
    env = _env(settings, _params(settings, tmp_path))
    before = _store_snapshot(settings, workspace)
    for kind, (fmt, src, culprit) in _bad_inputs(tmp_path / "src").items():
        r = medml(["data", "import", "--task", "imaging", "--format", fmt, str(src),
                   "--name", f"bad-{kind}"], workspace, env)
        assert r.returncode == 2, (kind, r.stdout, r.stderr)
        lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1 and culprit in lines[0] and "Traceback" not in r.stderr, lines
        assert _store_snapshot(settings, workspace) == before, kind


def test_unknown_dataset_and_task_are_usage_errors(settings: Settings, workspace: Path,
                                                   tmp_path: Path) -> None:
    env = _env(settings, _params(settings, tmp_path))
    r = medml(["pipeline", "--task", "imaging", "--dataset", "nope"], workspace, env)
    assert r.returncode == 2 and "dataset 'nope' not found" in r.stderr
    r = medml(["pipeline", "--task", "radiology", "--dataset", "nope"], workspace, env)
    assert r.returncode == 2 and "unknown task 'radiology'" in r.stderr
    r = medml(["data", "generate", "--task", "imaging", "--name", "demo"], workspace, env)
    assert r.returncode == 0, r.stderr
    for cmd in ("pipeline", "tune"):  # a dataset of another task: named, before any run
        r = medml([cmd, "--task", "nlp", "--dataset", "demo"], workspace, env)
        assert r.returncode == 2, (cmd, r.stderr)
        assert "dataset 'demo' belongs to task imaging, not nlp; run with --task imaging" \
            in r.stderr, (cmd, r.stderr)
    assert not (settings.state_dir / "mlflow.db").exists()


def test_a_failing_flow_is_one_error_line_on_the_console_and_a_traceback_in_prefect(
        settings: Settings, workspace: Path, tmp_path: Path) -> None:
    import sqlite3

    env = _env(settings, _params(settings, tmp_path, lr=1e30, epochs=2))
    assert medml(["data", "generate", "--task", "imaging", "--name", "demo"], workspace,
                 env).returncode == 0
    r = medml(["pipeline", "--task", "imaging", "--dataset", "demo"], workspace, env)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr, r.stderr
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert errors == ["error: training diverged in epoch 1: the weights are no longer finite "
                      "(train loss nan); lower tasks.imaging.train.lr (now 1e+30) or check "
                      "the data"], r.stderr
    db = sqlite3.connect(settings.state_dir / "prefect" / "prefect.db")
    logged = [m for (m,) in db.execute("SELECT message FROM log WHERE message LIKE "
                                       "'%TrainingDiverged%'")]
    assert any("Traceback (most recent call last)" in m for m in logged)  # for the UI


def test_kill_9_mid_training_then_rerun_resumes(settings: Settings, workspace: Path,
                                                tmp_path: Path) -> None:
    epochs = 150
    env = _env(settings, _params(settings, tmp_path, epochs=epochs))
    r = medml(["data", "generate", "--task", "imaging", "--name", "demo"], workspace, env)
    assert r.returncode == 0, r.stderr
    cmd = [sys.executable, "-m", "medml.cli", "pipeline", "--task", "imaging",
           "--dataset", "demo"]
    proc = subprocess.Popen(cmd, cwd=workspace, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    ckpts = settings.state_dir / "checkpoints"
    deadline = time.monotonic() + 300
    while not list(ckpts.glob("*/last.pt")) and time.monotonic() < deadline:
        time.sleep(0.2)
    # killed as soon as the first checkpoint is there (synchronised on the file, not on a
    # sleep): of 150 epochs, at most a few are done, whatever the machine's load
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert list(ckpts.glob("*/last.pt")), "a checkpoint was written before the kill"

    client = mlflow.MlflowClient(settings.mlflow_uri, settings.mlflow_uri)
    assert client.search_registered_models() == []  # the killed attempt registered nothing

    r = subprocess.run(cmd, cwd=workspace, env=env, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "resuming from checkpoint" in r.stderr
    versions = client.search_model_versions("name='imaging-demo'")
    assert len(versions) == 1
    run = client.get_run(versions[0].run_id)
    start = int(run.data.tags["medml.resumed_from_epoch"])
    assert 1 <= start < epochs and run.data.tags["medml.attempts"] == "2"
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "train_loss")]
    assert sorted(set(steps)) == list(range(1, epochs + 1))
    # system metrics (sampled every 0.2 s here; this training is long enough to be sampled)
    assert any(k.startswith("system/cpu") for k in run.data.metrics), "system metrics logged"
    assert not list(ckpts.glob("*/last.pt")), "checkpoint dropped once registered"

    # `medml ui` serves the same embedded store: the alias is visible over MLflow's REST API.
    import json
    import urllib.request

    port = free_port()
    ui = subprocess.Popen([sys.executable, "-m", "medml.cli", "ui", "--port", str(port)],
                          cwd=workspace, env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL, start_new_session=True)
    url = (f"http://127.0.0.1:{port}/api/2.0/mlflow/registered-models/alias"
           "?name=imaging-demo&alias=champion")
    try:
        body = None
        deadline = time.monotonic() + 120
        while body is None and time.monotonic() < deadline:
            try:
                body = json.load(urllib.request.urlopen(url, timeout=5))
            except OSError:
                time.sleep(0.5)
        assert body and body["model_version"]["version"] == "1"
    finally:
        os.killpg(ui.pid, signal.SIGTERM)
        ui.wait(timeout=30)
