"""The imaging model as an MLflow pyfunc: images in (arrays, or PNG/JPEG/DICOM bytes,
raw or base64), class probabilities out."""

from __future__ import annotations

import base64
import binascii
from typing import Any

import numpy as np
import pandas as pd
import torch

from medml.errors import BadInputError
from medml.tasks.pyfunc import BundleModel


def as_array(value: Any, where: str) -> np.ndarray:
    """One image cell (bytes, base64 text, nested list or array) as (C, H, W) in [0, 1]."""
    from medml.tasks.imaging.importers import decode_image_bytes

    if isinstance(value, bytes | bytearray | memoryview):
        return decode_image_bytes(bytes(value), where)
    if isinstance(value, str):
        try:
            raw = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise BadInputError(f"{where}: text is not base64-encoded image bytes") from exc
        return decode_image_bytes(raw, where)
    try:
        arr = np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise BadInputError(f"{where}: not an image array ({exc})") from exc
    if arr.ndim == 2:
        arr = arr[None]
    elif arr.ndim == 3 and arr.shape[0] not in (1, 3) and arr.shape[-1] in (1, 3):
        arr = np.moveaxis(arr, -1, 0)
    if arr.ndim != 3 or arr.shape[0] not in (1, 3) or min(arr.shape[1:]) < 4:
        raise BadInputError(f"{where}: image shape {arr.shape}; expected (H, W), (C, H, W) "
                            "or (H, W, C) with C = 1 or 3")
    if not np.isfinite(arr).all():
        raise BadInputError(f"{where}: image has NaN or infinite values")
    if arr.max() > 1.0 or arr.min() < 0.0:  # 0-255 (or other) scale: bring to [0, 1]
        lo, hi = float(arr.min()), float(arr.max())
        arr = arr / 255.0 if lo >= 0 and hi <= 255 else (arr - lo) / max(hi - lo, 1e-8)
    return arr


def images_from_input(model_input: Any) -> list[np.ndarray]:
    """Images from a DataFrame with an ``image`` column, a list, or an (N, ...) array."""
    if isinstance(model_input, pd.DataFrame):
        if "image" not in model_input.columns:
            raise BadInputError("input has no 'image' column")
        cells = model_input["image"].tolist()
    elif isinstance(model_input, np.ndarray) and model_input.dtype != object:
        cells = list(model_input)
    elif isinstance(model_input, dict) and "image" in model_input:
        cells = list(model_input["image"])
    else:
        cells = list(model_input)
    return [as_array(c, f"image {i}") for i, c in enumerate(cells)]


class ImagingModel(BundleModel):
    """Images in, class probabilities and the arg-max label out, preprocessed as the bundle's
    spec says."""

    task_name = "imaging"

    def predict(self, context, model_input, params=None):  # untyped: MLflow reads hints
        from medml.tasks.imaging.data import to_model_input
        from medml.tasks.imaging.task import predict_proba

        s = self.spec
        arrays = images_from_input(model_input)
        if not arrays:
            return pd.DataFrame(columns=[f"p_{c}" for c in s["classes"]] + ["label"])
        x = torch.stack([to_model_input(a, s["image_size"], s["in_channels"]) for a in arrays])
        probs = predict_proba(self.net, x, tta=s.get("tta", True), device=torch.device("cpu"))
        out = pd.DataFrame(probs, columns=[f"p_{c}" for c in s["classes"]])
        out["label"] = [s["classes"][k] for k in probs.argmax(1)]
        return out
