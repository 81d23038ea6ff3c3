"""The evaluation step: test-split metrics, plots and subgroup tables into the training
run, and the model logged as an MLflow pyfunc; also a registered version scored on a
dataset's test split (``medml evaluate``, the gate)."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medml.errors import BadInputError, NotFoundError
from medml.lifecycle.context import RunContext
from medml.settings import Settings

log = logging.getLogger("medml.lifecycle")


@dataclass
class Evaluated:
    run_id: str
    model_uri: str
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass
class Scored:
    """A saved model's predictions on the run's test split, with the task's evaluation."""

    spec: dict
    result: Any  # tasks.base.EvalResult
    metrics: dict[str, float]  # test_<metric>, finite values only

    def drop_figures(self) -> None:
        """Close the plots of an evaluation that is not logged (pyplot keeps them)."""
        import matplotlib.pyplot as plt

        for fig in self.result.figures.values():
            plt.close(fig)


def score_test(ctx: RunContext, bundle_path: str | Path) -> Scored:
    """Predict the run's test split with a saved bundle; the task's full evaluation."""
    import torch

    from medml.train import pick_device

    task, params, manifest = ctx.task, ctx.params, ctx.manifest()
    bundle = torch.load(bundle_path, map_location="cpu", weights_only=True)
    spec = bundle["spec"]
    if bundle.get("task") != task.name:
        raise BadInputError(f"model is a {bundle.get('task')} model; dataset "
                            f"{ctx.dataset!r} is {task.name}")
    device = pick_device(params.train.device)
    model = task.rebuild_model(spec)
    model.load_state_dict(bundle["state_dict"])
    model.to(device)
    params = task.params_for(params, spec)
    test = task.datasets(ctx.path, ctx.meta, manifest[manifest["split"] == "test"],
                         params)["test"]
    result = task.evaluate(task.predict_split(model, test, spec, device), manifest, spec,
                           params)
    metrics = {f"test_{k}": float(v) for k, v in result.metrics.items()
               if v is not None and math.isfinite(v)}
    return Scored(spec, result, metrics)


def _log_evaluation(scored: Scored) -> None:
    import matplotlib.pyplot as plt
    import mlflow

    result = scored.result
    mlflow.log_metrics(scored.metrics)
    for fname, fig in result.figures.items():
        mlflow.log_figure(fig, f"plots/{fname}")
        plt.close(fig)
    for fname, table in result.tables.items():
        mlflow.log_table(table, f"eval/{fname}")
    if result.predictions is not None:
        mlflow.log_table(result.predictions, "eval/test_predictions.json")


def evaluate(ctx: RunContext, trained: Any) -> Evaluated:
    """Test-split metrics, plots and subgroup tables into the training run (``trained``:
    a ``Trained``); log the pyfunc model."""
    import mlflow

    from medml import tracking

    scored = score_test(ctx, trained.bundle_path)
    ctx.client()
    with mlflow.start_run(run_id=trained.run_id):
        _log_evaluation(scored)
        signature, example = ctx.task.signature_and_example(scored.spec, ctx.path,
                                                            ctx.manifest())
        with tracking.known_warnings_quiet():
            info = mlflow.pyfunc.log_model(
                name="model", python_model=ctx.task.pyfunc(),
                artifacts={"bundle": trained.bundle_path}, signature=signature,
                input_example=example, pip_requirements=requirements(ctx.task))
    log.info("test metrics: %s", {k: round(v, 4) for k, v in scored.metrics.items()})
    return Evaluated(trained.run_id, info.model_uri, scored.metrics)


def registered_bundle(settings: Settings, mv: Any) -> Path:
    """Download registered version ``mv`` (a ModelVersion) and find its bundle."""
    import mlflow

    ref = f"models:/{mv.name}/{mv.version}"
    try:
        local = mlflow.artifacts.download_artifacts(ref)
    except mlflow.exceptions.MlflowException as exc:
        raise NotFoundError(f"model '{ref}' not found in {settings.mlflow_uri}") from exc
    bundle = next(Path(local).rglob("bundle.pt"), None)
    if bundle is None:
        raise NotFoundError(f"model '{ref}' carries no MedML bundle")
    return bundle


def evaluate_registered(ctx: RunContext, model_ref: str) -> Evaluated:
    """Evaluate a registered version (``MODEL@alias`` or ``MODEL/version``) on the run's
    test split, in a new MLflow run that names the version and the data."""
    import mlflow

    from medml import registry

    ctx = ctx.tracked()
    mv = registry.resolve(ctx.client(), model_ref)
    scored = score_test(ctx, registered_bundle(ctx.settings, mv))
    with mlflow.start_run(experiment_id=ctx.experiment_id,
                          run_name=f"evaluate-{model_ref}-on-{ctx.dataset}") as run:
        mlflow.set_tags({"medml.evaluation_of": model_ref, "medml.dataset": ctx.dataset,
                         "medml.data_md5": ctx.data_md5})
        _log_evaluation(scored)
    return Evaluated(run.info.run_id, f"models:/{mv.name}/{mv.version}", scored.metrics)


def requirements(task: Any) -> list[str]:
    """Pinned pip requirements of the logged model: the shared ones and the task's."""
    from importlib.metadata import version

    return [f"{p}=={version(p)}" for p in ("mlflow", "torch", "pandas", "numpy",
                                           *task.requirements)]
