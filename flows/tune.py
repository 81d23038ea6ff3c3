"""Hyperparameter search as a Prefect flow: validate once, then the trials in batches of
``parallel``, each batch's trials at once on a Dask task runner (one worker process per
trial), each trial a nested MLflow run; the best by the validation monitor is released
like any lifecycle model (evaluate -> register -> gate)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from flows.lifecycle import release, validate
from medml import lifecycle, tune
from medml.lifecycle import RunContext
from medml.settings import Settings


@task(name="trial", cache_policy=NO_CACHE)
def trial(ctx: RunContext, parent_run_id: str, asked: tune.AskedTrial, threads: int,
          flow_run_id: str, report: str) -> tune.TrialResult:
    return tune.run_trial(ctx, parent_run_id, asked, threads=threads,
                          flow_run_id=flow_run_id, validation_report=report)


@flow(name="medml-tune", log_prints=True)
def tune_flow(settings: dict[str, Any], dataset: str, model: str, trials: int | None = None,
              parallel: int | None = None, task: str | None = None) -> dict[str, Any]:
    """Search, then release the best trial's model."""
    import mlflow

    ctx = lifecycle.open_run(Settings(**settings), dataset, task=task)
    run_id = str(flow_run.get_id() or "")
    report = validate(ctx)
    study = tune.open_study(ctx, trials=trials, parallel=parallel)
    try:
        while batch := study.ask(study.params.parallel):
            futures = [trial.submit(ctx, study.parent_run_id, asked, study.threads, run_id,
                                    report) for asked in batch]
            results = [f.result() for f in futures]
            for r in results:
                print(f"trial {r.number} (pid {r.pid}): " + (
                    f"failed: {r.error}" if r.error else
                    f"val_{study.task.monitor} {r.value}") + f" with {r.overrides}")
            study.tell(results)
        best = study.best()
        study.finish(best)
    except BaseException:
        if study.results:  # what ran is still recorded (e.g. every trial diverged)
            with suppress(Exception):
                study.log_trials()
        mlflow.MlflowClient().set_terminated(study.parent_run_id, "FAILED")
        raise
    print(f"best: trial {best.number} (run {best.run_id}), val_{study.task.monitor} "
          f"{best.value}; releasing it")
    result = release(ctx, model, best.trained, run_id)
    return {**result, "parent_run_id": study.parent_run_id,
            "trials": [tune.summary(r) for r in study.results]}


def run(settings: Settings, dataset: str, model: str, task: str, trials: int | None = None,
        parallel: int | None = None) -> dict[str, Any]:
    """``tune_flow`` on a Dask cluster of ``parallel`` single-threaded worker processes.

    Without a Prefect server (the embedded profile) one temporary server is started here
    and its URL handed to the workers, so that the trials report to the flow's server
    instead of each worker starting its own."""
    from contextlib import ExitStack

    # Dask's own INFO chatter (and shutdown tracebacks of closed comms) off the console,
    # here and in the workers; set DASK_LOGGING__DISTRIBUTED=info to see it.
    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "error")
    from prefect.settings import PREFECT_API_URL, temporary_settings

    width = tune.search_params(settings, task, trials, parallel).parallel
    with ExitStack() as stack:
        runner = stack.enter_context(dask_runner(width))
        if not PREFECT_API_URL.value():
            from prefect.server.api.server import SubprocessASGIServer

            server = SubprocessASGIServer()
            server.start()
            stack.enter_context(temporary_settings({PREFECT_API_URL: server.api_url}))
            previous = os.environ.get("PREFECT_API_URL")
            os.environ["PREFECT_API_URL"] = server.api_url  # inherited by the Dask workers
            stack.callback(_restore_env, "PREFECT_API_URL", previous)
        return tune_flow.with_options(task_runner=runner)(
            settings=settings.for_flow(), dataset=dataset, model=model,
            trials=trials, parallel=parallel, task=task)


@contextmanager
def dask_runner(width: int) -> Iterator[Any]:
    """A DaskTaskRunner of ``width`` single-threaded worker processes, with the workers'
    environment fit for training while the context is open.

    Dask's nanny starts workers with MALLOC_TRIM_THRESHOLD_=65536 (memory back to the OS
    early; glibc also stops raising its mmap threshold), so PyTorch's per-step tensors are
    mapped and unmapped afresh: the same training ran about 1.6x slower in a worker than
    in a plain process (bench/parallel.py, docs/benchmarks.md). Its
    OMP_NUM_THREADS=1 stays: each trial sets its own thread count."""
    import dask.config
    import distributed  # noqa: F401  (loads the distributed.* defaults into dask.config)
    from prefect_dask import DaskTaskRunner

    environ = {k: v for k, v in dask.config.get("distributed.nanny.pre-spawn-environ").items()
               if k != "MALLOC_TRIM_THRESHOLD_"}
    with dask.config.set({"distributed.nanny.pre-spawn-environ": environ}):
        yield DaskTaskRunner(cluster_kwargs={"n_workers": width, "threads_per_worker": 1,
                                             "processes": True, "dashboard_address": None})


def _restore_env(key: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(key, None)
    else:
        os.environ[key] = value

