"""MLflow wiring: where the tracking store is, and the experiment's artifact location.

Called when a run context is opened or a command starts (never at import time)."""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from medml.settings import Settings

log = logging.getLogger("medml.tracking")


def point(settings: Settings) -> None:
    """Point MLflow (tracking and registry) at the settings' store, in this process."""
    import mlflow

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "5")
    os.environ.setdefault("MLFLOW_SYSTEM_METRICS_SAMPLES_BEFORE_LOGGING", "1")
    if settings.profile == "embedded" and not settings.tracking_uri:
        settings.state_dir.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(settings.mlflow_uri)
    mlflow.set_registry_uri(settings.mlflow_uri)


def configure(settings: Settings) -> str:
    """``point``, then create the experiment if needed. Returns its id."""
    import mlflow

    point(settings)
    client = mlflow.MlflowClient()
    exp = client.get_experiment_by_name(settings.experiment)
    if exp is not None:
        return exp.experiment_id
    location = None
    if settings.profile == "embedded" and not settings.tracking_uri:
        location = Path(settings.artifact_root / settings.experiment).resolve().as_uri()
    return client.create_experiment(settings.experiment, artifact_location=location)


# MLflow warnings that medml has looked at and answered, printed on every run otherwise:
# the CLI leaves them out for the whole process (unless -v), the library around the calls
# that raise them (so also in Dask trial workers and for library users).
KNOWN_WARNINGS = (
    # a dataset directory's path matches both of MLflow's local sources ("" and "file")
    "The specified dataset source can be interpreted in multiple ways",
    # image examples are integer lists; the signature is given (AnyType) and images hold
    # no missing values
    "Hint: Inferred schema contains integer column",
    # predict() is left untyped on purpose: the signature is given explicitly. MLflow warns
    # when the class is defined, at its first import: only the CLI's filter catches it.
    ".*Add type hints to the `predict` method",
)


@contextmanager
def known_warnings_quiet() -> Iterator[None]:
    """Leave out KNOWN_WARNINGS (UserWarnings only) inside the block."""
    with warnings.catch_warnings():
        for message in KNOWN_WARNINGS:
            warnings.filterwarnings("ignore", message=message, category=UserWarning)
        yield


def log_dataset_input(dataset: Any, manifest: Any, name: str, context: str,
                      tags: dict[str, str] | None = None) -> None:
    """Dataset ``name`` (opened, with its manifest) as the active run's MLflow input, its
    DVC hash as the digest."""
    import mlflow

    with known_warnings_quiet():
        mlflow.log_input(mlflow.data.from_pandas(
            manifest, source=str(dataset.path), name=name,
            digest=dataset.version.md5[:32],
            targets="label" if "label" in manifest.columns else None),
            context=context, tags=tags)


def client():
    import mlflow

    return mlflow.MlflowClient()
