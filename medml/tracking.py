"""MLflow wiring: where the tracking store is, and the experiment's artifact location.

Called at the start of each lifecycle step (never at import time)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from medml.settings import Settings

log = logging.getLogger("medml.tracking")


def configure(settings: Settings) -> str:
    """Point MLflow at the settings' store; create the experiment if needed. Returns its id."""
    import mlflow

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "5")
    os.environ.setdefault("MLFLOW_SYSTEM_METRICS_SAMPLES_BEFORE_LOGGING", "1")
    if settings.profile == "embedded" and not settings.tracking_uri:
        settings.state_dir.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(settings.mlflow_uri)
    mlflow.set_registry_uri(settings.mlflow_uri)
    client = mlflow.MlflowClient()
    exp = client.get_experiment_by_name(settings.experiment)
    if exp is not None:
        return exp.experiment_id
    location = None
    if settings.profile == "embedded" and not settings.tracking_uri:
        location = Path(settings.artifact_root / settings.experiment).resolve().as_uri()
    return client.create_experiment(settings.experiment, artifact_location=location)


def client():
    import mlflow

    return mlflow.MlflowClient()
