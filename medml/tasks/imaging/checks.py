"""Great Expectations checks of an imaging manifest's measured columns.

Images are stored as float32 ``.npy`` arrays (C, H, W) scaled to [0, 1]; the importers
measure each one into ``height``, ``width``, ``channels``, ``intensity_min`` and
``intensity_max``, which these expectations bound.
"""

from __future__ import annotations

import pandas as pd

from medml.data.dataset import DatasetMeta

MEASURED = ["height", "width", "channels", "intensity_min", "intensity_max"]
CHANNELS = [1, 3]  # grayscale or RGB
MIN_SIDE, MAX_SIDE = 8, 4096


def imaging_expectations(meta: DatasetMeta, manifest: pd.DataFrame) -> list:
    """GX expectations for the imaging manifest (besides the shared ones)."""
    import great_expectations.expectations as gxe

    exps: list = [
        gxe.ExpectColumnToExist(column=c, description=f"the manifest has a column '{c}'")
        for c in MEASURED
    ]
    for c in ("intensity_min", "intensity_max"):
        exps.append(gxe.ExpectColumnValuesToNotBeNull(
            column=c, description=f"{c} is measured (no NaN) for every image"))
    exps += [
        gxe.ExpectColumnValuesToBeBetween(
            column="intensity_min", min_value=0.0,
            description="image intensities are at least 0 (intensity_min)"),
        gxe.ExpectColumnValuesToBeBetween(
            column="intensity_max", max_value=1.0,
            description="image intensities are at most 1 (intensity_max)"),
        gxe.ExpectColumnValuesToBeInSet(
            column="channels", value_set=CHANNELS,
            description="images have 1 (grayscale) or 3 (RGB) channels"),
    ]
    for c in ("height", "width"):
        exps.append(gxe.ExpectColumnValuesToBeBetween(
            column=c, min_value=MIN_SIDE, max_value=MAX_SIDE,
            description=f"image {c} is between {MIN_SIDE} and {MAX_SIDE} pixels"))
    exps.append(gxe.ExpectColumnValuesToMatchRegex(
        column="path", regex=r"\.npy$", description="image files are .npy arrays"))
    return exps
