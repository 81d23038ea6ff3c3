"""Promises of the README that no other module checks: the gate refusing without checks
and on a changed test set, `medml promote` and `medml data validate` as a user runs them,
and accepted validation findings counted on the training run. Real MLflow store, real DVC
repository, real CLI subprocesses."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

from medml import lifecycle, registry
from medml.data.dataset import MANIFEST
from medml.errors import CheckFailed
from medml.settings import DatasetParams, GateParams, Settings

from .conftest import module_settings
from .test_cli import _env, medml

ACCEPTED_TAG = "medml.validation.accepted"


def _leak_one_patient(settings: Settings, name: str) -> str:
    """Move one image of a train patient to the test split; returns the patient id."""
    path = settings.data_dir / name / MANIFEST
    m = pd.read_csv(path, dtype=str)
    patient = m.loc[m["split"] == "train", "patient_id"].iloc[0]
    m.loc[(m["patient_id"] == patient).idxmax(), "split"] = "test"
    m.to_csv(path, index=False)
    return patient


def _params_file(settings: Settings, path: Path) -> Path:
    path.write_text(yaml.safe_dump(settings.model_dump(mode="json",
                                                       exclude={"workspace", "home"})))
    return path


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A clean dataset ``demo`` trained once (validated first, as the flow does) and a
    dataset ``leaky`` (one patient in two splits). Tests add only models and runs of their
    own names; none changes a dataset or an alias another test reads."""
    s = module_settings(tmp_path_factory, "promises")
    lifecycle.create_dataset(s, "imaging", "demo", seed=0)
    ctx = lifecycle.open_run(s, "demo")
    report = lifecycle.validate(ctx, check=True)
    trained = lifecycle.train(ctx, validation_report=str(report.report_path), progress=False)
    evaluated = lifecycle.evaluate(ctx, trained)
    lifecycle.create_dataset(s, "imaging", "leaky", seed=0)
    patient = _leak_one_patient(s, "leaky")
    return {"settings": s, "ctx": ctx, "trained": trained, "evaluated": evaluated,
            "patient": patient}


def _register(store: dict, model: str) -> str:
    return lifecycle.register(store["ctx"], model, store["evaluated"], store["trained"])


# ------------------------------------------------------------------ the gate
def test_a_gate_with_no_check_configured_refuses(store: dict) -> None:
    s = store["settings"]
    version = _register(store, "no-check")
    bare = s.model_copy(deep=True)
    bare.tasks["imaging"].gate = GateParams()  # nothing configured
    decision = lifecycle.promote(bare, "no-check", version, who="tester")
    assert decision.passed is False and decision.checks == []
    assert decision.reasons() == "no check configured"
    assert registry.champion(s, "no-check") is None
    assert registry.alias_history(s, "no-check", "champion") == []
    mv = registry.client_for(s).get_model_version("no-check", version)
    assert mv.tags["gate.passed"] == "False"
    assert mv.tags["gate.decision_id"] == decision.decision_id


def test_promote_refuses_when_the_dataset_changed_since_registration(
        settings: Settings) -> None:
    """Its own store: it re-creates the dataset."""
    first = lifecycle.create_dataset(settings, "imaging", "demo", seed=0)
    ctx = lifecycle.open_run(settings, "demo")
    trained = lifecycle.train(ctx, progress=False)
    version = lifecycle.register(ctx, "frozen", lifecycle.evaluate(ctx, trained), trained)
    client = registry.client_for(settings)
    assert client.get_model_version("frozen", version).tags["dvc_data_hash"] == first.md5

    second = lifecycle.create_dataset(settings, "imaging", "demo", seed=1, overwrite=True)
    assert second.md5 != first.md5
    decision = lifecycle.promote(settings, "frozen", version, who="tester")
    assert decision.passed is False
    frozen = [c for c in decision.checks if c["check"] == "frozen_test_set"]
    assert len(frozen) == 1 and frozen[0]["passed"] is False, decision.checks
    assert frozen[0]["detail"] == {"registered": first.md5, "now": second.md5}
    assert "frozen_test_set" in decision.reasons()
    assert registry.champion(settings, "frozen") is None
    mv = client.get_model_version("frozen", version)
    assert mv.tags["gate.passed"] == "False"
    assert "frozen_test_set" in mv.tags["gate.failed_checks"]


def test_medml_promote_exit_codes_and_champion(store: dict, tmp_path: Path) -> None:
    s = store["settings"]
    v1, v2 = _register(store, "cli-promote"), _register(store, "cli-promote")
    ok_env = _env(s, _params_file(s, tmp_path / "ok.yaml"))
    r = medml(["promote", "cli-promote", "--version", v1, "--by", "tester"], s.workspace,
              ok_env)
    assert r.returncode == 0, r.stderr
    assert f"cli-promote version {v1} is now champion" in r.stdout, r.stdout
    assert str(registry.champion(s, "cli-promote").version) == v1

    strict = s.model_copy(deep=True)
    strict.tasks["imaging"].gate.floors = {"auroc": 1.01}
    strict_env = _env(s, _params_file(strict, tmp_path / "strict.yaml"))
    r = medml(["promote", "cli-promote", "--by", "tester"], s.workspace, strict_env)  # latest
    assert r.returncode == 1, (r.stdout, r.stderr)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert lines[0].startswith(f"error: cli-promote version {v2} not promoted: floor:auroc")
    assert str(registry.champion(s, "cli-promote").version) == v1  # unchanged
    tags = registry.client_for(s).get_model_version("cli-promote", v2).tags
    assert tags["gate.passed"] == "False" and tags["gate.failed_checks"] == "floor:auroc"


# ------------------------------------------------------------------ validation
def test_medml_data_validate_exits_1_listing_the_failures(store: dict,
                                                          tmp_path: Path) -> None:
    s = store["settings"]
    env = _env(s, _params_file(s, tmp_path / "params.yaml"))
    r = medml(["data", "validate", "demo"], s.workspace, env)
    assert r.returncode == 0 and "dataset 'demo' passed validation" in r.stdout, r.stderr

    r = medml(["data", "validate", "leaky"], s.workspace, env)
    assert r.returncode == 1, (r.stdout, r.stderr)
    fails = [ln for ln in r.stdout.splitlines() if ln.startswith("FAIL ")]
    assert len(fails) == 1, r.stdout
    assert "no patient is in more than one split" in fails[0]
    assert store["patient"] in fails[0], fails
    errors = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert errors == ["error: dataset 'leaky' failed 1 validation checks"], r.stderr


def test_the_training_run_counts_accepted_validation_findings(store: dict) -> None:
    s = store["settings"]
    client = registry.client_for(s)
    # a dataset with nothing accepted: 0
    assert client.get_run(store["trained"].run_id).data.tags[ACCEPTED_TAG] == "0"

    leaky = lifecycle.open_run(s, "leaky")
    with pytest.raises(CheckFailed, match=store["patient"]):  # not accepted: refused
        lifecycle.validate(leaky, check=True)
    accepting = s.model_copy(deep=True)
    accepting.datasets = {"leaky": DatasetParams(
        accept={"patient_leak": "a known re-scan of one patient"})}
    ctx = lifecycle.open_run(accepting, "leaky")
    report = lifecycle.validate(ctx, check=True)  # the finding accepted: passes
    assert report.success and len(report.accepted) == 1, report.accepted
    assert store["patient"] in report.accepted[0]
    trained = lifecycle.train(ctx, validation_report=str(report.report_path), progress=False)
    assert client.get_run(trained.run_id).data.tags[ACCEPTED_TAG] == "1"
