"""Hyperparameter search: Optuna trials in parallel on a Prefect Dask task runner, nested
MLflow runs, the best trial through the gate (real Prefect, Dask, MLflow and DVC)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import dask.config
import mlflow
import pytest

from flows.tune import run
from medml import lifecycle, tune
from medml.errors import BadInputError, TrainingDiverged
from medml.settings import Settings


def test_space_and_overrides_are_checked_before_any_run(settings: Settings) -> None:
    with pytest.raises(BadInputError, match=r"tune.space.lr: give a list of choices"):
        tune._distributions({"lr": 0.1})
    with pytest.raises(BadInputError, match=r"tune.space.learning_rate: not a train setting"):
        tune.apply_overrides(settings, "imaging", {"learning_rate": 0.1})
    cfg = tune.apply_overrides(settings, "imaging", {"lr": 0.01, "model_args.dropout": 0.3},
                               threads=1)
    train = cfg.task("imaging").train
    assert (train.lr, train.model_args["dropout"], train.threads) == (0.01, 0.3, 1)
    assert train.model_args["channels"] == [8, 16]  # the other constructor args stay
    assert settings.task("imaging").train.lr != 0.01  # the original settings are unchanged


def test_trial_workers_start_without_dasks_malloc_trim_threshold() -> None:
    """Dask's nanny sets MALLOC_TRIM_THRESHOLD_=65536 for its workers, which made training
    about 1.6x slower there; the tune flow's runner leaves it out (and only while it runs)."""
    import dask.config
    from distributed import Client, LocalCluster

    from flows.tune import dask_runner

    with (dask_runner(1) as runner, LocalCluster(**runner.cluster_kwargs) as cluster,
          Client(cluster) as client):
        seen = client.run(lambda: (os.environ.get("MALLOC_TRIM_THRESHOLD_"), os.getpid()))
    assert len(seen) == 1
    (trim, pid), = seen.values()
    assert pid != os.getpid()  # a real worker process, started by the nanny
    assert trim is None
    assert dask.config.get("distributed.nanny.pre-spawn-environ")["MALLOC_TRIM_THRESHOLD_"]


RENDEZVOUS_S = 300  # only a failing (sequential) search waits this long
RENDEZVOUS = """
import json, os, time
from pathlib import Path

def dask_setup(worker):
    from medml import tune

    original = tune.run_trial

    def run_trial(*args, **kwargs):
        meet, t0 = Path({dir!r}), time.monotonic()
        (meet / f"arrived-{{os.getpid()}}").touch()
        while len(list(meet.glob("arrived-*"))) < 2 and time.monotonic() - t0 < {wait_s}:
            time.sleep(0.05)
        (meet / f"started-{{os.getpid()}}").write_text(json.dumps({{
            "pid": os.getpid(), "waited_s": time.monotonic() - t0,
            "arrived": sorted(p.name for p in meet.glob("arrived-*"))}}))
        return original(*args, **kwargs)

    tune.run_trial = run_trial
"""


