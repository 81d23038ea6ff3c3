"""The de-identification stage of a dataset's manifest: identifying columns replaced by keyed
pseudonyms (the same value always gives the same pseudonym under one key, so patients
still group and studies still hold together), removed, or cleaned, per the task's rules
(``Task.deid_rules``). A report of what changed stays with the dataset
(``deid_report.json``); it names columns, actions and counts, never an original value.

The key is secret: ``MEDML_DEID_KEY`` (or ``deid_key`` in the settings), else a random
key created once in ``MEDML_HOME/deid.key``. Whoever holds it can recompute a pseudonym
from a known identifier (to link new data of the same patient), nobody else can.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pandas as pd

from medml.data.dataset import DatasetMeta

REPORT = "deid_report.json"
KEY_FILE = "deid.key"
# action -> what it does to a non-null value
ACTIONS = ("pseudonym", "uid", "remove", "text")


def load_key(explicit: str | None, state_dir: Path) -> bytes:
    """The pseudonymisation key: the explicit one, else ``state_dir/deid.key`` (created
    with a random key, readable by its owner only, on first use)."""
    if explicit:
        return explicit.encode()
    path = Path(state_dir) / KEY_FILE
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
    return path.read_text().strip().encode()


def _digest(key: bytes, kind: str, value: str) -> bytes:
    return hmac.new(key, f"{kind}\x00{value}".encode(), hashlib.sha256).digest()


def pseudonym(key: bytes, kind: str, value: str, length: int = 12) -> str:
    """``<kind>-<hex>``: the same value gives the same pseudonym under one key."""
    return f"{kind}-{_digest(key, kind, value).hex()[:length]}"


def remap_uid(key: bytes, uid: str) -> str:
    """A DICOM UID replaced by a valid one (``2.25.<integer>``, PS3.5 B.2), the same for
    the same UID under one key: series and instances keep their study, and the manifest
    agrees with DICOM files de-identified with the same key (``medml.deid.dicom``)."""
    from medml.deid.dicom import UidMap

    return UidMap(key)(uid)


def deidentify_manifest(manifest: pd.DataFrame, meta: DatasetMeta, key: bytes,
                        rules: dict[str, str], text_cleaner: Callable[[str], tuple[str, list]]
                        | None = None) -> tuple[pd.DataFrame, DatasetMeta, dict[str, Any]]:
    """Apply ``rules`` (column -> action, see ``ACTIONS``) to the manifest. Returns the
    new manifest and metadata and the report. ``text`` columns go through
    ``text_cleaner`` (default: ``medml.deid.text.deidentify_text`` with the key)."""
    if text_cleaner is None:
        from medml.deid.text import deidentify_text

        def text_cleaner(text: str) -> tuple[str, list]:
            return deidentify_text(text, salt=key)

    df = manifest.copy()
    report: dict[str, Any] = {"rows": len(df), "key_id": hashlib.sha256(key).hexdigest()[:12],
                              "columns": {}}
    for column, action in rules.items():
        if column not in df.columns:
            continue
        if action not in ACTIONS:
            raise ValueError(f"unknown de-identification action {action!r} for {column!r}")
        present = df[column].notna() & (df[column].astype(str).str.strip() != "")
        entry: dict[str, Any] = {"action": action, "values": int(present.sum())}
        if action == "remove":
            df = df.drop(columns=[column])
        elif action == "pseudonym":
            kind = {"patient_id": "pt", "site": "site"}.get(column, column.replace("_", "-"))
            df.loc[present, column] = [pseudonym(key, kind, str(v))
                                       for v in df.loc[present, column]]
        elif action == "uid":
            df.loc[present, column] = [remap_uid(key, str(v)) for v in df.loc[present, column]]
        elif action == "text":
            found: dict[str, int] = {}
            cleaned = []
            for v in df.loc[present, column]:
                text, changes = text_cleaner(str(v))
                cleaned.append(text)
                for c in changes:  # medml.deid.text.PhiSpan: type and offsets only
                    kind = getattr(c, "type", "PHI")
                    found[kind] = found.get(kind, 0) + 1
            df.loc[present, column] = cleaned
            entry["replaced"] = dict(sorted(found.items()))
        report["columns"][column] = entry
    extra = {**meta.extra, "deidentified": True, "deid_key_id": report["key_id"]}
    return df, replace(meta, extra=extra), report


def write_report(out_dir: Path, report: dict[str, Any]) -> None:
    (Path(out_dir) / REPORT).write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
