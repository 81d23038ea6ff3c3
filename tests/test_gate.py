"""The promotion gate's checks on synthetic predictions (pure functions, no stores)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from medml.evaluation import paired_bootstrap
from medml.gate import judge
from medml.settings import GateParams
from medml.tasks.imaging import metrics

CLASSES = ["benign", "malignant"]


def score(pred: pd.DataFrame) -> dict[str, float]:
    return metrics.score(pred, CLASSES, "malignant")


def predictions(quality: float, n_patients: int = 60, seed: int = 0) -> tuple[pd.DataFrame,
                                                                              pd.DataFrame]:
    """Two images per patient; ``quality`` in [0, 1] moves scores towards the truth."""
    rng = np.random.default_rng(seed)
    ids, ys, patients, sites = [], [], [], []
    for p in range(n_patients):
        y = p % 2
        for k in range(2):
            ids.append(f"P{p}-{k}")
            ys.append(y)
            patients.append(f"P{p}")
            sites.append("a" if p < n_patients // 2 else "b")
    y = np.array(ys)
    noise = np.random.default_rng(99).uniform(0, 1, len(y))  # shared: paired models
    p_mal = np.clip(quality * y + (1 - quality) * noise + rng.normal(0, 0.01, len(y)), 0, 1)
    pred = pd.DataFrame({"id": ids, "y": y, "p_benign": 1 - p_mal, "p_malignant": p_mal})
    manifest = pd.DataFrame({"id": ids, "patient_id": patients, "site": sites})
    return pred, manifest


def run(gate: GateParams, cand: pd.DataFrame, manifest: pd.DataFrame,
        champ: pd.DataFrame | None = None, score_fn=score):
    return judge(gate, score_fn, cand, manifest, group_column="patient_id",
                 subgroup_columns=("site",), champ=champ)


def test_no_check_configured_gives_no_checks():
    cand, manifest = predictions(0.8)
    checks, _ = run(GateParams(), cand, manifest)
    assert checks == []  # and lifecycle.judge turns "no checks" into a refusal


def test_floors_and_ceilings_report_value_bound_and_verdict():
    cand, manifest = predictions(0.3)  # AUROC ~0.84, sensitivity ~0.68
    checks, _ = run(GateParams(floors={"auroc": 0.8, "sensitivity": 0.99},
                               ceilings={"ece": 0.0}), cand, manifest)
    by = {c.check: c for c in checks}
    assert by["floor:auroc"].passed and by["floor:auroc"].value == pytest.approx(
        score(cand)["auroc"])
    assert not by["floor:sensitivity"].passed
    assert not by["ceiling:ece"].passed and by["ceiling:ece"].op == "<="


def test_first_model_skips_non_inferiority_with_a_note():
    cand, manifest = predictions(0.8)
    checks, notes = run(GateParams(non_inferiority={"auroc": 0.02}), cand, manifest)
    assert checks == [] and "no champion" in notes[0]


def test_non_inferiority_passes_equal_and_better_fails_worse():
    good, manifest = predictions(0.2)  # AUROC ~0.70
    better, _ = predictions(0.4)  # ~0.96
    worse, _ = predictions(0.0)  # ~0.45
    gate = GateParams(non_inferiority={"auroc": 0.02}, bootstrap=200)
    same, _ = run(gate, good, manifest, champ=good)
    assert same[0].passed and same[0].detail["difference"] == 0.0
    up, _ = run(gate, better, manifest, champ=good)
    assert up[0].passed and up[0].detail["ci_low"] > 0
    down, _ = run(gate, worse, manifest, champ=good)
    assert not down[0].passed and down[0].value < -0.02
    assert down[0].detail["resampled_by"] == "patient_id"


def test_paired_bootstrap_resamples_whole_patients_and_aligns_by_id():
    cand, manifest = predictions(0.3)
    champ, _ = predictions(0.2)
    shuffled = champ.sample(frac=1, random_state=0)
    a = run(GateParams(non_inferiority={"auroc": 0.5}, bootstrap=100), cand, manifest,
            champ=shuffled)[0][0]
    b = run(GateParams(non_inferiority={"auroc": 0.5}, bootstrap=100), cand, manifest,
            champ=champ)[0][0]
    assert a.detail == b.detail  # the champion's rows are matched by id
    groups = manifest["patient_id"]
    point, lo, hi = paired_bootstrap(cand, champ, groups, score, "auroc", n=100)
    assert lo <= point <= hi

    # What the resamples hold: a score that records the ids of every table it is given.
    # Every patient has two images, P<p>-0 and P<p>-1: a resample of whole patients
    # brings both images as often as it draws the patient; one of rows splits them.
    tables: list[pd.Series] = []

    def recording(pred: pd.DataFrame) -> dict[str, float]:
        tables.append(pred["id"])
        return score(pred)

    paired_bootstrap(cand, champ, groups, recording, "auroc", n=50)
    direct = len(tables)
    run(GateParams(non_inferiority={"auroc": 0.5}, bootstrap=50), cand, manifest,
        champ=shuffled, score_fn=recording)
    for source, seen in (("paired_bootstrap", tables[:direct]), ("judge", tables[direct:])):
        resampled = 0
        for ids in seen:
            assert len(ids) == len(cand), source  # as many patients drawn as there are
            image = ids.value_counts()
            by_patient = image.groupby(image.index.str.rsplit("-", n=1).str[0])
            apart = by_patient.nunique() > 1  # images of one patient drawn unequally often
            split = image[image.index.str.rsplit("-", n=1).str[0].isin(apart[apart].index)]
            assert not apart.any() and (by_patient.size() == 2).all(), (
                f"{source}: a resample splits patients' images (image: times drawn): "
                f"{dict(split.sort_index().head(6))}")
            resampled += bool((image != 1).any())
        # candidate and champion of each of the 50 draws: real resamples, not the full set
        assert resampled >= 2 * 50, (source, resampled)


def test_lower_is_better_metric_flips_the_sign():
    cand, manifest = predictions(0.3)
    champ, _ = predictions(0.3)
    champ = champ.assign(p_malignant=0.5, p_benign=0.5)  # badly calibrated? ECE 0.5 vs less
    point, _, _ = paired_bootstrap(cand, champ, manifest["patient_id"], score, "ece", n=50)
    assert point == pytest.approx(score(champ)["ece"] - score(cand)["ece"])


def test_subgroup_floors_only_for_large_enough_subgroups():
    cand, manifest = predictions(0.3, n_patients=40)  # 40 images per site
    gate = GateParams(subgroup_floors={"auroc": 0.5}, min_subgroup_n=41)
    checks, notes = run(gate, cand, manifest)
    assert checks == [] and len(notes) == 2 and "site=a" in notes[0]
    checks, _ = run(gate.model_copy(update={"min_subgroup_n": 40}), cand, manifest)
    assert {c.check for c in checks} == {"subgroup_floor:auroc[site=a]",
                                         "subgroup_floor:auroc[site=b]"}
    assert all(c.detail["n"] == 40 for c in checks)
