"""The server profile, chosen by settings alone: a real `mlflow server` and a real
`prefect server`, both on this machine's PostgreSQL (fresh databases for this test
session), as processes on loopback; `medml pipeline` runs against them unchanged, and the
run, the registered model and the flow run are found through the servers' REST APIs."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from medml.settings import GateParams, Settings

from .conftest import ROOT, free_port, needs

PG = "postgres@127.0.0.1:5432"
BIN = Path(sys.executable).parent


def _pg_up() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=2):
            return True
    except OSError:
        return False


pytestmark = needs("PostgreSQL on 127.0.0.1:5432", _pg_up(),
                   "started by this machine kind; pg_ctlcluster <version> main start")


def _psql(sql: str) -> None:
    subprocess.run(["psql", "-q", "-h", "127.0.0.1", "-U", "postgres", "-d", "postgres",
                    "-c", sql], check=True, capture_output=True)


def _wait(url: str, proc: subprocess.Popen, log: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited ({proc.returncode}): {log.read_text()[-2000:]}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{url} not up after {timeout} s: {log.read_text()[-2000:]}")


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _client_env(servers: dict[str, str], settings: Settings, tmp_path: Path) -> dict:
    """The environment of a user's shell in the server profile."""
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(settings.model_dump(
        mode="json", exclude={"workspace", "home", "deid_key"})))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MEDML_", "PREFECT_"))}
    return env | {"MEDML_PARAMS": str(params), "MEDML_PROFILE": "server",
                  "MEDML_TRACKING_URI": servers["mlflow"],
                  "MEDML_PREFECT_API_URL": servers["prefect"],
                  "PREFECT_API_URL": servers["prefect"],
                  "MEDML_HOME": str(tmp_path / "client-home"), "PYTHONPATH": str(ROOT),
                  "COLUMNS": "200"}


