from __future__ import annotations

from pathlib import Path

import pytest

from medml.errors import BadInputError
from medml.settings import load_settings

from .conftest import ROOT


def test_params_yaml_loads_and_env_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    s = load_settings(ROOT / "params.yaml")
    assert s.task("imaging").train.model == "small_cnn"
    monkeypatch.setenv("MEDML_TASKS__IMAGING__TRAIN__EPOCHS", "3")
    monkeypatch.setenv("MEDML_HOME", "/tmp/elsewhere")
    s = load_settings(ROOT / "params.yaml")
    assert s.task("imaging").train.epochs == 3
    assert s.task("imaging").train.lr == 0.001  # the rest of params.yaml still applies
    assert s.state_dir == Path("/tmp/elsewhere")
    assert s.mlflow_uri == "sqlite:////tmp/elsewhere/mlflow.db"


def test_home_defaults_under_workspace_and_nothing_is_created(tmp_path: Path) -> None:
    s = load_settings(None, workspace=tmp_path)
    assert s.state_dir == tmp_path / ".medml"
    assert s.remote_url == str(tmp_path / ".medml" / "dvc-remote")
    assert not (tmp_path / ".medml").exists()


def test_bad_settings_are_one_line_errors(tmp_path: Path) -> None:
    bad = tmp_path / "p.yaml"
    bad.write_text("tasks:\n  imaging:\n    train:\n      epochs: many\n")
    with pytest.raises(BadInputError, match=r"p.yaml: setting 'tasks.imaging.train.epochs'"):
        load_settings(bad)
    with pytest.raises(BadInputError, match="not found"):
        load_settings(tmp_path / "missing.yaml")
    bad.write_text("profile: [unclosed\n")
    with pytest.raises(BadInputError, match="not valid YAML"):
        load_settings(bad)


def test_importing_medml_touches_nothing(tmp_path: Path) -> None:
    import subprocess
    import sys

    code = ("import medml.cli, medml.lifecycle, medml.settings, medml.tasks.imaging, os; "
            "print(sorted(os.listdir('.')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                         text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_gate_and_accepted_findings_from_params_yaml(monkeypatch: pytest.MonkeyPatch) -> None:
    s = load_settings(ROOT / "params.yaml")
    gate = s.task("imaging").gate
    assert gate.floors["auroc"] > 0 and gate.non_inferiority["auroc"] > 0
    assert "ece" in gate.ceilings and gate.approval is False
    assert "duplicate_examples" in s.datasets["breastmnist"].accept
    monkeypatch.setenv("MEDML_TASKS__IMAGING__GATE__APPROVAL", "true")
    assert load_settings(ROOT / "params.yaml").task("imaging").gate.approval is True


def test_settings_handed_to_a_flow_never_carry_the_masked_key(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from medml.settings import Settings

    monkeypatch.delenv("MEDML_DEID_KEY", raising=False)
    s = load_settings(ROOT / "params.yaml", workspace=tmp_path, deid_key="k" * 32)
    dumped = s.for_flow()
    assert "deid_key" not in dumped and "**********" not in str(dumped)
    again = Settings(**dumped)
    assert again.deid_key is None  # the receiver falls back to MEDML_DEID_KEY / home's key
    assert again.task("imaging") == s.task("imaging") and again.workspace == s.workspace
    monkeypatch.setenv("MEDML_DEID_KEY", "from-the-secret-store")
    assert Settings(**dumped).deid_key.get_secret_value() == "from-the-secret-store"