def test_trials_run_in_parallel_as_nested_runs_and_the_best_goes_to_the_gate(
        settings: Settings, workspace: Path, tmp_path: Path) -> None:
    imaging = settings.tasks["imaging"]
    imaging.tune.space = {"lr": [0.0001, 0.003]}
    imaging.tune.sampler, imaging.tune.trials, imaging.tune.parallel = "grid", 2, 2
    imaging.train.epochs = 3
    lifecycle.create_dataset(settings, "imaging", "demo", seed=0)

    # A rendezvous, not a stopwatch: each Dask worker (through a worker preload) wraps
    # medml.tune.run_trial so that a trial notes its arrival and starts only once the
    # other trial has arrived too (or RENDEZVOUS_S has passed). Trials submitted together
    # meet at once, however loaded the machine; trials run one after another never meet.
    meet = tmp_path / "rendezvous"
    meet.mkdir()
    preload = tmp_path / "rendezvous_preload.py"
    preload.write_text(RENDEZVOUS.format(dir=str(meet), wait_s=RENDEZVOUS_S))
    with dask.config.set({"distributed.worker.preload": [str(preload)]}):
        result = run(settings, "demo", "tuned", "imaging")

    client = mlflow.MlflowClient(settings.mlflow_uri, settings.mlflow_uri)
    parent = client.get_run(result["parent_run_id"])
    assert parent.info.status == "FINISHED" and parent.data.tags["medml.tune"] == "parent"
    met = {p.name: json.loads(p.read_text()) for p in meet.glob("started-*")}
    assert len(met) == 2, met  # both trials went through the wrapper
    for name, seen in met.items():  # each started only after the other had arrived
        assert len(seen["arrived"]) == 2, f"{name} waited {seen['waited_s']:.0f} s alone"
    exp = parent.info.experiment_id
    children = client.search_runs(
        [exp], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert len(children) == 2
    assert sorted(float(c.data.params["train.lr"]) for c in children) == [0.0001, 0.003]
    # Each trial trained in its own Dask worker process, at the same time as the other.
    pids = {t["pid"] for t in result["trials"]}
    assert len(pids) == 2 and os.getpid() not in pids
    assert {seen["pid"] for seen in met.values()} == pids  # the trials' own processes

    # The best trial by val AUROC (never the test split) is the registered champion.
    best = max(result["trials"], key=lambda t: (t["value"], -t["number"]))
    assert result["run_id"] == best["run_id"] == parent.data.tags["medml.tune.best_run_id"]
    for c in children:
        assert c.data.metrics["val_auroc"] == pytest.approx(
            next(t["value"] for t in result["trials"] if t["run_id"] == c.info.run_id))
    mv = client.get_model_version_by_alias("tuned", "champion")
    assert mv.run_id == best["run_id"] and mv.tags["gate.passed"] == "True"
    assert "test_auroc" in client.get_run(best["run_id"]).data.metrics
    loser = next(c for c in children if c.info.run_id != best["run_id"])
    assert "test_auroc" not in loser.data.metrics  # only the winner sees the test split
    names = {a.path for a in client.list_artifacts(parent.info.run_id, "tune")}
    assert {"tune/trials.json", "tune/best.json"} <= names


def test_a_diverging_trial_fails_alone_and_the_search_goes_on(
        settings: Settings, workspace: Path) -> None:
    imaging = settings.tasks["imaging"]
    imaging.tune.space = {"lr": [1e30, 0.003]}  # trial 0's weights turn NaN in epoch 1
    imaging.tune.sampler, imaging.tune.trials, imaging.tune.parallel = "grid", 2, 1
    imaging.train.epochs = 2
    lifecycle.create_dataset(settings, "imaging", "demo", seed=0)

    result = run(settings, "demo", "tuned", "imaging")

    failed, good = sorted(result["trials"], key=lambda t: t["number"])
    assert failed["value"] is None and failed["error"].startswith("training diverged in epoch 1")
    assert good["value"] is not None and result["run_id"] == good["run_id"]
    client = mlflow.MlflowClient(settings.mlflow_uri, settings.mlflow_uri)
    run_ = client.get_run(failed["run_id"])
    assert run_.info.status == "FAILED" and run_.data.params["train.lr"] == "1e+30"
    assert run_.data.tags["medml.tune.error"] == failed["error"]
    assert run_.data.tags["mlflow.parentRunId"] == result["parent_run_id"]
    assert client.get_run(result["parent_run_id"]).info.status == "FINISHED"
    assert client.get_model_version_by_alias("tuned", "champion").run_id == good["run_id"]

    # The same search again: its trials are new runs under its own parent (the diverged
    # trial's checkpoints are gone, and a trial's checkpoints belong to its search).
    again = run(settings, "demo", "tuned", "imaging")
    failed2 = next(t for t in again["trials"] if t["number"] == 0)
    assert failed2["run_id"] not in (failed["run_id"], good["run_id"])
    assert again["run_id"] not in (failed["run_id"], good["run_id"])
    assert client.get_run(failed2["run_id"]).data.tags["mlflow.parentRunId"] \
        == again["parent_run_id"]
    assert not any(settings.checkpoint_dir.iterdir())  # nothing left behind


def test_a_search_whose_trials_all_diverge_names_the_first_error(settings: Settings) -> None:
    study = tune.Study.__new__(tune.Study)
    study.dataset, study.results = "demo", [
        tune.TrialResult(n, {"lr": 1e30}, f"r{n}", None, None, error=f"diverged {n}")
        for n in range(2)]
    with pytest.raises(TrainingDiverged, match=r"all 2 trials of dataset 'demo' failed; "
                                               r"trial 0: diverged 0"):
        study.best()



def test_a_trial_never_resumes_another_trial(settings: Settings) -> None:
    """A killed search leaves its trials' checkpoints; the same settings in the next search,
    or twice in one search (samplers repeat choices), are new runs with checkpoints of
    their own, while a plain re-run still resumes."""
    settings.tasks["imaging"].train.epochs = 1
    lifecycle.create_dataset(settings, "imaging", "demo", seed=0)
    client = mlflow.MlflowClient(settings.mlflow_uri, settings.mlflow_uri)
    from medml import tracking

    exp = tracking.configure(settings)
    p1, p2 = (client.create_run(exp).info.run_id for _ in range(2))
    t1 = lifecycle.train(lifecycle.open_run(settings, "demo"), parent_run_id=p1, progress=False,
                         run_name="trial-0")
    t2 = lifecycle.train(lifecycle.open_run(settings, "demo"), parent_run_id=p2, progress=False,
                         run_name="trial-0")
    assert t1.run_id != t2.run_id and t2.resumed_from is None
    assert client.get_run(t2.run_id).data.tags["mlflow.parentRunId"] == p2
    t3 = lifecycle.train(lifecycle.open_run(settings, "demo"), parent_run_id=p2, progress=False,
                         run_name="trial-1")
    assert t3.run_id != t2.run_id and t3.checkpoint_dir != t2.checkpoint_dir
    plain = lifecycle.train(lifecycle.open_run(settings, "demo"), progress=False)
    again = lifecycle.train(lifecycle.open_run(settings, "demo"), progress=False)
    assert again.run_id == plain.run_id
