"""WAV in and out: decoding with checks, down-mixing, resampling, measuring.

Every speech example is stored as 16 kHz mono 16-bit PCM WAV. ``decode_wav`` reads any
WAV (PCM 16/24/32-bit, 32/64-bit float, mu-law, A-law; any sample rate; any number of
channels), refuses what a model cannot use with one line naming the input and the fix,
down-mixes to mono and resamples with ``scipy.signal.resample_poly`` (polyphase, with
its anti-aliasing filter).

Decisions: 8-bit PCM is refused (48 dB of dynamic range is too little for dictation and
is usually a sign of a telephony export gone wrong: re-export as 16-bit); wider integer
and float samples are converted to 16-bit (float beyond [-1, 1] is clipped, NaN is
refused). Audio longer than ``MAX_SECONDS`` is refused: a dictation model is run on
utterances, longer recordings must be segmented first.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass
from math import gcd
from pathlib import Path
from typing import Any

import numpy as np

from medml.errors import BadInputError

SAMPLE_RATE = 16_000  # stored and modelled sample rate
MAX_SECONDS = 60.0  # longest utterance accepted (import and serving)
MIN_SAMPLE_RATE = 4_000
SILENCE_FRAME_S = 0.02  # frames of 20 ms for the silence ratio
SILENCE_REL_DB = -40.0  # a frame this far below the loudest frame counts as silence
SILENCE_ABS = 1e-4  # ... and any frame under -80 dBFS
REFUSED_SUBTYPES = {"PCM_U8": "8-bit", "PCM_S8": "8-bit"}
ACCEPTED_SUBTYPES = {"PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE", "ULAW", "ALAW"}


@dataclass
class Audio:
    """Decoded mono audio at ``sample_rate`` (float32 in [-1, 1]) and what it came from."""

    samples: np.ndarray
    sample_rate: int
    source_sample_rate: int
    source_channels: int
    source_subtype: str

    @property
    def duration(self) -> float:
        return len(self.samples) / self.sample_rate


def _check_riff(data: bytes, where: str) -> None:
    """Walk the RIFF chunks: a WAV whose ``data`` chunk declares more bytes than the file
    holds was cut short (a copy or upload that stopped); libsndfile would read the part
    that is there without a word."""
    if len(data) == 0:
        raise BadInputError(f"{where}: empty file (zero bytes); record or export it again")
    if len(data) < 12 or data[:4] not in (b"RIFF", b"RIFX", b"RF64") or data[8:12] != b"WAVE":
        kind = "text" if _looks_like_text(data[:64]) else "data"
        raise BadInputError(f"{where}: not a WAV file (no RIFF/WAVE header; looks like {kind});"
                            " convert it to WAV (e.g. ffmpeg -i IN -ac 1 -ar 16000 OUT.wav)")
    if data[:4] == b"RF64":
        return  # 64-bit sizes live in a ds64 chunk; libsndfile checks those
    fmt = "<I" if data[:4] == b"RIFF" else ">I"
    pos, seen_fmt = 12, False
    while pos + 8 <= len(data):
        cid, size = data[pos:pos + 4], struct.unpack(fmt, data[pos + 4:pos + 8])[0]
        if cid == b"fmt ":
            seen_fmt = True
        if cid == b"data":
            if not seen_fmt:
                break
            have = len(data) - pos - 8
            if size > have and size not in (0, 0xFFFFFFFF):  # 0/-1: streamed, size unknown
                raise BadInputError(
                    f"{where}: truncated WAV (header announces {size} bytes of audio, the "
                    f"file holds {have}); copy or export the file again")
            return
        pos += 8 + size + (size & 1)
    raise BadInputError(f"{where}: truncated or malformed WAV (no complete 'fmt ' and 'data' "
                        "chunks); copy or export the file again")


def _looks_like_text(head: bytes) -> bool:
    return bool(head) and all(32 <= b < 127 or b in (9, 10, 13) for b in head)


def resample(x: np.ndarray, sr_in: int, sr_out: int = SAMPLE_RATE) -> np.ndarray:
    """``x`` (samples on axis 0) from ``sr_in`` to ``sr_out`` Hz (scipy polyphase)."""
    if sr_in == sr_out:
        return x
    from scipy.signal import resample_poly

    g = gcd(int(sr_in), int(sr_out))
    return resample_poly(x, sr_out // g, sr_in // g, axis=0).astype(np.float32)


def decode_wav(data: bytes, where: str, *, sample_rate: int = SAMPLE_RATE,
               max_seconds: float = MAX_SECONDS) -> Audio:
    """WAV bytes as mono float32 at ``sample_rate``; BadInputError naming ``where`` for an
    empty, truncated or non-WAV input, 8-bit samples, NaNs, no samples or audio over
    ``max_seconds``."""
    import soundfile as sf

    _check_riff(data, where)
    try:
        info = sf.info(io.BytesIO(data))
    except (sf.LibsndfileError, RuntimeError, ValueError) as exc:
        raise BadInputError(f"{where}: unreadable WAV ({_first_line(exc)}); export it again "
                            "as 16-bit PCM WAV") from None
    if info.format not in ("WAV", "WAVEX", "RF64"):
        raise BadInputError(f"{where}: {info.format} audio, not WAV; convert it to WAV")
    if info.subtype in REFUSED_SUBTYPES:
        raise BadInputError(f"{where}: {REFUSED_SUBTYPES[info.subtype]} samples are too coarse "
                            "for speech recognition; re-export as 16-bit PCM WAV")
    if info.subtype not in ACCEPTED_SUBTYPES:
        raise BadInputError(f"{where}: unsupported WAV encoding {info.subtype}; re-export as "
                            "16-bit PCM WAV")
    if info.samplerate < MIN_SAMPLE_RATE:
        raise BadInputError(f"{where}: sample rate {info.samplerate} Hz is too low for speech "
                            f"(at least {MIN_SAMPLE_RATE}); record at 16 kHz")
    if info.frames <= 0:
        raise BadInputError(f"{where}: WAV holds no audio samples (zero length); record or "
                            "export it again")
    seconds = info.frames / info.samplerate
    if seconds > max_seconds:
        raise BadInputError(f"{where}: {seconds:.1f} s of audio, over the limit of "
                            f"{max_seconds:g} s; cut the recording into shorter utterances")
    try:
        x, sr = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, ValueError) as exc:
        raise BadInputError(f"{where}: unreadable WAV samples ({_first_line(exc)}); export it "
                            "again as 16-bit PCM WAV") from None
    if len(x) == 0:
        raise BadInputError(f"{where}: WAV holds no audio samples (zero length); record or "
                            "export it again")
    if not np.isfinite(x).all():
        raise BadInputError(f"{where}: audio has NaN or infinite samples; export it again")
    mono = np.clip(x.mean(axis=1), -1.0, 1.0)
    return Audio(np.clip(resample(mono, sr, sample_rate), -1.0, 1.0).astype(np.float32),
                 sample_rate, int(sr), int(x.shape[1]), str(info.subtype))


def read_wav(path: Path, **kw: Any) -> Audio:
    """``decode_wav`` of a file, errors naming the file."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise BadInputError(f"{path}: cannot read ({exc.strerror}); check the path") from None
    return decode_wav(data, str(path), **kw)


