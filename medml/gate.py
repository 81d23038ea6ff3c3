"""The promotion gate: may a candidate model replace the champion?

Checks, each configured per task under ``tasks.<task>.gate`` in params.yaml:

* ``floors``: absolute lower bounds on test metrics (e.g. ``auroc: 0.85``,
  ``sensitivity: 0.8``: sensitivity at the model's operating point, the arg-max class);
* ``ceilings``: absolute upper bounds (e.g. ``ece: 0.1``);
* ``non_inferiority``: metric -> margin. Candidate and champion are scored on the same
  frozen test set; the lower bound of a paired bootstrap CI of (candidate - champion),
  resampling whole groups (patients, documents or speakers), must be >= -margin. Skipped
  when there is no champion yet: the first model is judged on the other checks only;
* ``subgroup_floors``: lower bounds that every subgroup (site, sex, age band...) with at
  least ``min_subgroup_n`` test examples must meet.

A gate with no check configured refuses. Pure functions: no MLflow, no files.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from medml.settings import GateParams

Score = Callable[[pd.DataFrame], dict[str, float]]

# Metrics where smaller is better (differences are flipped so that > 0 means "better").
LOWER_IS_BETTER = frozenset({"ece", "wer", "cer", "loss", "brier"})


@dataclass
class Check:
    check: str  # e.g. "floor:auroc", "non_inferiority:auroc", "subgroup_floor:auroc[site=a]"
    value: float
    op: str  # ">=" or "<="
    bound: float
    passed: bool
    detail: dict[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        return f"{self.check}: {_fmt(self.value)} {self.op} {_fmt(self.bound)}"


def _fmt(v: float) -> str:
    return "nan" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4f}"


def _compare(name: str, value: float, op: str, bound: float, **detail: Any) -> Check:
    ok = value is not None and math.isfinite(value) and (
        value >= bound if op == ">=" else value <= bound)
    return Check(name, float(value) if value is not None else float("nan"), op, float(bound),
                 bool(ok), detail)


def paired_bootstrap(cand: pd.DataFrame, champ: pd.DataFrame, groups: pd.Series, score: Score,
                     metric: str, n: int = 500, seed: int = 0, level: float = 0.95
                     ) -> tuple[float, float, float]:
    """Point estimate and percentile CI of score(cand) - score(champ) for ``metric`` (sign
    flipped for lower-is-better metrics), resampling whole groups with replacement; the two
    prediction tables are row-aligned (same examples, same order)."""
    sign = -1.0 if metric in LOWER_IS_BETTER else 1.0

    def diff(rows: np.ndarray | None) -> float:
        a = cand if rows is None else cand.iloc[rows]
        b = champ if rows is None else champ.iloc[rows]
        return sign * (score(a).get(metric, np.nan) - score(b).get(metric, np.nan))

    g = groups.fillna(cand["id"]).to_numpy()
    uniq, inverse = np.unique(g, return_inverse=True)
    members = [np.flatnonzero(inverse == k) for k in range(len(uniq))]
    rng = np.random.default_rng(seed)
    vals = []
    for _ in range(n):
        rows = np.concatenate([members[k] for k in rng.integers(0, len(uniq), len(uniq))])
        v = diff(rows)
        if np.isfinite(v):
            vals.append(v)
    point = diff(None)
    if not vals:
        return point, float("nan"), float("nan")
    a = (1 - level) / 2
    return point, float(np.quantile(vals, a)), float(np.quantile(vals, 1 - a))


def judge(gate: GateParams, score: Score, cand: pd.DataFrame, manifest: pd.DataFrame, *,
          group_column: str, subgroup_columns: tuple[str, ...] = (),
          champ: pd.DataFrame | None = None, seed: int = 0) -> tuple[list[Check], list[str]]:
    """All configured checks for a candidate's test predictions (and the champion's on the
    same test set, if there is a champion). Returns the checks and notes on what was skipped.
    """
    checks: list[Check] = []
    notes: list[str] = []
    metrics = score(cand)
    for m, bound in gate.floors.items():
        checks.append(_compare(f"floor:{m}", metrics.get(m, float("nan")), ">=", bound))
    for m, bound in gate.ceilings.items():
        checks.append(_compare(f"ceiling:{m}", metrics.get(m, float("nan")), "<=", bound))

    if gate.non_inferiority and champ is None:
        notes.append("no champion yet: non-inferiority not applicable, judged on floors")
    elif gate.non_inferiority:
        champ = champ.set_index("id").loc[cand["id"]].reset_index()
        groups = cand[["id"]].merge(manifest[["id", group_column]] if group_column in manifest
                                    else manifest[["id"]], on="id", how="left")
        groups = groups[group_column] if group_column in groups else pd.Series([None] * len(cand))
        for m, margin in gate.non_inferiority.items():
            point, lo, hi = paired_bootstrap(cand, champ, groups, score, m, gate.bootstrap,
                                             seed, gate.level)
            checks.append(_compare(
                f"non_inferiority:{m}", lo, ">=", -margin, difference=point, ci_low=lo,
                ci_high=hi, level=gate.level, resampled_by=group_column,
                champion_value=score(champ).get(m), candidate_value=metrics.get(m)))

    if gate.subgroup_floors:
        for col, value, part in subgroups(cand, manifest, subgroup_columns):
            if len(part) < gate.min_subgroup_n:
                notes.append(f"subgroup {col}={value}: {len(part)} examples < "
                             f"{gate.min_subgroup_n}, not judged")
                continue
            sub = score(part)
            for m, bound in gate.subgroup_floors.items():
                checks.append(_compare(f"subgroup_floor:{m}[{col}={value}]",
                                       sub.get(m, float("nan")), ">=", bound, n=len(part)))
    return checks, notes


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


def checks_as_dicts(checks: list[Check]) -> list[dict]:
    return [asdict(c) for c in checks]
