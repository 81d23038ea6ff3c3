"""Acoustic features in torch, on the device the model runs on: log-mel spectrograms
(``torch.stft`` and a mel filterbank built here, HTK mel scale) and SpecAugment (time and
frequency masking, training only; Park et al. 2019)."""

from __future__ import annotations

import torch
from torch import nn


def hz_to_mel(f: torch.Tensor | float) -> torch.Tensor:
    return 2595.0 * torch.log10(1.0 + torch.as_tensor(f, dtype=torch.float64) / 700.0)


def mel_to_hz(m: torch.Tensor) -> torch.Tensor:
    return 700.0 * (10.0 ** (m / 2595.0) - 1.0)


def mel_filterbank(n_mels: int, n_fft: int, sample_rate: int, f_min: float = 20.0,
                   f_max: float | None = None) -> torch.Tensor:
    """(n_mels, n_fft // 2 + 1) triangular filters, evenly spaced on the mel scale, each
    normalised to unit area (Slaney style) so that bands of any width weigh alike."""
    f_max = f_max or sample_rate / 2
    freqs = torch.linspace(0, sample_rate / 2, n_fft // 2 + 1, dtype=torch.float64)
    edges = mel_to_hz(torch.linspace(float(hz_to_mel(f_min)), float(hz_to_mel(f_max)),
                                     n_mels + 2, dtype=torch.float64))
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    up = (freqs[None] - lo) / (mid - lo)
    down = (hi - freqs[None]) / (hi - mid)
    fb = torch.clamp(torch.minimum(up, down), min=0.0)
    fb = fb * (2.0 / (hi - lo))
    return fb.float()


class LogMel(nn.Module):
    """Waveforms (B, N) at ``sample_rate`` -> normalised log-mel (B, n_mels, T), 25 ms
    windows every 10 ms by default; each utterance is mean/variance normalised over its
    own frames (``lengths`` in samples mark the padding), which removes level and channel
    differences between microphones."""

    def __init__(self, sample_rate: int = 16_000, n_mels: int = 64, win_ms: float = 25.0,
                 hop_ms: float = 10.0) -> None:
        super().__init__()
        self.win = int(sample_rate * win_ms / 1000)
        self.hop = int(sample_rate * hop_ms / 1000)
        self.n_fft = 1 << (self.win - 1).bit_length()
        self.register_buffer("window", torch.hann_window(self.win), persistent=False)
        self.register_buffer("fbank", mel_filterbank(n_mels, self.n_fft, sample_rate),
                             persistent=False)

    def frames(self, lengths: torch.Tensor) -> torch.Tensor:
        """Feature frames of waveforms of ``lengths`` samples (centred STFT)."""
        return lengths // self.hop + 1

    def forward(self, wave: torch.Tensor, lengths: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        wave = wave.float()
        if lengths is None:
            lengths = torch.full((wave.shape[0],), wave.shape[1], dtype=torch.long,
                                 device=wave.device)
        spec = torch.stft(wave, self.n_fft, self.hop, self.win, self.window, center=True,
                          return_complex=True)
        power = spec.real ** 2 + spec.imag ** 2
        mel = torch.log(torch.matmul(self.fbank, power) + 1e-6)  # (B, n_mels, T)
        n = self.frames(lengths).clamp(max=mel.shape[-1])
        mask = (torch.arange(mel.shape[-1], device=mel.device)[None] < n[:, None])[:, None]
        count = n[:, None, None].float()
        mean = (mel * mask).sum(-1, keepdim=True) / count
        var = (((mel - mean) * mask) ** 2).sum(-1, keepdim=True) / count
        mel = (mel - mean) / torch.sqrt(var + 1e-5)
        return mel * mask, n


class SpecAugment(nn.Module):
    """Random time and frequency masks (set to 0, the normalised mean) on (B, F, T)
    features; identity in eval mode. Time masks are at most ``time_ratio`` of each
    utterance's frames."""

    def __init__(self, freq_masks: int = 2, freq_width: int = 10, time_masks: int = 2,
                 time_width: int = 20, time_ratio: float = 0.1) -> None:
        super().__init__()
        self.freq_masks, self.freq_width = freq_masks, freq_width
        self.time_masks, self.time_width, self.time_ratio = time_masks, time_width, time_ratio

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return x
        b, f, t = x.shape
        dev = x.device
        keep = torch.ones_like(x, dtype=torch.bool)
        bins = torch.arange(f, device=dev)[None]
        for _ in range(self.freq_masks):
            w = torch.randint(0, self.freq_width + 1, (b, 1), device=dev)
            s = (torch.rand(b, 1, device=dev) * (f - w).clamp(min=1)).long()
            keep &= ~((bins >= s) & (bins < s + w))[:, :, None]
        steps = torch.arange(t, device=dev)[None]
        limit = (lengths.float() * self.time_ratio).clamp(max=self.time_width).long()[:, None]
        for _ in range(self.time_masks):
            w = (torch.rand(b, 1, device=dev) * (limit + 1).float()).long()
            s = (torch.rand(b, 1, device=dev) * (lengths[:, None] - w).clamp(min=1)).long()
            keep &= ~((steps >= s) & (steps < s + w))[:, None, :]
        return x * keep


def conv_out(n: torch.Tensor, stride: int) -> torch.Tensor:
    """Frames after a 'same'-padded convolution of stride ``stride``."""
    return torch.div(n + stride - 1, stride, rounding_mode="floor")
