"""The release steps: register a logged model as a version, then the promotion gate
(judge -> [human approval] -> conclude) that alone moves alias ``champion``."""

from __future__ import annotations

import json
import logging
import shutil
import uuid
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from medml import registry
from medml.gate import GateDecision
from medml.lifecycle.context import RunContext, open_run
from medml.lifecycle.evaluation import Evaluated, registered_bundle, score_test
from medml.settings import Settings

log = logging.getLogger("medml.lifecycle")


def register(ctx: RunContext, model_name: str, evaluated: Evaluated, trained: Any,
             flow_run_id: str | None = None) -> str:
    """Register the logged model as a new version with lineage tags (from the run
    context); drop the checkpoint."""
    from medml import lineage, modelcard

    registry.check_name(model_name)
    client = ctx.client()
    tags = {"git_commit": ctx.git_commit, "dvc_data_hash": ctx.data_md5,
            "dataset": ctx.dataset, "task": ctx.task.name, "flow_run_id": flow_run_id or ""}
    if not registry.exists(client, model_name):
        client.create_registered_model(model_name, tags={"task": ctx.task.name})
    # a logged model (``models:/m-...``) is named by its id too: a tracking server needs it
    model_id = (evaluated.model_uri.removeprefix("models:/")
                if evaluated.model_uri.startswith("models:/m-") else None)
    mv = client.create_model_version(model_name, evaluated.model_uri, run_id=evaluated.run_id,
                                     tags=tags, model_id=model_id)
    try:  # the evidence a version needs: artifact hashes, model card, challenger alias
        lineage.record_model_files(client, model_name, mv.version)
        modelcard.log(ctx.settings, model_name, mv.version, ctx)
        registry.set_alias(client, model_name, "challenger", str(mv.version), who="lifecycle",
                           why=f"registered from run {evaluated.run_id}"
                               + (f", flow run {flow_run_id}" if flow_run_id else ""))
    except BaseException:
        client.delete_model_version(model_name, str(mv.version))
        raise
    shutil.rmtree(trained.checkpoint_dir, ignore_errors=True)
    log.info("registered %s version %s", model_name, mv.version)
    return str(mv.version)


def judge(settings: Settings, model_name: str, version: str | None = None, *,
          ctx: RunContext | None = None) -> GateDecision:
    """Run the gate's checks on a registered version (default: the latest), against the
    current champion scored on the same frozen test set: the candidate's dataset at its
    registered DVC version. ``ctx``: that dataset already opened (a lifecycle run);
    opened from the version's tags otherwise."""
    from medml import gate

    client = registry.client_for(settings)
    mv = registry.version(client, model_name, version)
    dataset = mv.tags.get("dataset", "")
    if ctx is None or ctx.dataset != dataset:
        ctx = open_run(settings, dataset)
    checks: list[gate.Check] = []
    registered = mv.tags.get("dvc_data_hash", ctx.data_md5)
    if ctx.data_md5 != registered:
        checks.append(gate.Check("frozen_test_set", float("nan"), "==", float("nan"), False, {
            "registered": registered, "now": ctx.data_md5}))
    cand = score_test(ctx, registered_bundle(settings, mv))
    cand.drop_figures()
    champion = registry.champion(client, model_name)
    if champion is not None and str(champion.version) == str(mv.version):
        champion = None  # re-judging the champion itself: floors only
    champ = None
    if champion is not None:
        champ = score_test(ctx, registered_bundle(settings, champion))
        champ.drop_figures()
    task, params = ctx.task, ctx.params
    more, notes = gate.judge(
        params.gate, lambda p: task.score(p, cand.spec), cand.result.predictions,
        ctx.manifest(), group_column=task.group_column,
        subgroup_columns=task.subgroup_columns,
        champ=champ.result.predictions if champ is not None else None, seed=params.train.seed)
    checks += more
    return GateDecision(
        model_name, str(mv.version), bool(checks) and all(c.passed for c in checks),
        gate.checks_as_dicts(checks), datetime.now(UTC).isoformat(timespec="seconds"),
        decision_id=uuid.uuid4().hex[:12],
        champion_version=str(champion.version) if champion is not None else None,
        dataset=dataset, data_md5=ctx.data_md5, notes=notes, task=task.name)


def record_decision(settings: Settings, decision: GateDecision) -> None:
    """Store a decision durably in the tracking store: a JSON artifact in the version's run
    (``gate/decision-<id>.json``) and tags on the version."""
    client = registry.client_for(settings)
    mv = client.get_model_version(decision.model, decision.version)
    payload = json.dumps(asdict(decision), indent=2, default=str)
    client.log_text(mv.run_id, payload, f"gate/decision-{decision.decision_id}.json")
    failed = [c["check"] for c in decision.checks if not c["passed"]]
    for key, value in {"gate.decision_id": decision.decision_id,
                       "gate.passed": str(decision.passed),
                       "gate.failed_checks": ", ".join(failed)[:4000],
                       "gate.decided_at": decision.decided_at}.items():
        client.set_model_version_tag(decision.model, decision.version, key, value)


def conclude(settings: Settings, decision: GateDecision, approval: dict | None = None, *,
             who: str = "gate", ctx: RunContext | None = None) -> GateDecision:
    """Finish a decision: apply the human approval when the task's gate asks for one (no
    answer means not promoted), record it durably, and on pass move alias ``champion`` to
    the version with an entry in the alias history. ``ctx``: the decision's dataset, when
    the caller has it open (the model card reads it from there)."""
    from medml import modelcard

    if decision.passed and settings.task(decision.task).gate.approval:
        decision.approval = approval or {"approved": False, "by": None,
                                         "reason": "no approval before the timeout"}
        decision.passed = bool(decision.approval.get("approved"))
    record_decision(settings, decision)
    if decision.passed:
        by = (decision.approval or {}).get("by") or who
        registry.set_alias(settings, decision.model, "champion", decision.version, who=by,
                           why=f"gate passed: {decision.reasons()}",
                           decision_id=decision.decision_id)
    modelcard.log(settings, decision.model, decision.version, ctx)  # now with its decision
    return decision


def promote(settings: Settings, model_name: str, version: str | None = None, *,
            who: str = "gate", approval: dict | None = None) -> GateDecision:
    """``judge`` then ``conclude``: the gate in one call (CLI ``medml promote``)."""
    return conclude(settings, judge(settings, model_name, version), approval, who=who)
