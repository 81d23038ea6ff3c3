"""`medml tune --parallel` as a user runs it: the real CLI in a subprocess, two trials at
once on Dask worker processes, the table of trials, the best one released as champion."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import mlflow
import yaml

from medml import lifecycle
from medml.settings import Settings

from .conftest import ROOT

RUN_ID = re.compile(r"\b[0-9a-f]{32}\b")


def test_tune_parallel_through_the_cli_lists_its_trials_and_sets_a_champion(
        settings: Settings, workspace: Path, tmp_path: Path) -> None:
    imaging = settings.tasks["imaging"]
    imaging.tune.space = {"lr": [0.0001, 0.003]}
    imaging.tune.sampler = "grid"
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(settings.model_dump(
        mode="json", exclude={"workspace", "home"})))
    lifecycle.create_dataset(settings, "imaging", "demo", seed=0)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MEDML_", "PREFECT_API"))}
    env.update({"MEDML_HOME": str(settings.state_dir), "MEDML_PARAMS": str(params),
                "PREFECT_HOME": str(settings.state_dir / "prefect"), "COLUMNS": "250",
                "PYTHONPATH": str(ROOT)})

    r = subprocess.run([sys.executable, "-m", "medml.cli", "tune", "--task", "imaging",
                        "--dataset", "demo", "--trials", "2", "--parallel", "2"],
                       cwd=workspace, env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]

    parent = re.search(r"trials \(parent MLflow run ([0-9a-f]{32})\)", r.stdout)
    assert parent, r.stdout
    rows = [line for line in r.stdout.splitlines()
            if re.match(r"^\W*[01]( \*)?\s*\W", line) and RUN_ID.search(line)]
    assert len(rows) == 2, r.stdout
    trial_runs = [RUN_ID.findall(line)[-1] for line in rows]
    assert len(set(trial_runs)) == 2 and parent.group(1) not in trial_runs
    best = [run for line, run in zip(rows, trial_runs, strict=True) if " *" in line]
    assert len(best) == 1, r.stdout  # the released trial is marked
    assert "alias champion -> version 1" in r.stdout

    client = mlflow.MlflowClient(settings.mlflow_uri, settings.mlflow_uri)
    champion = client.get_model_version_by_alias("imaging-demo", "champion")
    assert champion.run_id == best[0] and champion.tags["gate.passed"] == "True"
    for run in trial_runs:  # both are nested runs of this search, each with its own lr
        assert client.get_run(run).data.tags["mlflow.parentRunId"] == parent.group(1)
    assert sorted(float(client.get_run(run).data.params["train.lr"]) for run in trial_runs) \
        == [0.0001, 0.003]
