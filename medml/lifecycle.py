"""The lifecycle steps, one typed function each. The CLI, the Prefect flow and dvc.yaml
call these; none of them imports Prefect.

create_dataset -> validate -> train -> evaluate -> register -> promote
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import shutil
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from medml import __version__
from medml.data.dataset import (
    DatasetMeta,
    dataset_dir,
    load_manifest,
    load_meta,
    staged_dir,
    write_dataset,
)
from medml.data.versioning import DataVersion, data_version, track
from medml.errors import BadInputError, CheckFailed, NotFoundError, TrainingDiverged
from medml.settings import Settings
from medml.tasks import get_task

log = logging.getLogger("medml.lifecycle")


# ---------------------------------------------------------------- data
# A dataset is built in three stages, each a function here and a `medml data` command
# (so dvc.yaml can run them as stages): raw (generate or import) -> deid -> split.
DATA_STAGES = ("raw", "deid", "split")


def _raw(settings: Settings, task_name: str, out: Path, name: str, fmt: str | None,
         src: Path | None, seed: int, **options: Any) -> tuple[Any, DatasetMeta]:
    task = get_task(task_name)
    if fmt is None:
        return task.generate(out, settings.task(task_name).demo, seed, name)
    importer = task.importers.get(fmt)
    if importer is None:
        raise BadInputError(f"unknown {task_name} format {fmt!r}; choose one of: "
                            f"{', '.join(sorted(task.importers))}")
    if src is None or not Path(src).exists():
        raise BadInputError(f"{src}: source not found; give an existing file or folder")
    return importer(Path(src), out, name, seed=seed, **options)


def _deid_key(settings: Settings) -> bytes:
    from medml.deid.manifest import load_key

    return load_key(settings.deid_key.get_secret_value() if settings.deid_key else None,
                    settings.state_dir)


def _deid(settings: Settings, folder: Path, manifest, meta: DatasetMeta):
    """The manifest's identifying columns (``Task.deid_rules``), then the example files
    (``Task.deid_files``), of the dataset being written in ``folder``."""
    from medml.deid.manifest import deidentify_manifest

    key = _deid_key(settings)
    task = get_task(meta.task)
    manifest, meta, report = deidentify_manifest(manifest, meta, key, task.deid_rules(meta))
    manifest, files = task.deid_files(folder, manifest, meta, key)
    if files:
        report["files"] = files
    return manifest, meta, report


def _split(settings: Settings, manifest, meta: DatasetMeta):
    from medml.data.splits import split_manifest

    sp = settings.task(meta.task).split
    return split_manifest(manifest, meta, sp.fractions, sp.seed)


def materialise(settings: Settings, task_name: str, out_dir: Path, *, fmt: str | None = None,
                src: Path | None = None, seed: int = 0, overwrite: bool = False,
                stage: str = "split", **options: Any) -> int:
    """Generate (``fmt=None``) or import a dataset into ``out_dir`` (all or nothing), up
    to ``stage``: ``raw`` (as the source gives it), or through de-identification and
    splitting (``split``, the default). Returns the number of examples. No versioning
    here: see ``create_dataset``."""
    from medml.deid.manifest import write_report

    if stage not in ("raw", "split"):
        raise BadInputError(f"unknown stage {stage!r}; use raw or split")
    with staged_dir(Path(out_dir), overwrite=overwrite) as tmp:
        manifest, meta = _raw(settings, task_name, tmp, Path(out_dir).name, fmt, src, seed,
                              **options)
        if stage == "split":
            manifest, meta, report = _deid(settings, tmp, manifest, meta)
            write_report(tmp, report)
            manifest, meta = _split(settings, manifest, meta)
        write_dataset(tmp, manifest, meta)
    return len(manifest)


def _restage(src_dir: Path, out_dir: Path, overwrite: bool, step) -> int:
    """Run one stage on the dataset in ``src_dir`` into ``out_dir`` (all or nothing): the
    example files are linked (copied where links cannot be made), the manifest and
    metadata rewritten by ``step(tmp, manifest, meta) -> (manifest, meta)``."""
    import os

    src_dir, out_dir = Path(src_dir), Path(out_dir)
    manifest, meta = load_manifest(src_dir), load_meta(src_dir)
    with staged_dir(out_dir, overwrite=overwrite) as tmp:
        for path in sorted(src_dir.rglob("*")):
            rel = path.relative_to(src_dir)
            if path.is_dir() or rel.as_posix() in ("manifest.csv", "dataset.json"):
                continue
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(path, tmp / rel)
            except OSError:
                shutil.copy2(path, tmp / rel)
        manifest, meta = step(tmp, manifest, meta)
        write_dataset(tmp, manifest, meta)
    return len(manifest)


def deidentify(settings: Settings, src_dir: Path, out_dir: Path, *, overwrite: bool = False,
               **dicom_options: Any) -> int:
    """The de-identification stage: ``src_dir``'s dataset with its identifying manifest
    columns pseudonymised, remapped or removed (``Task.deid_rules``), and the report
    ``deid_report.json``, into ``out_dir``. When ``src_dir`` is a folder of DICOM files
    instead (no dataset yet), their headers are cleaned per the PS3.15 basic profile
    (``medml.deid.dicom``; ``dicom_options`` are its options), UIDs and patient ids
    mapped with the same key as the manifests, ready for ``medml data import``. Returns
    the number of examples or files."""
    from medml.deid.manifest import write_report

    if not (Path(src_dir) / "dataset.json").is_file():
        return _deidentify_dicom_folder(settings, Path(src_dir), Path(out_dir), overwrite,
                                        **dicom_options)

    def step(tmp: Path, manifest, meta):
        manifest, meta, report = _deid(settings, tmp, manifest, meta)
        write_report(tmp, report)
        return manifest, meta

    return _restage(src_dir, out_dir, overwrite, step)


def _deidentify_dicom_folder(settings: Settings, src: Path, out: Path, overwrite: bool,
                             **options: Any) -> int:
    """PS3.15 basic profile on every DICOM file under ``src``, into ``out`` (all or
    nothing). PatientID and PatientName become the keyed pseudonym of the PatientID, so
    that a later import still splits by patient."""
    import pydicom

    from medml.deid.dicom import UidMap, deidentify_dicom_folder
    from medml.deid.manifest import pseudonym

    if not src.is_dir():
        raise BadInputError(f"{src}: not a dataset nor a folder of DICOM files")
    key = _deid_key(settings)
    pseudonyms = {}
    for path in sorted(p for p in src.rglob("*") if p.is_file()):
        try:
            pid = pydicom.dcmread(path, stop_before_pixels=True, force=True).get("PatientID")
        except Exception:  # noqa: BLE001 - not DICOM: deidentify_dicom_folder skips it
            continue
        if pid:
            pseudonyms[path.relative_to(src).as_posix()] = pseudonym(key, "pt", str(pid))
    with staged_dir(out, overwrite=overwrite) as tmp:
        report = deidentify_dicom_folder(src, tmp, UidMap(key), pseudonyms=pseudonyms,
                                         **options)
    return len(report.files)


def split(settings: Settings, src_dir: Path, out_dir: Path, *, overwrite: bool = False
          ) -> int:
    """The split stage: train/val/test by patient (``tasks.<task>.split`` in the
    settings), or the source's own splits, into ``out_dir``."""
    return _restage(src_dir, out_dir, overwrite,
                    lambda tmp, manifest, meta: _split(settings, manifest, meta))


