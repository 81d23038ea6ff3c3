"""Speech networks: a CTC acoustic model (log-mel -> conv front end -> BiGRU -> characters)
with greedy decoding. Builders take plain keyword arguments so the arguments saved
beside the weights rebuild the same network."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from medml.errors import BadInputError
from medml.tasks.speech.features import LogMel, SpecAugment, conv_out
from medml.tasks.speech.text import VOCAB, decode


class CTCBiGRU(nn.Module):
    """Waveforms in, per-frame character log-probabilities out (index 0: CTC blank).

    Features are part of the network (``LogMel``), so training, evaluation and the served
    model compute them identically on whatever device the model is on. Two 1-D
    convolutions over time (the first with stride ``time_stride``: 10 ms frames become
    ``10 * time_stride`` ms) feed a bidirectional GRU over packed sequences (padding never
    leaks into the backward direction), then a linear layer over the vocabulary.
    SpecAugment masks the features in training mode only (``spec_augment``: its settings,
    or None for none)."""

    def __init__(self, vocab: str = VOCAB, sample_rate: int = 16_000, n_mels: int = 64,
                 conv_channels: int = 192, hidden: int = 192, layers: int = 2,
                 time_stride: int = 2, dropout: float = 0.1,
                 spec_augment: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.vocab, self.time_stride = vocab, int(time_stride)
        self.features = LogMel(sample_rate, n_mels)
        self.augment = SpecAugment(**spec_augment) if spec_augment is not None else None
        self.conv = nn.Sequential(
            nn.Conv1d(n_mels, conv_channels, 5, stride=self.time_stride, padding=2, bias=False),
            nn.BatchNorm1d(conv_channels), nn.GELU(),
            nn.Conv1d(conv_channels, conv_channels, 5, padding=2, bias=False),
            nn.BatchNorm1d(conv_channels), nn.GELU(), nn.Dropout(dropout),
        )
        self.rnn = nn.GRU(conv_channels, hidden, layers, batch_first=True, bidirectional=True,
                          dropout=dropout if layers > 1 else 0.0)
        self.drop = nn.Dropout(dropout)
        self.out = nn.Linear(2 * hidden, len(vocab) + 1)

    def forward(self, wave: torch.Tensor, lengths: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, N) waveforms, (B,) lengths in samples -> (B, T, V) log-probabilities and the
        (B,) number of valid frames."""
        x, n = self.features(wave, lengths)
        if self.augment is not None:
            x = self.augment(x, n)
        x = self.conv(x).transpose(1, 2)  # (B, T, C)
        n = conv_out(n, self.time_stride).clamp(min=1, max=x.shape[1])
        packed = pack_padded_sequence(x, n.cpu(), batch_first=True, enforce_sorted=False)
        y, _ = self.rnn(packed)
        y, _ = pad_packed_sequence(y, batch_first=True, total_length=x.shape[1])
        return torch.log_softmax(self.out(self.drop(y)).float(), dim=-1), n


def greedy_decode(log_probs: torch.Tensor, lengths: torch.Tensor, vocab: str = VOCAB
                  ) -> list[str]:
    """Best path: the most likely symbol per frame, repeats merged, blanks dropped."""
    best = log_probs.argmax(-1).cpu()
    out = []
    for row, n in zip(best, lengths.cpu().tolist(), strict=True):
        seq = torch.unique_consecutive(row[:n]).tolist()
        out.append(" ".join(decode([i for i in seq if i != 0], vocab).split()))
    return out


MODELS: dict[str, Callable[..., nn.Module]] = {"ctc_bigru": CTCBiGRU}


def build(name: str, **kwargs: Any) -> nn.Module:
    """The network ``name`` from the registry of known speech models."""
    if name not in MODELS:
        raise BadInputError(
            f"unknown speech model {name!r}; choose one of: {', '.join(sorted(MODELS))}")
    try:
        return MODELS[name](**kwargs)
    except TypeError as exc:
        raise BadInputError(f"speech model {name!r}: bad model_args ({exc})") from exc
