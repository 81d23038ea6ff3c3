"""Imaging plug-in: demo data, models, the shared training loop and its resume."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from medml.data.dataset import load_manifest, load_meta, write_dataset
from medml.data.splits import split_manifest
from medml.errors import BadInputError
from medml.tasks import get_task
from medml.tasks.imaging import models
from medml.train import fit

from .conftest import tiny_imaging


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("demo")
    task = get_task("imaging")
    manifest, meta = task.generate(out, {"n_patients": 60, "images_per_patient": [2, 3],
                                         "size": 20}, seed=1, name="demo")
    write_dataset(out, *split_manifest(manifest, meta, seed=1))
    return out


def test_demo_data_is_patient_split_and_brightness_carries_no_class(demo_dir: Path) -> None:
    m = load_manifest(demo_dir)
    assert set(m["split"]) == {"train", "val", "test"}
    assert (m.groupby("patient_id")["split"].nunique() == 1).all()
    assert m.groupby("patient_id").size().min() >= 2
    means = np.array([np.load(demo_dir / p).mean() for p in m["path"]])
    lesion = (m["label"] != "normal").to_numpy()
    # Mean brightness alone does not separate lesion from normal images.
    assert abs(roc_auc_score(lesion, means) - 0.5) < 0.15
    clf = LogisticRegression().fit(means[:, None], m["label"])
    assert clf.score(means[:, None], m["label"]) < 0.5  # ~1/3 for 3 balanced classes


def test_demo_generation_is_deterministic(tmp_path: Path) -> None:
    task = get_task("imaging")
    params = {"n_patients": 6, "images_per_patient": [2, 2], "size": 16}
    a, _ = task.generate(tmp_path / "a", params, seed=3, name="a")
    b, _ = task.generate(tmp_path / "b", params, seed=3, name="b")
    assert a["content_hash"].tolist() == b["content_hash"].tolist()
    assert a["split"].tolist() == b["split"].tolist()


def test_evaluate_logs_a_patient_bootstrap_ci_and_subgroup_table() -> None:
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(30) % 2, 2)  # two images per patient
    p = np.clip(0.3 * y + 0.7 * rng.uniform(size=60), 0, 1)
    pred = pd.DataFrame({"id": [f"i{k}" for k in range(60)], "y": y, "p_benign": 1 - p,
                         "p_malignant": p})
    manifest = pd.DataFrame({"id": pred["id"], "patient_id": [f"P{k // 2}" for k in range(60)],
                             "site": ["a"] * 40 + ["b"] * 20})
    spec = {"classes": ["benign", "malignant"], "positive_class": "malignant"}
    result = get_task("imaging").evaluate(pred, manifest, spec, tiny_imaging())
    import matplotlib.pyplot as plt  # after evaluate: it picks the Agg backend

    for fig in result.figures.values():
        plt.close(fig)
    m = result.metrics
    assert m["auroc"] == pytest.approx(roc_auc_score(y, p))
    assert m["auroc_ci_low"] < m["auroc"] < m["auroc_ci_high"]
    table = result.tables["subgroups.json"]
    assert table[["attribute", "value", "n"]].values.tolist() == [["site", "a", 40],
                                                                  ["site", "b", 20]]
    assert table.loc[1, "auroc"] == pytest.approx(roc_auc_score(y[40:], p[40:]))


@pytest.mark.parametrize("name", ["small_cnn", "resnet18"])
def test_models_take_small_images(name: str) -> None:
    net = models.build(name, in_channels=1, num_classes=3)
    assert net(torch.zeros(2, 1, 28, 28)).shape == (2, 3)


def test_unknown_model_is_a_clear_error() -> None:
    with pytest.raises(BadInputError, match="unknown imaging model 'vgg99'"):
        models.build("vgg99", in_channels=1, num_classes=2)


def _setup(demo_dir: Path, epochs: int):
    task = get_task("imaging")
    params = tiny_imaging()
    params = params.model_copy(update={"train": params.train.model_copy(
        update={"epochs": epochs})})
    meta, manifest = load_meta(demo_dir), load_manifest(demo_dir)
    data = task.datasets(demo_dir, meta, manifest, params)
    _, spec = task.build_model(params, meta, manifest)
    return task, data, spec, params


def test_training_resumes_to_the_same_weights_as_an_unbroken_run(demo_dir: Path,
                                                                  tmp_path: Path) -> None:
    task, data, spec, params = _setup(demo_dir, epochs=3)
    whole = fit(task, data, spec, params.train, tmp_path / "whole", progress=False)

    class Killed(Exception):
        pass

    def die_after_two(epoch: int, metrics: dict) -> None:
        if epoch == 2:
            raise Killed

    task, data, spec, params = _setup(demo_dir, epochs=3)
    with pytest.raises(Killed):
        fit(task, data, spec, params.train, tmp_path / "broken", on_epoch=die_after_two,
            progress=False)
    assert (tmp_path / "broken" / "last.pt").is_file()
    task, data, spec, params = _setup(demo_dir, epochs=3)
    resumed = fit(task, data, spec, params.train, tmp_path / "broken", progress=False)
    assert resumed.resumed_from == 2 and whole.resumed_from is None
    a = torch.load(whole.bundle_path, weights_only=False)["state_dict"]
    b = torch.load(resumed.bundle_path, weights_only=False)["state_dict"]
    for k in a:
        torch.testing.assert_close(a[k], b[k])
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3]
    assert np.isfinite(resumed.history[-1]["val_auroc"])


def test_weight_averaging_changes_the_final_weights(demo_dir: Path, tmp_path: Path) -> None:
    task, data, spec, params = _setup(demo_dir, epochs=3)
    plain = fit(task, data, spec, params.train, tmp_path / "plain", progress=False)
    task, data, spec, params = _setup(demo_dir, epochs=3)
    params.train.average_from = 0.3
    avg = fit(task, data, spec, params.train, tmp_path / "avg", progress=False)
    a = torch.load(plain.bundle_path, weights_only=False)["state_dict"]
    b = torch.load(avg.bundle_path, weights_only=False)["state_dict"]
    assert a.keys() == b.keys()  # the averaged model saves like a plain one
    assert any(not torch.equal(a[k], b[k]) for k in a if a[k].is_floating_point())
    net = task.rebuild_model(spec)
    net.load_state_dict(b)


def test_keep_best_stops_early_and_keeps_the_best_val_epoch(demo_dir: Path,
                                                            tmp_path: Path) -> None:
    task, data, spec, params = _setup(demo_dir, epochs=30)
    params.train.keep, params.train.patience = "best", 2
    params.train.lr = 0.5  # too high: val AUROC cannot keep improving for 30 epochs
    out = fit(task, data, spec, params.train, tmp_path / "best", progress=False)
    vals = [h["val_auroc"] for h in out.history]
    best_epoch = int(np.nanargmax(vals)) + 1
    assert out.epochs == len(vals) < 30  # stopped early
    assert out.epochs - best_epoch == 2  # exactly `patience` epochs without gain
    ck = torch.load(tmp_path / "best" / "last.pt", weights_only=False)
    kept = torch.load(out.bundle_path, weights_only=False)["state_dict"]
    for k, v in ck["best"]["state"].items():
        torch.testing.assert_close(kept[k], v)
    assert ck["best"]["epoch"] == best_epoch
    assert out.kept_epoch == best_epoch and out.kept()["val_auroc"] == np.nanmax(vals)
    assert any(not torch.equal(kept[k], ck["model"][k]) for k in kept
               if kept[k].is_floating_point())  # not the last epoch's weights
