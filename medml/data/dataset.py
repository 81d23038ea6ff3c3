"""The on-disk dataset: a directory with ``manifest.csv`` (one row per example),
``dataset.json`` (task, classes, provenance) and the example files it points to.

Every task shares this layout, so that DVC versioning, validation and lineage never
need to know which task a dataset belongs to.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import pandas as pd

from medml.errors import BadInputError, NotFoundError

MANIFEST = "manifest.csv"
META = "dataset.json"
SPLITS = ("train", "val", "test")
# Columns every manifest has (SPEC "DVC owns data"); tasks add measured properties.
BASE_COLUMNS = [
    "id", "path", "label", "split", "patient_id", "site", "sex", "age_band", "content_hash",
]


@dataclass
class DatasetMeta:
    """What a dataset says about itself."""

    name: str
    task: str
    classes: list[str]
    source: str
    format: str
    patient_level_split: bool = True  # False: split per example (no patient ids)
    extra: dict[str, Any] = field(default_factory=dict)


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_dataset(out_dir: Path, manifest: pd.DataFrame, meta: DatasetMeta) -> None:
    """Write manifest and metadata (the example files are already in ``out_dir``)."""
    missing = [c for c in BASE_COLUMNS if c not in manifest.columns]
    if missing:
        raise ValueError(f"manifest lacks columns {missing}")
    cols = BASE_COLUMNS + [c for c in manifest.columns if c not in BASE_COLUMNS]
    manifest[cols].to_csv(out_dir / MANIFEST, index=False)
    (out_dir / META).write_text(json.dumps(asdict(meta), indent=2) + "\n")


def load_meta(dataset_dir: Path) -> DatasetMeta:
    """Read ``dataset.json``; a clear error when the directory is no dataset."""
    path = Path(dataset_dir) / META
    if not path.is_file():
        raise NotFoundError(
            f"{dataset_dir}: no dataset here ({META} missing); "
            "create it with `medml data import` or `medml data generate`"
        )
    try:
        raw = json.loads(path.read_text())
        known = {f.name for f in fields(DatasetMeta)}  # older/newer keys are ignored
        return DatasetMeta(**{k: v for k, v in raw.items() if k in known})
    except (json.JSONDecodeError, TypeError) as exc:
        raise BadInputError(f"{path}: unreadable dataset metadata ({exc}); re-import the "
                            "dataset") from exc


def load_manifest(dataset_dir: Path) -> pd.DataFrame:
    """Read ``manifest.csv`` with string ids and labels."""
    path = Path(dataset_dir) / MANIFEST
    if not path.is_file():
        raise NotFoundError(f"{path}: manifest missing; re-import the dataset")
    return pd.read_csv(
        path, dtype={"id": str, "label": str, "patient_id": str, "site": str, "sex": str,
                     "age_band": str, "split": str}, keep_default_na=False, na_values=[""],
    )


def dataset_dir(data_root: Path, name: str) -> Path:
    """Where dataset ``name`` lives; checks the name is a plain directory name."""
    if not name or "/" in name or name.startswith(".") or name != name.strip():
        raise BadInputError(f"dataset name {name!r}: use letters, digits, '-' and '_' only")
    return Path(data_root) / name


@contextmanager
def staged_dir(final_dir: Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a fresh temporary directory beside ``final_dir``; on success it replaces
    ``final_dir`` in one rename, on any error it is removed and nothing else changed."""
    final_dir = Path(final_dir)
    if final_dir.exists() and not overwrite:
        raise BadInputError(
            f"{final_dir}: dataset already exists; choose another --name or pass --overwrite"
        )
    final_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = final_dir.parent / f".{final_dir.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if final_dir.exists():
        shutil.rmtree(final_dir)
    tmp.rename(final_dir)
