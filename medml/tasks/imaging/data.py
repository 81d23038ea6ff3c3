"""Imaging examples as tensors: loading, resizing, augmentation (MONAI transforms)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from monai.transforms import Compose, RandAffine, RandFlip, Resize
from torch.utils.data import Dataset


def to_model_input(arr: np.ndarray, image_size: int, in_channels: int) -> torch.Tensor:
    """A (C, H, W) array in [0, 1] as the float tensor the network takes."""
    x = torch.as_tensor(np.asarray(arr, dtype=np.float32))
    if x.shape[-2:] != (image_size, image_size):
        x = Resize((image_size, image_size), mode="area")(x).as_tensor()
    if x.shape[0] != in_channels:
        x = x.mean(0, keepdim=True) if in_channels == 1 else x[:1].expand(in_channels, -1, -1)
    return (x - 0.5) / 0.5


def train_augmentation(seed: int) -> Compose:
    """Flips, +-10 degree rotations and +-2 px shifts (what helps on small ultrasound)."""
    aug = Compose([
        RandFlip(prob=0.5, spatial_axis=1),
        RandAffine(prob=0.8, rotate_range=(np.pi / 18,), translate_range=(2, 2),
                   padding_mode="border"),
    ])
    aug.set_random_state(seed)
    return aug


class ImageDataset(Dataset):
    """One split, held in memory (datasets here are small); labels as class indices."""

    def __init__(self, dataset_dir: Path, rows: pd.DataFrame, classes: list[str],
                 image_size: int, in_channels: int, augment: Compose | None = None,
                 seed: int = 0) -> None:
        self.seed = seed
        self.ids = rows["id"].tolist()
        self.labels = torch.tensor([classes.index(c) for c in rows["label"]], dtype=torch.long)
        self.images = torch.stack([
            to_model_input(np.load(Path(dataset_dir) / p), image_size, in_channels)
            for p in rows["path"]
        ]) if len(rows) else torch.empty(0, in_channels, image_size, image_size)
        self.augment = augment

    def set_epoch(self, epoch: int) -> None:
        """Re-seed augmentation per epoch, so a resumed run sees what an unbroken one would."""
        if self.augment is not None:
            self.augment.set_random_state(self.seed * 100_003 + epoch)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.images[i]
        if self.augment is not None:
            x = torch.as_tensor(self.augment(x))
        return x, self.labels[i]
