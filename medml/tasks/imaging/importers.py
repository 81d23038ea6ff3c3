"""Importers for real imaging data: MedMNIST ``.npz``, a folder of PNG/JPEG per class,
and DICOM files per class.

Every importer writes each example as ``out_dir/images/<id>.npy``, a float32 array of
shape (C, H, W) with C = 1 (grey) or 3 (RGB) and values in [0, 1], and returns the
manifest (``BASE_COLUMNS`` plus measured properties) with the dataset metadata. The
caller stages ``out_dir`` and writes ``manifest.csv``/``dataset.json``.
"""

from __future__ import annotations

import hashlib
import io
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medml.data.dataset import BASE_COLUMNS, SPLITS, DatasetMeta, sha256_file
from medml.errors import BadInputError

# Official MD5s of the 28 px MedMNIST v2 files (zenodo.org/record/6496656, medmnist/info.py).
MEDMNIST_MD5: dict[str, str] = {
    "pathmnist": "a8b06965200029087d5bd730944a56c1",
    "chestmnist": "02c8a6516a18b556561a56cbdd36c4a8",
    "dermamnist": "0744692d530f8e62ec473284d019b0c7",
    "octmnist": "c68d92d5b585d8d81f7112f81e2d0842",
    "pneumoniamnist": "28209eda62fecd6e6a2d98b1501bb15f",
    "retinamnist": "bd4c0672f1bba3e3a89f0e4e876791e4",
    "breastmnist": "750601b1f35ba3300ea97c75c52ff8f6",
    "bloodmnist": "7053d0359d879ad8a5505303e11de1dc",
    "tissuemnist": "ebe78ee8b05294063de985d821c1c34b",
    "organamnist": "866b832ed4eeba67bfb9edee1d5544e6",
    "organcmnist": "0afa5834fb105f7705a7d93372119a21",
    "organsmnist": "e5c39f1af030238290b9557d9503af9d",
}
# Class names by integer label, and the 'disease present' class, where known.
MEDMNIST_CLASSES: dict[str, list[str]] = {
    "breastmnist": ["malignant", "normal_or_benign"],
    "pneumoniamnist": ["normal", "pneumonia"],
}
MEDMNIST_POSITIVE: dict[str, str] = {"breastmnist": "malignant", "pneumoniamnist": "pneumonia"}
NPZ_KEYS = [f"{s}_{k}" for s in SPLITS for k in ("images", "labels")]
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}
PATIENTS_FILE = "patients.csv"
AGE_BANDS = [(18, "0-17"), (40, "18-39"), (60, "40-59"), (80, "60-79")]
DICOM_FIELDS = {
    "modality": "Modality", "manufacturer": "Manufacturer", "body_part": "BodyPartExamined",
    "photometric": "PhotometricInterpretation", "patient_age": "PatientAge",
    "study_uid": "StudyInstanceUID", "series_uid": "SeriesInstanceUID",
    "sop_uid": "SOPInstanceUID",
}


# ---------------------------------------------------------------- arrays and files

