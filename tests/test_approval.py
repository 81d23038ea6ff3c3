"""Human approval: the lifecycle flow pauses for a typed input after the gate's checks pass."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import yaml

from flows.lifecycle import lifecycle_flow
from medml import lifecycle
from medml.errors import CheckFailed
from medml.settings import Settings

from .test_cli import _env, medml


def _client(settings: Settings) -> mlflow.MlflowClient:
    mlflow.set_tracking_uri(settings.mlflow_uri)
    return mlflow.MlflowClient(settings.mlflow_uri, settings.mlflow_uri)


def _with_approval(settings: Settings, timeout_s: int) -> Settings:
    s = settings.model_copy(deep=True)
    s.tasks["imaging"].gate.approval = True
    s.tasks["imaging"].gate.approval_timeout_s = timeout_s
    return s


def test_no_answer_before_the_timeout_means_not_promoted(settings: Settings) -> None:
    lifecycle.create_dataset(settings, "imaging", "demo", seed=0)
    s = _with_approval(settings, timeout_s=3)
    try:
        lifecycle_flow(settings=s.model_dump(mode="json"), dataset="demo", model="m")
        raise AssertionError("the flow should refuse")
    except CheckFailed as exc:
        assert "not promoted" in str(exc)
    client = _client(settings)
    mv = client.get_model_version("m", "1")
    assert mv.tags["gate.passed"] == "False"
    assert "champion" not in client.get_registered_model("m").aliases
    decision = json.loads(mlflow.artifacts.load_text(
        f"runs:/{mv.run_id}/gate/decision-{mv.tags['gate.decision_id']}.json"))
    assert all(c["passed"] for c in decision["checks"])  # the checks passed ...
    assert decision["approval"]["approved"] is False  # ... nobody answered
    assert "no answer" in decision["approval"]["reason"]


def _pipeline_answered(settings: Settings, workspace: Path, tmp_path: Path,
                       answer: list[str]) -> tuple[subprocess.CompletedProcess, int, str]:
    """`medml pipeline` with approval on, answered from another process with
    ``medml approve m 1 *answer`` once the flow waits; (the answer, the pipeline's exit
    code, its output)."""
    s = _with_approval(settings, timeout_s=300)
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(s.model_dump(mode="json", exclude={"workspace", "home"})))
    env = _env(settings, params)
    assert medml(["data", "generate", "--task", "imaging", "--name", "demo"], workspace,
                 env).returncode == 0
    flow = subprocess.Popen([sys.executable, "-m", "medml.cli", "pipeline", "--task",
                             "imaging", "--dataset", "demo", "--model", "m"], cwd=workspace,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    try:
        client = _client(settings)
        reply = None
        deadline = time.monotonic() + 600  # generous: a loaded 2-core machine is slow
        while time.monotonic() < deadline:  # the version appears, then the flow pauses
            time.sleep(1)
            assert flow.poll() is None, flow.stdout.read()
            if not (settings.state_dir / "mlflow.db").exists():
                continue
            try:
                client.get_model_version("m", "1")
            except mlflow.exceptions.MlflowException:
                continue
            reply = medml(["approve", "m", "1", *answer], workspace, env)
            if reply.returncode == 0:
                break
            assert "not waiting for approval" in reply.stderr, reply.stderr
        assert reply is not None and reply.returncode == 0, reply and reply.stderr
        output, _ = flow.communicate(timeout=300)
    finally:
        if flow.poll() is None:
            flow.kill()
    return reply, flow.returncode, output


def test_medml_approve_from_another_process_promotes(settings: Settings, workspace: Path,
                                                     tmp_path: Path) -> None:
    _, code, output = _pipeline_answered(settings, workspace, tmp_path,
                                         ["--by", "dr.house", "--reason", "reviewed"])
    assert code == 0, output
    client = _client(settings)
    mv = client.get_model_version_by_alias("m", "champion")
    assert str(mv.version) == "1" and mv.tags["gate.passed"] == "True"
    decision = json.loads(mlflow.artifacts.load_text(
        f"runs:/{mv.run_id}/gate/decision-{mv.tags['gate.decision_id']}.json"))
    assert decision["approval"] == {"approved": True, "by": "dr.house", "reason": "reviewed"}
    # answering twice is refused with one line
    params = tmp_path / "params.yaml"
    again = medml(["approve", "m", "1", "--by", "x", "--reason", "y"], workspace,
                  _env(settings, params))
    assert again.returncode == 2 and "not waiting for approval" in again.stderr


def test_medml_approve_reject_means_not_promoted(settings: Settings, workspace: Path,
                                                 tmp_path: Path) -> None:
    reply, code, output = _pipeline_answered(
        settings, workspace, tmp_path,
        ["--by", "dr.cuddy", "--reason", "subgroup too small", "--reject"])
    assert "rejected m version 1" in reply.stdout, reply.stdout
    assert code == 1, output
    assert "m version 1 not promoted" in output, output
    client = _client(settings)
    assert "champion" not in client.get_registered_model("m").aliases
    mv = client.get_model_version("m", "1")
    assert mv.tags["gate.passed"] == "False"
    decision = json.loads(mlflow.artifacts.load_text(
        f"runs:/{mv.run_id}/gate/decision-{mv.tags['gate.decision_id']}.json"))
    assert all(c["passed"] for c in decision["checks"])  # the checks passed ...
    assert decision["passed"] is False  # ... the human said no
    assert decision["approval"] == {"approved": False, "by": "dr.cuddy",
                                    "reason": "subgroup too small"}
