"""Evaluation shared by every task and the gate: subgroups and the group bootstrap.

A bootstrap resample draws whole groups (patients, documents or speakers) with
replacement, because examples of one group are not independent; a row with no group
stands alone. The same resamples serve one prediction table (``bootstrap_ci``: percentile
CIs of several metrics at once) and two row-aligned tables (``paired_bootstrap``: the CI of
a difference, candidate minus champion). Pure functions: no MLflow, no files.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np
import pandas as pd

#: scalar metrics of a prediction table (a task's ``score`` with its spec bound)
Score = Callable[[pd.DataFrame], dict[str, float]]

#: metrics where smaller is better (paired differences are flipped: > 0 means "better")
LOWER_IS_BETTER = frozenset({"ece", "wer", "cer", "loss", "brier"})


# ---------------------------------------------------------------------- subgroups
def subgroups(pred: pd.DataFrame, manifest: pd.DataFrame, columns: tuple[str, ...] | list[str]
              ) -> Iterator[tuple[str, Any, pd.DataFrame]]:
    """``(column, value, predictions)`` for every filled-in value of each of the manifest's
    ``columns`` (those it has), in column then value order: the subgroups the gate judges
    and the evaluation tables report."""
    cols = [c for c in columns if c in manifest.columns]
    merged = pred.merge(manifest[["id", *cols]].rename(columns=lambda c: f"__{c}"),
                        left_on="id", right_on="__id", how="left")
    for col in cols:
        for value, part in merged.dropna(subset=[f"__{col}"]).groupby(f"__{col}"):
            yield col, value, part[list(pred.columns)]


def subgroup_table(pred: pd.DataFrame, manifest: pd.DataFrame, columns: tuple[str, ...],
                   score: Score) -> pd.DataFrame:
    """One row per subgroup: ``attribute``, ``value``, ``n`` and ``score``'s metrics."""
    return pd.DataFrame([{"attribute": col, "value": value, "n": len(part), **score(part)}
                         for col, value, part in subgroups(pred, manifest, columns)])


# ---------------------------------------------------------------------- bootstrap
def _resamples(ids: pd.Series, groups: pd.Series, n: int, seed: int) -> Iterator[np.ndarray]:
    """Row positions of ``n`` bootstrap resamples: as many groups as there are, drawn with
    replacement, each bringing all its rows. ``groups`` is row-aligned with ``ids``; a row
    whose group is missing is a group of its own."""
    if len(groups) != len(ids):
        raise ValueError(f"{len(groups)} group labels for {len(ids)} predictions")
    g, i = (pd.Series(np.asarray(v, dtype=object)) for v in (groups, ids))  # by position
    # prefixed so that a lone row's id never merges it into a group of the same name
    keys = ("g:" + g.astype(str)).where(g.notna(), "id:" + i.astype(str))
    _, inverse = np.unique(keys.to_numpy(str), return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    members = np.split(order, np.flatnonzero(np.diff(inverse[order])) + 1)
    rng = np.random.default_rng(seed)
    for _ in range(n):
        yield np.concatenate([members[k] for k in rng.integers(0, len(members), len(members))])


def _percentile_ci(values: Iterable[float], level: float) -> tuple[float, float]:
    """Percentile interval of the finite values; ``(nan, nan)`` when there is none."""
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=float)
    if not len(v):
        return float("nan"), float("nan")
    a = (1 - level) / 2
    return float(np.quantile(v, a)), float(np.quantile(v, 1 - a))


def bootstrap_ci(pred: pd.DataFrame, groups: pd.Series, score: Score, metrics: Iterable[str],
                 n: int = 500, seed: int = 0, level: float = 0.95
                 ) -> dict[str, tuple[float, float]]:
    """Percentile CI of each of ``metrics`` of ``score(pred)``, all from the same ``n``
    resamples of whole groups (``groups``: row-aligned with ``pred``). Resamples where a
    metric is not finite are left out of its CI."""
    metrics = list(metrics)
    draws: dict[str, list[float]] = {m: [] for m in metrics}
    if len(pred):
        for rows in _resamples(pred["id"], groups, n, seed):
            got = score(pred.iloc[rows])
            for m in metrics:
                draws[m].append(got.get(m, np.nan))
    return {m: _percentile_ci(v, level) for m, v in draws.items()}


def paired_bootstrap(cand: pd.DataFrame, champ: pd.DataFrame, groups: pd.Series, score: Score,
                     metric: str, n: int = 500, seed: int = 0, level: float = 0.95
                     ) -> tuple[float, float, float]:
    """Point estimate and percentile CI of score(cand) - score(champ) for ``metric`` (sign
    flipped for lower-is-better metrics), resampling whole groups with replacement; the two
    prediction tables are row-aligned (same examples, same order)."""
    sign = -1.0 if metric in LOWER_IS_BETTER else 1.0

    def diff(a: pd.DataFrame, b: pd.DataFrame) -> float:
        return sign * (score(a).get(metric, np.nan) - score(b).get(metric, np.nan))

    vals = [diff(cand.iloc[rows], champ.iloc[rows])
            for rows in _resamples(cand["id"], groups, n, seed)] if len(cand) else []
    return (diff(cand, champ), *_percentile_ci(vals, level))
