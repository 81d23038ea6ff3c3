"""Validate a dataset's manifest with Great Expectations before anything trains on it.

One suite per dataset, ``<task>-<name>``: the shared expectations (schema, ids, label set,
splits, duplicates by content hash, no patient in two splits, class balance, files present)
plus the task's own (``Task.expectations``). Checks that need more than one row (a patient
across splits, a file on disk) are computed into derived columns of the manifest first,
so that the whole suite runs on one table and one Data Docs page shows it.

A failed expectation is a result, not an error: ``validate_dataset`` returns
``success=False`` with one plain-English line per failure; the caller decides the exit code.
Great Expectations is imported inside the functions (it takes seconds to import).
"""

from __future__ import annotations

import json
import logging
import os
import posixpath
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from medml.data.dataset import BASE_COLUMNS, META, SPLITS, DatasetMeta, load_manifest, load_meta
from medml.errors import BadInputError, NotFoundError

if TYPE_CHECKING:
    from medml.tasks.base import Task

log = logging.getLogger(__name__)

REPORT_FILE = "validation.json"
DOCS_DIR = "data_docs"
DOCS_SITE = "medml_site"
# Derived columns added to the manifest before validation (see ``derive_columns``).
FILE_EXISTS = "_file_exists"  # True when the row's path is a file inside the dataset directory
PATIENT_SPLITS = "_patient_n_splits"  # number of distinct splits the row's patient is in
LABEL_SHARE = "_label_share"  # share of the row's label among the rows of its split
MIN_CLASS_SHARE = 0.02  # a class under 2 % of the train split is too rare to learn or judge
PHI_FOUND = "_phi_found"  # identifiers medml.deid.text still finds in the row's text columns
N_EXAMPLES = 5  # examples named per failure line


@dataclass
class ValidationReport:
    """Outcome of one validation run."""

    success: bool
    dataset: str
    failures: list[str]  # one plain-English line per failed expectation, with examples
    statistics: dict  # evaluated / successful / unsuccessful expectation counts
    report_path: Path  # JSON of the GX validation results
    docs_path: Path | None  # Data Docs HTML index, None when it could not be built
    accepted: list[str] = field(default_factory=list)  # failed but accepted (with reason)


def check_name(cfg: Any) -> str:
    """The name a failed expectation is accepted by: its ``meta.check`` or ``type:column``."""
    meta = cfg.meta or {}
    return meta.get("check") or f"{cfg.type}:{cfg.kwargs.get('column')}"


def shared_expectations(meta: DatasetMeta, text_columns: tuple[str, ...] = ()) -> list:
    """GX expectations every task's manifest must meet (on the columns of ``derive_columns``)."""
    import great_expectations.expectations as gxe
    from great_expectations.expectations.row_conditions import Column

    classes = ", ".join(meta.classes)
    exps: list = [
        gxe.ExpectColumnToExist(column=c, description=f"the manifest has a column '{c}'")
        for c in BASE_COLUMNS
    ]
    exps += [
        gxe.ExpectColumnValuesToNotBeNull(column="id", description="every row has an id"),
        gxe.ExpectColumnValuesToBeUnique(column="id", description="ids are unique"),
        gxe.ExpectColumnValuesToNotBeNull(column="path", description="every row has a path"),
        gxe.ExpectColumnValuesToNotBeNull(column="split", description="every row has a split"),
        gxe.ExpectColumnValuesToBeInSet(
            column="split", value_set=list(SPLITS),
            description=f"splits are among {', '.join(SPLITS)}"),
        gxe.ExpectColumnDistinctValuesToContainSet(
            column="split", value_set=list(SPLITS),
            description=f"each split ({', '.join(SPLITS)}) has at least one example"),
        gxe.ExpectColumnValuesToBeUnique(
            column="content_hash", meta={"check": "duplicate_examples"},
            description="no example appears twice (same content_hash, within or across splits)"),
        gxe.ExpectColumnValuesToBeInSet(
            column=FILE_EXISTS, value_set=[True],
            description="every path is a relative path to a file inside the dataset directory"),
    ]
    if meta.classes:  # classification; sequence tasks (tags, transcripts) check their own
        exps += [
            gxe.ExpectColumnValuesToNotBeNull(column="label",
                                              description="every row has a label"),
            gxe.ExpectColumnValuesToBeInSet(
                column="label", value_set=list(meta.classes),
                description=f"labels are among the dataset's classes ({classes})"),
            gxe.ExpectColumnDistinctValuesToContainSet(
                column="label", value_set=list(meta.classes),
                row_condition=Column("split") == "train",
                description=f"every class ({classes}) is present in the train split"),
            gxe.ExpectColumnValuesToBeBetween(
                column=LABEL_SHARE, min_value=MIN_CLASS_SHARE,
                row_condition=Column("split") == "train", meta={"check": "class_balance"},
                description=f"every class is at least {MIN_CLASS_SHARE:.0%} of the train split"),
        ]
    if text_columns:
        cols = ", ".join(text_columns)
        exps.append(gxe.ExpectColumnValuesToBeInSet(
            column=PHI_FOUND, value_set=[""], meta={"check": "phi_in_text"},
            description=f"no identifier (PHI) is left in the text ({cols})"))
    if meta.patient_level_split:
        exps.append(gxe.ExpectColumnValuesToBeBetween(
            column=PATIENT_SPLITS, min_value=1, max_value=1, meta={"check": "patient_leak"},
            description="no patient is in more than one split"))
    return exps


