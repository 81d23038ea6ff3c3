"""The lifecycle as one Prefect flow for every task: each task wraps one medml function.

validate -> train -> evaluate -> register -> gate (judge [-> human approval] -> conclude)

When the task's gate asks for approval (``gate.approval: true``), a version that passes the
checks waits, paused, for a typed ``Approval`` input, given in the Prefect UI or with
``medml approve NAME VERSION --by WHO --reason TEXT``; no answer within
``gate.approval_timeout_s`` means not promoted.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.exceptions import FlowPauseTimeout
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput
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


@task(name="judge", cache_policy=NO_CACHE)
def judge(settings: Settings, model: str, version: str) -> lifecycle.GateDecision:
    return lifecycle.judge(settings, model, version)


@task(name="conclude", cache_policy=NO_CACHE)
def conclude(settings: Settings, decision: lifecycle.GateDecision,
             approval: dict | None) -> lifecycle.GateDecision:
    return lifecycle.conclude(settings, decision, approval)


class Approval(RunInput):
    """The human answer a paused lifecycle waits for."""

    approved: bool
    by: str
    reason: str


def ask_approval(decision: lifecycle.GateDecision, timeout_s: int) -> dict:
    print(f"{decision.model} version {decision.version} passed the gate checks "
          f"({decision.reasons()}); waiting up to {timeout_s} s for approval: "
          f"medml approve {decision.model} {decision.version} --by WHO --reason TEXT")
    try:
        answer = pause_flow_run(wait_for_input=Approval, timeout=timeout_s)
    except FlowPauseTimeout:
        return {"approved": False, "by": None, "reason": f"no answer within {timeout_s} s"}
    return answer.model_dump(include={"approved", "by", "reason"})


def decision_task(cfg: Settings, dataset: str) -> str:
    return lifecycle.open_dataset(cfg, dataset).meta.task


def release(cfg: Settings, dataset: str, model: str, trained: lifecycle.Trained,
            flow_run_id: str) -> dict[str, Any]:
    """evaluate -> register -> gate (judge [-> human approval] -> conclude) for a trained
    model: the tail of the lifecycle and of a hyperparameter search (``flows/tune.py``)."""
    evaluated = evaluate(cfg, dataset, trained)
    version = register(cfg, model, evaluated, trained, flow_run_id)
    decision = judge(cfg, model, version)
    gate = cfg.task(decision_task(cfg, dataset)).gate
    approval = (ask_approval(decision, gate.approval_timeout_s)
                if decision.passed and gate.approval else None)
    decision = conclude(cfg, decision, approval)
    if not decision.passed:
        # The flow run ends Failed, so a refused promotion is visible in Prefect too.
        raise CheckFailed(f"{model} version {version} not promoted: {decision.reasons()}; "
                          "champion unchanged")
    return {"flow_run_id": flow_run_id, "run_id": trained.run_id, "model": model,
            "version": version, "metrics": evaluated.metrics, "decision": decision}


@flow(name="medml-lifecycle", log_prints=True)
def lifecycle_flow(settings: dict[str, Any], dataset: str, model: str) -> dict[str, Any]:
    """Validate, train, evaluate, register and gate one dataset's model."""
    cfg = Settings(**settings)
    run_id = str(flow_run.get_id() or "")
    report = validate(cfg, dataset)
    trained = train(cfg, dataset, run_id, report)
    return release(cfg, dataset, model, trained, run_id)
