"""Deterministic train/val/test assignment, by patient when patient ids exist."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from medml.data.dataset import SPLITS, DatasetMeta
from medml.errors import BadInputError


def assign_splits(
    labels: Sequence[str],
    groups: Sequence[str] | None,
    fractions: Sequence[float] = (0.7, 0.15, 0.15),
    seed: int = 0,
) -> np.ndarray:
    """Split examples into train/val/test, stratified by label, with every group
    (patient) wholly in one split. ``groups=None`` splits per example.

    A group's stratum is its most frequent label. Within each stratum groups are
    shuffled with ``seed`` and cut by cumulative example count, so the result depends
    only on the inputs and the seed.
    """
    labels = pd.Series(list(labels), dtype=str)
    grp = pd.Series(list(groups) if groups is not None else [str(i) for i in range(len(labels))],
                    dtype=str)
    if len(grp) != len(labels):
        raise ValueError("labels and groups differ in length")
    frac = np.asarray(fractions, dtype=float)
    frac = frac / frac.sum()
    rng = np.random.default_rng(seed)
    stratum = labels.groupby(grp).agg(lambda s: s.value_counts().index[0])
    sizes = grp.value_counts()
    group_split: dict[str, str] = {}
    for _, members in stratum.groupby(stratum, sort=True):
        names = np.array(sorted(members.index))
        rng.shuffle(names)
        counts = sizes[names].to_numpy()
        cum = np.cumsum(counts) / counts.sum()
        # A group goes to the split its cumulative midpoint falls in.
        mid = cum - counts / (2 * counts.sum())
        edges = np.cumsum(frac)
        for name, m in zip(names, mid, strict=True):
            group_split[name] = SPLITS[int(np.searchsorted(edges, m, side="right").clip(0, 2))]
    return grp.map(group_split).to_numpy()


def split_manifest(manifest: pd.DataFrame, meta: DatasetMeta,
                   fractions: Sequence[float] = (0.7, 0.15, 0.15), seed: int = 0
                   ) -> tuple[pd.DataFrame, DatasetMeta]:
    """The split stage: a split for every row, and how it was made, in the manifest
    (column ``split_by``: ``source``, ``patient`` or ``example``) and in the metadata
    (``patient_level_split``, ``extra.split_note``).

    Splits given by the source (MedMNIST's official ones, a ``<split>/<class>`` folder
    layout) are kept. Otherwise rows are split by patient, stratified by label; rows
    without a patient id are split on their own, and a dataset with none at all is split
    per example and says so."""
    from dataclasses import replace

    df = manifest.copy()
    given = df["split"].where(df["split"].isin(SPLITS)) if "split" in df.columns else None
    if given is not None and given.notna().all():
        df["split_by"] = "source"
        note = meta.extra.get("split_note") or "splits as given by the source"
        return df, replace(meta, extra={**meta.extra, "split_note": note})
    if given is not None and given.notna().any():
        bad = df.loc[given.isna(), "id"].head(3).tolist()
        raise BadInputError(f"dataset {meta.name!r}: some rows have a split and others not "
                            f"(e.g. ids {bad}); give every row a split, or none")
    patients = (df["patient_id"] if "patient_id" in df.columns
                else pd.Series([None] * len(df), index=df.index))
    known = patients.notna() & (patients.astype(str).str.strip() != "")
    if known.any():
        groups = patients.astype(str).where(known, "__example__" + df["id"].astype(str))
        # name each group by its first example id, not by its (keyed) pseudonym: the same
        # data and seed give the same split on every machine, whatever the de-id key
        groups = df["id"].astype(str).groupby(groups).transform("min")
        df["split"] = assign_splits(df["label"], groups.tolist(), fractions, seed)
    else:
        df["split"] = assign_splits(df["label"], None, fractions, seed)
    df["split_by"] = np.where(known, "patient", "example")
    if known.all():
        note = "split by patient, stratified by label"
    elif known.any():
        note = (f"split by patient; {int((~known).sum())} row(s) without a patient id split "
                "on their own")
    else:
        note = "split per example: the dataset has no patient ids"
    extra = {**meta.extra, "split_note": note, "split_seed": seed,
             "split_fractions": [float(f) for f in fractions]}
    return df, replace(meta, patient_level_split=bool(known.all()), extra=extra)