def _short(exc: BaseException) -> str:
    """An exception as one short line."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}"[:200] if text else type(exc).__name__


def _to_chw(arr: np.ndarray, source: str) -> np.ndarray:
    """(H, W), (H, W, C) or (C, H, W) with C in 1, 3, 4 as (C, H, W), alpha dropped."""
    if arr.ndim == 2:
        arr = arr[None]
    elif arr.ndim == 3 and arr.shape[-1] in (1, 3, 4) and arr.shape[0] not in (1, 3, 4):
        arr = np.moveaxis(arr, -1, 0)
    if arr.ndim != 3 or arr.shape[0] not in (1, 3, 4) or min(arr.shape[1:], default=0) < 1:
        raise BadInputError(f"{source}: image shape {arr.shape} is not (H, W), (H, W, C) or "
                            "(C, H, W) with C = 1, 3 or 4; export 2D grey or RGB images")
    return arr[:3]


def normalise_image(arr: np.ndarray, source: str = "<array>") -> np.ndarray:
    """Any 2D grey/RGB(A) array as float32 (C, H, W) in [0, 1].

    uint8 is divided by 255; floats already in [0, 1] are kept (so normalising twice
    changes nothing); other sources are min-max scaled per image, constant ones to zeros.
    """
    arr = np.asarray(arr)
    if arr.dtype == bool:
        arr = arr.astype(np.float32)
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise BadInputError(f"{source}: pixel type {arr.dtype} is not numeric; "
                            "export the image as integers or floats")
    arr = _to_chw(arr, source)
    if arr.dtype == np.uint8:
        return np.ascontiguousarray(arr, dtype=np.float32) / np.float32(255.0)
    x = arr.astype(np.float64)
    if not np.isfinite(x).all():
        raise BadInputError(f"{source}: image has NaN or infinite values; "
                            "fix or remove that image")
    lo, hi = float(x.min()), float(x.max())
    if np.issubdtype(arr.dtype, np.floating) and lo >= 0.0 and hi <= 1.0:
        return np.ascontiguousarray(x, dtype=np.float32)
    if hi <= lo:
        return np.zeros(x.shape, dtype=np.float32)
    return np.ascontiguousarray((x - lo) / (hi - lo), dtype=np.float32)


def save_image(arr: np.ndarray, out_dir: Path, example_id: str, *, source: str = "<array>",
               source_dtype: str | None = None) -> dict[str, Any]:
    """Write ``out_dir/images/<id>.npy`` (normalised as :func:`normalise_image`) and return
    the measured manifest fields: path, content_hash, height, width, channels,
    source_dtype, intensity_min, intensity_max."""
    if not example_id or "/" in example_id or example_id.startswith("."):
        raise ValueError(f"bad example id {example_id!r}")
    img = normalise_image(arr, source)
    rel = Path("images") / f"{example_id}.npy"
    path = Path(out_dir) / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, img)
    return {
        "path": rel.as_posix(),
        "content_hash": sha256_file(path),
        "height": int(img.shape[1]),
        "width": int(img.shape[2]),
        "channels": int(img.shape[0]),
        "source_dtype": source_dtype or np.asarray(arr).dtype.name,
        "intensity_min": float(img.min()),
        "intensity_max": float(img.max()),
    }


def _pil_pixels(data: bytes, source: str) -> np.ndarray:
    """PNG/JPEG (anything Pillow reads) bytes as (H, W) or (H, W, 3) in its own dtype."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()  # decode now: truncated or corrupt files fail here
            mode = img.mode
            if mode in ("L", "RGB", "I", "F") or mode.startswith("I;16"):
                out = img
            elif mode in ("1", "LA", "La"):
                out = img.convert("L")
            elif mode in ("P", "PA"):
                out = img.convert("RGBA").convert("RGB")
            else:
                out = img.convert("RGB")
            arr = np.array(out)
    except Exception as exc:  # Pillow raises many types (OSError, SyntaxError, ValueError...)
        why = ("unknown format, expected PNG or JPEG" if isinstance(exc, UnidentifiedImageError)
               else _short(exc))
        raise BadInputError(f"{source}: not a readable image ({why}); "
                            "replace or remove the file") from exc
    arr = arr.astype(arr.dtype.newbyteorder("="), copy=False)
    if mode in ("P", "PA") and (arr == arr[..., :1]).all():
        arr = arr[..., 0]  # a grey palette stays grey
    return arr


