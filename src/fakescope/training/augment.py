"""Augmentations a deepfake detector needs, on uint8 CHW tensors of face crops.

Self-blended images (Shiohara & Yamasaki, CVPR 2022) turn a real face into a pseudo-fake
with an exact blending mask: the face is blended into a slightly altered copy of itself,
so the only evidence left is the blending boundary, which is what generalises to unseen
generators.
"""

from __future__ import annotations

import io
import math
import random

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms.v2 as T
from PIL import Image

from .batch_augment import H264Rounds


def _ellipse_mask(size: int, rng: random.Random) -> torch.Tensor:
    """A soft, randomly shaped face-region mask on a tight face crop (values in [0, 1])."""
    ys, xs = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    cx, cy = rng.uniform(0.42, 0.58), rng.uniform(0.45, 0.62)
    ax, ay = rng.uniform(0.25, 0.42), rng.uniform(0.3, 0.48)
    angle = rng.uniform(-0.3, 0.3)
    dx, dy = xs - cx, ys - cy
    u = (dx * math.cos(angle) + dy * math.sin(angle)) / ax
    v = (-dx * math.sin(angle) + dy * math.cos(angle)) / ay
    # A low-frequency wobble on the radius so the boundary is not a perfect ellipse.
    phase = torch.atan2(v, u)
    wobble = 1 + sum(
        rng.uniform(-0.08, 0.08) * torch.cos(k * phase + rng.uniform(0, 6.28)) for k in (2, 3, 5)
    )
    mask = ((u**2 + v**2).sqrt() < wobble).float()[None, None]
    kernel = rng.choice([9, 15, 21, 31]) | 1
    mask = T.functional.gaussian_blur(mask, [kernel, kernel], [kernel / 3, kernel / 3])
    return mask[0, 0]


def self_blend(image: torch.Tensor, rng: random.Random) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (pseudo-fake, mask) for a uint8 CHW real face crop."""
    size = image.shape[-1]
    source = image.float()
    target = source.clone()
    # Source-target mismatch: colour, sharpness and a small geometric shift.
    target = T.functional.adjust_brightness(target / 255, rng.uniform(0.85, 1.15))
    target = T.functional.adjust_hue(
        T.functional.adjust_saturation(target, rng.uniform(0.8, 1.2)), rng.uniform(-0.03, 0.03)
    )
    if rng.random() < 0.5:
        target = T.functional.gaussian_blur(target, [5, 5], [rng.uniform(0.5, 1.5)] * 2)
    else:
        target = T.functional.adjust_sharpness(target, rng.uniform(1.2, 2.0))
    scale = rng.uniform(0.95, 1.05)
    shift = [rng.uniform(-0.03, 0.03) * size, rng.uniform(-0.03, 0.03) * size]
    target = T.functional.affine(target, angle=0.0, translate=shift, scale=scale, shear=[0.0, 0.0])
    mask = _ellipse_mask(size, rng) * rng.choice([0.5, 0.75, 1.0, 1.0, 1.0])
    blended = mask * target * 255 + (1 - mask) * source
    return blended.clamp(0, 255).to(torch.uint8), mask


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
