"""The run context: a lifecycle run opens its dataset once and hands it along."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from medml import lifecycle
from medml.errors import BadInputError, NotFoundError
from medml.settings import Settings


def test_medml_pipeline_opens_its_dataset_once(settings: Settings, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Through the real CLI command (in this process, so the reads can be counted): the
    dataset's metadata, its manifest and its DVC version (git) are each read once from
    validation to the gate's decision, model card included."""
    import medml.data.versioning as versioning
    from medml.cli import app

    lifecycle.create_dataset(settings, "imaging", "demo", seed=0)
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(settings.model_dump(mode="json",
                                                         exclude={"workspace", "home"})))
    data = settings.data_dir / "demo"
    opens: Counter[str] = Counter()
    read_text, read_csv, git_revision = Path.read_text, pd.read_csv, versioning.git_revision

    def counting_read_text(self: Path, *a, **kw):
        if self.resolve() == (data / "dataset.json").resolve():
            opens["dataset.json"] += 1
        return read_text(self, *a, **kw)

    def counting_read_csv(path, *a, **kw):
        if isinstance(path, str | Path) and Path(path).resolve() == (data / "manifest.csv"
                                                                     ).resolve():
            opens["manifest.csv"] += 1
        return read_csv(path, *a, **kw)

    def counting_git_revision(path):
        opens["git"] += 1
        return git_revision(path)

    monkeypatch.setattr(Path, "read_text", counting_read_text)
    monkeypatch.setattr(pd, "read_csv", counting_read_csv)
    monkeypatch.setattr(versioning, "git_revision", counting_git_revision)
    result = CliRunner().invoke(app, ["pipeline", "--task", "imaging", "--dataset", "demo",
                                      "--model", "counted"],
                                env={"MEDML_WORKSPACE": str(settings.workspace),
                                     "MEDML_HOME": str(settings.state_dir),
                                     "MEDML_PARAMS": str(params)})
    assert result.exit_code == 0, result.output
    assert "counted version 1" in result.output
    assert opens == {"dataset.json": 1, "manifest.csv": 1, "git": 1}


def test_open_run_checks_before_reading(settings: Settings) -> None:
    with pytest.raises(NotFoundError, match=r"dataset 'nope' not found"):
        lifecycle.open_run(settings, "nope")
    lifecycle.create_dataset(settings, "imaging", "demo", seed=0)
    with pytest.raises(BadInputError, match=r"dataset 'demo' belongs to task imaging, not "
                                            r"nlp; run with --task imaging"):
        lifecycle.open_run(settings, "demo", task="nlp")
    with pytest.raises(BadInputError, match=r"unknown task 'x'"):
        lifecycle.open_run(settings, "demo", task="x")
    ctx = lifecycle.open_run(settings, "demo", task="imaging")
    assert (ctx.task.name, ctx.dataset, ctx.data_md5) == ("imaging", "demo", ctx.version.md5)
    ctx.manifest().drop(columns=["label"], inplace=True)  # a step changing its copy ...
    assert "label" in ctx.manifest()  # ... changes nobody else's
    other = ctx.with_settings(settings.model_copy(update={"experiment": "other"}))
    assert other.settings.experiment == "other" and ctx.settings.experiment == "medml"
    assert other.version is ctx.version  # nothing re-read
