"""CUDA path of the trainer (mixed precision, pinned memory). Run with `pytest -m gpu`."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from medml.data.dataset import load_manifest, load_meta, write_dataset
from medml.data.splits import split_manifest
from medml.tasks import get_task
from medml.train import fit, pick_device

from .conftest import tiny_imaging

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


def test_fit_on_cuda_with_amp_then_resume(tmp_path: Path) -> None:
    task = get_task("imaging")
    manifest, meta = task.generate(tmp_path / "d", {"n_patients": 12, "size": 16}, 0, "d")
    write_dataset(tmp_path / "d", *split_manifest(manifest, meta))
    params = tiny_imaging()
    params.train.device = "cuda"
    params.train.epochs = 3
    meta, manifest = load_meta(tmp_path / "d"), load_manifest(tmp_path / "d")
    data = task.datasets(tmp_path / "d", meta, manifest, params)
    _, spec = task.build_model(params, meta, manifest)
    assert pick_device("auto").type == "cuda"
    out = fit(task, data, spec, params.train, tmp_path / "ck", progress=False)
    state = torch.load(out.bundle_path, weights_only=False)["state_dict"]
    assert all(v.device.type == "cpu" for v in state.values())  # bundles load anywhere
    again = fit(task, data, spec, params.train, tmp_path / "ck", progress=False)
    assert again.resumed_from == 3
