"""Imaging networks, built from MONAI. Every builder takes plain keyword arguments so the
arguments saved beside the weights rebuild the same network."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from monai.networks.blocks import Convolution
from monai.networks.nets import resnet18, resnet34
from torch import nn

from medml.errors import BadInputError


def small_cnn(in_channels: int, num_classes: int, channels: tuple[int, ...] = (32, 64, 128),
              dropout: float = 0.2, norm: str | None = "BATCH") -> nn.Module:
    """A VGG-style CNN for small images (~0.3M parameters at the defaults): per stage two
    3x3 conv-norm-ReLU blocks and a 2x2 max-pool, then global average pooling. ``norm``:
    a MONAI norm name (``BATCH``; ``INSTANCE`` normalises each image alone, so results
    do not depend on how a batch is split across DDP ranks), or None."""
    layers: list[nn.Module] = []
    c_in = in_channels
    for c in channels:
        layers += [
            Convolution(2, c_in, c, kernel_size=3, act="RELU", norm=norm),
            Convolution(2, c, c, kernel_size=3, act="RELU", norm=norm),
            nn.MaxPool2d(2),
        ]
        c_in = c
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout),
               nn.Linear(c_in, num_classes)]
    return nn.Sequential(*layers)


def small_resnet(in_channels: int, num_classes: int, depth: int = 18) -> nn.Module:
    """MONAI's ResNet adapted to 28-64 px inputs as in MedMNIST's ResNet (28):
    a 3x3 stride-1 stem and no max-pool."""
    build = {18: resnet18, 34: resnet34}.get(depth)
    if build is None:
        raise BadInputError(f"resnet depth {depth}: choose 18 or 34")
    return build(spatial_dims=2, n_input_channels=in_channels, num_classes=num_classes,
                 conv1_t_size=3, conv1_t_stride=1, no_max_pool=True)


MODELS: dict[str, Callable[..., nn.Module]] = {
    "small_cnn": small_cnn,
    "resnet18": lambda **kw: small_resnet(depth=18, **kw),
    "resnet34": lambda **kw: small_resnet(depth=34, **kw),
}


def build(name: str, **kwargs: Any) -> nn.Module:
    """The network ``name`` from the registry of known imaging models."""
    if name not in MODELS:
        raise BadInputError(
            f"unknown imaging model {name!r}; choose one of: {', '.join(sorted(MODELS))}"
        )
    try:
        return MODELS[name](**kwargs)
    except TypeError as exc:
        raise BadInputError(f"imaging model {name!r}: bad model_args ({exc})") from exc