def wav_bytes(samples: np.ndarray, sample_rate: int = SAMPLE_RATE) -> bytes:
    """Mono float samples as 16-bit PCM WAV bytes."""
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, np.clip(np.asarray(samples, dtype=np.float32), -1, 1), sample_rate,
             subtype="PCM_16", format="WAV")
    return buf.getvalue()


def measure(samples: np.ndarray, sample_rate: int = SAMPLE_RATE) -> dict[str, float]:
    """Measured properties of mono audio: duration (s), peak level (linear, 0-1, and
    dBFS), RMS level (dBFS) and silence ratio (share of 20 ms frames that are silent:
    40 dB below the loudest frame, or under -80 dBFS)."""
    x = np.asarray(samples, dtype=np.float64)
    peak = float(np.abs(x).max()) if len(x) else 0.0
    rms = float(np.sqrt(np.mean(x ** 2))) if len(x) else 0.0
    n = max(1, int(SILENCE_FRAME_S * sample_rate))
    frames = x[: len(x) // n * n].reshape(-1, n) if len(x) >= n else x.reshape(1, -1)
    frame_rms = np.sqrt(np.mean(frames ** 2, axis=1)) if frames.size else np.zeros(1)
    threshold = max(SILENCE_ABS, float(frame_rms.max()) * 10 ** (SILENCE_REL_DB / 20))
    return {
        "duration_s": round(len(x) / sample_rate, 4),
        "peak": round(peak, 5),
        "peak_dbfs": round(20 * np.log10(max(peak, 1e-10)), 2),
        "rms_dbfs": round(20 * np.log10(max(rms, 1e-10)), 2),
        "silence_ratio": round(float(np.mean(frame_rms < threshold)), 4),
    }


def save_audio(audio: Audio | np.ndarray, out_dir: Path, example_id: str) -> dict[str, Any]:
    """Write ``out_dir/audio/<id>.wav`` (16 kHz mono 16-bit) and return the manifest fields:
    path, content_hash, sample_rate, channels, num_samples, measured levels and the source's
    sample rate, channels and encoding."""
    from medml.data.dataset import sha256_file

    if not example_id or "/" in example_id or example_id.startswith("."):
        raise ValueError(f"bad example id {example_id!r}")
    if isinstance(audio, np.ndarray):
        audio = Audio(audio.astype(np.float32), SAMPLE_RATE, SAMPLE_RATE, 1, "FLOAT")
    rel = Path("audio") / f"{example_id}.wav"
    path = Path(out_dir) / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    data = wav_bytes(audio.samples, audio.sample_rate)
    path.write_bytes(data)
    import soundfile as sf

    stored, _ = sf.read(io.BytesIO(data), dtype="float32")  # measure what is stored
    return {
        "path": rel.as_posix(),
        "content_hash": sha256_file(path),
        "sample_rate": int(audio.sample_rate),
        "channels": 1,
        "num_samples": len(audio.samples),
        **measure(stored, audio.sample_rate),
        "source_sample_rate": audio.source_sample_rate,
        "source_channels": audio.source_channels,
        "source_encoding": audio.source_subtype,
    }


def load_samples(path: Path) -> np.ndarray:
    """A stored (16 kHz mono 16-bit) example as int16 samples."""
    import soundfile as sf

    x, _ = sf.read(str(path), dtype="int16", always_2d=False)
    return x if x.ndim == 1 else x[:, 0]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__
