"""The NLP task through the real command line: `medml demo --task nlp` (real Prefect,
MLflow and DVC) and bad imports that exit 2 and leave the stores alone."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pandas as pd
import yaml

from medml.settings import GateParams, Settings, load_settings

from .conftest import ROOT
from .test_cli import _env, _store_snapshot, medml


def tiny_nlp() -> dict:
    """The real nlp settings, shrunk: few notes, a few epochs, the gate's plumbing only."""
    base = load_settings(ROOT / "params.yaml").task("nlp")
    tp = base.model_copy(update={
        "train": base.train.model_copy(update={
            "batch_size": 4, "lr": 0.005, "lr_milestones": [], "threads": 1,
            "model_args": {"hidden": 64, "word_dim": 50, "char_filters": 20}}),
        # lr 0.01 and 12 epochs: a model that finds entities (6 epochs at 0.005 found none,
        # test F1 0.0; these settings gave test F1 0.98), so its predictions can be checked.
        "demo": {"n_patients": 24, "train": {"epochs": 12, "patience": 12, "lr": 0.01}},
        "gate": GateParams(floors={"f1": 0.0}),
    })
    return tp.model_dump(mode="json")


def _params(tmp_path: Path) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"tasks": {"nlp": tiny_nlp()}}))
    return path


def test_demo_nlp_registers_a_served_model_with_entity_f1(settings: Settings,
                                                          workspace: Path,
                                                          tmp_path: Path) -> None:
    env = _env(settings, _params(tmp_path))
    r = medml(["demo", "--task", "nlp"], workspace, env)
    assert r.returncode == 0, r.stderr[-3000:]
    client = mlflow.MlflowClient(settings.mlflow_uri, settings.mlflow_uri)
    mv = client.get_model_version_by_alias("demo-nlp", "champion")
    assert str(mv.version) == "1" and mv.tags["task"] == "nlp"
    assert mv.tags["gate.passed"] == "True"
    run = client.get_run(mv.run_id)
    m = run.data.metrics
    assert {"test_f1", "test_precision", "test_recall", "test_f1_ci_low",
            "test_f1_ci_high", "train_seconds"} <= set(m)
    assert m["test_f1_ci_low"] <= m["test_f1"] <= m["test_f1_ci_high"]
    assert m["test_f1"] > 0.5  # it learnt: the served predictions below are checked
    assert len(client.get_metric_history(run.info.run_id, "val_f1")) >= 1
    evals = {a.path for a in client.list_artifacts(run.info.run_id, "eval")}
    assert {"eval/per_type.json", "eval/test_predictions.json"} <= evals
    assert (workspace / "data" / "demo-nlp.dvc").is_file()
    report = json.loads((workspace / "data" / "demo-nlp" / "deid_report.json").read_text())
    assert report["files"]["changed"] > 0  # the planted PHI went through the deid stage

    mlflow.set_tracking_uri(settings.mlflow_uri)
    mlflow.set_registry_uri(settings.mlflow_uri)  # an earlier test may have set another
    model = mlflow.pyfunc.load_model("models:/demo-nlp@champion")
    note = "History of  COPD and HTN; started  metformin. Denies asthma."
    out = model.predict(pd.DataFrame({"text": [note]}))
    spans = out.to_dict("records")
    assert spans and all(note[s["start"]:s["end"]] == s["text"] for s in spans), spans
    # the demo vocabulary's disease words, found where they are (the model found all three,
    # and metformin as a Drug less surely, scores 0.88-0.97 against 0.78)
    found = {(s["text"], s["label"], s["start"]) for s in spans}
    assert {("COPD", "Disease", 12), ("HTN", "Disease", 21), ("asthma", "Disease", 53)} \
        <= found, spans


BAD = {
    "empty.tsv": (b"", 1),
    "latin1.tsv": (b"a\tO\nfi\xe8vre\tB-Disease\n", 2),
    "strict.tsv": (b"a\tO\nb\tI-Disease\n", 2),
    "notag.tsv": (b"a\tO\n\nb\n", 3),
}


def test_bad_nlp_imports_exit_2_naming_file_and_line(settings: Settings, workspace: Path,
                                                     tmp_path: Path) -> None:
    env = _env(settings, _params(tmp_path))
    before = _store_snapshot(settings, workspace)
    for name, (content, line) in BAD.items():
        src = tmp_path / name
        src.write_bytes(content)
        r = medml(["data", "import", "--task", "nlp", "--format", "iob2", str(src),
                   "--name", "bad"], workspace, env)
        assert r.returncode == 2, (name, r.stdout, r.stderr)
        lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1 and f"{name}:{line}:" in lines[0], lines
        assert "Traceback" not in r.stderr
        assert _store_snapshot(settings, workspace) == before, name