def _dicom_image(ds: Any, source: str) -> tuple[np.ndarray, str]:
    """A DICOM dataset's pixels (modality LUT applied, MONOCHROME1 inverted) as float32
    (C, H, W) in [0, 1], with the stored pixel dtype."""
    from pydicom.pixels import apply_modality_lut

    if not any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        raise BadInputError(f"{source}: DICOM file has no pixel data; remove it from the "
                            "import folder or export it with its image")
    try:
        frames = int(ds.get("NumberOfFrames") or 1)
    except (TypeError, ValueError):
        frames = 1
    if frames > 1:
        raise BadInputError(f"{source}: multi-frame DICOM ({frames} frames) not supported; "
                            "export each frame as its own file")
    try:
        raw = ds.pixel_array
        arr = apply_modality_lut(raw, ds)
    except Exception as exc:  # pydicom and its decoders raise many types
        raise BadInputError(f"{source}: cannot decode DICOM pixel data ({_short(exc)}); "
                            "decompress it (e.g. with dcmdjpeg) or install its decoder "
                            "(pylibjpeg)") from exc
    samples = int(ds.get("SamplesPerPixel") or 1)
    if arr.ndim != (2 if samples == 1 else 3):
        raise BadInputError(f"{source}: DICOM pixel array of shape {arr.shape} is not one "
                            "2D image; only single 2D grey or RGB images are supported")
    img = normalise_image(arr, source)
    if str(ds.get("PhotometricInterpretation", "")).strip() == "MONOCHROME1":
        img = 1.0 - img  # MONOCHROME1: low values are white
    return img, raw.dtype.name


def _read_dicom(data: bytes | Path, source: str) -> Any:
    import pydicom

    try:
        return pydicom.dcmread(io.BytesIO(data) if isinstance(data, bytes) else data)
    except Exception as exc:  # InvalidDicomError, EOFError, OSError...
        raise BadInputError(f"{source}: not a readable DICOM file ({_short(exc)}); "
                            "replace or remove the file") from exc


def decode_image_bytes(data: bytes, source: str = "<bytes>") -> np.ndarray:
    """PNG/JPEG/DICOM bytes as float32 (C, H, W) in [0, 1], normalised as on import."""
    if not data:
        raise BadInputError(f"{source}: empty image bytes; send a PNG, JPEG or DICOM file")
    if len(data) >= 132 and data[128:132] == b"DICM":
        return _dicom_image(_read_dicom(data, source), source)[0]
    return normalise_image(_pil_pixels(data, source), source)


# ---------------------------------------------------------------- helpers

def dicom_age_band(age: Any) -> str | None:
    """A DICOM age string ("045Y", "006M", "010W", "003D") as an age band, None if unknown."""
    m = re.fullmatch(r"\s*(\d{1,3})\s*([DWMY]?)\s*", str(age or "").upper())
    if not m:
        return None
    years = int(m.group(1)) / {"D": 365.25, "W": 52.18, "M": 12.0}.get(m.group(2), 1.0)
    return next((band for upper, band in AGE_BANDS if years < upper), "80+")


def _text(value: Any) -> str | None:
    """A header value as stripped text, None when absent or empty."""
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _require(src: Path, kind: str) -> Path:
    src = Path(src)
    if not src.exists():
        raise BadInputError(f"{src}: no such {kind}; check the path")
    if kind == "file" and not src.is_file():
        raise BadInputError(f"{src}: is a directory, expected a .npz file")
    if kind == "directory" and not src.is_dir():
        raise BadInputError(f"{src}: is a file, expected a directory with one folder per class")
    return src


