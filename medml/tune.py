"""Hyperparameter search: an Optuna study whose trials are ordinary trainings, each a
nested MLflow run under one parent run; the best trial by the validation monitor goes on
to evaluation, registration and the gate. The test split is only seen by the winner.

This module is the library side (no Prefect): ``flows/tune.py`` runs the trials of each
batch in parallel on a Dask task runner, and the CLI (``medml tune``) starts that flow.

    ctx = lifecycle.open_run(settings, dataset)      # the dataset, opened once
    study = open_study(ctx)                           # parent run, sampler, space
    asked = study.ask(n)                              # n trials' settings overrides
    results = [run_trial(ctx, study.parent_run_id, t) for t in asked]
    study.tell(results); best = study.best()
    study.finish(best)                                # table, best params, clean-up
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import shutil
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from medml.errors import BadInputError, TrainingDiverged
from medml.settings import Settings, TuneParams

if TYPE_CHECKING:
    from medml.lifecycle import RunContext

log = logging.getLogger("medml.tune")


@dataclass
class AskedTrial:
    number: int
    overrides: dict[str, Any]  # train key (model_args.<name> for constructor args) -> value


@dataclass
class TrialResult:
    number: int
    overrides: dict[str, Any]
    run_id: str
    value: float | None  # the validation monitor of the weights kept; None: no val score
    trained: Any  # lifecycle.Trained; None when the trial failed
    pid: int = 0  # the process that trained it
    val_metrics: dict[str, float] = field(default_factory=dict)
    error: str | None = None  # why the trial failed (training diverged)


def _distributions(space: dict[str, Any]) -> dict[str, Any]:
    """Optuna distributions from the settings' ``space``."""
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    out = {}
    for key, spec in space.items():
        if isinstance(spec, list) and spec:
            out[key] = CategoricalDistribution(
                [json.dumps(v) if isinstance(v, list | dict) else v for v in spec])
        elif isinstance(spec, dict) and {"low", "high"} <= set(spec):
            ints = all(isinstance(spec[k], int) and not isinstance(spec[k], bool)
                       for k in ("low", "high"))
            cls = IntDistribution if ints else FloatDistribution
            out[key] = cls(spec["low"], spec["high"], log=bool(spec.get("log", False)))
        else:
            raise BadInputError(f"tune.space.{key}: give a list of choices or "
                                "{low: ..., high: ..., log: true|false}")
    return out


def _decode(value: Any) -> Any:
    """Choices that are lists or mappings travel through Optuna as JSON text."""
    if isinstance(value, str) and value[:1] in "[{":
        return json.loads(value)
    return value


def apply_overrides(settings: Settings, task: str, overrides: dict[str, Any],
                    threads: int | None = None) -> Settings:
    """``settings`` with ``tasks.<task>.train`` keys replaced (``model_args.<name>`` goes
    into the constructor arguments)."""
    from medml.settings import override_task

    return override_task(settings, task, train={**overrides, "threads": threads},
                         where="tune.space")