def _medml(args: tuple[str, ...], cwd: Path, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "medml.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def _run_on_worker(servers: dict[str, str], env: dict, cwd: Path, tmp_path: Path, pool: str,
                   deployment: str, then=None, timeout: float = 300) -> tuple[str | None, str]:
    """Start a process worker of ``pool``, call ``then()``, and wait (bounded) for a run of
    ``deployment`` to end; its final state and the worker's log."""
    log = tmp_path / f"worker-{pool}.log"
    worker = subprocess.Popen(
        [str(BIN / "prefect"), "worker", "start", "--pool", pool, "--type", "process"],
        cwd=cwd, env=env | {"PREFECT_WORKER_QUERY_SECONDS": "5",
                            "PREFECT_HOME": str(tmp_path / f"worker-{pool}")},
        stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
    state = None
    try:
        if then is not None:
            then()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            runs = httpx.post(f"{servers['prefect']}/flow_runs/filter", json={
                "deployments": {"name": {"any_": [deployment]}},
                "flow_runs": {"state": {"type": {"any_": ["COMPLETED", "FAILED", "CRASHED"]}}},
            }).json()
            if runs:
                state = runs[0]["state_type"]
                break
            time.sleep(3)
    finally:
        _stop(worker)
    return state, log.read_text()


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """MLflow (tracking + registry + proxied artifacts) and Prefect servers on PostgreSQL."""
    tmp = tmp_path_factory.mktemp("servers")
    tag = uuid.uuid4().hex[:8]
    dbs = {"mlflow": f"medml_test_mlflow_{tag}", "prefect": f"medml_test_prefect_{tag}"}
    for db in dbs.values():
        _psql(f"CREATE DATABASE {db}")
    mport, pport = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MEDML_", "PREFECT_"))}
    mlog, plog = tmp / "mlflow.log", tmp / "prefect.log"
    mlflow_proc = subprocess.Popen(
        [str(BIN / "mlflow"), "server", "--backend-store-uri",
         f"postgresql+psycopg://{PG}/{dbs['mlflow']}", "--artifacts-destination",
         str(tmp / "artifacts"), "--host", "127.0.0.1", "--port", str(mport),
         "--workers", "1"], env=env, stdout=mlog.open("w"), stderr=subprocess.STDOUT,
        start_new_session=True)
    prefect_proc = subprocess.Popen(
        [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(pport)],
        env=env | {"PREFECT_HOME": str(tmp / "prefect-server"),
                   "PREFECT_API_DATABASE_CONNECTION_URL":
                       f"postgresql+asyncpg://{PG}/{dbs['prefect']}",
                   "PREFECT_SERVER_ANALYTICS_ENABLED": "false"},
        stdout=plog.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait(f"http://127.0.0.1:{mport}/health", mlflow_proc, mlog)
        _wait(f"http://127.0.0.1:{pport}/api/health", prefect_proc, plog)
        yield {"mlflow": f"http://127.0.0.1:{mport}", "prefect": f"http://127.0.0.1:{pport}/api",
               "artifacts": str(tmp / "artifacts")}
    finally:
        _stop(mlflow_proc)
        _stop(prefect_proc)
        for db in dbs.values():
            _psql(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")


def test_pipeline_runs_against_mlflow_and_prefect_servers(
        servers: dict[str, str], settings: Settings, workspace: Path, tmp_path: Path) -> None:
    env = _client_env(servers, settings, tmp_path)

    def medml(*args: str) -> subprocess.CompletedProcess:
        return _medml(args, workspace, env)

    r = medml("data", "generate", "--task", "imaging", "--name", "demo")
    assert r.returncode == 0, r.stderr[-2000:]
    r = medml("pipeline", "--task", "imaging", "--dataset", "demo", "--model", "team-model")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "alias champion -> version 1" in r.stdout

    # MLflow's REST API: the registered model, its champion, its run and the run's data input
    api = servers["mlflow"] + "/api/2.0/mlflow"
    model = httpx.get(f"{api}/registered-models/get", params={"name": "team-model"}).json()
    aliases = {a["alias"]: a["version"] for a in model["registered_model"]["aliases"]}
    assert aliases["champion"] == "1"
    mv = httpx.get(f"{api}/model-versions/get",
                   params={"name": "team-model", "version": "1"}).json()["model_version"]
    tags = {t["key"]: t["value"] for t in mv["tags"]}
    assert tags["gate.passed"] == "True" and tags["flow_run_id"] and tags["dvc_data_hash"]
    run = httpx.get(f"{api}/runs/get", params={"run_id": mv["run_id"]}).json()["run"]
    assert run["info"]["status"] == "FINISHED"
    assert any(m["key"] == "test_auroc" for m in run["data"]["metrics"])
    assert run["inputs"]["dataset_inputs"][0]["dataset"]["name"] == "demo"
    # the artifacts went through the server into its store, none into the client's home
    stored = [p for p in Path(servers["artifacts"]).rglob("*") if p.is_file()]
    assert any(p.name == "MLmodel" for p in stored) and any("gate" in p.parts for p in stored)
    assert not (tmp_path / "client-home" / "mlflow.db").exists()
    assert not (tmp_path / "client-home" / "mlartifacts").exists()

    # Prefect's REST API: the flow run, completed, on the server
    runs = httpx.post(f"{servers['prefect']}/flow_runs/filter",
                      json={"flow_runs": {"id": {"any_": [tags["flow_run_id"]]}}}).json()
    assert len(runs) == 1 and runs[0]["state_type"] == "COMPLETED"

    # the same commands read the server's registry: lineage of the champion
    r = medml("lineage", "team-model@champion", "-f", "json")
    assert r.returncode == 0, r.stderr[-2000:]
    assert '"gate_decisions"' in r.stdout and '"version": "1"' in r.stdout
    shutil.rmtree(tmp_path / "client-home", ignore_errors=True)


def test_scheduled_retrain_fires_on_a_worker_and_completes(
        servers: dict[str, str], settings: Settings, workspace: Path, tmp_path: Path) -> None:
    """`medml schedule` with a one-minute cron: the server schedules runs, a process worker
    of the pool picks one up and the lifecycle completes (bounded wait)."""
    env = _client_env(servers, settings, tmp_path)

    def medml(*args: str) -> subprocess.CompletedProcess:
        return _medml(args, workspace, env)

    assert medml("data", "generate", "--task", "imaging", "--name", "demo").returncode == 0
    r = medml("schedule", "nightly", "--dataset", "demo", "--cron", "not a cron")
    assert r.returncode == 2 and "not a cron expression" in r.stderr
    r = medml("schedule", "nightly", "--dataset", "demo", "--cron", "* * * * *",
              "--pool", "medml-test")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "deployment nightly-demo" in r.stdout

    state, log = _run_on_worker(servers, env, workspace, tmp_path, "medml-test",
                                "nightly-demo")
    assert state == "COMPLETED", f"scheduled run: {state}; worker log: {log[-3000:]}"
    model = httpx.get(f"{servers['mlflow']}/api/2.0/mlflow/registered-models/get",
                      params={"name": "nightly"}).json()["registered_model"]
    assert {a["alias"] for a in model["aliases"]} >= {"champion"}


def test_a_scheduled_retrain_refused_by_the_gate_leaves_the_champion(
        servers: dict[str, str], settings: Settings, workspace: Path, tmp_path: Path) -> None:
    """A champion, then a one-minute schedule whose deployment carries a gate floor no
    model can reach: the scheduled run registers a candidate, the gate refuses it, the flow
    run ends Failed, the refusal is a recorded gate decision and `champion` stays put."""
    env = _client_env(servers, settings, tmp_path)
    assert _medml(("data", "generate", "--task", "imaging", "--name", "demo"), workspace,
                  env).returncode == 0
    r = _medml(("pipeline", "--task", "imaging", "--dataset", "demo", "--model", "guarded"),
               workspace, env)
    assert r.returncode == 0 and "alias champion -> version 1" in r.stdout, r.stderr[-3000:]

    strict = settings.model_copy(deep=True)
    strict.tasks["imaging"].gate = GateParams(floors={"auroc": 1.01})
    strict_env = _client_env(servers, strict, tmp_path)  # rewrites tmp_path/params.yaml
    r = _medml(("schedule", "guarded", "--dataset", "demo", "--cron", "* * * * *",
                "--pool", "medml-refused"), workspace, strict_env)
    assert r.returncode == 0, r.stderr[-3000:]
    # the worker's own settings are the lenient ones again: the floor must come from the
    # deployment's settings
    env = _client_env(servers, settings, tmp_path)
    state, log = _run_on_worker(servers, env, workspace, tmp_path, "medml-refused",
                                "guarded-demo")
    assert state == "FAILED", f"scheduled run: {state}; worker log: {log[-3000:]}"

    api = servers["mlflow"] + "/api/2.0/mlflow"
    model = httpx.get(f"{api}/registered-models/get",
                      params={"name": "guarded"}).json()["registered_model"]
    assert {a["alias"]: a["version"] for a in model["aliases"]}["champion"] == "1"
    mv = httpx.get(f"{api}/model-versions/get",
                   params={"name": "guarded", "version": "2"}).json()["model_version"]
    tags = {t["key"]: t["value"] for t in mv["tags"]}
    assert tags["gate.passed"] == "False" and "auroc" in tags["gate.failed_checks"]
    assert tags["gate.decision_id"]
    decision = Path(servers["artifacts"]).rglob(f"decision-{tags['gate.decision_id']}.json")
    assert len(list(decision)) == 1
    runs = httpx.post(f"{servers['prefect']}/flow_runs/filter", json={
        "flow_runs": {"id": {"any_": [tags["flow_run_id"]]}}}).json()
    assert len(runs) == 1 and runs[0]["state_type"] == "FAILED"
    r = _medml(("lineage", "guarded@champion", "-f", "json"), workspace, env)
    assert r.returncode == 0 and '"version": "1"' in r.stdout, r.stderr[-2000:]


def test_a_data_change_triggers_a_retrain(
        servers: dict[str, str], settings: Settings, workspace: Path, tmp_path: Path) -> None:
    """`medml schedule --on-data-change`: a new version of the dataset (here regenerated with
    another seed) is announced to Prefect and starts the lifecycle on a worker."""
    env = _client_env(servers, settings, tmp_path)
    assert _medml(("data", "generate", "--task", "imaging", "--name", "ward"), workspace,
                  env).returncode == 0
    r = _medml(("schedule", "ward-model", "--dataset", "ward", "--on-data-change",
                "--pool", "medml-events"), workspace, env)
    assert r.returncode == 0, r.stderr[-3000:]

    def new_data() -> None:
        r = _medml(("data", "generate", "--task", "imaging", "--name", "ward", "--seed", "1",
                    "--overwrite"), workspace, env)
        assert r.returncode == 0 and "announced the new version" in r.stdout, r.stderr[-2000:]

    state, log = _run_on_worker(servers, env, workspace, tmp_path, "medml-events",
                                "ward-model-ward", then=new_data, timeout=180)
    assert state == "COMPLETED", f"triggered run: {state}; worker log: {log[-3000:]}"
