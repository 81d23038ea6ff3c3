"""Data-parallel training (DDP through torchrun, gloo on CPU) and its sharding."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pytest
import torch

from flows.lifecycle import lifecycle_flow
from medml import lifecycle
from medml.settings import Settings
from medml.train import _shard


@pytest.mark.parametrize("n", [10, 11, 64])
def test_ranks_together_take_the_single_process_batches(n: int) -> None:
    """Batch i of every rank, together: the examples of batch i of one process."""
    world, per_rank = 2, 3
    single = _shard(n, torch.Generator().manual_seed(7), 0, 1)
    assert sorted(single) == list(range(n))
    shards = [_shard(n, torch.Generator().manual_seed(7), r, world) for r in range(world)]
    assert len(shards[0]) == len(shards[1]) == (n + 1) // 2
    for i in range(0, n // (world * per_rank)):
        both = shards[0][i * per_rank:(i + 1) * per_rank] + \
            shards[1][i * per_rank:(i + 1) * per_rank]
        assert sorted(both) == sorted(single[i * world * per_rank:(i + 1) * world * per_rank])
    assert set(shards[0]) | set(shards[1]) == set(range(n))  # padding repeats, drops nothing


def _runs(settings: Settings) -> list:
    mlflow.set_tracking_uri(settings.mlflow_uri)
    client = mlflow.MlflowClient(settings.mlflow_uri, settings.mlflow_uri)
    exp = client.get_experiment_by_name(settings.experiment)
    return client.search_runs([exp.experiment_id]) if exp else []


def test_ddp_on_two_gloo_processes_gives_one_run_one_version_close_metrics(
        settings: Settings, workspace: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    imaging = settings.tasks["imaging"]  # enough to learn: a comparison of learnt models
    # Per-image normalisation, no dropout, no augmentation: nothing depends on how a batch
    # is cut between ranks or on per-rank random streams, so DDP must follow the single
    # process up to the order of floating-point sums.
    imaging.train.epochs, imaging.train.augment = 10, False
    imaging.train.model_args = {"channels": [8, 16], "norm": "INSTANCE", "dropout": 0.0}
    imaging.data["image_size"] = 20
    imaging.demo["n_patients"] = 60
    lifecycle.create_dataset(settings, "imaging", "demo", seed=0)
    single = lifecycle_flow(settings=settings.model_dump(mode="json"), dataset="demo",
                            model="single")
    before = {r.info.run_id for r in _runs(settings)}

    # What rank 0 reports of the process group it trained in (dist.get_world_size(), in
    # the outcome file beside the checkpoints, read here before the release removes them).
    from medml import distributed
    worlds = []

    def launch(job: dict, checkpoint_dir: Path, nproc: int):
        outcome = real_launch(job, checkpoint_dir, nproc)
        worlds.append(json.loads((Path(checkpoint_dir) / distributed.OUTCOME).read_text())[
            "world_size"])
        return outcome

    real_launch = distributed.launch
    monkeypatch.setattr(distributed, "launch", launch)
    ddp = settings.model_copy(deep=True)
    ddp.tasks["imaging"].train.nproc = 2
    result = lifecycle_flow(settings=ddp.model_dump(mode="json"), dataset="demo",
                            model="ddp")
    new = [r for r in _runs(ddp) if r.info.run_id not in before]
    assert [r.info.run_id for r in new] == [result["run_id"]]  # ranks 1.. made no run
    client = mlflow.MlflowClient(ddp.mlflow_uri, ddp.mlflow_uri)
    versions = client.search_model_versions("name='ddp'")
    assert [(str(v.version), v.run_id) for v in versions] == [("1", result["run_id"])]
    run = client.get_run(result["run_id"])
    assert run.data.params["train.nproc"] == "2"  # the setting asked for; what ran:
    assert worlds == [2]  # one launch, and two ranks really trained together
    losses = client.get_metric_history(result["run_id"], "train_loss")
    # rank 0 logged each epoch once
    assert sorted(m.step for m in losses) == list(range(1, imaging.train.epochs + 1))

    # Same seed, same global batches, nothing batch- or rank-dependent in the model: the
    # data-parallel run follows the single process up to floating-point summation order.
    base = client.get_run(single["run_id"]).data.metrics
    single_losses = {m.step: m.value for m in
                     client.get_metric_history(single["run_id"], "train_loss")}
    for m in losses:
        assert m.value == pytest.approx(single_losses[m.step], rel=1e-4), m.step
    for key in ("test_auroc", "test_accuracy", "test_ece"):
        assert run.data.metrics[key] == pytest.approx(base[key], abs=1e-3), key
    assert base["test_auroc"] > 0.6  # a model that learnt something, not two flat ones


@pytest.mark.parametrize("nproc", [1, 2])
def test_diverged_training_stops_with_one_line_naming_the_setting(
        settings: Settings, nproc: int) -> None:
    """NaN weights stop training at once, in one process or in DDP ranks (the caller raises
    the ranks' error, not torchrun's), the run is FAILED and no bundle is written."""
    from medml.errors import TrainingDiverged

    imaging = settings.tasks["imaging"]
    imaging.train.lr, imaging.train.epochs, imaging.train.nproc = 1e30, 3, nproc
    lifecycle.create_dataset(settings, "imaging", "demo", seed=0)
    with pytest.raises(TrainingDiverged, match=r"^training diverged in epoch 1: the weights "
                       r"are no longer finite .*; lower tasks.imaging.train.lr \(now 1e\+30\)"):
        lifecycle.train(lifecycle.open_run(settings, "demo"))
    [run] = _runs(settings)
    assert run.info.status == "FAILED"
    assert "train_loss" not in run.data.metrics  # the diverged epoch is not logged ...
    assert not any(settings.checkpoint_dir.iterdir())  # ... nor kept: resuming would diverge


def test_an_epoch_without_one_finite_loss_stops_training(settings: Settings) -> None:
    """fp16 loss scaling skips the steps of non-finite losses, so the weights stay finite:
    an epoch where no batch had a finite loss stops training all the same."""
    from medml.errors import TrainingDiverged
    from medml.tasks import get_task
    from medml.train import fit

    lifecycle.create_dataset(settings, "imaging", "demo", seed=0)
    ds = lifecycle.open_run(settings, "demo")
    params = settings.task("imaging")
    params.train.epochs = 2

    class NanLoss(type(get_task("imaging"))):
        def loss(self, net, batch, device):  # a NaN with zero (finite) gradients
            return super().loss(net, batch, device) * 0 + float("nan")

    task = NanLoss()
    _, spec = task.build_model(params, ds.meta, ds.manifest())
    with pytest.raises(TrainingDiverged, match=r"^training diverged in epoch 1: no batch "
                                               r"had a finite loss \(train loss nan\)"):
        fit(task, task.datasets(ds.path, ds.meta, ds.manifest(), params), spec, params.train,
            settings.checkpoint_dir / "nan", progress=False)


def test_a_ranks_error_file_comes_back_as_its_type_or_not_at_all(tmp_path: Path) -> None:
    from medml.distributed import _rank_error, _write_rank_error
    from medml.errors import BadInputError, MedMLError, TrainingDiverged

    path = tmp_path / "ddp-error.json"
    assert _rank_error(path) is None  # none written
    _write_rank_error(path, TrainingDiverged("epoch 3"), 1)
    err = _rank_error(path)
    assert type(err) is TrainingDiverged and str(err) == "epoch 3"
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left
    path.write_text('{"type": "BadInputErr')  # cut short: the caller falls back to stderr
    assert _rank_error(path) is None
    path.write_text('{"type": "ValueError", "message": "x"}')  # never a non-medml type
    assert type(_rank_error(path)) is MedMLError
    path.write_text('{"type": "BadInputError", "message": "row 3"}')
    assert type(_rank_error(path)) is BadInputError