def create_dataset(settings: Settings, task_name: str, name: str, *, fmt: str | None = None,
                   src: Path | None = None, seed: int = 0, overwrite: bool = False,
                   **options: Any) -> DataVersion:
    """Generate or import dataset ``data/NAME`` through all three stages, then ``dvc add``
    and ``dvc push`` it. On bad input the workspace and the DVC store are left as they
    were."""
    final = dataset_dir(settings.data_dir, name)
    materialise(settings, task_name, final, fmt=fmt, src=src, seed=seed, overwrite=overwrite,
                **options)
    return track(settings.workspace, final, settings.remote_url)


@dataclass
class OpenDataset:
    path: Path
    meta: DatasetMeta
    version: DataVersion

    def manifest(self):
        return load_manifest(self.path)


def open_dataset(settings: Settings, name: str) -> OpenDataset:
    """A dataset of the workspace with its metadata and DVC version."""
    path = dataset_dir(settings.data_dir, name)
    if not path.is_dir():
        raise NotFoundError(f"dataset {name!r} not found in {settings.data_dir}; "
                            "create it with `medml data import` or `medml data generate`")
    return OpenDataset(path, load_meta(path), data_version(settings.workspace, path))


def validate(settings: Settings, name: str, check: bool = False):
    """Run the task's Great Expectations suite on the dataset. With ``check``, a failed
    validation raises CheckFailed (the lifecycle stops before training)."""
    from medml.validation import validate_dataset

    ds = open_dataset(settings, name)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
    accept = settings.datasets[name].accept if name in settings.datasets else {}
    report = validate_dataset(ds.path, get_task(ds.meta.task),
                              settings.state_dir / "validation" / name / stamp, accept=accept)
    for line in report.accepted:
        log.warning("dataset %r: %s", name, line)
    if check and not report.success:
        raise CheckFailed(f"dataset {name!r} failed validation ({len(report.failures)} "
                          f"checks): {report.failures[0]}; report: {report.report_path}")
    return report


