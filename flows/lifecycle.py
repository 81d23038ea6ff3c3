"""The lifecycle as one Prefect flow for every task: each task wraps one medml function.

open the dataset (once: the run context) -> validate -> train -> evaluate -> register ->
gate (judge [-> human approval] -> conclude)

When the task's gate asks for approval (``gate.approval: true``), a version that passes the
checks waits, paused, for a typed ``Approval`` input, given in the Prefect UI or with
``medml approve NAME VERSION --by WHO --reason TEXT`` (``answer_approval``); no answer
within ``gate.approval_timeout_s`` means not promoted.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.exceptions import FlowPauseTimeout
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput
from prefect.runtime import flow_run

from medml import lifecycle, registry
from medml.errors import CheckFailed, MedMLError
from medml.lifecycle import Evaluated, GateDecision, RunContext, Trained
from medml.settings import Settings


@task(name="validate", cache_policy=NO_CACHE)
def validate(ctx: RunContext) -> str:
    return str(lifecycle.validate(ctx, check=True).report_path)


@task(name="train", cache_policy=NO_CACHE)
def train(ctx: RunContext, flow_run_id: str, report: str) -> Trained:
    return lifecycle.train(ctx, flow_run_id=flow_run_id, validation_report=report)


@task(name="evaluate", cache_policy=NO_CACHE)
def evaluate(ctx: RunContext, trained: Trained) -> Evaluated:
    return lifecycle.evaluate(ctx, trained)


@task(name="register", cache_policy=NO_CACHE)
def register(ctx: RunContext, model: str, evaluated: Evaluated, trained: Trained,
             flow_run_id: str) -> str:
    return lifecycle.register(ctx, model, evaluated, trained, flow_run_id)


@task(name="judge", cache_policy=NO_CACHE)
def judge(ctx: RunContext, model: str, version: str) -> GateDecision:
    return lifecycle.judge(ctx.settings, model, version, ctx=ctx)


@task(name="conclude", cache_policy=NO_CACHE)
def conclude(ctx: RunContext, decision: GateDecision, approval: dict | None) -> GateDecision:
    return lifecycle.conclude(ctx.settings, decision, approval, ctx=ctx)


class Approval(RunInput):
    """The human answer a paused lifecycle waits for."""

    approved: bool
    by: str
    reason: str


def ask_approval(decision: GateDecision, timeout_s: int) -> dict:
    print(f"{decision.model} version {decision.version} passed the gate checks "
          f"({decision.reasons()}); waiting up to {timeout_s} s for approval: "
          f"medml approve {decision.model} {decision.version} --by WHO --reason TEXT")
    try:
        answer = pause_flow_run(wait_for_input=Approval, timeout=timeout_s)
    except FlowPauseTimeout:
        return {"approved": False, "by": None, "reason": f"no answer within {timeout_s} s"}
    return answer.model_dump(include={"approved", "by", "reason"})


def answer_approval(settings: Settings, name: str, version: str, *, by: str, reason: str,
                    approved: bool = True) -> str:
    """Resume the lifecycle flow run that waits for approval of ``name`` ``version`` with
    an answer; returns the flow run's id. MedMLError when no run of it is waiting."""
    import os

    from prefect.exceptions import NotPausedError
    from prefect.flow_runs import resume_flow_run

    mv = registry.resolve(settings, f"{name}/{version}")
    run_id = mv.tags.get("flow_run_id")
    if not run_id:
        raise MedMLError(f"{name} version {version} was not registered by a lifecycle flow run; "
                         f"promote it with `medml promote {name} --version {version}`")
    os.environ.update(settings.prefect_env())
    try:
        resume_flow_run(UUID(run_id), run_input={"approved": approved, "by": by,
                                                 "reason": reason})
    except NotPausedError as exc:
        raise MedMLError(f"flow run {run_id} of {name} version {version} is not waiting for "
                         "approval") from exc
    except FlowPauseTimeout as exc:
        raise MedMLError(f"flow run {run_id} of {name} version {version} waited too long; "
                         "it can no longer be approved") from exc
    return run_id


def release(ctx: RunContext, model: str, trained: Trained, flow_run_id: str
            ) -> dict[str, Any]:
    """evaluate -> register -> gate (judge [-> human approval] -> conclude) for a trained
    model: the tail of the lifecycle and of a hyperparameter search (``flows/tune.py``)."""
    evaluated = evaluate(ctx, trained)
    version = register(ctx, model, evaluated, trained, flow_run_id)
    decision = judge(ctx, model, version)
    gate = ctx.params.gate
    approval = (ask_approval(decision, gate.approval_timeout_s)
                if decision.passed and gate.approval else None)
    decision = conclude(ctx, decision, approval)
    if not decision.passed:
        # The flow run ends Failed, so a refused promotion is visible in Prefect too.
        raise CheckFailed(f"{model} version {version} not promoted: {decision.reasons()}; "
                          "champion unchanged")
    return {"flow_run_id": flow_run_id, "run_id": trained.run_id, "model": model,
            "version": version, "metrics": evaluated.metrics, "decision": decision}


@flow(name="medml-lifecycle", log_prints=True)
def lifecycle_flow(settings: dict[str, Any], dataset: str, model: str,
                   task: str | None = None) -> dict[str, Any]:
    """Validate, train, evaluate, register and gate one dataset's model (``task``: the
    task the caller expects the dataset to be of; refused with one line otherwise)."""
    ctx = lifecycle.open_run(Settings(**settings), dataset, task=task)
    run_id = str(flow_run.get_id() or "")
    report = validate(ctx)
    trained = train(ctx, run_id, report)
    return release(ctx, model, trained, run_id)
