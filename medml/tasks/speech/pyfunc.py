"""The speech model as an MLflow pyfunc: WAV bytes in (raw or base64; any sample rate,
resampled; stereo down-mixed; at most 60 s), transcripts out."""

from __future__ import annotations

import base64
import binascii
from typing import Any

import numpy as np
import pandas as pd
import torch

from medml.errors import BadInputError
from medml.tasks.pyfunc import BundleModel


def as_waveform(value: Any, where: str, sample_rate: int, max_seconds: float) -> np.ndarray:
    """One audio cell (WAV bytes, or base64 text of them) as mono float32 samples at
    ``sample_rate``; BadInputError naming ``where`` otherwise."""
    from medml.tasks.speech.audio import decode_wav

    if isinstance(value, str):
        try:
            value = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise BadInputError(f"{where}: text is not base64-encoded WAV bytes; send the "
                                "WAV file's bytes, base64-encoded") from None
    if isinstance(value, bytearray | memoryview):
        value = bytes(value)
    if not isinstance(value, bytes):
        raise BadInputError(f"{where}: expected WAV bytes (or base64 text), got "
                            f"{type(value).__name__}")
    return decode_wav(value, where, sample_rate=sample_rate, max_seconds=max_seconds).samples


def cells_from_input(model_input: Any) -> list:
    """Audio cells from a DataFrame with an ``audio`` column, a dict, or a list."""
    if isinstance(model_input, pd.DataFrame):
        if "audio" not in model_input.columns:
            raise BadInputError("input has no 'audio' column (WAV bytes or base64 text)")
        return model_input["audio"].tolist()
    if isinstance(model_input, dict) and "audio" in model_input:
        return list(model_input["audio"])
    if isinstance(model_input, bytes | str):
        return [model_input]
    return list(model_input)


@torch.no_grad()
def transcribe(net: torch.nn.Module, waves: list[np.ndarray], vocab: str,
               device: torch.device, batch_size: int = 16) -> list[str]:
    """Greedy CTC transcripts of mono 16 kHz waveforms, in order (batched by length)."""
    from medml.tasks.speech.models import greedy_decode

    net.eval()
    order = sorted(range(len(waves)), key=lambda i: len(waves[i]))
    out: dict[int, str] = {}
    for s in range(0, len(order), batch_size):
        idx = order[s:s + batch_size]
        lengths = torch.tensor([len(waves[i]) for i in idx], dtype=torch.long)
        batch = torch.zeros(len(idx), int(lengths.max()))
        for k, i in enumerate(idx):
            batch[k, : len(waves[i])] = torch.from_numpy(np.asarray(waves[i], np.float32))
        log_probs, n = net(batch.to(device), lengths.to(device))
        out.update(zip(idx, greedy_decode(log_probs, n, vocab), strict=True))
    return [out[i] for i in range(len(waves))]


class SpeechModel(BundleModel):
    """WAV audio in, greedy CTC transcripts (with the bundle's vocabulary) and durations out."""

    task_name = "speech"

    def predict(self, context, model_input, params=None):  # untyped: MLflow reads hints
        s = self.spec
        waves = [as_waveform(c, f"audio {i}", s["sample_rate"], s["max_seconds"])
                 for i, c in enumerate(cells_from_input(model_input))]
        texts = transcribe(self.net, waves, s["vocab"], torch.device("cpu"))
        return pd.DataFrame({"text": texts,
                             "duration_s": [round(len(w) / s["sample_rate"], 3) for w in waves]})
