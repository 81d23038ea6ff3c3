"""Demo imaging data: ultrasound-like speckle with lesions that differ in shape and texture.

Classes: ``normal`` (no lesion), ``benign`` (smooth round/oval mass, homogeneous inside)
and ``malignant`` (irregular spiculated mass with heterogeneous inside). The lesion's
contrast sign is random and every image is re-normalised to a random mean and spread,
so mean brightness carries no class information: a model must learn shape and texture.
Several images per patient share a patient "style" (texture scale, gain), so leaking a
patient across splits would inflate results, as with real data.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.ndimage import gaussian_filter

from medml.data.dataset import DatasetMeta
from medml.tasks.imaging.importers import save_image

CLASSES = ["normal", "benign", "malignant"]
SITES = ["site-a", "site-b", "site-c"]
AGE_BANDS = ["18-39", "40-59", "60-79", "80+"]
DEFAULTS: dict[str, Any] = {"n_patients": 90, "images_per_patient": [2, 5], "size": 28}


def _speckle(rng: np.random.Generator, size: int, scale: float) -> np.ndarray:
    field = gaussian_filter(rng.standard_normal((size, size)), scale)
    return field / (field.std() + 1e-8)


def _lesion_mask(rng: np.random.Generator, size: int, kind: str) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(float)
    cy, cx = rng.uniform(0.35, 0.65, 2) * size
    r0 = rng.uniform(0.14, 0.22) * size
    theta = np.arctan2(yy - cy, xx - cx)
    dist = np.hypot(yy - cy, xx - cx)
    if kind == "benign":
        ecc = rng.uniform(0.75, 1.0)
        rot = rng.uniform(0, np.pi)
        radius = r0 / np.sqrt(np.cos(theta - rot) ** 2 + (np.sin(theta - rot) / ecc) ** 2)
        return gaussian_filter((dist < radius).astype(float), 0.6)
    n_spikes = rng.integers(5, 9)
    phase = rng.uniform(0, 2 * np.pi)
    radius = r0 * (0.75 + 0.45 * np.clip(np.sin(n_spikes * theta + phase), 0, None) ** 3
                   + 0.1 * rng.standard_normal())
    return (dist < radius).astype(float)


def make_image(rng: np.random.Generator, kind: str, size: int, style: dict) -> np.ndarray:
    """One (1, size, size) float32 image in [0, 1] of class ``kind``."""
    img = _speckle(rng, size, style["scale"])
    img += style["band"] * np.sin(np.linspace(0, rng.uniform(2, 6), size))[:, None]
    if kind != "normal":
        mask = _lesion_mask(rng, size, kind)
        sign = rng.choice([-1.0, 1.0])
        inside = (np.full((size, size), 1.0) if kind == "benign"
                  else 1.0 + 0.9 * _speckle(rng, size, 0.5))
        img = img * (1 - 0.7 * mask) + sign * 2.2 * mask * inside
    img = (img - img.mean()) / (img.std() + 1e-8)
    img = style["mean"] + style["gain"] * img
    return np.clip(img, 0.0, 1.0).astype(np.float32)[None]


def generate(out_dir: Path, params: dict[str, Any], seed: int, name: str
             ) -> tuple[pd.DataFrame, DatasetMeta]:
    """Write ``n_patients`` patients' images into ``out_dir`` and return the manifest."""
    p = {**DEFAULTS, **params}
    rng = np.random.default_rng(seed)
    lo, hi = p["images_per_patient"]
    rows = []
    for pi in range(int(p["n_patients"])):
        patient = f"P{pi:04d}"
        kind = CLASSES[pi % len(CLASSES)]
        site = SITES[rng.integers(len(SITES))]
        style = {"scale": rng.uniform(0.6, 1.4), "band": rng.uniform(0, 0.8),
                 "mean": rng.uniform(0.35, 0.65), "gain": rng.uniform(0.10, 0.18)}
        sex, age = rng.choice(["F", "M"]), AGE_BANDS[rng.integers(len(AGE_BANDS))]
        for k in range(int(rng.integers(lo, hi + 1))):
            img_style = {**style, "mean": rng.uniform(0.35, 0.65)}
            eid = f"{patient}-{k}"
            fields = save_image(make_image(rng, kind, int(p["size"]), img_style), out_dir, eid)
            rows.append({"id": eid, "label": kind, "patient_id": patient, "site": site,
                         "sex": sex, "age_band": age, "source_file": "generated", **fields})
    manifest = pd.DataFrame(rows)
    manifest["split"] = None  # the split stage assigns them, by patient
    meta = DatasetMeta(name=name, task="imaging", classes=list(CLASSES), source="generated",
                       format="demo", extra={"generator": p, "seed": seed})
    return manifest, meta
