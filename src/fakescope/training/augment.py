"""Augmentations a deepfake detector needs, per image, on uint8 CHW tensors of face crops
(the `stream` input; self-blending is `fakescope.blending`'s, as in every mode)."""

from __future__ import annotations

import io
import random

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms.v2 as T
from PIL import Image

from .batch_augment import H264Rounds


class ResampleChain(torch.nn.Module):
    """Lose detail as a small source face or a platform's scaler does: shrink, then enlarge
    back, each step with its own filter."""

    MODES = ("bilinear", "bicubic", "nearest", "area")

    def __init__(self, low: float = 0.3, high: float = 0.9):
        super().__init__()
        self.low, self.high = low, high

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        size = image.shape[-2:]
        small = _resize(image[None].float(), scale=random.uniform(self.low, self.high))
        return _resize(small, size=size).round().clamp(0, 255)[0].to(torch.uint8)


def _resize(x: torch.Tensor, scale: float | None = None, size=None) -> torch.Tensor:
    mode = random.choice(ResampleChain.MODES)
    options = {"antialias": True} if mode in ("bilinear", "bicubic") else {}
    if mode in ("bilinear", "bicubic"):
        options["align_corners"] = False
    return F.interpolate(x, size=size, scale_factor=scale, mode=mode, **options)


class Recompress(torch.nn.Module):
    """Uploads are re-encoded by each messenger or platform they pass: one or two rounds of
    JPEG or WebP (a block-transform intra codec, like a video's key frames) at random
    qualities. Applied to reals and fakes alike, so compression never tells the class."""

    def __init__(self, low: int = 30, high: int = 95):
        super().__init__()
        self.low, self.high = low, high

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        for _ in range(random.choice((1, 1, 2))):
            quality = random.randint(self.low, self.high)
            if random.random() < 0.75:
                image = T.functional.jpeg(image, quality)
            else:
                image = _webp(image, quality)
        return image


def _webp(image: torch.Tensor, quality: int) -> torch.Tensor:
    buffer = io.BytesIO()
    Image.fromarray(image.permute(1, 2, 0).numpy()).save(buffer, format="WEBP", quality=quality)
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return torch.from_numpy(np.array(decoded.convert("RGB"))).permute(2, 0, 1).contiguous()


def training_transform(size: int, jpeg: float = 0.7, h264: float = 0.0) -> T.Compose:
    """Random degradations seen in the wild, on uint8 CHW tensors: H.264 on a share `h264`
    (`batch_augment.H264Rounds`), JPEG or WebP rounds on a share `jpeg`."""
    coded = H264Rounds(p=1.0)
    return T.Compose(
        [
            T.RandomResizedCrop(size, scale=(0.8, 1.0), ratio=(0.9, 1.1), antialias=True),
            T.RandomHorizontalFlip(),
            T.RandomApply([T.ColorJitter(0.2, 0.2, 0.2, 0.03)], p=0.5),
            T.RandomApply([T.GaussianBlur(5, sigma=(0.3, 1.5))], p=0.2),
            T.RandomApply([ResampleChain()], p=0.3),
            T.RandomApply([T.Lambda(lambda image: coded(image[None])[0])], p=h264),
            T.RandomApply([Recompress()], p=jpeg),
        ]
    )