def _manifest(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Rows as a manifest: base columns first, ints for the shape columns."""
    df = pd.DataFrame(rows)
    for col in BASE_COLUMNS:
        if col not in df.columns:
            df[col] = None
    df = df[BASE_COLUMNS + [c for c in df.columns if c not in BASE_COLUMNS]]
    for col in ("height", "width", "channels"):
        df[col] = df[col].astype(int)
    for col in ("id", "label"):
        df[col] = df[col].astype(str)
    df["split"] = df["split"].where(df["split"].notna(), None)  # set by the split stage
    return df


def _check_classes(labels: list[str], src: Path, layout: str) -> None:
    found = sorted(set(labels))
    if len(found) < 2:
        raise BadInputError(f"{src}: found {len(found)} class(es) {found}; a classifier needs "
                            f"at least 2 ({layout})")


def _md5_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


# ---------------------------------------------------------------- MedMNIST .npz

def _load_npz(src: Path) -> dict[str, np.ndarray]:
    """Every MedMNIST array of ``src``, read now (np.load is lazy: corruption shows late)."""
    try:
        loaded = np.load(src, allow_pickle=False)
    except Exception as exc:  # BadZipFile, EOFError, ValueError, OSError...
        raise BadInputError(f"{src}: not a readable .npz archive ({_short(exc)}); the file is "
                            "truncated or corrupt, download it again") from exc
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise BadInputError(f"{src}: a single .npy array, not an .npz archive with "
                            f"{', '.join(NPZ_KEYS)}")
    with loaded as z:
        missing = [k for k in NPZ_KEYS if k not in z.files]
        if missing:
            raise BadInputError(f"{src}: missing keys {missing} (has {sorted(z.files)}); a "
                                f"MedMNIST .npz holds {', '.join(NPZ_KEYS)}")
        arrays = {}
        for key in NPZ_KEYS:
            try:
                arrays[key] = np.asarray(z[key])
            except Exception as exc:  # zlib.error, EOFError, BadZipFile, ValueError...
                raise BadInputError(f"{src}: key '{key}' unreadable ({_short(exc)}); the file "
                                    "is truncated or corrupt, download it again") from exc
    return arrays


def _npz_split(src: Path, split: str, images: np.ndarray, labels: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray]:
    """Checked (N, C, H, W) images and (N,) integer labels of one split."""
    ik, lk = f"{split}_images", f"{split}_labels"
    if images.ndim == 4 and images.shape[-1] in (1, 3):
        images = np.moveaxis(images, -1, 1)
    elif images.ndim == 3:
        images = images[:, None]
    else:
        raise BadInputError(f"{src}: key '{ik}' has shape {images.shape}; expected (N, H, W) "
                            "or (N, H, W, 3)")
    if not (np.issubdtype(images.dtype, np.integer) or np.issubdtype(images.dtype, np.floating)):
        raise BadInputError(f"{src}: key '{ik}' has non-numeric type {images.dtype}")
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1:
        raise BadInputError(f"{src}: key '{lk}' has shape {labels.shape}; expected (N, 1) "
                            "single labels (multi-label MedMNIST is not supported)")
    if len(images) != len(labels):
        raise BadInputError(f"{src}: key '{ik}' has {len(images)} images but '{lk}' has "
                            f"{len(labels)} labels; they must be the same length")
    if np.issubdtype(images.dtype, np.floating) and len(images):
        bad = np.flatnonzero(~np.isfinite(images.reshape(len(images), -1)).all(1))
        if len(bad):
            raise BadInputError(f"{src}: key '{ik}' index {bad[0]} has NaN or infinite values "
                                f"({len(bad)} image(s)); fix or drop them")
    numeric = np.issubdtype(labels.dtype, np.integer) or np.issubdtype(labels.dtype, np.floating)
    if not numeric or (len(labels) and not (np.isfinite(labels.astype(float)).all()
                                            and (labels == np.round(labels)).all())):
        raise BadInputError(f"{src}: key '{lk}' must hold integer class labels "
                            f"(type {labels.dtype})")
    return images, labels.astype(np.int64)


def import_npz(src: Path, out_dir: Path, name: str, *, seed: int = 0, verify_md5: bool = True
               ) -> tuple[pd.DataFrame, DatasetMeta]:
    """Import a MedMNIST v2 ``.npz`` (2D), keeping its official train/val/test split.

    A file named like an official one (``breastmnist.npz``...) must match its MD5 unless
    ``verify_md5`` is off. ``seed`` is unused (the split is official) and kept for a
    uniform importer signature.
    """
    src = _require(src, "file")
    known = src.stem.lower()
    md5 = _md5_file(src)
    expected = MEDMNIST_MD5.get(known)
    if verify_md5 and expected and md5 != expected:
        raise BadInputError(f"{src}: MD5 {md5} differs from the official {known}.npz "
                            f"({expected}); download it again from zenodo.org/record/6496656, "
                            "or rename a deliberately modified copy")
    arrays = _load_npz(src)
    splits = {s: _npz_split(src, s, arrays[f"{s}_images"], arrays[f"{s}_labels"])
              for s in SPLITS}
    values = sorted({int(v) for _, lab in splits.values() for v in np.unique(lab)})
    if known in MEDMNIST_CLASSES:
        classes = list(MEDMNIST_CLASSES[known])
        outside = [v for v in values if not 0 <= v < len(classes)]
        if outside:
            raise BadInputError(f"{src}: labels {outside} outside 0..{len(classes) - 1} of "
                                f"{known} ({classes}); is this the right file?")
        names = dict(enumerate(classes))
    else:
        names = {v: str(v) for v in values}
        classes = [names[v] for v in values]
    _check_classes([names[v] for v in values], src, "labels found in all splits")
    rows = []
    for split, (images, labels) in splits.items():
        for i, (img, lab) in enumerate(zip(images, labels, strict=True)):
            where = f"{split}_images[{i}]"
            eid = f"{split}-{i:05d}"
            fields = save_image(img, out_dir, eid, source=f"{src}: {where}")
            rows.append({"id": eid, "label": names[int(lab)], "split": split,
                         "source_file": where, **fields})
    if not rows:
        raise BadInputError(f"{src}: the archive holds no images")
    extra: dict[str, Any] = {
        "split_note": "official MedMNIST split; no patient ids",
        "md5": md5,
        "md5_verified": bool(verify_md5 and expected),
        "label_values": {name_: int(v) for v, name_ in names.items()},
    }
    if known in MEDMNIST_POSITIVE:
        extra["positive_class"] = MEDMNIST_POSITIVE[known]
    meta = DatasetMeta(name=name, task="imaging", classes=classes, source=str(src),
                       format="medmnist", patient_level_split=False, extra=extra)
    return _manifest(rows), meta


# ---------------------------------------------------------------- folder of PNG/JPEG

def _images_in(class_dir: Path) -> list[Path]:
    return sorted(p for p in class_dir.rglob("*")
                  if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                  and not any(part.startswith(".") for part in p.relative_to(class_dir).parts))


def _subdirs(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))


def _read_patients(src: Path, files: list[str]) -> dict[str, dict[str, Any]]:
    """``src/patients.csv`` (file, patient_id[, site, sex, age_band]) by relative file path."""
    path = src / PATIENTS_FILE
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except Exception as exc:  # ParserError, UnicodeDecodeError, EmptyDataError...
        raise BadInputError(f"{path}: not a readable CSV ({_short(exc)}); expected columns "
                            "file,patient_id[,site,sex,age_band]") from exc
    table.columns = [str(c).strip() for c in table.columns]
    missing = [c for c in ("file", "patient_id") if c not in table.columns]
    if missing:
        raise BadInputError(f"{path}: missing columns {missing}; expected "
                            "file,patient_id[,site,sex,age_band]")
    table["file"] = table["file"].str.strip().str.replace("\\", "/", regex=False)
    dup = table["file"][table["file"].duplicated()]
    if len(dup):
        raise BadInputError(f"{path}: file {dup.iloc[0]!r} listed twice; list each image once")
    empty = table.index[table["patient_id"].str.strip() == ""]
    if len(empty):
        raise BadInputError(f"{path}: row {int(empty[0]) + 2} has an empty patient_id; "
                            "fill it in")
    records = {r["file"]: r for r in table.to_dict("records")}
    by_name = pd.Series([Path(f).name for f in files]).value_counts()
    out = {}
    for f in files:
        rec = records.get(f)
        if rec is None and by_name[Path(f).name] == 1:
            rec = records.get(Path(f).name)
        if rec is None:
            raise BadInputError(f"{path}: image {f!r} is not listed; add a row for it "
                                "(file relative to the folder, patient_id)")
        out[f] = {k: _text(rec.get(k)) for k in ("patient_id", "site", "sex", "age_band")}
    return out


def import_folder(src: Path, out_dir: Path, name: str, *, seed: int = 0
                  ) -> tuple[pd.DataFrame, DatasetMeta]:
    """Import ``src/<class>/*.png|jpg|jpeg`` (or ``src/<split>/<class>/...`` to keep given
    splits). With ``src/patients.csv`` (file, patient_id[, site, sex, age_band]) examples
    are split by patient; otherwise per example."""
    src = _require(src, "directory")
    top = _subdirs(src)
    split_layout = bool(top) and {p.name for p in top} <= set(SPLITS)
    found: list[tuple[str | None, str, Path]] = []  # (given split, class, file)
    for parent in top if split_layout else [src]:
        for class_dir in _subdirs(parent):
            found += [(parent.name if split_layout else None, class_dir.name, f)
                      for f in _images_in(class_dir)]
    layout = ("src/<split>/<class>/*.png|jpg|jpeg" if split_layout
              else "src/<class>/*.png|jpg|jpeg")
    if not found:
        raise BadInputError(f"{src}: no images found; expected {layout}")
    _check_classes([c for _, c, _ in found], src, f"one folder per class: {layout}")
    files = [f.relative_to(src).as_posix() for _, _, f in found]
    patients = _read_patients(src, files) if (src / PATIENTS_FILE).is_file() else None
    rows = []
    for i, ((split, label, path), rel) in enumerate(zip(found, files, strict=True)):
        data = path.read_bytes()
        arr = _pil_pixels(data, str(path))
        fields = save_image(arr, out_dir, f"img-{i:05d}", source=str(path))
        info = patients[rel] if patients else {}
        rows.append({"id": f"img-{i:05d}", "label": label, "split": split,
                     "patient_id": info.get("patient_id"), "site": info.get("site"),
                     "sex": info.get("sex"), "age_band": info.get("age_band"),
                     "source_file": rel, **fields})
    manifest = _manifest(rows)  # splits: the folder layout's, or the split stage's
    extra: dict[str, Any] = {"layout": layout}
    if split_layout:
        extra["split_note"] = "splits as given by the folder layout"
    classes = sorted(manifest["label"].unique().tolist())
    meta = DatasetMeta(name=name, task="imaging", classes=classes, source=str(src),
                       format="folder", patient_level_split=patients is not None,
                       extra=extra)
    return manifest, meta


# ---------------------------------------------------------------- DICOM

def import_dicom(src: Path, out_dir: Path, name: str, *, seed: int = 0
                 ) -> tuple[pd.DataFrame, DatasetMeta]:
    """Import ``src/<class>/**/*.dcm`` (single-frame 2D), split by PatientID.

    Demographics come from the header (PatientID, PatientSex, PatientAge as a band,
    InstitutionName as site); identifying fields are recorded as they are and removed
    later by de-identification.
    """
    src = _require(src, "directory")
    found = [(class_dir.name, f) for class_dir in _subdirs(src)
             for f in sorted(class_dir.rglob("*"))
             if f.is_file() and f.suffix.lower() == ".dcm"]
    layout = "src/<class>/**/*.dcm"
    if not found:
        raise BadInputError(f"{src}: no DICOM files found; expected {layout}")
    _check_classes([c for c, _ in found], src, f"one folder per class: {layout}")
    rows = []
    for i, (label, path) in enumerate(found):
        ds = _read_dicom(path, str(path))
        img, dtype = _dicom_image(ds, str(path))
        eid = f"dcm-{i:05d}"
        fields = save_image(img, out_dir, eid, source=str(path), source_dtype=dtype)
        sex = _text(ds.get("PatientSex"))
        rows.append({
            "id": eid, "label": label,
            "patient_id": _text(ds.get("PatientID")),
            "site": _text(ds.get("InstitutionName")),
            "sex": sex.upper() if sex else None,
            "age_band": dicom_age_band(ds.get("PatientAge")),
            "source_file": path.relative_to(src).as_posix(),
            **{col: _text(ds.get(kw)) for col, kw in DICOM_FIELDS.items()},
            **fields,
        })
    manifest = _manifest(rows)  # split by PatientID in the split stage
    meta = DatasetMeta(
        name=name, task="imaging", classes=sorted(manifest["label"].unique().tolist()),
        source=str(src), format="dicom",
        patient_level_split=bool(manifest["patient_id"].notna().all()),
        extra={"modalities": sorted(manifest["modality"].dropna().unique().tolist())},
    )
    return manifest, meta


IMPORTERS = {"medmnist": import_npz, "folder": import_folder, "dicom": import_dicom}