def derive_columns(manifest: pd.DataFrame, dataset_dir: Path,
                   text_columns: tuple[str, ...] = (),
                   classes: list[str] | None = None) -> pd.DataFrame:
    """The manifest with the derived columns the shared expectations check.

    ``_file_exists``: the path names a file inside ``dataset_dir`` (null when there is no
    path). ``_patient_n_splits``: how many distinct splits the row's patient appears in
    (null without a patient id), so that a group-by check becomes a per-row one.
    ``_label_share``: the share of the row's label among the rows of its split (null for a
    null label or one outside ``classes``: other rules report those).
    ``_phi_found``: for tasks with free text, the types of identifiers the de-identifier
    still finds in the row's ``text_columns`` ("" when none).
    """
    df = manifest.reset_index(drop=True)  # pandas copy-on-write: columns added to this frame
    files = _files_inside(Path(dataset_dir).resolve())

    def exists(p: Any) -> bool | None:
        if not isinstance(p, str) or not p:
            return None
        if p.startswith(("/", "\\")) or ":" in p[:3]:
            return False  # absolute: not inside the dataset
        return posixpath.normpath(p.replace("\\", "/")) in files

    df[FILE_EXISTS] = (df["path"].map(exists).astype("object") if "path" in df.columns
                       else pd.Series([None] * len(df), dtype="object"))
    if {"patient_id", "split"} <= set(df.columns):
        df[PATIENT_SPLITS] = df.groupby("patient_id", dropna=True)["split"].transform("nunique")
    else:
        df[PATIENT_SPLITS] = pd.Series([float("nan")] * len(df), dtype="float64")
    if {"label", "split"} <= set(df.columns):
        known = df["label"].isin(classes) if classes else df["label"].notna()
        per_split = df.groupby("split", dropna=False)["label"].transform("size")
        per_label = df.groupby(["split", "label"], dropna=False)["label"].transform("size")
        df[LABEL_SHARE] = (per_label / per_split).where(known).astype("float64")
    else:
        df[LABEL_SHARE] = pd.Series([float("nan")] * len(df), dtype="float64")
    if text_columns:
        from medml.deid.text import find_phi

        def phi(row: pd.Series) -> str:
            found = {s.type for c in text_columns if isinstance(row.get(c), str)
                     for s in find_phi(row[c])}
            return ", ".join(sorted(found))

        df[PHI_FOUND] = df.apply(phi, axis=1) if len(df) else ""
    return df


def _files_inside(root: Path) -> set[str]:
    """Relative POSIX paths of the regular files under ``root``, listed once (a per-row
    ``resolve``/``is_file`` took 30 us a row: most of the time of a 1M-row validation). A
    symbolic link counts only when it resolves to a file inside ``root``; directory links
    are not followed."""
    out: set[str] = set()
    prefix = str(root) + os.sep
    for dirpath, _dirs, names in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        for name in names:
            full = os.path.join(dirpath, name)
            if os.path.islink(full):
                real = os.path.realpath(full)
                if not (real.startswith(prefix) and os.path.isfile(real)):
                    continue
            elif not os.path.isfile(full):
                continue
            out.add(posixpath.normpath(os.path.join(rel, name).replace(os.sep, "/")))
    return out


