"""Scheduled retraining: the lifecycle flow as a Prefect deployment on a work pool.

``schedule_lifecycle`` creates (or updates) the deployment ``<model>-<dataset>`` of
``flows/lifecycle.py:lifecycle_flow`` with a cron schedule and, optionally, a trigger on
the dataset's data changing (the event ``medml.dataset.changed`` that ``medml data
import/generate`` emits for the dataset's resource when it is tracked with a Prefect API).
A worker of the pool (``prefect worker start --pool NAME``) runs it from this project's
source. A scheduled retrain that the gate refuses ends Failed in Prefect and leaves the
champion where it was (the refusal is recorded in MLflow like any other).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from uuid import UUID

from medml.errors import BadInputError

SOURCE = Path(__file__).resolve().parents[1]  # the project root holding flows/
ENTRYPOINT = "flows/lifecycle.py:lifecycle_flow"
DATA_EVENT = "medml.dataset.changed"


def data_resource(dataset: str) -> str:
    """The Prefect event resource id of a dataset."""
    return f"medml.dataset.{dataset}"


def ensure_pool(name: str) -> None:
    """Create a process work pool ``name`` unless it exists."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            client.read_work_pool(name)
        except ObjectNotFound:
            client.create_work_pool(WorkPoolCreate(name=name, type="process"))


def schedule_lifecycle(settings: dict[str, Any], dataset: str, model: str, *,
                       cron: str | None = None, on_data_change: bool = False,
                       pool: str = "medml", timezone: str = "UTC") -> UUID:
    """Deploy the lifecycle of ``dataset`` -> ``model`` on ``pool``; returns its id."""
    from prefect import flow as prefect_flow
    from prefect.events import DeploymentEventTrigger

    schedule = cron_schedule(cron, timezone) if cron else None
    ensure_pool(pool)
    triggers = []
    if on_data_change:
        triggers.append(DeploymentEventTrigger(
            name=f"{dataset} changed", expect={DATA_EVENT},
            match={"prefect.resource.id": data_resource(dataset)}))
    flow = prefect_flow.from_source(source=str(SOURCE), entrypoint=ENTRYPOINT)
    return flow.deploy(
        name=f"{model}-{dataset}", work_pool_name=pool, build=False, push=False,
        schedules=[schedule] if schedule else None,
        triggers=triggers or None,
        parameters={"settings": settings, "dataset": dataset, "model": model},
        description=f"MedML lifecycle: {dataset} -> {model} (validate, train, evaluate, "
                    "register, gate)", tags=["medml", f"dataset:{dataset}"],
        print_next_steps=False)


def cron_schedule(cron: str, timezone: str = "UTC") -> Any:
    """Prefect's schedule of a cron expression; BadInputError (one line) when it is none."""
    from prefect.client.schemas.schedules import CronSchedule

    try:
        return CronSchedule(cron=cron, timezone=timezone)
    except ValueError:
        raise BadInputError(f"--cron {cron!r}: not a cron expression (5 fields, e.g. "
                            '"0 2 * * 0")') from None


def emit_data_changed(dataset: str, md5: str, previous: str | None) -> None:
    """Tell Prefect that ``dataset`` has a new DVC version (deployments may react)."""
    from prefect.events import emit_event

    emit_event(event=DATA_EVENT, resource={"prefect.resource.id": data_resource(dataset)},
               payload={"dvc_md5": md5, "previous_md5": previous})
