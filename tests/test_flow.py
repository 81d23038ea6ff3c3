"""The real lifecycle: real Prefect (local server), real MLflow store, real DVC repo."""

from __future__ import annotations

import base64
import io
import json
import subprocess
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from PIL import Image
from pydicom.data import get_testdata_file

from flows.lifecycle import lifecycle_flow
from medml import lifecycle
from medml.data.dataset import MANIFEST
from medml.errors import CheckFailed
from medml.settings import Settings


def _client(settings: Settings) -> mlflow.MlflowClient:
    mlflow.set_tracking_uri(settings.mlflow_uri)
    return mlflow.MlflowClient(settings.mlflow_uri, settings.mlflow_uri)


def test_lifecycle_registers_gates_and_serves(settings: Settings, workspace: Path) -> None:
    version = lifecycle.create_dataset(settings, "imaging", "demo", seed=0)
    assert (workspace / "data" / "demo.dvc").is_file()
    assert any((settings.state_dir / "dvc-remote").rglob("*")), "dvc push reached the remote"

    result = lifecycle_flow(settings=settings.model_dump(mode="json"), dataset="demo",
                            model="demo-model")
    client = _client(settings)
    mv = client.get_model_version_by_alias("demo-model", "champion")
    assert str(mv.version) == "1" == result["version"]
    # the workspace's HEAD, asked of git here, not the commit the code under test recorded
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=workspace, capture_output=True,
                          text=True, check=True).stdout.strip()
    assert len(head) == 40
    assert mv.tags["git_commit"] == head == version.git_commit
    assert client.get_run(mv.run_id).data.tags["medml.git_commit"] == head
    assert mv.tags["dvc_data_hash"] == version.md5
    assert mv.tags["flow_run_id"] == result["flow_run_id"] != ""
    assert mv.tags["gate.passed"] == "True"
    decision = json.loads(mlflow.artifacts.load_text(
        f"runs:/{mv.run_id}/gate/decision-{mv.tags['gate.decision_id']}.json"))
    assert decision["passed"] is True and decision["champion_version"] is None
    assert [c["check"] for c in decision["checks"]] == ["floor:auroc"]

    run = client.get_run(mv.run_id)
    epochs = settings.task("imaging").train.epochs
    assert len(client.get_metric_history(run.info.run_id, "train_loss")) == epochs
    assert "test_auroc" in run.data.metrics and "test_ece" in run.data.metrics
    ds_inputs = run.inputs.dataset_inputs
    assert ds_inputs and ds_inputs[0].dataset.digest == version.md5[:32]
    plots = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    assert {"plots/roc.png", "plots/confusion.png", "plots/calibration.png"} <= plots

    model = mlflow.pyfunc.load_model("models:/demo-model@champion")
    arr = np.load(settings.data_dir / "demo" / "images" / "P0000-0.npy")
    png = io.BytesIO()
    Image.fromarray((arr[0] * 255).astype(np.uint8)).save(png, format="PNG")
    dicom = Path(get_testdata_file("CT_small.dcm")).read_bytes()
    b64 = base64.b64encode(png.getvalue()).decode()
    out = model.predict(pd.DataFrame(
        {"image": [arr.tolist(), png.getvalue(), arr[0], dicom, b64]}))
    probs = out[[c for c in out.columns if c.startswith("p_")]].to_numpy()
    assert probs.shape == (5, 3)
    np.testing.assert_allclose(probs[1], probs[4])  # base64 text = the same PNG bytes
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    np.testing.assert_allclose(probs[0], probs[1], atol=0.02)  # array and PNG agree
    assert set(out["label"]) <= {"normal", "benign", "malignant"}

    # `medml evaluate`: the registered artifact reproduces the run's test metrics.
    again = lifecycle.evaluate_registered(lifecycle.open_run(settings, "demo"),
                                          "demo-model@champion")
    assert again.metrics["test_auroc"] == pytest.approx(run.data.metrics["test_auroc"])
    assert client.get_run(again.run_id).data.tags["medml.evaluation_of"] == "demo-model@champion"

    # A second model that fails the gate is registered but does not become champion.
    strict = settings.model_copy(deep=True)
    strict.tasks["imaging"].gate.floors = {"auroc": 1.01}
    with pytest.raises(CheckFailed, match="not promoted: floor:auroc"):
        lifecycle_flow(settings=strict.model_dump(mode="json"), dataset="demo",
                       model="demo-model")
    assert str(client.get_model_version_by_alias("demo-model", "champion").version) == "1"
    v2 = client.get_model_version("demo-model", "2")
    assert v2.tags["gate.passed"] == "False"


def test_failed_validation_stops_before_training(settings: Settings) -> None:
    lifecycle.create_dataset(settings, "imaging", "leaky", seed=0)
    path = settings.data_dir / "leaky" / MANIFEST
    m = pd.read_csv(path, dtype=str)
    patient = m.loc[m["split"] == "train", "patient_id"].iloc[0]
    m.loc[(m["patient_id"] == patient).idxmax(), "split"] = "test"
    m.to_csv(path, index=False)
    with pytest.raises(CheckFailed, match=patient):
        lifecycle_flow(settings=settings.model_dump(mode="json"), dataset="leaky",
                       model="leaky-model")
    client = _client(settings)
    assert client.search_registered_models() == []
    assert client.search_runs([e.experiment_id for e in client.search_experiments()]) == []


def test_epoch_checkpointed_but_not_logged_before_a_kill_is_logged_on_resume(
        settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """A kill between an epoch's checkpoint and its MLflow logging: the resumed run logs it."""
    settings.tasks["imaging"].train.epochs = 3
    lifecycle.create_dataset(settings, "imaging", "demo", seed=0)

    class Killed(BaseException):
        pass

    real = mlflow.log_metrics

    def die_at_epoch_2(metrics, step=None, **kw):
        if step == 2 and "train_loss" in metrics:
            raise Killed  # epoch 2 is checkpointed, not logged
        return real(metrics, step=step, **kw)

    monkeypatch.setattr(mlflow, "log_metrics", die_at_epoch_2)
    with pytest.raises(Killed):
        lifecycle.train(lifecycle.open_run(settings, "demo"), progress=False)
    monkeypatch.setattr(mlflow, "log_metrics", real)
    trained = lifecycle.train(lifecycle.open_run(settings, "demo"), progress=False)
    assert trained.resumed_from == 2
    steps = [m.step for m in _client(settings).get_metric_history(trained.run_id, "train_loss")]
    assert sorted(steps) == [1, 2, 3]  # each epoch once, the lost one included


def test_mlflow_warnings_medml_has_answered_are_not_shown(
        settings: Settings, recwarn: pytest.WarningsRecorder) -> None:
    """Also outside the CLI (library use, Dask trial workers): the two MLflow raises while
    logging the dataset and the model."""
    settings.tasks["imaging"].train.epochs = 1
    lifecycle.create_dataset(settings, "imaging", "demo", seed=0)
    run = lifecycle.open_run(settings, "demo")
    lifecycle.evaluate(run, lifecycle.train(run, progress=False))
    shown = [str(w.message) for w in recwarn if issubclass(w.category, UserWarning)]
    assert not [m for m in shown if m.startswith((
        "The specified dataset source can be interpreted in multiple ways",
        "Hint: Inferred schema contains integer column"))], shown