def validate_dataset(dataset_dir: Path, task: Task, report_dir: Path,
                     accept: dict[str, str] | None = None, *, meta: DatasetMeta | None = None,
                     manifest: pd.DataFrame | None = None) -> ValidationReport:
    """Run the dataset's suite (shared + ``task.expectations``); write the JSON results and
    Data Docs into ``report_dir``. Failed expectations give ``success=False``, not an error;
    an unreadable dataset raises NotFoundError or BadInputError naming the file.

    ``accept`` maps check names (``check_name``) to the reason they are accepted for this
    dataset: such failures are listed in ``accepted`` and do not make the validation fail.
    ``meta`` and ``manifest``: the dataset as the caller already read it (a run context);
    read from ``dataset_dir`` when not given.
    """
    accept = accept or {}
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    dataset_dir = Path(dataset_dir)
    report_dir = Path(report_dir)
    if meta is None or manifest is None:
        meta, manifest = _read_dataset(dataset_dir)
    text_columns = tuple(getattr(task, "text_columns", ()))
    df = derive_columns(manifest, dataset_dir, text_columns, list(meta.classes))

    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    suite_name = f"{meta.task}-{meta.name}"
    suite = context.suites.add(gx.ExpectationSuite(name=suite_name))
    for exp in [*shared_expectations(meta, text_columns), *task.expectations(meta, manifest)]:
        suite.add_expectation(exp)
    batch = (context.data_sources.add_pandas("medml")
             .add_dataframe_asset("manifest")
             .add_batch_definition_whole_dataframe("whole manifest"))
    vdef = context.validation_definitions.add(
        gx.ValidationDefinition(name=suite_name, data=batch, suite=suite))
    checkpoint = context.checkpoints.add(gx.Checkpoint(
        name=suite_name, validation_definitions=[vdef], actions=[],
        result_format={"result_format": "SUMMARY"}))
    checkpoint_result = checkpoint.run(batch_parameters={"dataframe": df})
    result = next(iter(checkpoint_result.run_results.values()))

    order = {e.id: i for i, e in enumerate(suite.expectations)}
    failed = sorted((r for r in result.results if not r.success),
                    key=lambda r: order.get(r.expectation_config.id, len(order)))
    waived = [r for r in failed if check_name(r.expectation_config) in accept]
    failed = [r for r in failed if r not in waived]
    failures = _failure_lines(failed, df)
    accepted = [f"{line} [accepted as '{check_name(r.expectation_config)}': "
                f"{accept[check_name(r.expectation_config)]}]"
                for r in waived for line in _failure_lines([r], df)]
    statistics = {**dict(result.statistics), "rows": len(df), "accepted": len(waived)}

    report_dir.mkdir(parents=True, exist_ok=True)
    report_path = report_dir / REPORT_FILE
    payload = result.to_json_dict()
    payload["medml"] = {"dataset": meta.name, "task": meta.task, "dataset_dir": str(dataset_dir),
                        "failures": failures, "accepted": accepted, "success": not failed}
    report_path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    docs_path = _build_docs(context, checkpoint_result, report_dir / DOCS_DIR)
    return ValidationReport(not failed, meta.name, failures, statistics,
                            report_path, docs_path, accepted)


# ------------------------------------------------------------------ helpers
def _read_dataset(dataset_dir: Path) -> tuple[DatasetMeta, pd.DataFrame]:
    """Metadata and manifest, or one clear error naming the file."""
    if not dataset_dir.is_dir():
        raise NotFoundError(f"{dataset_dir}: dataset directory not found; "
                            "create it with `medml data import` or `medml data generate`")
    try:
        meta = load_meta(dataset_dir)
    except (ValueError, TypeError) as e:  # JSONDecodeError is a ValueError
        raise BadInputError(f"{dataset_dir / META}: unreadable dataset metadata ({e}); "
                            "re-import the dataset") from None
    try:
        manifest = load_manifest(dataset_dir)
    except (ValueError, OSError) as e:  # ParserError, EmptyDataError, UnicodeDecodeError
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise BadInputError(f"{dataset_dir / 'manifest.csv'}: unreadable manifest ({msg}); "
                            "re-import the dataset") from None
    return meta, manifest


def _build_docs(context: Any, checkpoint_result: Any, site_dir: Path) -> Path | None:
    """Render Data Docs for this run into ``site_dir``; None (and a warning) on failure."""
    from great_expectations.checkpoint import UpdateDataDocsAction

    try:
        context.add_data_docs_site(DOCS_SITE, {
            "class_name": "SiteBuilder",
            "show_how_to_buttons": False,
            "store_backend": {"class_name": "TupleFilesystemStoreBackend",
                              "base_directory": str(site_dir)},
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
        })
        UpdateDataDocsAction(name="data_docs", site_names=[DOCS_SITE]).run(checkpoint_result)
    except Exception as e:  # docs are a convenience; the JSON results are the record
        log.warning("could not build Data Docs in %s: %s", site_dir, e)
        return None
    index = site_dir / "index.html"
    return index if index.is_file() else None