class Study:
    """An Optuna study of one dataset's training, recorded in a parent MLflow run."""

    def __init__(self, ctx: RunContext, params: TuneParams, parent_run_id: str) -> None:
        import optuna

        self.ctx, self.params, self.parent_run_id = ctx, params, parent_run_id
        self.settings, self.dataset, self.task = ctx.settings, ctx.dataset, ctx.task
        task, dataset = ctx.task, ctx.dataset
        self.distributions = _distributions(params.space)
        seed = ctx.params.train.seed
        grid: list[dict] = []
        if params.sampler == "grid":
            if not all(isinstance(v, list) and v for v in params.space.values()):
                raise BadInputError("tune.sampler grid: every tune.space entry must be a list")
            keys = list(params.space)
            grid = [dict(zip(keys, combo, strict=True)) for combo in itertools.product(
                *[[json.dumps(v) if isinstance(v, list | dict) else v for v in params.space[k]]
                  for k in keys])]
            self.params = params = params.model_copy(
                update={"trials": min(params.trials, len(grid))})
            sampler = optuna.samplers.RandomSampler(seed=seed)  # only asked past the grid
        else:
            sampler = optuna.samplers.TPESampler(seed=seed)
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.study = optuna.create_study(
            direction="maximize" if task.monitor_mode == "max" else "minimize",
            sampler=sampler, study_name=f"tune-{dataset}")
        for point in grid:  # the grid, in order, as enqueued trials (Optuna's GridSampler
            self.study.enqueue_trial(point)  # stops studies itself, unlike ask-and-tell)
        self._open: dict[int, Any] = {}
        self.results: list[TrialResult] = []

    @property
    def threads(self) -> int:
        """CPU threads per trial: the machine's cores shared out between parallel trials."""
        return max(1, (os.cpu_count() or 1) // self.params.parallel)

    def ask(self, n: int) -> list[AskedTrial]:
        """The next ``n`` trials' overrides (fewer when the budget is nearly spent)."""
        n = min(n, self.params.trials - len(self.results) - len(self._open))
        asked = []
        for _ in range(max(n, 0)):
            trial = self.study.ask(self.distributions)
            self._open[trial.number] = trial
            asked.append(AskedTrial(trial.number,
                                    {k: _decode(v) for k, v in trial.params.items()}))
        return asked

    def tell(self, results: list[TrialResult]) -> None:
        import optuna

        for r in results:
            trial = self._open.pop(r.number)
            if r.value is None or r.value != r.value:
                self.study.tell(trial, state=optuna.trial.TrialState.FAIL)
            else:
                self.study.tell(trial, r.value)
            self.results.append(r)

    def best(self) -> TrialResult:
        scored = [r for r in self.results if r.value is not None and r.value == r.value]
        if not scored:
            if self.results and all(r.error for r in self.results):
                first = min(self.results, key=lambda r: r.number)
                raise TrainingDiverged(f"all {len(self.results)} trials of dataset "
                                       f"{self.dataset!r} failed; trial {first.number}: "
                                       f"{first.error}")
            raise BadInputError(f"no trial of dataset {self.dataset!r} has a validation "
                                f"{self.task.monitor}; give the dataset a val split")
        pick = max if self.task.monitor_mode == "max" else min
        return pick(scored, key=lambda r: r.value)  # the earliest of equals

    def log_trials(self) -> None:
        """The trials so far as the parent run's table ``tune/trials.json``."""
        import mlflow
        import pandas as pd

        self.ctx.client()
        monitor = f"val_{self.task.monitor}"
        table = pd.DataFrame([{"trial": r.number, "run_id": r.run_id, monitor: r.value,
                               "pid": r.pid, "error": r.error or "",
                               **{f"param.{k}": json.dumps(v)
                                  for k, v in r.overrides.items()}}
                              for r in sorted(self.results, key=lambda r: r.number)])
        mlflow.MlflowClient().log_table(self.parent_run_id, table, "tune/trials.json")

    def finish(self, best: TrialResult) -> None:
        """Record the search in the parent run and drop the losers' checkpoints."""
        import mlflow

        self.log_trials()
        client = mlflow.MlflowClient()
        monitor = f"val_{self.task.monitor}"
        client.log_dict(self.parent_run_id, {"best_trial": best.number,
                                             "best_run_id": best.run_id,
                                             "best_overrides": best.overrides},
                        "tune/best.json")
        client.log_metric(self.parent_run_id, f"best_{monitor}", best.value)
        client.set_tag(self.parent_run_id, "medml.tune.best_run_id", best.run_id)
        client.set_tag(self.parent_run_id, "medml.tune.best_trial", str(best.number))
        client.set_tag(best.run_id, "medml.tune.best", "true")
        for r in self.results:
            if r.run_id != best.run_id and r.trained is not None:
                shutil.rmtree(r.trained.checkpoint_dir, ignore_errors=True)
        client.set_terminated(self.parent_run_id)


def search_params(settings: Settings, task: str, trials: int | None = None,
                  parallel: int | None = None) -> TuneParams:
    """Task ``task``'s ``tune`` settings with the command's overrides."""
    params = settings.task(task).tune
    return params.model_copy(update={k: v for k, v in
                                     {"trials": trials, "parallel": parallel}.items()
                                     if v is not None})


def open_study(ctx: RunContext, *, trials: int | None = None, parallel: int | None = None) -> Study:
    """A study of the run context's dataset with its parent MLflow run (tags name the
    dataset and its DVC version; params the search)."""
    import mlflow

    from medml import tracking

    task, dataset = ctx.task, ctx.dataset
    params = search_params(ctx.settings, task.name, trials, parallel)
    if not params.space:
        raise BadInputError(f"tasks.{task.name}.tune.space is empty; name the train settings "
                            "to search in params.yaml")
    _distributions(params.space)  # a bad space fails before any run exists
    ctx = ctx.tracked()
    client = ctx.client()
    run = client.create_run(ctx.experiment_id, run_name=f"tune-{dataset}", tags={
        "medml.task": task.name, "medml.dataset": dataset, "medml.data_md5": ctx.data_md5,
        "medml.tune": "parent"})
    # The dataset as the parent's input first: parallel trials logging the same new
    # dataset at once collide on MLflow's unique (experiment, name, digest) row.
    with mlflow.start_run(run_id=run.info.run_id):
        tracking.log_dataset_input(ctx, ctx.manifest(), dataset, "tuning")
    client.update_run(run.info.run_id, "RUNNING")
    client.log_param(run.info.run_id, "tune.trials", params.trials)
    client.log_param(run.info.run_id, "tune.parallel", params.parallel)
    client.log_param(run.info.run_id, "tune.sampler", params.sampler)
    client.log_param(run.info.run_id, "tune.space", json.dumps(params.space)[:6000])
    return Study(ctx, params, run.info.run_id)


def run_trial(ctx: RunContext, parent_run_id: str, asked: AskedTrial, threads: int | None = None,
              flow_run_id: str | None = None, validation_report: str | None = None
              ) -> TrialResult:
    """Train one trial as a nested MLflow run; its value is the validation monitor."""
    from medml import lifecycle

    task = ctx.task
    ctx = ctx.with_settings(apply_overrides(ctx.settings, task.name, asked.overrides, threads))
    try:
        trained = lifecycle.train(ctx, flow_run_id=flow_run_id, progress=False,
                                  validation_report=validation_report,
                                  parent_run_id=parent_run_id, run_name=f"trial-{asked.number}")
    except TrainingDiverged as e:  # this trial's settings fail (its run is FAILED already)
        result = TrialResult(asked.number, asked.overrides, e.run_id, None, None, os.getpid(),
                             error=f"{e} (trial settings {json.dumps(asked.overrides)})")
        log.warning("trial %d failed: %s", asked.number, result.error)
    else:
        result = TrialResult(asked.number, asked.overrides, trained.run_id,
                             trained.val_metrics.get(f"val_{task.monitor}"),
                             trained, os.getpid(), trained.val_metrics)
    client = ctx.client()
    client.set_tag(result.run_id, "medml.tune.trial", str(asked.number))
    if result.error:
        client.set_tag(result.run_id, "medml.tune.error", result.error[:5000])
    return result


def summary(result: TrialResult) -> dict[str, Any]:
    d = asdict(result)
    d.pop("trained")
    return d
