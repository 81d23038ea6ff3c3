"""`medml serve` with a speech model: a real uvicorn server on a real MLflow store with a
tiny speech model trained and registered by the lifecycle functions; WAV uploads in,
transcripts out, 4xx for bad audio."""

from __future__ import annotations

import base64
import io

import httpx
import numpy as np
import pytest
import soundfile as sf

from medml import lifecycle, registry
from medml.serving import create_app
from medml.settings import GateParams, Settings, TaskParams, load_settings
from tests.conftest import ROOT, module_settings
from tests.test_serving import Server

MODEL = "speech-serve"


def tiny_speech() -> TaskParams:
    """The real speech settings, shrunk: a few synthetic utterances, a tiny model, 1 epoch."""
    base = load_settings(ROOT / "params.yaml").task("speech")
    return base.model_copy(update={
        "train": base.train.model_copy(update={
            "epochs": 1, "batch_size": 8, "threads": 1, "patience": None,
            "model_args": {"conv_channels": 16, "hidden": 16, "layers": 1, "time_stride": 3}}),
        "demo": {"n_speakers": 6, "utterances_per_speaker": 3, "n_phrases": 30},
        "gate": GateParams(ceilings={"wer": 1.01}),  # tiny models: the gate's plumbing only
    })


def wav(x: np.ndarray, sr: int) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, x, sr, subtype="PCM_16", format="WAV")
    return buf.getvalue()


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    s = module_settings(tmp_path_factory, "speech-serving")
    s = s.model_copy(update={"tasks": {**s.tasks, "speech": tiny_speech()}})
    lifecycle.create_dataset(s, "speech", "demo", seed=0)
    run = lifecycle.open_run(s, "demo")
    trained = lifecycle.train(run, progress=False)
    evaluated = lifecycle.evaluate(run, trained)
    version = lifecycle.register(run, MODEL, evaluated, trained)
    registry.set_alias(s, MODEL, "champion", version, who="test", why="speech serving test")
    return s


@pytest.fixture(scope="module")
def client(store: Settings):
    srv = Server(create_app(store, MODEL, max_body_bytes=8 * 1024 * 1024, poll_s=30))
    try:
        srv.wait_ready()
        with httpx.Client(base_url=srv.url, timeout=60) as c:
            yield c
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def utterance(store: Settings) -> bytes:
    folder = store.data_dir / "demo" / "audio"
    return sorted(folder.glob("*.wav"))[0].read_bytes()


def test_wav_upload_raw_multipart_and_base64_are_transcribed(client: httpx.Client,
                                                             utterance: bytes) -> None:
    x, sr = sf.read(io.BytesIO(utterance), dtype="float32")
    from scipy.signal import resample_poly

    stereo44 = wav(np.stack([resample_poly(x, 441, 160)] * 2, axis=1), 44100)
    answers = [
        client.post("/predict", content=utterance, headers={"content-type": "audio/wav"}),
        client.post("/predict", files=[("file", ("a.wav", utterance, "audio/wav")),
                                       ("file", ("b.wav", stereo44, "audio/x-wav"))]),
        client.post("/predict", json={"inputs": [base64.b64encode(utterance).decode()]}),
    ]
    for r in answers:
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["model"] == MODEL and body["model_version"] == "1"
        for p in body["predictions"]:
            assert set(p) == {"text", "duration_s"} and isinstance(p["text"], str)
    assert len(answers[1].json()["predictions"]) == 2
    dur = [p["duration_s"] for p in answers[1].json()["predictions"]]
    assert dur[0] == pytest.approx(dur[1], abs=0.01)  # 44.1 kHz stereo: same length
    assert answers[0].json()["predictions"] == answers[2].json()["predictions"][:1]


def test_bad_audio_is_4xx_with_one_line(client: httpx.Client, utterance: bytes) -> None:
    long = wav(np.zeros(61 * 16000, np.float32), 16000)
    cases = {
        "truncated": (utterance[: len(utterance) // 2], 422, "truncated"),
        "zero-length": (b"", 422, "empty upload"),
        "header only": (wav(np.zeros(0, np.float32), 16000), 422, "no audio samples"),
        "not audio": (b"%PDF-1.4 not a recording" * 10, 422, "not a WAV file"),
        "over 60 s": (long, 422, "over the limit of 60 s"),
    }
    for name, (data, status, phrase) in cases.items():
        r = client.post("/predict", content=data, headers={"content-type": "audio/wav"})
        assert r.status_code == status, (name, r.status_code, r.text)
        detail = r.json()["detail"]
        assert phrase in detail and "\n" not in detail, (name, detail)
    r = client.post("/predict", files=[("file", ("x.wav", b"RIFF....WAVEjunk", "audio/wav"))])
    assert r.status_code == 422 and "audio 0" in r.json()["detail"]
    r = client.post("/predict", json={"inputs": ["not base64!"]})
    assert r.status_code == 422 and "base64" in r.json()["detail"]
    assert client.get("/health").status_code == 200
