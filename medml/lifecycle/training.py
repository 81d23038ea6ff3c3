"""The training step: one MLflow run per model (or per tuning trial), resumable from its
epoch checkpoints."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from medml import __version__
from medml.errors import TrainingDiverged
from medml.lifecycle.context import RunContext

log = logging.getLogger("medml.lifecycle")


@dataclass
class Trained:
    run_id: str
    bundle_path: str
    checkpoint_dir: str
    resumed_from: int | None
    seconds: float
    val_metrics: dict[str, float] = field(default_factory=dict)  # of the weights kept


def _flat(prefix: str, d: dict) -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        out.update(_flat(f"{key}.", v) if isinstance(v, dict) else {key: v})
    return out


def _checkpoint_dir(ctx: RunContext, params_json: str) -> Path:
    key = hashlib.sha256(f"{ctx.task.name}|{ctx.data_md5}|{params_json}".encode()).hexdigest()
    return ctx.settings.checkpoint_dir / f"{ctx.meta.name}-{key[:16]}"


def train(ctx: RunContext, *, flow_run_id: str | None = None,
          validation_report: str | None = None, progress: bool = True,
          parent_run_id: str | None = None, run_name: str | None = None) -> Trained:
    """Train the task's model on the run's dataset in one MLflow run (nested under
    ``parent_run_id`` when given: a trial of ``medml tune``).

    Re-running the same command after a kill resumes the same run from the last
    epoch checkpoint (same data version and settings => same checkpoint folder)."""
    import mlflow

    from medml import tracking
    from medml.train import fit

    task, params, name = ctx.task, ctx.params, ctx.dataset
    manifest = ctx.manifest()
    params_json = json.dumps({"train": params.train.model_dump(), "data": params.data},
                             sort_keys=True)
    # A trial's checkpoints are its own: the same settings in another trial of the search
    # (samplers repeat choices) or in a later search are a new run, not a resumption.
    ckpt = _checkpoint_dir(ctx, params_json + (f"|{parent_run_id}|{run_name}"
                                               if parent_run_id else ""))
    ckpt.mkdir(parents=True, exist_ok=True)
    run_file = ckpt / "run.json"
    ctx = ctx.tracked()
    prior = json.loads(run_file.read_text())["run_id"] if run_file.is_file() else None
    _, spec = task.build_model(params, ctx.meta, manifest)
    with mlflow.start_run(run_id=prior, experiment_id=None if prior else ctx.experiment_id,
                          run_name=None if prior else (run_name or f"{task.name}-{name}"),
                          parent_run_id=None if prior else parent_run_id,
                          log_system_metrics=True) as run:
        if prior:
            attempts = int(run.data.tags.get("medml.attempts", "1")) + 1
            mlflow.set_tag("medml.attempts", str(attempts))
            log.warning("resuming MLflow run %s (attempt %d)", prior, attempts)
        else:
            run_file.write_text(json.dumps({"run_id": run.info.run_id}))
            mlflow.log_params(_flat("train.", params.train.model_dump())
                              | _flat("data.", params.data) | {"model.spec": json.dumps(spec)})
            mlflow.set_tags({
                "medml.task": task.name, "medml.dataset": name,
                "medml.data_md5": ctx.data_md5, "medml.git_commit": ctx.git_commit,
                "medml.git_dirty": str(ctx.version.git_dirty), "medml.version": __version__,
                "medml.flow_run_id": flow_run_id or "", "medml.attempts": "1",
            })
            mlflow.log_dict(ctx.version.as_dict(), "data/version.json")
            mlflow.log_dict(asdict(ctx.meta), "data/dataset.json")  # split, de-identification
            tracking.log_dataset_input(ctx, manifest, name, "training", tags={
                "dvc_md5": ctx.data_md5, "git_commit": ctx.git_commit})
            if validation_report:
                mlflow.log_artifacts(str(Path(validation_report).parent), "validation")
                accepted = json.loads(Path(validation_report).read_text()).get(
                    "medml", {}).get("accepted", [])
                mlflow.set_tag("medml.validation.accepted", str(len(accepted)))
        extra = {"run_id": run.info.run_id, "data_version": ctx.version.as_dict()}
        try:
            if params.train.nproc > 1:  # DDP through torchrun; rank 0 logs into this run
                from medml.distributed import launch

                job = {"settings": ctx.settings.for_flow(),
                       "task": task.name, "dataset_dir": str(ctx.path), "spec": spec,
                       "checkpoint_dir": str(ckpt), "run_id": run.info.run_id,
                       "extra": extra, "progress": progress, "threads": params.train.threads}
                outcome = launch(job, ckpt, params.train.nproc)
            else:
                outcome = fit(task, task.datasets(ctx.path, ctx.meta, manifest, params), spec,
                              params.train, ckpt,
                              on_epoch=lambda e, m: mlflow.log_metrics(m, step=e),
                              extra=extra, progress=progress)
        except TrainingDiverged as e:
            # Resuming would diverge again: the run ends FAILED, its checkpoints go.
            shutil.rmtree(ckpt, ignore_errors=True)
            e.run_id = run.info.run_id
            raise
        if outcome.resumed_from is not None:
            # A kill between an epoch's checkpoint and its logging leaves that epoch
            # unlogged (the resumed process starts after it): log what MLflow lacks.
            logged = {m.step for m in mlflow.MlflowClient().get_metric_history(
                run.info.run_id, "train_loss")}
            for h in outcome.history:
                if h["epoch"] not in logged:
                    mlflow.log_metrics({k: v for k, v in h.items() if k != "epoch"},
                                       step=h["epoch"])
            mlflow.set_tag("medml.resumed_from_epoch", str(outcome.resumed_from))
            log.warning("resumed from epoch %d", outcome.resumed_from)
        mlflow.log_metric("train_seconds", outcome.seconds)
        return Trained(run.info.run_id, str(outcome.bundle_path), str(ckpt),
                       outcome.resumed_from, outcome.seconds,
                       {k: v for k, v in outcome.kept().items() if k.startswith("val_")})
