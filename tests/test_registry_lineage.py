"""Alias history, rollback, lineage and its verification on a real MLflow store and a real
DVC repository: three tiny imaging versions, v1 promoted, v2 refused, v3 promoted."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

from medml import lifecycle, lineage, modelcard, registry
from medml.errors import MedMLError, NotFoundError
from medml.settings import Settings

from .conftest import flip_byte, module_settings

MODEL = "lin-model"


def _register(settings: Settings, report: str) -> str:
    run = lifecycle.open_run(settings, "demo")
    trained = lifecycle.train(run, validation_report=report, progress=False)
    evaluated = lifecycle.evaluate(run, trained)
    version = lifecycle.register(run, MODEL, evaluated, trained)
    mv = registry.client_for(settings).get_model_version(MODEL, version)
    assert mv.tags[lineage.MODEL_SHA_TAG], "register records the model artifact's hash"
    assert registry.client_for(settings).download_artifacts(mv.run_id, modelcard.CARD)
    return version


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory):
    """One workspace and store for the module (training three models once keeps it fast)."""
    settings = module_settings(tmp_path_factory, "lineage")
    lifecycle.create_dataset(settings, "imaging", "demo", seed=0)
    report = str(lifecycle.validate(lifecycle.open_run(settings, "demo"), check=True).report_path)
    marks = {"start": datetime.now(UTC)}
    v1 = _register(settings, report)
    d1 = lifecycle.promote(settings, MODEL, v1, who="alice")
    marks["after_v1"] = datetime.now(UTC)
    strict = settings.model_copy(deep=True)
    strict.tasks["imaging"].gate.floors = {"auroc": 1.01}
    v2 = _register(settings, report)
    d2 = lifecycle.promote(strict, MODEL, v2, who="bob")
    v3 = _register(settings, report)
    d3 = lifecycle.promote(settings, MODEL, v3, who="carol")
    assert (v1, v2, v3) == ("1", "2", "3")
    assert d1.passed and not d2.passed and d3.passed
    yield {"settings": settings, "marks": marks, "decisions": [d1, d2, d3]}


def test_alias_history_is_ordered_and_answers_served_at(store) -> None:
    s = store["settings"]
    history = registry.alias_history(s, MODEL)
    assert [h["seq"] for h in history] == list(range(1, len(history) + 1))
    moves = [(h["alias"], h["from_version"], h["to_version"]) for h in history]
    assert moves == [("challenger", None, "1"), ("champion", None, "1"),
                     ("challenger", "1", "2"), ("challenger", "2", "3"),
                     ("champion", "1", "3")]
    champ = registry.alias_history(s, MODEL, "champion")
    assert [h["who"] for h in champ] == ["alice", "carol"]
    assert [h["decision_id"] for h in champ] == [store["decisions"][0].decision_id,
                                                 store["decisions"][2].decision_id]
    assert all(h["why"].startswith("gate passed") for h in champ)

    marks = store["marks"]
    assert registry.served_at(s, MODEL, marks["start"]) is None
    assert registry.served_at(s, MODEL, datetime.fromisoformat(champ[0]["at"])) == "1"
    assert registry.served_at(s, MODEL, marks["after_v1"]) == "1"
    assert registry.served_at(s, MODEL, datetime.now(UTC)) == "3"
    assert registry.served_at(s, MODEL, datetime.now(UTC), alias="challenger") == "3"
    with pytest.raises(NotFoundError, match="not registered"):
        registry.alias_history(s, "no-such-model")
    with pytest.raises(NotFoundError, match="no version 99"):
        registry.set_alias(s, MODEL, "champion", "99", who="x", why="typo")
    assert registry.alias_history(s, MODEL) == history  # a refused move leaves no trace


def test_lineage_of_the_champion_lists_decisions_and_history(store) -> None:
    s = store["settings"]
    data = lineage.collect(s, f"{MODEL}@champion")
    assert data["model"]["version"] == "3"
    assert data["model"]["aliases"] == ["challenger", "champion"]
    assert data["model"]["artifact_sha256"]
    assert data["code"]["git_commit"] and data["data"]["dvc_md5"]
    assert data["data"]["dataset"] == "demo" and data["data"]["validation"]["success"] is True
    assert data["data"]["patient_level_split"] is True and data["data"]["deidentified"]
    assert data["data"]["split_note"] == "split by patient, stratified by label"
    assert data["environment"]["python"] and "torch" in data["environment"]["packages"]
    auroc = data["metrics"]["test"]["auroc"]
    assert auroc["value"] is not None and "ci_low" in auroc and "ci_high" in auroc
    assert data["metrics"]["subgroups"], "per-subgroup metrics"
    ids = [d.decision_id for d in store["decisions"]]
    assert [g["decision_id"] for g in data["gate_decisions"]] == ids
    assert [(g["version"], g["passed"]) for g in data["gate_decisions"]] == [
        ("1", True), ("2", False), ("3", True)]
    assert [h["seq"] for h in data["alias_history"]] == [1, 2, 3, 4, 5]
    assert [(d["version"], d["from_version"]) for d in data["deployments"]] == [
        ("1", None), ("3", "1")]
    assert data["model_card_text"].startswith(f"# Model card: {MODEL} version 3")
    for section in ("## Intended use", "## Data", "95% CI", "## Subgroups",
                    "## Gate decision", "## Limitations", "synthetic demo data"):
        assert section in data["model_card_text"], section

    assert json.loads(lineage.render(data, "json"))["model"]["version"] == "3"
    md = lineage.render(data, "md")
    assert "- **split**: split by patient, stratified by label" in lineage.render(data, "md")
    for title in ("Model version", "Run", "Code", "Environment", "Data", "Metrics",
                  "Gate decisions", "Alias history", "Deployments", "Model card"):
        assert f"## {title}" in md, title
    assert md.index(ids[1]) < md.index(ids[2])  # v2's refusal, then v3's promotion
    page = lineage.render(data, "html")
    assert page.startswith("<!DOCTYPE html>") and "floor:auroc" in page
    assert lineage.collect(s, f"{MODEL}/2")["model"]["aliases"] == []
    with pytest.raises(MedMLError, match="unknown lineage format"):
        lineage.render(data, "pdf")


def test_verify_names_a_changed_data_file_and_a_changed_model_file(
        store, monkeypatch: pytest.MonkeyPatch) -> None:
    s = store["settings"]
    ref = f"{MODEL}@champion"
    assert lineage.verify(s, ref) == []

    image = s.data_dir / "demo" / "images" / "P0003-1.npy"
    original = flip_byte(image)
    try:
        problems = lineage.verify(s, ref)
        with monkeypatch.context() as mp:  # no DVC listing at hand: the manifest's hashes
            mp.setattr("medml.data.versioning.registered_listing", lambda *a: None)
            fallback = lineage.verify(s, ref)
    finally:
        image.write_bytes(original)
    assert any("content hash" in p for p in problems), problems
    assert "data: demo/images/P0003-1.npy changed" in problems
    assert not any(p.startswith("model:") for p in problems)
    assert "data: demo/images/P0003-1.npy changed" in fallback

    mv = registry.resolve(s, ref)
    location = registry.client_for(s).get_model_version_download_uri(MODEL, mv.version)
    model_dir = Path(unquote(urlparse(location).path))
    assert s.artifact_root in model_dir.parents
    bundle = next(model_dir.rglob("bundle.pt"))
    original = flip_byte(bundle)
    try:
        problems = lineage.verify(s, ref)
    finally:
        bundle.write_bytes(original)
    rel = bundle.relative_to(model_dir).as_posix()
    assert f"model: {rel} changed" in problems, problems
    assert not any(p.startswith("data:") for p in problems)
    assert lineage.verify(s, ref) == []


@pytest.fixture
def promoted_twice(settings: Settings) -> Settings:
    """A store of its own (rollback moves the champion, which the module's store must keep):
    two versions of one training run, champion 1 then 2, each move in the alias history."""
    lifecycle.create_dataset(settings, "imaging", "demo", seed=0)
    run = lifecycle.open_run(settings, "demo")
    trained = lifecycle.train(run, progress=False)
    evaluated = lifecycle.evaluate(run, trained)
    for who in ("alice", "carol"):
        version = lifecycle.register(run, MODEL, evaluated, trained)
        registry.set_alias(settings, MODEL, "champion", version, who=who, why="promoted")
    return settings


def test_rollback_moves_champion_back_and_refuses_without_a_previous_one(
        promoted_twice: Settings) -> None:
    s = promoted_twice
    event = registry.rollback(s, MODEL, who="dr.who", why="<script>alert(1)</script>")
    assert (event["from_version"], event["to_version"], event["action"]) == ("2", "1",
                                                                            "rollback")
    client = registry.client_for(s)
    assert str(client.get_model_version_by_alias(MODEL, "champion").version) == "1"
    assert registry.alias_history(s, MODEL)[-1] == event
    assert registry.served_at(s, MODEL, datetime.now(UTC) + timedelta(seconds=1)) == "1"
    # v1 was the first champion: a second rollback never goes back to the rolled-back v2
    with pytest.raises(MedMLError, match="no previous champion"):
        registry.rollback(s, MODEL, who="dr.who")
    page = lineage.render(lineage.collect(s, f"{MODEL}@champion"), "html")
    assert "&lt;script&gt;" in page and "<script>" not in page

    client.create_registered_model("never-promoted")
    client.create_model_version("never-promoted", client.get_model_version(MODEL, "1").source)
    with pytest.raises(MedMLError, match="has no champion"):
        registry.rollback(s, "never-promoted")
