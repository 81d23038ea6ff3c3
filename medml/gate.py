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
from dataclasses import asdict, dataclass, field
from typing import Any

import pandas as pd

from medml.evaluation import Score, paired_bootstrap, subgroups
from medml.render import check_line, check_lines
from medml.settings import GateParams


@dataclass
class Check:
    check: str  # e.g. "floor:auroc", "non_inferiority:auroc", "subgroup_floor:auroc[site=a]"
    value: float
    op: str  # ">=" or "<="
    bound: float
    passed: bool
    detail: dict[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        return check_line(asdict(self))


@dataclass
class GateDecision:
    """One run of the gate on a registered version, as recorded in the tracking store
    (``gate/decision-<id>.json`` and the version's ``gate.*`` tags)."""

    model: str
    version: str
    passed: bool
    checks: list[dict]  # checks_as_dicts
    decided_at: str
    decision_id: str = ""
    champion_version: str | None = None  # the champion it was compared with, if any
    dataset: str = ""
    data_md5: str = ""
    notes: list[str] = field(default_factory=list)
    approval: dict | None = None
    task: str = ""

    def reasons(self) -> str:
        """The failed checks as one line (all of them when none failed)."""
        return check_lines(self.checks, marks=False, only_failed=True)


def _compare(name: str, value: float, op: str, bound: float, **detail: Any) -> Check:
    ok = value is not None and math.isfinite(value) and (
        value >= bound if op == ">=" else value <= bound)
    return Check(name, float(value) if value is not None else float("nan"), op, float(bound),
                 bool(ok), detail)


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


def checks_as_dicts(checks: list[Check]) -> list[dict]:
    return [asdict(c) for c in checks]
