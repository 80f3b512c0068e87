"""Transforms on ``(T, C, H, W)`` video tensors, built from torchvision.transforms.v2.

v2 treats the leading ``T`` dimension as a batch of images and draws one set of random
parameters per call, so a random crop or flip is the same for every frame of a clip.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchvision.transforms import v2

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def video_transform(
    *,
    train: bool,
    crop: Sequence[int] | None,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> v2.Compose:
    """uint8 ``(T, 3, H, W)`` -> normalized float32 ``(T, 3, h, w)``.

    Train: random crop (padded when the frame is smaller). Eval: centre crop. Mirroring is
    done by the dataset, which knows which labels swap under a mirror.
    """
    steps: list = []
    if crop is not None:
        size = tuple(int(c) for c in crop)
        steps.append(v2.RandomCrop(size, pad_if_needed=True) if train else v2.CenterCrop(size))
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]
    return v2.Compose(steps)


def denormalize(video: torch.Tensor, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> torch.Tensor:
    """Invert :func:`video_transform`'s normalization: float ``(..., 3, H, W)`` -> uint8."""
    m = torch.tensor(mean, dtype=video.dtype, device=video.device).view(3, 1, 1)
    s = torch.tensor(std, dtype=video.dtype, device=video.device).view(3, 1, 1)
    return ((video * s + m).clamp(0, 1) * 255).round().to(torch.uint8)
