"""Deterministic train/val/test assignment, by patient when patient ids exist."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from medml.data.dataset import SPLITS


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
