"""The speech lifecycle as a user runs it: `medml demo --task speech` (real Prefect, MLflow,
DVC) registers a version with WER metrics; bad audio at import exits 2 with one line and
leaves the stores as they were."""

from __future__ import annotations

import io
import json
from pathlib import Path

import mlflow
import numpy as np
import soundfile as sf
import yaml

from medml.settings import Settings
from tests.test_cli import _env, _store_snapshot, medml
from tests.test_speech_serving import tiny_speech


def _params(settings: Settings, tmp_path: Path) -> Path:
    tp = tiny_speech()
    tp.demo = {**tp.demo, "train": {"epochs": 2}}  # the demo's own override, as in params.yaml
    s = settings.model_copy(update={"tasks": {"speech": tp}})
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(s.model_dump(mode="json", exclude={"workspace", "home"})))
    return path


def test_medml_demo_speech_registers_a_gated_model_with_wer(
        settings: Settings, workspace: Path, tmp_path: Path) -> None:
    env = _env(settings, _params(settings, tmp_path))
    # on a busy machine Prefect's local server can take longer than its default 20 s
    env["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] = "120"
    r = medml(["demo", "--task", "speech"], workspace, env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert (workspace / "data" / "demo-speech.dvc").is_file()
    mlflow.set_tracking_uri(settings.mlflow_uri)
    client = mlflow.MlflowClient(settings.mlflow_uri, settings.mlflow_uri)
    mv = client.get_model_version_by_alias("demo-speech", "champion")
    assert str(mv.version) == "1" and mv.tags["task"] == "speech"
    assert mv.tags["gate.passed"] == "True"
    run = client.get_run(mv.run_id)
    for key in ("test_wer", "test_cer", "test_wer_ci_low", "test_wer_ci_high", "val_wer",
                "train_seconds"):
        assert key in run.data.metrics, key
    assert len(client.get_metric_history(run.info.run_id, "train_loss")) == 2
    table = json.loads(mlflow.artifacts.load_text(f"runs:/{mv.run_id}/eval/subgroups.json"))
    assert "speaker" in [row[0] for row in table["data"]]
    decision = json.loads(mlflow.artifacts.load_text(
        f"runs:/{mv.run_id}/gate/decision-{mv.tags['gate.decision_id']}.json"))
    assert [c["check"] for c in decision["checks"]] == ["ceiling:wer"]
    manifest = (workspace / "data" / "demo-speech" / "manifest.csv").read_text()
    assert "S000" not in manifest, "speaker ids are pseudonymised by the deid stage"


def _wav(x: np.ndarray, sr: int, subtype: str = "PCM_16") -> bytes:
    buf = io.BytesIO()
    sf.write(buf, x, sr, subtype=subtype, format="WAV")
    return buf.getvalue()


def test_bad_speech_imports_exit_2_naming_the_file(settings: Settings, workspace: Path,
                                                   tmp_path: Path) -> None:
    env = _env(settings, _params(settings, tmp_path))
    tone = (0.3 * np.sin(np.arange(4000) / 5)).astype(np.float32)
    good = _wav(tone, 8000)
    cases = {
        "truncated": ({"cut.wav": good[: len(good) // 2]}, "cut.wav"),
        "not audio": ({"notes.wav": b"hello, this is text"}, "notes.wav"),
        "no text": ({"ok.wav": good}, "manifest.jsonl:1"),
    }
    before = _store_snapshot(settings, workspace)
    for k, (name, (files, culprit)) in enumerate(cases.items()):
        src = tmp_path / f"src{k}"
        src.mkdir()
        for fname, data in files.items():
            (src / fname).write_bytes(data)
        line = {"audio": next(iter(files)), "speaker": "a"}
        if name != "no text":
            line["text"] = "stop aspirin"
        (src / "manifest.jsonl").write_text(json.dumps(line) + "\n")
        r = medml(["data", "import", "--task", "speech", "--format", "wav-jsonl", str(src),
                   "--name", f"bad{k}"], workspace, env)
        assert r.returncode == 2, (name, r.stdout, r.stderr)
        lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1 and culprit in lines[0] and "Traceback" not in r.stderr, lines
    fsdd = tmp_path / "fsdd"
    fsdd.mkdir()
    (fsdd / "0_anna_0.wav").write_bytes(good)
    (fsdd / "zero-anna-1.wav").write_bytes(good)
    r = medml(["data", "import", "--task", "speech", "--format", "fsdd", str(fsdd),
               "--name", "badfsdd"], workspace, env)
    assert r.returncode == 2 and "zero-anna-1.wav" in r.stderr, r.stderr
    assert _store_snapshot(settings, workspace) == before
