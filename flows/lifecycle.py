"""The lifecycle as one Prefect flow for every task: each task wraps one medml function.

validate -> train -> evaluate -> register -> promote
"""

from __future__ import annotations

from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from medml import lifecycle
from medml.errors import CheckFailed
from medml.settings import Settings


@task(name="validate", cache_policy=NO_CACHE)
def validate(settings: Settings, dataset: str) -> str:
    return str(lifecycle.validate(settings, dataset, check=True).report_path)


@task(name="train", cache_policy=NO_CACHE)
def train(settings: Settings, dataset: str, flow_run_id: str, report: str
          ) -> lifecycle.Trained:
    return lifecycle.train(settings, dataset, flow_run_id=flow_run_id, validation_report=report)


@task(name="evaluate", cache_policy=NO_CACHE)
def evaluate(settings: Settings, dataset: str, trained: lifecycle.Trained
             ) -> lifecycle.Evaluated:
    return lifecycle.evaluate(settings, dataset, trained)


@task(name="register", cache_policy=NO_CACHE)
def register(settings: Settings, model: str, evaluated: lifecycle.Evaluated,
             trained: lifecycle.Trained, flow_run_id: str) -> str:
    return lifecycle.register(settings, model, evaluated, trained, flow_run_id)


@task(name="promote", cache_policy=NO_CACHE)
def promote(settings: Settings, model: str, version: str) -> lifecycle.GateDecision:
    return lifecycle.promote(settings, model, version)


@flow(name="medml-lifecycle", log_prints=True)
def lifecycle_flow(settings: dict[str, Any], dataset: str, model: str) -> dict[str, Any]:
    """Validate, train, evaluate, register and gate one dataset's model."""
    cfg = Settings(**settings)
    run_id = str(flow_run.get_id() or "")
    report = validate(cfg, dataset)
    trained = train(cfg, dataset, run_id, report)
    evaluated = evaluate(cfg, dataset, trained)
    version = register(cfg, model, evaluated, trained, run_id)
    decision = promote(cfg, model, version)
    if not decision.passed:
        # The flow run ends Failed, so a refused promotion is visible in Prefect too.
        raise CheckFailed(f"{model} version {version} not promoted: {decision.reasons()}; "
                          "champion unchanged")
    return {"flow_run_id": run_id, "run_id": trained.run_id, "model": model,
            "version": version, "metrics": evaluated.metrics, "decision": decision}
