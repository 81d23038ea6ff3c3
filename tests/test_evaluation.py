"""medml.evaluation on tiny generated tables: the group bootstrap (unpaired and paired) and
the subgroup tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from medml.evaluation import (
    LOWER_IS_BETTER,
    bootstrap_ci,
    paired_bootstrap,
    subgroup_table,
    subgroups,
)


def mean_score(pred: pd.DataFrame) -> dict[str, float]:
    return {"mean": float(pred["v"].mean()), "neg": -float(pred["v"].mean())}


def patients(n_patients: int = 40, rows: int = 2, seed: int = 0
             ) -> tuple[pd.DataFrame, pd.Series]:
    """``rows`` predictions per patient, all with the patient's value (perfectly
    correlated within a patient)."""
    v = np.random.default_rng(seed).normal(size=n_patients)
    pred = pd.DataFrame({"id": [f"P{p}-{k}" for p in range(n_patients) for k in range(rows)],
                         "v": np.repeat(v, rows)})
    return pred, pd.Series(np.repeat([f"P{p}" for p in range(n_patients)], rows))


def recorder(seen: list[pd.Series]):
    def score(pred: pd.DataFrame) -> dict[str, float]:
        seen.append(pred["id"].value_counts())
        return mean_score(pred)
    return score


def test_a_resample_takes_every_row_of_a_drawn_patient_together() -> None:
    pred, groups = patients(n_patients=10, rows=3)
    seen: list[pd.Series] = []
    bootstrap_ci(pred, groups, recorder(seen), ("mean",), n=100)
    assert len(seen) == 100
    for counts in seen:
        assert counts.sum() == 30  # as many patients as there are, each with all its rows
        by_patient = counts.groupby(counts.index.str.split("-").str[0]).agg(set)
        # each patient's rows are drawn the same number of times (a per-row resampler
        # breaks this almost surely)
        assert all(len(c) == 1 for c in by_patient)
    assert any(counts.max() > 1 for counts in seen)  # with replacement


def test_group_resampling_widens_the_ci_of_correlated_rows() -> None:
    pred, groups = patients(n_patients=60, rows=2)
    by_group = bootstrap_ci(pred, groups, mean_score, ("mean",), n=800)["mean"]
    alone = bootstrap_ci(pred, pd.Series([None] * len(pred)), mean_score, ("mean",),
                         n=800)["mean"]
    by_row = bootstrap_ci(pred, pred["id"], mean_score, ("mean",), n=800)["mean"]
    assert alone == by_row  # rows without a group stand alone
    # two identical rows per patient: the mean over patients varies sqrt(2) times more
    ratio = (by_group[1] - by_group[0]) / (by_row[1] - by_row[0])
    assert 1.25 < ratio < 1.6


def test_a_row_without_group_never_joins_a_group_named_like_its_id() -> None:
    pred = pd.DataFrame({"id": ["A", "x", "y"], "v": [0.0, 1.0, 1.0]})
    seen: list[pd.Series] = []
    bootstrap_ci(pred, pd.Series([None, "A", "A"]), recorder(seen), ("mean",), n=200)
    counts = [c.reindex(["A", "x", "y"], fill_value=0) for c in seen]
    assert all(c["x"] == c["y"] for c in counts)
    assert any(c["A"] != c["x"] for c in counts)


def test_known_values_same_seed_same_ci_and_metrics_share_resamples() -> None:
    pred = pd.DataFrame({"id": list("abcd"), "v": [0.0, 0.0, 1.0, 1.0]})
    groups = pd.Series(["g1", "g1", "g2", "g2"])
    ci = bootstrap_ci(pred, groups, mean_score, ("mean", "neg"), n=200, seed=3)
    assert ci["mean"] == (0.0, 1.0)  # two groups: the mean is 0, 0.5 or 1
    assert ci["neg"] == (-1.0, -0.0)  # the same resamples, negated
    assert ci == bootstrap_ci(pred, groups, mean_score, ("mean", "neg"), n=200, seed=3)
    pred, groups = patients()
    a = bootstrap_ci(pred, groups, mean_score, ("mean",), n=100, seed=1)
    assert a == bootstrap_ci(pred, groups, mean_score, ("mean",), n=100, seed=1)
    assert a != bootstrap_ci(pred, groups, mean_score, ("mean",), n=100, seed=2)
    lo, hi = bootstrap_ci(pred, pd.Series(["one"] * len(pred)), mean_score, ("mean",),
                          n=20)["mean"]
    assert lo == pytest.approx(hi) == pytest.approx(pred["v"].mean())  # one group


def test_level_and_non_finite_resamples() -> None:
    pred, groups = patients()
    wide = bootstrap_ci(pred, groups, mean_score, ("mean",), n=300, level=0.99)["mean"]
    narrow = bootstrap_ci(pred, groups, mean_score, ("mean",), n=300, level=0.5)["mean"]
    assert wide[0] < narrow[0] < narrow[1] < wide[1]

    def nan_with_p0(part: pd.DataFrame) -> dict[str, float]:
        hit = part["id"].str.startswith("P0-").any()
        return {"mean": np.nan if hit else float(part["v"].mean()), "never": np.inf}

    ci = bootstrap_ci(pred, groups, nan_with_p0, ("mean", "never", "absent"), n=200)
    assert np.isfinite(ci["mean"]).all()
    assert all(np.isnan(ci[m]).all() for m in ("never", "absent"))
    no_p0 = pred["v"].iloc[2:]
    assert no_p0.min() <= ci["mean"][0] <= ci["mean"][1] <= no_p0.max()


def test_group_labels_must_match_the_predictions() -> None:
    pred, groups = patients()
    with pytest.raises(ValueError, match="group labels"):
        bootstrap_ci(pred, groups.iloc[:-1], mean_score, ("mean",))


def test_paired_bootstrap_of_a_table_against_itself_is_zero() -> None:
    pred, groups = patients()
    assert paired_bootstrap(pred, pred, groups, mean_score, "mean", n=100) == (0.0, 0.0, 0.0)


def test_paired_bootstrap_shares_the_unpaired_resamples() -> None:
    cand, groups = patients()
    zero = cand.assign(v=0.0)  # the champion scores 0 on every resample
    point, lo, hi = paired_bootstrap(cand, zero, groups, mean_score, "mean", n=200, seed=4)
    assert point == pytest.approx(cand["v"].mean())
    assert (lo, hi) == bootstrap_ci(cand, groups, mean_score, ("mean",), n=200, seed=4)["mean"]


def test_lower_is_better_flips_the_sign() -> None:
    assert {"wer", "cer", "ece"} <= LOWER_IS_BETTER and "auroc" not in LOWER_IS_BETTER
    cand, groups = patients()
    worse = cand.assign(v=cand["v"] + 1.0)

    def score(pred: pd.DataFrame) -> dict[str, float]:
        m = float(pred["v"].mean())
        return {"wer": m, "auroc": m}

    up = paired_bootstrap(worse, cand, groups, score, "auroc", n=100)
    down = paired_bootstrap(worse, cand, groups, score, "wer", n=100)
    assert up[0] == pytest.approx(1.0) and down[0] == pytest.approx(-1.0)
    assert down[1:] == pytest.approx((-1.0, -1.0))  # a constant shift on every resample


def test_subgroups_and_their_table() -> None:
    pred = pd.DataFrame({"id": list("abcdef"), "v": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]})
    manifest = pd.DataFrame({"id": list("abcdeg"),  # f is not in the manifest
                             "site": ["y", "x", "x", "y", "x", "x"],
                             "sex": ["F", None, "M", "M", "F", "F"]})
    table = subgroup_table(pred, manifest, ("site", "sex", "not_there"), mean_score)
    assert table[["attribute", "value", "n"]].values.tolist() == [
        ["site", "x", 3], ["site", "y", 2], ["sex", "F", 2], ["sex", "M", 2]]
    assert table["mean"].tolist() == [10 / 3, 2.5, 3.0, 3.5]
    assert list(table.columns) == ["attribute", "value", "n", "mean", "neg"]
    parts = {(c, v): p for c, v, p in subgroups(pred, manifest, ["sex"])}
    assert parts[("sex", "M")]["id"].tolist() == ["c", "d"]
    assert list(parts[("sex", "M")].columns) == ["id", "v"]  # the predictions' columns only
    assert subgroup_table(pred, manifest, ("not_there",), mean_score).empty
