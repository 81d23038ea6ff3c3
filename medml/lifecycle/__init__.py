"""The lifecycle steps, one typed function each, in the order a run takes them. The CLI,
the Prefect flows and dvc.yaml call these; none of them imports Prefect.

    ctx = open_run(settings, "NAME")            # context: the dataset, opened once
    validate(ctx) -> train(ctx) -> evaluate(ctx, trained)
    -> register(ctx, model, evaluated, trained) -> judge(settings, model, v, ctx=ctx)
    -> conclude(settings, decision)             # the gate; promote() = judge + conclude

The data stages (``materialise``, ``deidentify``, ``split``, ``create_dataset``) build
and version datasets before any run.
"""

from __future__ import annotations

from medml.lifecycle.context import RunContext, open_run
from medml.lifecycle.data import (
    DATA_STAGES,
    create_dataset,
    deidentify,
    materialise,
    split,
    validate,
)
from medml.lifecycle.evaluation import Evaluated, evaluate, evaluate_registered, score_test
from medml.lifecycle.release import (
    GateDecision,
    conclude,
    judge,
    promote,
    record_decision,
    register,
)
from medml.lifecycle.training import Trained, train

__all__ = [
    "DATA_STAGES", "Evaluated", "GateDecision", "RunContext", "Trained", "conclude",
    "create_dataset", "deidentify", "evaluate", "evaluate_registered", "judge",
    "materialise", "open_run", "promote", "record_decision", "register", "score_test",
    "split", "train", "validate",
]
