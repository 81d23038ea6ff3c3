"""Dataset validation: the shared and imaging Great Expectations suites on tiny datasets."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medml.data.dataset import (
    BASE_COLUMNS,
    DatasetMeta,
    load_manifest,
    load_meta,
    sha256_file,
    write_dataset,
)
from medml.errors import BadInputError, NotFoundError
from medml.tasks.imaging.checks import imaging_expectations
from medml.validation import (
    FILE_EXISTS,
    LABEL_SHARE,
    PATIENT_SPLITS,
    derive_columns,
    validate_dataset,
)

CLASSES = ["benign", "malignant"]
# patient -> (split, label); two images each; both classes in every split
PATIENTS = {"P0": ("train", "benign"), "P1": ("train", "malignant"),
            "P2": ("val", "benign"), "P3": ("val", "malignant"),
            "P4": ("test", "benign"), "P5": ("test", "malignant")}


class StandInImagingTask:
    """The part of the imaging Task that validation uses."""

    name = "imaging"

    def expectations(self, meta: DatasetMeta, manifest: pd.DataFrame) -> list:
        return imaging_expectations(meta, manifest)


def make_dataset(root: Path, name: str = "tiny") -> Path:
    """A valid 12-image imaging dataset (1x8x8 float32 in [0, 1]) under ``root/name``."""
    out = root / name
    (out / "images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows = []
    for patient, (split, label) in PATIENTS.items():
        for k in range(2):
            img = rng.uniform(0.1, 0.9, (1, 8, 8)).astype(np.float32)
            rel = f"images/{patient}-{k}.npy"
            np.save(out / rel, img)
            rows.append({"id": f"{patient}-{k}", "path": rel, "label": label, "split": split,
                         "patient_id": patient, "site": "site-a", "sex": "F",
                         "age_band": "40-59", "content_hash": sha256_file(out / rel),
                         "height": 8, "width": 8, "channels": 1,
                         "intensity_min": float(img.min()), "intensity_max": float(img.max())})
    meta = DatasetMeta(name=name, task="imaging", classes=CLASSES, source="test", format="npy")
    write_dataset(out, pd.DataFrame(rows), meta)
    return out


def rewrite_manifest(ds: Path, manifest: pd.DataFrame) -> None:
    manifest.to_csv(ds / "manifest.csv", index=False)


@pytest.fixture(scope="module")
def valid(tmp_path_factory):
    ds = make_dataset(tmp_path_factory.mktemp("valid"))
    return validate_dataset(ds, StandInImagingTask(), ds.parent / "report")


@pytest.fixture(scope="module")
def broken(tmp_path_factory):
    """One dataset with five independent faults."""
    ds = make_dataset(tmp_path_factory.mktemp("broken"))
    m = load_manifest(ds)
    m.loc[m["id"] == "P4-0", "split"] = "train"  # patient P4 now in train and test
    m.loc[m["id"] == "P2-1", "label"] = "cat"  # outside the classes
    m.loc[m["id"] == "P3-1", "content_hash"] = m.loc[m["id"] == "P0-0", "content_hash"].item()
    m.loc[m["id"] == "P5-1", "intensity_max"] = 1.5
    rewrite_manifest(ds, m)
    (ds / "images" / "P1-1.npy").unlink()
    return validate_dataset(ds, StandInImagingTask(), ds.parent / "report")


@pytest.fixture(scope="module")
def incomplete(tmp_path_factory):
    """No test split, a NaN intensity and no ``site`` column."""
    ds = make_dataset(tmp_path_factory.mktemp("incomplete"))
    m = load_manifest(ds)
    m.loc[m["split"] == "test", "split"] = "val"
    m.loc[m["id"] == "P0-1", "intensity_min"] = float("nan")
    rewrite_manifest(ds, m.drop(columns=["site"]))
    return validate_dataset(ds, StandInImagingTask(), ds.parent / "report")


def failure(report, words: str) -> str:
    """The one failure line that contains ``words``."""
    lines = [line for line in report.failures if words in line]
    assert len(lines) == 1, f"{words!r} in {report.failures}"
    return lines[0]


def test_valid_dataset_passes(valid):
    assert valid.success, valid.failures
    assert valid.failures == []
    assert valid.dataset == "tiny"
    stats = valid.statistics
    assert stats["unsuccessful_expectations"] == 0
    assert stats["evaluated_expectations"] == stats["successful_expectations"] > 20


def test_report_json_written(valid, broken):
    assert valid.report_path.name == "validation.json"
    data = json.loads(valid.report_path.read_text())
    assert data["success"] is True
    assert data["suite_name"] == "imaging-tiny"
    bad = json.loads(broken.report_path.read_text())
    assert bad["success"] is False
    assert bad["medml"]["failures"] == broken.failures


def test_data_docs_built(valid):
    assert valid.docs_path is not None, "Data Docs were not built (see the warning logged)"
    assert valid.docs_path == valid.report_path.parent / "data_docs" / "index.html"
    assert "imaging-tiny" in valid.docs_path.read_text()


def test_broken_dataset_fails_once_per_fault(broken):
    assert not broken.success
    assert len(broken.failures) == 5, broken.failures
    assert broken.statistics["unsuccessful_expectations"] == 5


def test_patient_in_two_splits_named(broken):
    line = failure(broken, "no patient is in more than one split")
    assert "patient P4 in train, test" in line
    assert "1 patient(s)" in line


def test_label_outside_classes_named(broken):
    line = failure(broken, "labels are among")
    assert "'cat'" in line and "P2-1" in line


def test_duplicate_content_hash_names_ids(broken):
    line = failure(broken, "no example appears twice")
    assert "P0-0" in line and "P3-1" in line
    assert "train, val" in line


def test_missing_file_named(broken):
    line = failure(broken, "every path is a relative path to a file")
    assert "images/P1-1.npy" in line


def test_intensity_above_one_fails(broken):
    line = failure(broken, "intensities are at most 1")
    assert "P5-1" in line and "1.5" in line


def test_empty_split_fails(incomplete):
    assert not incomplete.success
    line = failure(incomplete, "each split")
    assert line.endswith("missing: test")


def test_nan_intensity_and_missing_column_reported(incomplete):
    assert "P0-1" in failure(incomplete, "intensity_min is measured")
    assert "column 'site' is missing" in failure(incomplete, "site")
    assert len(incomplete.failures) == 3, incomplete.failures


def test_derived_columns(tmp_path):
    (tmp_path / "a.npy").write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.npy").write_bytes(b"x")
    (tmp_path.parent / "outside.npy").write_bytes(b"x")
    (tmp_path / "link-out.npy").symlink_to(tmp_path.parent / "outside.npy")
    (tmp_path / "link-in.npy").symlink_to(tmp_path / "a.npy")
    paths = ["a.npy", "b.npy", "../outside.npy", None, "sub/../a.npy", "sub/c.npy", "sub",
             str(tmp_path / "a.npy"), "link-out.npy", "link-in.npy"]
    m = pd.DataFrame({"path": paths, "patient_id": ["P1", "P1", "P2"] + [None] * 7,
                      "split": ["train", "test", "val"] + ["val"] * 7})
    d = derive_columns(m, tmp_path)
    assert d[FILE_EXISTS].tolist() == [True, False, False, None, True, True, False, False,
                                       False, True]
    assert d[PATIENT_SPLITS].tolist()[:3] == [2, 2, 1]
    assert pd.isna(d[PATIENT_SPLITS].iloc[3])
    assert "_file_exists" not in m.columns  # the caller's manifest is left alone


def test_imaging_expectations_cover_measured_columns():
    meta = DatasetMeta(name="x", task="imaging", classes=CLASSES, source="t", format="npy")
    columns = {e.column for e in imaging_expectations(meta, pd.DataFrame())}
    assert {"height", "width", "channels", "intensity_min", "intensity_max", "path"} <= columns


def test_unreadable_dataset_raises_one_line(tmp_path):
    with pytest.raises(NotFoundError, match="dataset directory not found"):
        validate_dataset(tmp_path / "nope", StandInImagingTask(), tmp_path / "r")
    ds = make_dataset(tmp_path)
    (ds / "manifest.csv").unlink()
    with pytest.raises(NotFoundError, match="manifest"):
        validate_dataset(ds, StandInImagingTask(), tmp_path / "r")
    (ds / "manifest.csv").write_text(",".join(BASE_COLUMNS) + '\n"a,b\n')
    with pytest.raises(BadInputError, match="manifest.csv: unreadable manifest") as e:
        validate_dataset(ds, StandInImagingTask(), tmp_path / "r")
    assert "\n" not in str(e.value)
    (ds / "dataset.json").write_text("{not json")
    with pytest.raises(BadInputError, match="dataset.json"):
        validate_dataset(ds, StandInImagingTask(), tmp_path / "r")


def test_accepted_finding_reported_but_not_failing(tmp_path):
    ds = make_dataset(tmp_path)
    m = load_manifest(ds)
    m.loc[m["id"] == "P4-1", "content_hash"] = m.loc[m["id"] == "P0-0", "content_hash"].item()
    rewrite_manifest(ds, m)
    refused = validate_dataset(ds, StandInImagingTask(), tmp_path / "r1")
    assert not refused.success and len(refused.failures) == 1
    report = validate_dataset(ds, StandInImagingTask(), tmp_path / "r2",
                              accept={"duplicate_examples": "known duplicate in the release"})
    assert report.success and report.failures == []
    assert len(report.accepted) == 1
    assert "P0-0" in report.accepted[0] and "known duplicate in the release" in report.accepted[0]
    saved = json.loads(report.report_path.read_text())["medml"]
    assert saved["success"] and saved["accepted"] == report.accepted
    # accepting one check does not hide another
    m.loc[m["id"] == "P2-1", "label"] = "cat"
    rewrite_manifest(ds, m)
    both = validate_dataset(ds, StandInImagingTask(), tmp_path / "r3",
                            accept={"duplicate_examples": "known"})
    assert not both.success and len(both.failures) == 1 and "cat" in both.failures[0]


def test_rare_class_in_train_fails_class_balance(tmp_path):
    """A class under 2 % of the train split fails, naming the rows; val/test may be small."""
    ds = make_dataset(tmp_path)
    m = load_manifest(ds)
    train = m[m["split"] == "train"]
    common = train[train["label"] != train["label"].iloc[0]]
    # many copies of the other class's rows (distinct ids and hashes) dilute the first class
    extra = pd.concat([common] * 60, ignore_index=True)
    extra["id"] = [f"x-{i}" for i in range(len(extra))]
    extra["content_hash"] = [f"h{i:060d}" for i in range(len(extra))]
    rewrite_manifest(ds, pd.concat([m, extra], ignore_index=True))
    report = validate_dataset(ds, StandInImagingTask(), tmp_path / "report")
    line = failure(report, "at least 2% of the train split")
    rare = train["label"].iloc[0]
    assert not report.success and f"class {rare!r} is 1.6% (2 rows, e.g. id P0-0)" in line
    assert derive_columns(load_manifest(ds), ds)[LABEL_SHARE].between(0, 1).all()


class StandInNotesTask(StandInImagingTask):
    """A task with a free-text column (as clinical NLP and speech transcripts will have)."""

    text_columns = ("note",)


def test_phi_left_in_text_fails_naming_the_row_and_deid_clears_it(tmp_path):
    from medml.deid.manifest import deidentify_manifest

    ds = make_dataset(tmp_path)
    m = load_manifest(ds)
    m["note"] = "benign-looking lesion, BP 120/80, metformin 500 mg"
    m.loc[m["id"] == "P2-1", "note"] = "Seen by Dr. Alice Moreno on 03/14/2024, MRN 4471902"
    rewrite_manifest(ds, m)
    report = validate_dataset(ds, StandInNotesTask(), tmp_path / "r1")
    line = failure(report, "no identifier (PHI) is left in the text (note)")
    assert "1 of 12 rows" in line and "id P2-1" in line and "NAME" in line
    assert "Moreno" not in line and "4471902" not in line  # the report names no PHI

    clean, meta, _ = deidentify_manifest(m, load_meta(ds), b"key", {"note": "text"})
    write_dataset(ds, clean, meta)
    assert validate_dataset(ds, StandInNotesTask(), tmp_path / "r2").success
    assert clean.loc[0, "note"] == m.loc[0, "note"]  # clinical text without PHI unchanged
