"""Speech task units on tiny generated audio: decoding, resampling and down-mixing, bad
WAVs, the importers, the demo generator, features, CTC decoding, metrics, the pyfunc."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import jiwer
import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch

from medml import evaluation
from medml.data.dataset import DatasetMeta
from medml.errors import BadInputError
from medml.settings import TaskParams
from medml.tasks import get_task
from medml.tasks.speech import audio, metrics
from medml.tasks.speech.features import LogMel, SpecAugment, mel_filterbank
from medml.tasks.speech.importers import import_fsdd, import_wav_jsonl
from medml.tasks.speech.models import CTCBiGRU, greedy_decode
from medml.tasks.speech.text import VOCAB, encode, normalise


def tone(seconds: float, sr: int, freq: float = 440.0, channels: int = 1) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    x = 0.5 * np.sin(2 * np.pi * freq * t).astype(np.float32)
    if channels == 2:
        return np.stack([x, 0.2 * x], axis=1)
    return x


def wav(x: np.ndarray, sr: int, subtype: str = "PCM_16") -> bytes:
    buf = io.BytesIO()
    sf.write(buf, x, sr, subtype=subtype, format="WAV")
    return buf.getvalue()


# ---------------------------------------------------------------------- decoding
@pytest.mark.parametrize("sr", [8000, 16000, 22050, 44100])
def test_decode_resamples_to_16k_and_keeps_duration_and_pitch(sr: int) -> None:
    a = audio.decode_wav(wav(tone(0.5, sr), sr), "t.wav")
    assert a.sample_rate == 16000 and a.source_sample_rate == sr
    assert len(a.samples) == 8000
    spectrum = np.abs(np.fft.rfft(a.samples))
    assert abs(np.argmax(spectrum) * 16000 / len(a.samples) - 440) < 4  # same pitch


def test_stereo_is_down_mixed_to_the_mean_of_the_channels() -> None:
    x = tone(0.25, 16000, channels=2)
    a = audio.decode_wav(wav(x, 16000), "st.wav")
    assert a.source_channels == 2 and a.samples.ndim == 1
    np.testing.assert_allclose(a.samples, x.mean(1), atol=2e-4)


def test_wider_samples_are_converted_to_16_bit() -> None:
    for subtype in ("PCM_24", "PCM_32", "FLOAT"):
        a = audio.decode_wav(wav(tone(0.1, 16000), 16000, subtype), "w.wav")
        assert a.source_subtype == subtype
        np.testing.assert_allclose(a.samples, tone(0.1, 16000), atol=1e-3)


def bad_wavs(tmp: Path) -> dict[str, tuple[Path, str]]:
    """name -> (file, a phrase its error must contain)."""
    tmp.mkdir(parents=True, exist_ok=True)
    good = wav(tone(1.0, 16000), 16000)
    files = {
        "truncated": (good[: len(good) // 2], "truncated"),
        "empty": (b"", "empty file"),
        "header_only": (wav(np.zeros(0, np.float32), 16000), "no audio samples"),
        "not_audio": (b"patient name, date of birth\n" * 20, "not a WAV file"),
        "too_long": (wav(np.zeros(61 * 8000, np.float32), 8000), "over the limit of 60 s"),
        "eight_bit": (wav(tone(0.2, 8000), 8000, "PCM_U8"), "8-bit"),
    }
    out = {}
    for name, (data, phrase) in files.items():
        path = tmp / f"{name}.wav"
        path.write_bytes(data)
        out[name] = (path, phrase)
    return out


def test_each_bad_wav_is_one_line_naming_the_file_and_the_fix(tmp_path: Path) -> None:
    for name, (path, phrase) in bad_wavs(tmp_path).items():
        with pytest.raises(BadInputError) as err:
            audio.read_wav(path)
        msg = str(err.value)
        assert str(path) in msg and phrase in msg and "\n" not in msg, (name, msg)
        assert ";" in msg, f"{name}: the message says how to fix it: {msg}"


def test_measure_peak_and_silence_ratio() -> None:
    x = np.concatenate([np.zeros(8000, np.float32), tone(0.5, 16000)])
    m = audio.measure(x)
    assert m["duration_s"] == 1.0 and m["peak"] == pytest.approx(0.5, abs=1e-3)
    assert m["silence_ratio"] == pytest.approx(0.5, abs=0.03)
    assert m["peak_dbfs"] == pytest.approx(-6.02, abs=0.05)


# ---------------------------------------------------------------------- importers
def fsdd_folder(tmp: Path, speakers=("george", "lucas"), indices=range(12)) -> Path:
    folder = tmp / "recordings"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for d in range(3):
        for spk in speakers:
            for i in indices:
                x = (0.1 * rng.standard_normal(2000 + 100 * d)).astype(np.float32)
                (folder / f"{d}_{spk}_{i}.wav").write_bytes(wav(x, 8000))
    return folder


def test_fsdd_import_official_split_words_and_16k(tmp_path: Path) -> None:
    src = fsdd_folder(tmp_path / "src")
    out = tmp_path / "out"
    m, meta = import_fsdd(src, out, "fsdd")
    assert len(m) == 3 * 2 * 12 and meta.classes == [] and not meta.patient_level_split
    index = m["id"].str.rsplit("_", n=1).str[1].astype(int)
    assert set(m.loc[index < 5, "split"]) == {"test"}
    assert set(m.loc[(index >= 5) & (index < 10), "split"]) == {"val"}
    assert set(m.loc[index >= 10, "split"]) == {"train"}
    assert set(m["text"]) == {"zero", "one", "two"} and (m["label"] == m["text"]).all()
    assert set(m["patient_id"]) == {"george", "lucas"}
    assert not m["id"].str.contains("george").any(), "speaker names stay out of ids"
    info = sf.info(str(out / m["path"].iloc[0]))
    assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
    assert (m["sample_rate"] == 16000).all() and (m["source_sample_rate"] == 8000).all()
    assert m["content_hash"].str.len().eq(64).all()
    for col in ("duration_s", "peak", "silence_ratio"):
        assert m[col].between(0, 60).all()


def test_fsdd_name_outside_the_scheme_is_named(tmp_path: Path) -> None:
    src = fsdd_folder(tmp_path / "src", speakers=("jackson",), indices=range(2))
    (src / "seven_jackson_1.wav").write_bytes(wav(tone(0.2, 8000), 8000))
    with pytest.raises(BadInputError, match=r"seven_jackson_1\.wav: name does not follow"):
        import_fsdd(src, tmp_path / "out", "fsdd")


def jsonl_folder(tmp: Path, lines: list[dict], files: dict[str, bytes]) -> Path:
    tmp.mkdir(parents=True)
    for name, data in files.items():
        (tmp / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp / name).write_bytes(data)
    (tmp / "manifest.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    return tmp


def test_wav_jsonl_import_downmixes_resamples_and_keeps_transcripts(tmp_path: Path) -> None:
    src = jsonl_folder(tmp_path / "src", [
        {"audio": "a/one.wav", "text": "Start aspirin twice daily.", "speaker": "dr-a"},
        {"audio": "b.wav", "text": "no swelling", "speaker": "dr-b"},
    ], {"a/one.wav": wav(tone(0.4, 44100, channels=2), 44100),
        "b.wav": wav(tone(0.3, 8000), 8000)})
    m, meta = import_wav_jsonl(src, tmp_path / "out", "dict")
    assert list(m["text"]) == ["Start aspirin twice daily.", "no swelling"]
    assert list(m["source_channels"]) == [2, 1] and (m["channels"] == 1).all()
    assert list(m["source_sample_rate"]) == [44100, 8000]
    assert list(m["num_samples"]) == [6400, 4800]
    assert list(m["patient_id"]) == ["dr-a", "dr-b"] and m["split"].isna().all()
    assert get_task("speech").deid_rules(meta)["source_file"] == "pseudonym"


def test_wav_jsonl_line_without_text_or_with_bad_audio_is_named(tmp_path: Path) -> None:
    src = jsonl_folder(tmp_path / "a", [{"audio": "x.wav", "text": "ok", "speaker": "s"},
                                         {"audio": "y.wav", "speaker": "s"}],
                       {"x.wav": wav(tone(0.2, 16000), 16000),
                        "y.wav": wav(tone(0.2, 16000), 16000)})
    with pytest.raises(BadInputError, match=r"manifest\.jsonl:2 \(y\.wav\): no transcript"):
        import_wav_jsonl(src, tmp_path / "o1", "d")
    src = jsonl_folder(tmp_path / "b", [{"audio": "x.wav", "text": "ok", "speaker": "s"}],
                       {"x.wav": b"RIFF\x00\x00"})
    with pytest.raises(BadInputError, match=r"x\.wav: not a WAV file"):
        import_wav_jsonl(src, tmp_path / "o2", "d")


# ---------------------------------------------------------------------- demo generator
def test_generator_splits_by_phrase_and_speaker_at_16k(tmp_path: Path) -> None:
    m, meta = get_task("speech").generate(
        tmp_path, {"n_speakers": 6, "utterances_per_speaker": 3, "n_phrases": 30,
                   "snr_db": [None, 10]}, seed=1, name="demo")
    assert len(m) == 18 and set(m["split"]) == {"train", "val", "test"}
    assert meta.classes == [] and meta.patient_level_split
    train, test = m[m["split"] == "train"], m[m["split"] == "test"]
    assert not set(train["text"]) & set(test["text"]), "test phrases are never trained on"
    assert m.groupby("patient_id")["split"].nunique().max() == 1
    assert (m["sample_rate"] == 16000).all() and m["duration_s"].between(0.3, 15).all()
    assert set(m["noise"]) <= {"none", *(f"{k} 10 dB" for k in ("white", "pink", "brown"))}
    x, sr = sf.read(str(tmp_path / m["path"].iloc[0]))
    assert sr == 16000 and x.ndim == 1 and np.abs(x).max() > 0.1


# ---------------------------------------------------------------------- model pieces
def test_logmel_shapes_and_normalisation() -> None:
    fb = mel_filterbank(64, 512, 16000)
    assert fb.shape == (64, 257) and (fb >= 0).all() and (fb.sum(1) > 0).all()
    x = torch.from_numpy(np.stack([tone(1.0, 16000), tone(1.0, 16000, 880)]))
    feats, n = LogMel(16000, 64)(x, torch.tensor([16000, 8000]))
    assert feats.shape == (2, 64, 101) and n.tolist() == [101, 51]
    assert feats[1, :, 51:].abs().max() == 0  # padding stays zero
    assert feats[0].mean().abs() < 1e-4 and abs(float(feats[0].std()) - 1) < 0.05


def test_specaugment_masks_in_training_only() -> None:
    aug = SpecAugment(freq_masks=2, freq_width=10, time_masks=2, time_width=20)
    x = torch.ones(4, 64, 200)
    n = torch.full((4,), 200)
    torch.manual_seed(0)
    assert (aug.train()(x, n) == 0).any()
    assert torch.equal(aug.eval()(x, n), x)


def test_ctc_greedy_decode_merges_repeats_and_drops_blanks() -> None:
    def idx(c: str) -> int:
        return 0 if c == "_" else VOCAB.index(c) + 1

    path = "hh_e_ll_llo__ _w_orld"
    lp = torch.full((1, len(path) + 3, len(VOCAB) + 1), -10.0)
    for t, c in enumerate(path):
        lp[0, t, idx(c)] = 0.0
    assert greedy_decode(lp, torch.tensor([len(path)])) == ["hello world"]
    assert encode("Hello, World!") == [idx(c) for c in "hello world"]
    assert normalise("  Start 5 mg twice-daily. ") == "start mg twice daily"


def test_model_output_lengths_follow_the_time_stride() -> None:
    net = CTCBiGRU(conv_channels=16, hidden=16, layers=1, time_stride=3).eval()
    lp, n = net(torch.zeros(2, 16000), torch.tensor([16000, 4000]))
    assert lp.shape == (2, 34, len(VOCAB) + 1) and n.tolist() == [34, 9]
    assert torch.allclose(lp.exp().sum(-1), torch.ones(2, 34), atol=1e-4)


# ---------------------------------------------------------------------- metrics
def test_wer_cer_against_a_hand_computed_case() -> None:
    pred = pd.DataFrame({"id": ["a", "b"], "reference": ["the cat sat", "hello world"],
                         "hypothesis": ["the cat sit", "hello"]})
    m = metrics.score(pred)
    assert m["wer"] == pytest.approx(2 / 5)  # one substitution, one deletion, 5 words
    assert m["cer"] == pytest.approx(7 / 22)  # one substitution, " world" deleted
    assert m["exact_match"] == 0.0


def test_bootstrap_resamples_speakers() -> None:
    pred = pd.DataFrame({"id": list("abcd"), "reference": ["one two"] * 4,
                         "hypothesis": ["one two", "one two", "one", "two"]})
    same = pd.Series(["s1", "s1", "s2", "s2"])
    lo, hi = evaluation.bootstrap_ci(pred, same, metrics.score, ("wer",), n=200)["wer"]
    assert lo == pytest.approx(0.0) and hi == pytest.approx(0.5)  # two speakers: 0, .25, .5
    lo, hi = evaluation.bootstrap_ci(pred, pd.Series(["s"] * 4), metrics.score, ("wer",),
                                     n=50)["wer"]
    assert lo == hi == pytest.approx(0.25)
    manifest = pd.DataFrame({"id": list("abcd"), "patient_id": same, "sex": list("FFMM")})
    table = evaluation.subgroup_table(pred, manifest, ("patient_id", "sex"), metrics.score)
    spk = table[table["attribute"] == "patient_id"].set_index("value")["wer"]
    assert spk.to_dict() == {"s1": 0.0, "s2": 0.5}


def test_counted_scores_equal_jiwer_on_any_subset() -> None:
    pred = pd.DataFrame({"id": list("abcde"),
                         "reference": ["the cat sat", "hello world", "  ", "a b c", "x"],
                         "hypothesis": ["the cat sit", "hello", "noise", None, "x"]})
    counted = metrics.with_counts(pred)
    for rows in ([0, 1, 2, 3, 4], [1, 1, 3], [4, 0]):
        part = pred.iloc[rows]
        keep = part[part["reference"].str.strip() != ""]
        refs, hyps = keep["reference"].tolist(), keep["hypothesis"].fillna("").tolist()
        got = metrics.score(counted.iloc[rows])
        assert got == metrics.score(part)
        assert got["wer"] == pytest.approx(jiwer.wer(refs, hyps))
        assert got["cer"] == pytest.approx(jiwer.cer(refs, hyps))
    assert np.isnan(metrics.score(pred.iloc[[2]])["wer"])  # empty reference: nothing scored


def test_evaluate_logs_cis_and_a_per_speaker_table() -> None:
    pred = pd.DataFrame({"id": list("abcd"), "reference": ["one two"] * 4,
                         "hypothesis": ["one two", "one two", "one", "two"]})
    manifest = pd.DataFrame({"id": list("abcd"), "patient_id": ["s1", "s1", "s2", "s2"],
                             "sex": list("FFMM"), "noise": [None, None, "pink 10 dB", None]})
    result = get_task("speech").evaluate(pred, manifest, {}, TaskParams())
    import matplotlib.pyplot as plt  # after evaluate: it picks the Agg backend

    for fig in result.figures.values():
        plt.close(fig)
    assert result.metrics["wer"] == pytest.approx(0.25)
    assert result.metrics["wer_ci_low"] == pytest.approx(0.0)
    assert result.metrics["wer_ci_high"] == pytest.approx(0.5)
    assert {"cer_ci_low", "cer_ci_high"} <= set(result.metrics)
    assert list(result.predictions.columns) == ["id", "reference", "hypothesis"]
    table = result.tables["subgroups.json"]
    assert list(table.columns) == ["attribute", "value", "n", "wer", "cer", "exact_match"]
    assert table[["attribute", "value", "n"]].values.tolist() == [
        ["speaker", "s1", 2], ["speaker", "s2", 2], ["sex", "F", 2], ["sex", "M", 2],
        ["noise", "pink 10 dB", 1]]
    assert table.set_index("value").loc["s2", "wer"] == 0.5


# ---------------------------------------------------------------------- pyfunc
@pytest.fixture
def speech_model(tmp_path: Path):
    from medml.settings import TaskParams, TrainParams
    from medml.tasks.speech.pyfunc import SpeechModel

    task = get_task("speech")
    params = TaskParams(train=TrainParams(model="ctc_bigru", model_args={
        "conv_channels": 16, "hidden": 16, "layers": 1}))
    meta = DatasetMeta("d", "speech", [], "t", "t")
    net, spec = task.build_model(params, meta, pd.DataFrame())
    torch.save({"spec": spec, "state_dict": net.state_dict(), "task": "speech"},
               tmp_path / "bundle.pt")

    class Ctx:
        artifacts = {"bundle": str(tmp_path / "bundle.pt")}

    model = SpeechModel()
    model.load_context(Ctx())
    return model


def test_pyfunc_takes_wav_bytes_at_any_rate_and_stereo(speech_model) -> None:
    at8k = wav(tone(1.0, 8000), 8000)
    at44 = wav(tone(1.5, 44100, channels=2), 44100)
    out = speech_model.predict(None, pd.DataFrame(
        {"audio": [at8k, at44, base64.b64encode(at8k).decode()]}))
    assert list(out.columns) == ["text", "duration_s"] and len(out) == 3
    assert list(out["duration_s"]) == [1.0, 1.5, 1.0]
    assert out["text"].iloc[0] == out["text"].iloc[2]  # base64 text = the same bytes
    assert all(isinstance(t, str) for t in out["text"])


def test_pyfunc_refuses_long_truncated_and_non_audio_naming_the_input(
        speech_model, tmp_path: Path) -> None:
    bad = bad_wavs(tmp_path)
    cases = {"too_long": "over the limit of 60 s", "truncated": "truncated",
             "not_audio": "not a WAV file", "empty": "empty file"}
    for name, phrase in cases.items():
        good = wav(tone(0.2, 16000), 16000)
        with pytest.raises(BadInputError, match=f"audio 1: .*{phrase}"):
            speech_model.predict(None, pd.DataFrame({"audio": [good, bad[name][0].read_bytes()]}))
    with pytest.raises(BadInputError, match="audio 0: text is not base64"):
        speech_model.predict(None, pd.DataFrame({"audio": ["not base64 at all!"]}))


def test_loader_buckets_the_trainers_epoch_order_and_loss_is_finite(tmp_path: Path) -> None:
    from torch.utils.data import Subset

    from medml.settings import TaskParams, TrainParams
    from medml.tasks.speech.data import SpeechDataset

    task = get_task("speech")
    m, meta = task.generate(tmp_path, {"n_speakers": 3, "utterances_per_speaker": 4,
                                       "n_phrases": 30}, seed=0, name="d")
    ds = SpeechDataset(tmp_path, m, VOCAB, augment=True)
    order = torch.randperm(len(ds), generator=torch.Generator().manual_seed(0)).tolist()
    loader = task.loader(Subset(ds, order), 4, False, torch.device("cpu"), 0)
    batches = list(loader)
    again = list(task.loader(Subset(ds, order), 4, False, torch.device("cpu"), 0))
    assert len(batches) == 3 and all(torch.equal(a[3], b[3]) for a, b in zip(
        batches, again, strict=True)), "the same order gives the same batches"
    assert sorted(int(n) for b in batches for n in b[1]) == sorted(ds.lengths)
    waves, lengths, targets, target_lengths = batches[0]
    assert waves.shape == (4, int(lengths.max())) and int(target_lengths.sum()) == len(targets)
    params = TaskParams(train=TrainParams(model="ctc_bigru", model_args={
        "conv_channels": 8, "hidden": 8, "layers": 1}))
    net, _ = task.build_model(params, meta, m)
    loss = task.loss(net.train(), batches[0], torch.device("cpu"))
    loss.backward()
    assert torch.isfinite(loss) and loss > 0
    assert all(p.grad is not None for p in net.parameters() if p.requires_grad)