def _failure_lines(failed: list, df: pd.DataFrame) -> list[str]:
    """One plain-English line per failed expectation, naming example rows or values."""
    lines = []
    missing_columns = {r.expectation_config.kwargs.get("column") for r in failed
                       if r.expectation_config.type == "expect_column_to_exist"}
    for r in failed:
        cfg = r.expectation_config
        column = cfg.kwargs.get("column")
        error = _exception_message(r.exception_info)
        if error and column in missing_columns:
            continue  # already reported as a missing column
        rule = cfg.description or f"{cfg.type} on {column}"
        lines.append(f"{rule}: {error and f'could not be checked ({error})' or _details(r, df)}")
    return lines


def _exception_message(info: dict | None) -> str | None:
    """The first exception message of a result's ``exception_info``, if one was raised."""
    if not info:
        return None
    entries = [info] if "raised_exception" in info else list(info.values())
    for entry in entries:
        if isinstance(entry, dict) and entry.get("raised_exception"):
            return str(entry.get("exception_message") or "error").splitlines()[0]
    return None


def _details(r: Any, df: pd.DataFrame) -> str:
    """What failed, with up to ``N_EXAMPLES`` ids, values or rows."""
    cfg, res = r.expectation_config, r.result or {}
    column = cfg.kwargs.get("column")
    if cfg.type == "expect_column_to_exist":
        return f"column '{column}' is missing"
    if cfg.type == "expect_column_distinct_values_to_contain_set":
        missing = res.get("partial_missing_list")
        if missing is None:
            missing = set(cfg.kwargs["value_set"]) - set(res.get("observed_value") or [])
        ordered = [v for v in cfg.kwargs["value_set"] if v in set(missing)]
        return "missing: " + ", ".join(map(str, ordered[:N_EXAMPLES]))
    index = res.get("partial_unexpected_index_list")
    if index is None:
        return f"observed {res.get('observed_value')!r}" if res else "failed"
    rows = df.loc[[i for i in index if i in df.index]]
    count = f"{res.get('unexpected_count', len(rows))} of {res.get('element_count', len(df))} rows"
    if column == PATIENT_SPLITS:
        return _patients_in_several_splits(rows, df)
    if column == LABEL_SHARE:
        shares = rows.groupby("label")[LABEL_SHARE].first().sort_values()
        return "; ".join(f"class {label!r} is {share:.1%} ({(rows['label'] == label).sum()} "
                         f"rows, e.g. id {_id(rows, rows.index[rows['label'] == label][0])})"
                         for label, share in shares.head(N_EXAMPLES).items())
    if column == FILE_EXISTS:
        return f"{count}: missing " + ", ".join(
            f"{p} (id {_id(rows, i)})" for i, p in rows["path"].head(N_EXAMPLES).items())
    if cfg.type == "expect_column_values_to_be_unique":
        groups = rows.groupby(column, sort=False)
        return f"{count} share a value, e.g. " + "; ".join(
            f"{column} {_short(v)} in ids {', '.join(_id(g, i) for i in g.index)}"
            + (f" ({', '.join(sorted(set(g['split'].dropna())))})" if "split" in g else "")
            for (v, g) in list(groups)[:N_EXAMPLES])
    examples = rows[column].head(N_EXAMPLES).items()
    return f"{count}, e.g. " + ", ".join(f"id {_id(rows, i)} ({column}={_short(v)})"
                                         for i, v in examples)


def _patients_in_several_splits(rows: pd.DataFrame, df: pd.DataFrame) -> str:
    """``P0001 in train, test; ...`` for the patients among ``rows``."""
    patients = list(dict.fromkeys(rows["patient_id"].dropna()))
    total = df.loc[df[PATIENT_SPLITS] > 1, "patient_id"].nunique()
    parts = []
    for p in patients[:N_EXAMPLES]:
        splits = set(df.loc[df["patient_id"] == p, "split"].dropna())
        ordered = [s for s in SPLITS if s in splits] + sorted(splits - set(SPLITS))
        parts.append(f"patient {p} in {', '.join(ordered)}")
    return f"{total} patient(s) in several splits: " + "; ".join(parts)


def _id(rows: pd.DataFrame, i: Any) -> str:
    """The row's id, or its position when it has none."""
    v = rows.at[i, "id"] if "id" in rows.columns else None
    return str(v) if isinstance(v, str) and v else f"row {i}"


def _short(v: Any) -> str:
    """A value for a message: long strings (hashes, paths) shortened."""
    if isinstance(v, str):
        return repr(v if len(v) <= 32 else v[:12] + "...")
    return repr(v.item() if hasattr(v, "item") else v)
