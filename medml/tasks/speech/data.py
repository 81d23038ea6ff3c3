"""Speech examples as tensors: waveforms held in memory (int16), padded batches for CTC,
and length-bucketed shuffling so that a batch wastes little time on padding."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset, Sampler

from medml.tasks.speech.audio import load_samples
from medml.tasks.speech.text import encode, normalise


class SpeechDataset(Dataset):
    """One split: 16 kHz waveforms (int16 in memory), normalised transcripts and their
    label indices. ``augment``: random gain on the waveform (training only; SpecAugment
    itself runs inside the model, on the training device)."""

    def __init__(self, dataset_dir: Path, rows: pd.DataFrame, vocab: str,
                 augment: bool = False, seed: int = 0) -> None:
        self.ids = rows["id"].astype(str).tolist()
        self.texts = [normalise(t) for t in rows["text"].astype(str)]
        self.targets = [torch.tensor(encode(t, vocab), dtype=torch.long) for t in self.texts]
        self.waves = [torch.from_numpy(load_samples(Path(dataset_dir) / p).copy())
                      for p in rows["path"]]
        self.lengths = [len(w) for w in self.waves]
        self.augment = augment
        self.seed = seed
        self.rng = np.random.default_rng(seed)

    def set_epoch(self, epoch: int) -> None:
        """Re-seed augmentation per epoch, so a resumed run sees what an unbroken one would."""
        self.rng = np.random.default_rng(self.seed * 100_003 + epoch)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.waves[i].float() / 32768.0
        if self.augment:
            x = x * float(10 ** (self.rng.uniform(-6, 6) / 20))
        return x, self.targets[i]


def collate(items: list[tuple[torch.Tensor, torch.Tensor]]
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(padded waves (B, N), wave lengths, concatenated targets, target lengths)."""
    waves, targets = zip(*items, strict=True)
    lengths = torch.tensor([len(w) for w in waves], dtype=torch.long)
    batch = torch.zeros(len(waves), int(lengths.max()) if len(waves) else 0)
    for k, w in enumerate(waves):
        batch[k, : len(w)] = w
    target_lengths = torch.tensor([len(t) for t in targets], dtype=torch.long)
    flat = torch.cat(targets) if targets else torch.zeros(0, dtype=torch.long)
    return batch, lengths, flat, target_lengths


class BucketBatchSampler(Sampler[list[int]]):
    """Batches of similar length, so that little time goes to padding.

    The epoch's order is ``order`` (the trainer's shuffled share of the train split), or a
    permutation drawn from ``generator`` when ``shuffle``, else the dataset order. Pools of
    50 batches of that order are sorted by length and cut into batches; with an order or
    shuffling, the batches are then shuffled (seeded by the order itself, so the same
    order gives the same batches). Without either, batches follow the dataset order."""

    def __init__(self, lengths: list[int], batch_size: int, shuffle: bool = False,
                 generator: torch.Generator | None = None, order: list[int] | None = None
                 ) -> None:
        self.lengths, self.batch_size = lengths, max(1, int(batch_size))
        self.shuffle, self.generator = shuffle, generator
        self.order = order

    def __iter__(self) -> Iterator[list[int]]:
        if self.order is None and not self.shuffle:
            n = len(self.lengths)
            yield from (list(range(i, min(i + self.batch_size, n)))
                        for i in range(0, n, self.batch_size))
            return
        if self.order is not None:
            order = list(self.order)
            gen = torch.Generator().manual_seed(hash(tuple(order)) % (2 ** 31))
        else:
            order = torch.randperm(len(self.lengths), generator=self.generator).tolist()
            gen = self.generator
        pool = self.batch_size * 50
        batches = []
        for i in range(0, len(order), pool):
            chunk = sorted(order[i:i + pool], key=lambda k: self.lengths[k])
            batches += [chunk[j:j + self.batch_size]
                        for j in range(0, len(chunk), self.batch_size)]
        for b in torch.randperm(len(batches), generator=gen).tolist():
            yield batches[b]

    def __len__(self) -> int:
        n = len(self.order) if self.order is not None else len(self.lengths)
        return (n + self.batch_size - 1) // self.batch_size