# ---------------------------------------------------------------- training
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


def _checkpoint_dir(settings: Settings, ds: OpenDataset, params_json: str) -> Path:
    key = hashlib.sha256(f"{ds.meta.task}|{ds.version.md5}|{params_json}".encode()).hexdigest()
    return settings.checkpoint_dir / f"{ds.meta.name}-{key[:16]}"


def train(settings: Settings, name: str, *, flow_run_id: str | None = None,
          validation_report: str | None = None, progress: bool = True,
          parent_run_id: str | None = None, run_name: str | None = None) -> Trained:
    """Train the task's model on dataset ``name`` in one MLflow run (nested under
    ``parent_run_id`` when given: a trial of ``medml tune``).

    Re-running the same command after a kill resumes the same run from the last
    epoch checkpoint (same data version and settings => same checkpoint folder)."""
    import mlflow

    from medml import tracking
    from medml.train import fit

    ds = open_dataset(settings, name)
    task = get_task(ds.meta.task)
    params = settings.task(task.name)
    manifest = ds.manifest()
    params_json = json.dumps({"train": params.train.model_dump(), "data": params.data},
                             sort_keys=True)
    # A trial's checkpoints are its own: the same settings in another trial of the search
    # (samplers repeat choices) or in a later search are a new run, not a resumption.
    ckpt = _checkpoint_dir(settings, ds, params_json + (f"|{parent_run_id}|{run_name}"
                                                        if parent_run_id else ""))
    ckpt.mkdir(parents=True, exist_ok=True)
    run_file = ckpt / "run.json"
    exp_id = tracking.configure(settings)
    prior = json.loads(run_file.read_text())["run_id"] if run_file.is_file() else None
    _, spec = task.build_model(params, ds.meta, manifest)
    with mlflow.start_run(run_id=prior, experiment_id=None if prior else exp_id,
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
                "medml.data_md5": ds.version.md5, "medml.git_commit": ds.version.git_commit or "",
                "medml.git_dirty": str(ds.version.git_dirty), "medml.version": __version__,
                "medml.flow_run_id": flow_run_id or "", "medml.attempts": "1",
            })
            mlflow.log_dict(ds.version.as_dict(), "data/version.json")
            mlflow.log_dict(asdict(ds.meta), "data/dataset.json")  # split, de-identification
            tracking.log_dataset_input(ds, manifest, name, "training", tags={
                "dvc_md5": ds.version.md5, "git_commit": ds.version.git_commit or ""})
            if validation_report:
                mlflow.log_artifacts(str(Path(validation_report).parent), "validation")
                accepted = json.loads(Path(validation_report).read_text()).get(
                    "medml", {}).get("accepted", [])
                mlflow.set_tag("medml.validation.accepted", str(len(accepted)))
        extra = {"run_id": run.info.run_id, "data_version": ds.version.as_dict()}
        try:
            if params.train.nproc > 1:  # DDP through torchrun; rank 0 logs into this run
                from medml.distributed import launch

                job = {"settings": settings.for_flow(),
                       "task": task.name, "dataset_dir": str(ds.path), "spec": spec,
                       "checkpoint_dir": str(ckpt), "run_id": run.info.run_id,
                       "extra": extra, "progress": progress, "threads": params.train.threads}
                outcome = launch(job, ckpt, params.train.nproc)
            else:
                outcome = fit(task, task.datasets(ds.path, ds.meta, manifest, params), spec,
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



# ---------------------------------------------------------------- evaluation
@dataclass
class Evaluated:
    run_id: str
    model_uri: str
    metrics: dict[str, float] = field(default_factory=dict)


def _score_test(settings: Settings, ds: OpenDataset, bundle_path: str):
    """Predict the test split with a saved bundle; the task's full evaluation."""
    import torch

    from medml.train import pick_device

    task = get_task(ds.meta.task)
    params = settings.task(task.name)
    manifest = ds.manifest()
    bundle = torch.load(bundle_path, map_location="cpu", weights_only=False)
    spec = bundle["spec"]
    if bundle.get("task") != task.name:
        raise BadInputError(f"model is a {bundle.get('task')} model; dataset {ds.meta.name!r} "
                            f"is {task.name}")
    device = pick_device(params.train.device)
    model = task.rebuild_model(spec)
    model.load_state_dict(bundle["state_dict"])
    model.to(device)
    params = task.params_for(params, spec)
    test = task.datasets(ds.path, ds.meta, manifest[manifest["split"] == "test"], params)["test"]
    result = task.evaluate(task.predict_split(model, test, spec, device), manifest, spec,
                           params)
    metrics = {f"test_{k}": float(v) for k, v in result.metrics.items()
               if v is not None and math.isfinite(v)}
    return task, spec, manifest, result, metrics


def _drop_figures(result) -> None:
    """Close the plots of an evaluation that is not logged (pyplot keeps them otherwise)."""
    import matplotlib.pyplot as plt

    for fig in result.figures.values():
        plt.close(fig)


def _log_evaluation(result, metrics: dict[str, float]) -> None:
    import matplotlib.pyplot as plt
    import mlflow

    mlflow.log_metrics(metrics)
    for fname, fig in result.figures.items():
        mlflow.log_figure(fig, f"plots/{fname}")
        plt.close(fig)
    for fname, table in result.tables.items():
        mlflow.log_table(table, f"eval/{fname}")
    if result.predictions is not None:
        mlflow.log_table(result.predictions, "eval/test_predictions.json")


def evaluate(settings: Settings, name: str, trained: Trained) -> Evaluated:
    """Test-split metrics, plots and subgroup tables into the run; log the pyfunc model."""
    import mlflow

    from medml import tracking

    ds = open_dataset(settings, name)
    tracking.configure(settings)
    task, spec, manifest, result, metrics = _score_test(settings, ds, trained.bundle_path)
    with mlflow.start_run(run_id=trained.run_id):
        _log_evaluation(result, metrics)
        signature, example = task.signature_and_example(spec, ds.path, manifest)
        with tracking.known_warnings_quiet():
            info = mlflow.pyfunc.log_model(
                name="model", python_model=task.pyfunc(),
                artifacts={"bundle": trained.bundle_path}, signature=signature,
                input_example=example, pip_requirements=_requirements(task))
    log.info("test metrics: %s", {k: round(v, 4) for k, v in metrics.items()})
    return Evaluated(trained.run_id, info.model_uri, metrics)


def _registered_bundle(settings: Settings, model: str, ref: str) -> Path:
    """Download a registered version (``ref``: "@alias" or "/version") and find its bundle."""
    import mlflow

    try:
        local = mlflow.artifacts.download_artifacts(f"models:/{model}{ref}")
    except mlflow.exceptions.MlflowException as exc:
        raise NotFoundError(f"model '{model}{ref}' not found in {settings.mlflow_uri}") from exc
    bundle = next(Path(local).rglob("bundle.pt"), None)
    if bundle is None:
        raise NotFoundError(f"model '{model}{ref}' carries no MedML bundle")
    return bundle


def evaluate_registered(settings: Settings, model_ref: str, name: str) -> Evaluated:
    """Evaluate a registered version (``MODEL@alias`` or ``MODEL/version``) on the test
    split of dataset ``name``, in a new MLflow run that names the version and the data."""
    import mlflow

    from medml import tracking

    ds = open_dataset(settings, name)
    tracking.configure(settings)
    model, version = _resolve(model_ref)
    bundle = _registered_bundle(settings, model, version)
    _, _, _, result, metrics = _score_test(settings, ds, str(bundle))
    with mlflow.start_run(run_name=f"evaluate-{model_ref}-on-{name}") as run:
        mlflow.set_tags({"medml.evaluation_of": model_ref, "medml.dataset": name,
                         "medml.data_md5": ds.version.md5})
        _log_evaluation(result, metrics)
    return Evaluated(run.info.run_id, f"models:/{model}{version}", metrics)


def _resolve(model_ref: str) -> tuple[str, str]:
    """``NAME@alias`` -> (NAME, "@alias"); ``NAME/3`` or ``NAME:3`` -> (NAME, "/3")."""
    if "@" in model_ref:
        name, alias = model_ref.split("@", 1)
        return name, f"@{alias}"
    for sep in ("/", ":"):
        if sep in model_ref:
            name, version = model_ref.rsplit(sep, 1)
            return name, f"/{version}"
    return model_ref, "@champion"


def _requirements(task) -> list[str]:
    """Pinned pip requirements of the logged model: the shared ones and the task's."""
    from importlib.metadata import version

    return [f"{p}=={version(p)}" for p in ("mlflow", "torch", "pandas", "numpy",
                                           *task.requirements)]


# ---------------------------------------------------------------- registry and gate
def register(settings: Settings, model_name: str, evaluated: Evaluated, trained: Trained,
             flow_run_id: str | None = None) -> str:
    """Register the logged model as a new version with lineage tags; drop the checkpoint."""
    import mlflow

    from medml import tracking

    tracking.configure(settings)
    client = mlflow.MlflowClient()
    run = client.get_run(evaluated.run_id)
    tags = {
        "git_commit": run.data.tags.get("medml.git_commit", ""),
        "dvc_data_hash": run.data.tags.get("medml.data_md5", ""),
        "dataset": run.data.tags.get("medml.dataset", ""),
        "task": run.data.tags.get("medml.task", ""),
        "flow_run_id": flow_run_id or run.data.tags.get("medml.flow_run_id", ""),
    }
    try:
        client.get_registered_model(model_name)
    except mlflow.exceptions.MlflowException:
        client.create_registered_model(model_name, tags={"task": tags["task"]})
    # a logged model (``models:/m-...``) is named by its id too: a tracking server needs it
    model_id = (evaluated.model_uri.removeprefix("models:/")
                if evaluated.model_uri.startswith("models:/m-") else None)
    mv = client.create_model_version(model_name, evaluated.model_uri, run_id=evaluated.run_id,
                                     tags=tags, model_id=model_id)
    from medml import lineage, modelcard, registry

    try:  # the evidence a version needs: artifact hashes, model card, challenger alias
        lineage.record_model_files(client, model_name, mv.version)
        modelcard.log(settings, model_name, mv.version)
        registry.set_alias(client, model_name, "challenger", str(mv.version), who="lifecycle",
                           why=f"registered from run {evaluated.run_id}"
                               + (f", flow run {flow_run_id}" if flow_run_id else ""))
    except BaseException:
        client.delete_model_version(model_name, str(mv.version))
        raise
    shutil.rmtree(trained.checkpoint_dir, ignore_errors=True)
    log.info("registered %s version %s", model_name, mv.version)
    return str(mv.version)


@dataclass
class GateDecision:
    model: str
    version: str
    passed: bool
    checks: list[dict]
    decided_at: str
    decision_id: str = ""
    champion_version: str | None = None  # the champion it was compared with, if any
    dataset: str = ""
    data_md5: str = ""
    notes: list[str] = field(default_factory=list)
    approval: dict | None = None

    def reasons(self) -> str:
        if not self.checks:
            return "no check configured"
        failed = [c for c in self.checks if not c["passed"]]
        return "; ".join(f"{c['check']}: {_num(c['value'])} {c['op']} {_num(c['bound'])}"
                         for c in (failed or self.checks))


def _num(v: float) -> str:
    return "nan" if v is None or v != v else f"{v:.4f}"


def _version(client, model_name: str, version: str | None):
    import mlflow

    try:
        versions = client.search_model_versions(f"name='{model_name}'")
    except mlflow.exceptions.MlflowException as exc:
        raise NotFoundError(f"model {model_name!r} not found") from exc
    if not versions:
        raise NotFoundError(f"model {model_name!r} has no registered version")
    mv = (max(versions, key=lambda v: int(v.version)) if version is None
          else next((v for v in versions if str(v.version) == str(version)), None))
    if mv is None:
        raise NotFoundError(f"model {model_name!r} has no version {version}")
    return mv


def _champion(client, model_name: str):
    import mlflow

    try:
        return client.get_model_version_by_alias(model_name, "champion")
    except mlflow.exceptions.MlflowException:
        return None


def judge(settings: Settings, model_name: str, version: str | None = None) -> GateDecision:
    """Run the gate's checks on a registered version, against the current champion scored on
    the same frozen test set (the candidate's dataset at its registered DVC version)."""
    import mlflow

    from medml import gate, tracking

    tracking.configure(settings)
    client = mlflow.MlflowClient()
    mv = _version(client, model_name, version)
    dataset = mv.tags.get("dataset", "")
    ds = open_dataset(settings, dataset)
    task = get_task(mv.tags.get("task", ds.meta.task))
    params = settings.task(task.name)
    checks: list[gate.Check] = []
    if ds.version.md5 != mv.tags.get("dvc_data_hash", ds.version.md5):
        checks.append(gate.Check("frozen_test_set", float("nan"), "==", float("nan"), False, {
            "registered": mv.tags.get("dvc_data_hash"), "now": ds.version.md5}))
    _, spec, manifest, cand, _ = _score_test(settings, ds, str(
        _registered_bundle(settings, model_name, f"/{mv.version}")))
    _drop_figures(cand)
    champion = _champion(client, model_name)
    if champion is not None and str(champion.version) == str(mv.version):
        champion = None  # re-judging the champion itself: floors only
    champ = None
    if champion is not None:
        _, _, _, champ, _ = _score_test(settings, ds, str(
            _registered_bundle(settings, model_name, f"/{champion.version}")))
        _drop_figures(champ)
    more, notes = gate.judge(
        params.gate, lambda p: task.score(p, spec), cand.predictions, manifest,
        group_column=task.group_column, subgroup_columns=task.subgroup_columns,
        champ=champ.predictions if champ is not None else None, seed=params.train.seed)
    checks += more
    return GateDecision(
        model_name, str(mv.version), bool(checks) and all(c.passed for c in checks),
        gate.checks_as_dicts(checks), datetime.now(UTC).isoformat(timespec="seconds"),
        decision_id=uuid.uuid4().hex[:12],
        champion_version=str(champion.version) if champion is not None else None,
        dataset=dataset, data_md5=ds.version.md5, notes=notes)


def record_decision(settings: Settings, decision: GateDecision) -> None:
    """Store a decision durably in the tracking store: a JSON artifact in the version's run
    (``gate/decision-<id>.json``) and tags on the version."""
    import mlflow

    from medml import tracking

    tracking.configure(settings)
    client = mlflow.MlflowClient()
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
             who: str = "gate") -> GateDecision:
    """Finish a decision: apply the human approval when the task's gate asks for one (no
    answer means not promoted), record it durably, and on pass move alias ``champion`` to
    the version with an entry in the alias history."""
    from medml import registry

    gate_params = settings.task(_task_of(settings, decision.model, decision.version)).gate
    if decision.passed and gate_params.approval:
        decision.approval = approval or {"approved": False, "by": None,
                                         "reason": "no approval before the timeout"}
        decision.passed = bool(decision.approval.get("approved"))
    record_decision(settings, decision)
    if decision.passed:
        by = (decision.approval or {}).get("by") or who
        registry.set_alias(settings, decision.model, "champion", decision.version, who=by,
                           why=f"gate passed: {decision.reasons()}",
                           decision_id=decision.decision_id)
    from medml import modelcard

    modelcard.log(settings, decision.model, decision.version)  # now with its gate decision
    return decision


def promote(settings: Settings, model_name: str, version: str | None = None, *,
            who: str = "gate", approval: dict | None = None) -> GateDecision:
    """``judge`` then ``conclude``: the gate in one call (CLI ``medml promote``)."""
    return conclude(settings, judge(settings, model_name, version), approval, who=who)


def _task_of(settings: Settings, model_name: str, version: str) -> str:
    import mlflow

    from medml import tracking

    tracking.configure(settings)
    return mlflow.MlflowClient().get_model_version(model_name, version).tags.get("task", "")
