"""The data steps: a dataset is built in three stages, each a function here and a
``medml data`` command (so dvc.yaml can run them as stages): raw (generate or import) ->
deid -> split; then ``create_dataset`` versions it with DVC, and ``validate`` runs its
Great Expectations suite at the start of every lifecycle run."""

from __future__ import annotations

import logging
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from medml.data.dataset import (
    DatasetMeta,
    dataset_dir,
    load_manifest,
    load_meta,
    staged_dir,
    write_dataset,
)
from medml.data.versioning import DataVersion, track
from medml.errors import BadInputError, CheckFailed
from medml.lifecycle.context import RunContext
from medml.settings import Settings
from medml.tasks import get_task

log = logging.getLogger("medml.lifecycle")

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



def validate(ctx: RunContext, check: bool = False):
    """Run the task's Great Expectations suite on the run's dataset. With ``check``, a
    failed validation raises CheckFailed (the lifecycle stops before training)."""
    from medml.validation import validate_dataset

    s, name = ctx.settings, ctx.dataset
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
    accept = s.datasets[name].accept if name in s.datasets else {}
    report = validate_dataset(ctx.path, ctx.task, s.state_dir / "validation" / name / stamp,
                              accept=accept, meta=ctx.meta, manifest=ctx.manifest())
    for line in report.accepted:
        log.warning("dataset %r: %s", name, line)
    if check and not report.success:
        raise CheckFailed(f"dataset {name!r} failed validation ({len(report.failures)} "
                          f"checks): {report.failures[0]}; report: {report.report_path}")
    return report
