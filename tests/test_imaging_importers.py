"""Imaging importers: MedMNIST .npz, PNG/JPEG folders, DICOM; bytes decoding for serving."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file

from medml.data.dataset import BASE_COLUMNS, sha256_file
from medml.data.splits import split_manifest
from medml.errors import BadInputError
from medml.tasks import get_task
from medml.tasks.imaging.importers import (
    IMPORTERS,
    MEDMNIST_MD5,
    decode_image_bytes,
    dicom_age_band,
    import_dicom,
    import_folder,
    import_npz,
    save_image,
)

from .conftest import SHARED_DATA, needs

MEASURED = ["height", "width", "channels", "source_dtype", "intensity_min", "intensity_max",
            "source_file"]
REAL_BREASTMNIST = SHARED_DATA / "imaging" / "breastmnist.npz"


def _check_manifest(manifest: pd.DataFrame, out: Path) -> None:
    """Columns present, every file a (C, H, W) float32 in [0, 1] matching its row and hash."""
    assert list(manifest.columns[:len(BASE_COLUMNS)]) == BASE_COLUMNS
    assert set(MEASURED) <= set(manifest.columns)
    assert manifest["id"].is_unique
    assert set(manifest["split"].dropna()) <= {"train", "val", "test"}
    for row in manifest.itertuples():
        assert row.path == f"images/{row.id}.npy"
        arr = np.load(out / row.path)
        assert arr.dtype == np.float32
        assert arr.shape == (row.channels, row.height, row.width)
        assert arr.min() >= 0.0 and arr.max() <= 1.0
        assert row.intensity_min == pytest.approx(float(arr.min()))
        assert row.intensity_max == pytest.approx(float(arr.max()))
        assert row.content_hash == sha256_file(out / row.path)


def _npz(path: Path, n: tuple[int, int, int] = (6, 2, 3), rgb: bool = False) -> dict:
    rng = np.random.default_rng(0)
    arrays = {}
    for split, k in zip(("train", "val", "test"), n, strict=True):
        shape = (k, 28, 28, 3) if rgb else (k, 28, 28)
        arrays[f"{split}_images"] = rng.integers(0, 256, shape, dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(k) % 2).astype(np.uint8)[:, None]
    np.savez_compressed(path, **arrays)
    return arrays


# ---------------------------------------------------------------- npz

def test_npz_round_trip_keeps_official_splits(tmp_path: Path) -> None:
    src = tmp_path / "toymnist.npz"
    arrays = _npz(src)
    out = tmp_path / "out"
    manifest, meta = import_npz(src, out, "toy")
    _check_manifest(manifest, out)
    assert manifest["split"].value_counts().to_dict() == {"train": 6, "test": 3, "val": 2}
    assert meta.classes == ["0", "1"]
    assert meta.format == "medmnist" and meta.task == "imaging"
    assert not meta.patient_level_split
    assert meta.extra["split_note"] == "official MedMNIST split; no patient ids"
    row = manifest.set_index("id").loc["val-00001"]
    assert row["source_file"] == "val_images[1]" and row["label"] == "1"
    assert row["source_dtype"] == "uint8" and row["patient_id"] is None
    stored = np.load(out / row["path"])
    np.testing.assert_allclose(stored[0], arrays["val_images"][1] / 255.0, rtol=1e-6)


def test_npz_rgb_is_channels_first(tmp_path: Path) -> None:
    src = tmp_path / "rgbmnist.npz"
    arrays = _npz(src, rgb=True)
    manifest, _ = import_npz(src, tmp_path / "out", "rgb")
    assert (manifest["channels"] == 3).all()
    stored = np.load(tmp_path / "out" / "images" / "train-00002.npy")
    np.testing.assert_allclose(stored, np.moveaxis(arrays["train_images"][2], -1, 0) / 255.0,
                               rtol=1e-6)


def test_breastmnist_md5_mismatch_and_skip(tmp_path: Path) -> None:
    src = tmp_path / "breastmnist.npz"
    _npz(src)
    with pytest.raises(BadInputError) as err:
        import_npz(src, tmp_path / "a", "b")
    msg = str(err.value)
    assert "breastmnist.npz" in msg and MEDMNIST_MD5["breastmnist"] in msg and "\n" not in msg
    manifest, meta = import_npz(src, tmp_path / "b", "b", verify_md5=False)
    assert meta.classes == ["malignant", "normal_or_benign"]
    assert set(manifest["label"]) == {"malignant", "normal_or_benign"}
    assert manifest.set_index("id").loc["train-00000", "label"] == "malignant"  # label 0
    assert meta.extra["positive_class"] == "malignant" and not meta.extra["md5_verified"]


@pytest.mark.parametrize("cut", [0.3, 0.9])
def test_truncated_npz_names_file(tmp_path: Path, cut: float) -> None:
    src = tmp_path / "toymnist.npz"
    _npz(src)
    data = src.read_bytes()
    src.write_bytes(data[: int(len(data) * cut)])
    with pytest.raises(BadInputError, match=r"toymnist\.npz.*corrupt"):
        import_npz(src, tmp_path / "out", "t")


def test_corrupt_npz_member_is_caught_despite_lazy_load(tmp_path: Path) -> None:
    src = tmp_path / "toymnist.npz"
    _npz(src, n=(40, 10, 10))
    data = bytearray(src.read_bytes())
    mid = len(data) // 2
    data[mid:mid + 64] = bytes(64)  # the zip directory survives; one member's data does not
    src.write_bytes(bytes(data))
    with pytest.raises(BadInputError, match=r"toymnist\.npz: key '\w+_images' unreadable"):
        import_npz(src, tmp_path / "out", "t")


def test_npz_bad_contents(tmp_path: Path) -> None:
    src = tmp_path / "bad.npz"
    np.savez(src, train_images=np.zeros((2, 8, 8), np.uint8))
    with pytest.raises(BadInputError, match="missing keys"):
        import_npz(src, tmp_path / "o1", "b")
    arrays = {f"{s}_{k}": np.zeros((2, 8, 8) if k == "images" else (2, 1), np.uint8)
              for s in ("train", "val", "test") for k in ("images", "labels")}
    arrays["train_labels"] = np.array([[0], [1], [1]])
    np.savez(src, **arrays)
    with pytest.raises(BadInputError, match="train_images.*2 images.*3 labels"):
        import_npz(src, tmp_path / "o2", "b")
    arrays["train_labels"] = np.array([[0], [1]])
    arrays["val_images"] = np.full((2, 8, 8), np.nan, np.float32)
    np.savez(src, **arrays)
    with pytest.raises(BadInputError, match="val_images.*NaN"):
        import_npz(src, tmp_path / "o3", "b")
    arrays["val_images"] = np.zeros((2, 8, 8), np.uint8)
    arrays.update({f"{s}_labels": np.zeros((2, 1), np.uint8) for s in ("train", "val", "test")})
    np.savez(src, **arrays)
    with pytest.raises(BadInputError, match="at least 2"):
        import_npz(src, tmp_path / "o4", "b")
    with pytest.raises(BadInputError, match="no such"):
        import_npz(tmp_path / "absent.npz", tmp_path / "o5", "b")


@needs("the real BreastMNIST file", REAL_BREASTMNIST.is_file(),
       f"{REAL_BREASTMNIST}: the shared data folder beside the project")
def test_real_breastmnist(tmp_path: Path) -> None:
    manifest, meta = import_npz(REAL_BREASTMNIST, tmp_path / "out", "breastmnist")
    counts = manifest["split"].value_counts().to_dict()
    assert counts == {"train": 546, "val": 78, "test": 156}
    assert meta.classes == ["malignant", "normal_or_benign"]
    assert meta.extra["md5_verified"] and meta.extra["md5"] == MEDMNIST_MD5["breastmnist"]
    assert (manifest[["height", "width", "channels"]] == [28, 28, 1]).all().all()


# ---------------------------------------------------------------- folder

def _png(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def test_folder_round_trip_per_example(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    src = tmp_path / "src"
    grey = {}
    for cls in ("benign", "malignant"):
        for k in range(10):
            grey[f"{cls}/{k}.png"] = rng.integers(0, 256, (12, 10), dtype=np.uint8)
            _png(src / cls / f"{k}.png", grey[f"{cls}/{k}.png"])
    rgba = rng.integers(0, 256, (9, 9, 4), dtype=np.uint8)
    _png(src / "benign" / "colour.png", rgba)
    (src / "benign" / "notes.txt").write_text("ignored")
    out = tmp_path / "out"
    manifest, meta = import_folder(src, out, "f", seed=3)
    _check_manifest(manifest, out)
    assert manifest["split"].isna().all()  # the split stage's job
    manifest, meta = split_manifest(manifest, meta, seed=3)
    assert len(manifest) == 21 and meta.classes == ["benign", "malignant"]
    assert not meta.patient_level_split and meta.format == "folder"
    assert meta.extra["split_note"] == "split per example: the dataset has no patient ids"
    assert set(manifest["split"]) == {"train", "val", "test"}
    assert (manifest["split_by"] == "example").all()
    by_file = manifest.set_index("source_file")
    row = by_file.loc["malignant/3.png"]
    assert row["label"] == "malignant" and row["channels"] == 1
    np.testing.assert_allclose(np.load(out / row["path"])[0], grey["malignant/3.png"] / 255.0,
                               rtol=1e-6)
    colour = by_file.loc["benign/colour.png"]
    assert colour["channels"] == 3  # alpha dropped
    np.testing.assert_allclose(np.load(out / colour["path"]),
                               np.moveaxis(rgba[..., :3], -1, 0) / 255.0, rtol=1e-6)
    again, _ = split_manifest(*import_folder(src, tmp_path / "again", "f"), seed=3)
    assert again["split"].tolist() == manifest["split"].tolist()


def test_folder_given_splits_and_patients(tmp_path: Path) -> None:
    src = tmp_path / "src"
    img = np.arange(64, dtype=np.uint8).reshape(8, 8)
    rows = []
    for split in ("train", "test"):
        for cls in ("a", "b"):
            _png(src / split / cls / "x.jpg", img)
            rows.append({"file": f"{split}/{cls}/x.jpg", "patient_id": f"P-{split}-{cls}",
                         "sex": "F", "age_band": "40-59"})
    pd.DataFrame(rows).to_csv(src / "patients.csv", index=False)
    manifest, meta = split_manifest(*import_folder(src, tmp_path / "out", "g"), seed=5)
    assert (manifest["split_by"] == "source").all()
    assert manifest.set_index("source_file")["split"].to_dict() == {
        "train/a/x.jpg": "train", "train/b/x.jpg": "train",
        "test/a/x.jpg": "test", "test/b/x.jpg": "test"}
    assert meta.patient_level_split and meta.classes == ["a", "b"]
    assert manifest.set_index("source_file").loc["test/b/x.jpg", "patient_id"] == "P-test-b"
    assert (manifest["sex"] == "F").all()


def test_folder_patients_csv_splits_by_patient(tmp_path: Path) -> None:
    src = tmp_path / "src"
    rows = []
    for k in range(24):
        cls = "ab"[k % 2]
        _png(src / cls / f"{k}.png", np.full((6, 6), k * 10, np.uint8))
        rows.append({"file": f"{k}.png", "patient_id": f"P{k // 4}"})  # bare names match too
    pd.DataFrame(rows).to_csv(src / "patients.csv", index=False)
    manifest, meta = split_manifest(*import_folder(src, tmp_path / "out", "p"))
    assert meta.patient_level_split and (manifest["split_by"] == "patient").all()
    assert (manifest.groupby("patient_id")["split"].nunique() == 1).all()
    pd.DataFrame(rows[:-1]).to_csv(src / "patients.csv", index=False)
    with pytest.raises(BadInputError, match=r"patients.csv.*23.png.*not listed"):
        import_folder(src, tmp_path / "out2", "p")


def test_folder_unreadable_image_names_file(tmp_path: Path) -> None:
    src = tmp_path / "src"
    for cls in ("a", "b"):
        _png(src / cls / "ok.png", np.zeros((5, 5), np.uint8))
    (src / "b" / "garbage.png").write_bytes(np.random.default_rng(0).bytes(300))
    with pytest.raises(BadInputError, match=r"garbage\.png.*not a readable image"):
        import_folder(src, tmp_path / "out", "u")
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64), np.uint8)).save(buf, "PNG")
    (src / "b" / "garbage.png").unlink()
    (src / "a" / "truncated.png").write_bytes(buf.getvalue()[:200])
    with pytest.raises(BadInputError, match=r"truncated\.png"):
        import_folder(src, tmp_path / "out", "u")


def test_folder_empty_and_one_class(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "a").mkdir(parents=True)
    with pytest.raises(BadInputError, match="no images"):
        import_folder(src, tmp_path / "o", "e")
    _png(src / "a" / "1.png", np.zeros((4, 4), np.uint8))
    with pytest.raises(BadInputError, match="at least 2"):
        import_folder(src, tmp_path / "o", "e")
    with pytest.raises(BadInputError, match="no such"):
        import_folder(tmp_path / "absent", tmp_path / "o", "e")


# ---------------------------------------------------------------- DICOM

def _dicom_tree(src: Path) -> dict[str, Path]:
    files = {}
    for cls, name in (("ct", "CT_small.dcm"), ("mr", "MR_small.dcm")):
        (src / cls / "series").mkdir(parents=True)
        files[cls] = src / cls / "series" / name
        shutil.copy(get_testdata_file(name), files[cls])
    return files


def test_dicom_round_trip(tmp_path: Path) -> None:
    src = tmp_path / "src"
    files = _dicom_tree(src)
    out = tmp_path / "out"
    manifest, meta = import_dicom(src, out, "d")
    _check_manifest(manifest, out)
    assert meta.classes == ["ct", "mr"] and meta.format == "dicom" and meta.patient_level_split
    rows = manifest.set_index("label")
    ct, mr = rows.loc["ct"], rows.loc["mr"]
    assert (ct["height"], ct["width"], ct["channels"]) == (128, 128, 1)
    assert (mr["height"], mr["width"]) == (64, 64)
    assert ct["modality"] == "CT" and mr["modality"] == "MR"
    assert ct["patient_id"] == "1CT1" and ct["site"] == "JFK IMAGING CENTER"
    assert ct["patient_age"] == "000Y" and ct["age_band"] == "0-17" and ct["sex"] == "O"
    assert mr["sex"] == "F" and pd.isna(mr["age_band"])
    assert ct["source_file"] == "ct/series/CT_small.dcm" and ct["source_dtype"] == "int16"
    assert ct["sop_uid"] and ct["study_uid"] and ct["photometric"] == "MONOCHROME2"
    ds = pydicom.dcmread(files["ct"])
    hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    expected = (hu - hu.min()) / (hu.max() - hu.min())
    np.testing.assert_allclose(np.load(out / ct["path"])[0], expected, atol=1e-6)


def test_dicom_monochrome1_is_inverted(tmp_path: Path) -> None:
    src = tmp_path / "src"
    files = _dicom_tree(src)
    manifest, _ = import_dicom(src, tmp_path / "m2", "d")
    before = np.load(tmp_path / "m2" / manifest.set_index("label").loc["mr", "path"])
    ds = pydicom.dcmread(files["mr"])
    ds.PhotometricInterpretation = "MONOCHROME1"
    ds.save_as(files["mr"])
    manifest, _ = import_dicom(src, tmp_path / "m1", "d")
    after = np.load(tmp_path / "m1" / manifest.set_index("label").loc["mr", "path"])
    np.testing.assert_allclose(after, 1.0 - before, atol=1e-6)


def test_dicom_without_pixels_or_unreadable_names_file(tmp_path: Path) -> None:
    src = tmp_path / "src"
    files = _dicom_tree(src)
    ds = pydicom.dcmread(files["mr"])
    del ds.PixelData
    ds.save_as(files["mr"])
    with pytest.raises(BadInputError, match=r"MR_small\.dcm.*no pixel data"):
        import_dicom(src, tmp_path / "o", "d")
    files["mr"].write_bytes(b"not a dicom file at all")
    with pytest.raises(BadInputError, match=r"MR_small\.dcm.*not a readable DICOM"):
        import_dicom(src, tmp_path / "o", "d")
    shutil.rmtree(src / "mr")
    with pytest.raises(BadInputError, match="at least 2"):
        import_dicom(src, tmp_path / "o", "d")


@pytest.mark.parametrize(("age", "band"), [
    ("045Y", "40-59"), ("018Y", "18-39"), ("017Y", "0-17"), ("080Y", "80+"), ("079Y", "60-79"),
    ("006M", "0-17"), ("010W", "0-17"), ("003D", "0-17"), ("", None), (None, None),
    ("abc", None),
])
def test_dicom_age_band(age: str | None, band: str | None) -> None:
    assert dicom_age_band(age) == band


# ---------------------------------------------------------------- bytes and arrays

def test_decode_png_dicom_and_garbage() -> None:
    rgb = np.random.default_rng(2).integers(0, 256, (7, 5, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "PNG")
    arr = decode_image_bytes(buf.getvalue())
    assert arr.dtype == np.float32 and arr.shape == (3, 7, 5)
    np.testing.assert_allclose(arr, np.moveaxis(rgb, -1, 0) / 255.0, rtol=1e-6)
    buf = io.BytesIO()
    Image.fromarray(rgb[..., 0]).save(buf, "JPEG")
    assert decode_image_bytes(buf.getvalue()).shape == (1, 7, 5)
    dcm = Path(get_testdata_file("MR_small.dcm")).read_bytes()
    img = decode_image_bytes(dcm, "upload")
    assert img.shape == (1, 64, 64) and img.min() == 0.0 and img.max() == 1.0
    with pytest.raises(BadInputError, match="request 3: not a readable image .unknown format"):
        decode_image_bytes(b"\x00garbage" * 40, "request 3")
    with pytest.raises(BadInputError, match="empty"):
        decode_image_bytes(b"")


def test_save_image_normalisation(tmp_path: Path) -> None:
    fields = save_image(np.array([[0, 500], [1000, 250]], np.uint16), tmp_path, "x")
    stored = np.load(tmp_path / fields["path"])
    np.testing.assert_allclose(stored[0], [[0, 0.5], [1.0, 0.25]])
    assert fields["source_dtype"] == "uint16" and fields["content_hash"] == sha256_file(
        tmp_path / "images" / "x.npy")
    assert save_image(np.full((4, 4), 7.5), tmp_path, "c")["intensity_max"] == 0.0
    unit = np.linspace(0.2, 0.6, 16, dtype=np.float32).reshape(1, 4, 4)
    save_image(unit, tmp_path, "u")
    np.testing.assert_array_equal(np.load(tmp_path / "images" / "u.npy"), unit)
    with pytest.raises(BadInputError, match="NaN"):
        save_image(np.array([[np.nan, 2.0]]), tmp_path, "n", source="row 4")


def test_registry() -> None:
    assert IMPORTERS["medmnist"] is import_npz
    assert IMPORTERS["folder"] is import_folder and IMPORTERS["dicom"] is import_dicom


def test_dicom_manifest_deidentified_consistently(tmp_path: Path) -> None:
    """The de-identification stage on a DICOM import: the header fields kept in the
    manifest leave no original identifying value, pseudonyms are stable under one key and
    differ under another, UIDs stay valid and consistent, and the report names no value."""
    from medml.deid.manifest import deidentify_manifest, remap_uid

    src = tmp_path / "src"
    _dicom_tree(src)
    manifest, meta = import_dicom(src, tmp_path / "out", "d")
    rules = get_task("imaging").deid_rules(meta)
    clean, meta2, report = deidentify_manifest(manifest, meta, b"k1", rules)
    originals = {v for col in ("patient_id", "site", "study_uid", "series_uid", "sop_uid",
                               "patient_age", "source_file") for v in manifest[col].dropna()}
    assert originals and not originals & {str(v) for v in clean.to_numpy().ravel()}
    assert "patient_age" not in clean.columns and "age_band" in clean.columns
    assert clean["patient_id"].str.fullmatch(r"pt-[0-9a-f]{12}").all()
    assert clean["study_uid"].str.fullmatch(r"2\.25\.\d+").all()
    assert clean.loc[0, "study_uid"] == remap_uid(b"k1", manifest.loc[0, "study_uid"])
    assert meta2.extra["deidentified"] and meta2.extra["deid_key_id"] == report["key_id"]
    assert report["columns"]["patient_id"] == {"action": "pseudonym", "values": 2}
    assert not originals & set(json.dumps(report).split('"'))
    again, _, _ = deidentify_manifest(manifest, meta, b"k1", rules)
    other, _, _ = deidentify_manifest(manifest, meta, b"k2", rules)
    pd.testing.assert_frame_equal(clean, again)
    assert not set(other["patient_id"]) & set(clean["patient_id"])


def test_split_does_not_depend_on_the_deid_key(tmp_path: Path) -> None:
    """The same data and seed give the same patient split under any pseudonymisation key."""
    from medml.deid.manifest import deidentify_manifest

    manifest, meta = get_task("imaging").generate(
        tmp_path / "d", {"n_patients": 30, "images_per_patient": [1, 3], "size": 12}, 0, "d")
    splits = []
    for key in (b"one key", b"another key"):
        clean, m2, _ = deidentify_manifest(manifest, meta, key, {"patient_id": "pseudonym"})
        splits.append(split_manifest(clean, m2, seed=4)[0].set_index("id")["split"])
    assert splits[0].equals(splits[1])
