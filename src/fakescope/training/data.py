"""Face-crop data sets laid out as `real/` and `fake/` folders, with clusters kept together."""

from __future__ import annotations

import csv
import hashlib
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from ..blending import MEAN_LANDMARKS, SelfBlend
from ..crops import normalise, resize_rgb
from ..types import FakescopeError
from .augment import training_transform

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp"}


@dataclass(frozen=True)
class Sample:
    path: Path
    label: int  # 1 = fake
    cluster: str  # the real source video; a real clip and its fakes share one


def list_samples(root: str | Path) -> list[Sample]:
    """Samples under `root/{real,fake}`, clustered by `manifest.csv` (in root or its parent)
    when present."""
    root = Path(root)
    if not (root / "real").is_dir() and not (root / "fake").is_dir():
        raise FakescopeError(f"{root}: expected folders real/ and fake/")
    clusters = {}
    for manifest in (root / "manifest.csv", root.parent / "manifest.csv"):
        if manifest.is_file():
            with open(manifest, newline="") as handle:
                clusters = {
                    (manifest.parent / row["path"]).resolve(): row["cluster"]
                    for row in csv.DictReader(handle)
                }
            break
    samples = []
    for label, folder in ((0, "real"), (1, "fake")):
        for path in sorted((root / folder).glob("*")):
            if path.suffix.lower() in IMAGE_SUFFIXES:
                samples.append(Sample(path, label, clusters.get(path.resolve(), path.stem)))
    if not samples:
        raise FakescopeError(f"{root}: no images in real/ or fake/")
    return samples


def held_out(cluster: str, holdout: float, seed: int = 0) -> bool:
    """Whether a cluster (identity) is in the held-out share: a deterministic hash draw, so a
    folder and a pack of it split alike and no cluster is on both sides."""
    digest = hashlib.sha256(f"{seed}:{cluster}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < holdout


def split_by_cluster(
    samples: list[Sample], holdout: float, seed: int = 0
) -> tuple[list[Sample], list[Sample]]:
    """Deterministic split in which no cluster (identity) is on both sides."""
    train = [s for s in samples if not held_out(s.cluster, holdout, seed)]
    held = [s for s in samples if held_out(s.cluster, holdout, seed)]
    return train, held


def balanced_epoch(
    labels: Sequence[int], size: int, sbi_share: float, epoch: int, seed: int
) -> list[tuple[int, bool]]:
    """Indices for one epoch: half real, half fake, a share of the fakes self-blended from reals.

    Deterministic in (seed, epoch), so a resumed run sees the same order.
    """
    rng = random.Random(seed * 100003 + epoch)
    reals = [i for i, label in enumerate(labels) if label == 0]
    fakes = [i for i, label in enumerate(labels) if label == 1]
    half = size // 2
    n_sbi = int(half * sbi_share) if reals else 0

    def draw(pool: list[int], n: int) -> list[int]:
        return (
            [pool[j % len(pool)] for j in rng.sample(range(max(n, len(pool))), n)] if pool else []
        )

    items = [(i, False) for i in draw(reals, half)]
    items += [(i, False) for i in draw(fakes, half - n_sbi)] + [
        (i, True) for i in draw(reals, n_sbi)
    ]
    rng.shuffle(items)
    return items


def read_rgb(path: Path, size: int) -> torch.Tensor:
    """uint8 CHW RGB, resized to size x size exactly as inference resizes a face crop."""
    with Image.open(path) as image:
        pixels = resize_rgb(np.array(image.convert("RGB")), width=size, height=size)
    return torch.from_numpy(pixels).permute(2, 0, 1).contiguous()


class CropDataset(Dataset):
    """Face crops as normalised float tensors; training mode augments and self-blends.

    A folder's crops carry no landmarks: their self-blending masks are laid out from the mean
    crop's, as the cached input lays out a folder's (`pack.load_folder`)."""

    def __init__(
        self,
        samples,
        items,
        size,
        mean,
        std,
        train: bool,
        seed: int = 0,
        codecs=(0.7, 0.0),
        sharpen: float = 0.5,
    ):
        self.samples, self.items, self.size, self.train, self.seed = (
            samples,
            items,
            size,
            train,
            seed,
        )
        self.mean, self.std = mean, std
        self.augment = training_transform(size, *codecs) if train else None
        self.blend = SelfBlend(sharpen)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, position: int):
        index, blend = self.items[position]
        sample = self.samples[index]
        image = read_rgb(sample.path, self.size)
        label = sample.label
        if blend:
            image = self._self_blended(image, self.seed * 7919 + position)
            label = 1
        if self.augment is not None:
            image = self.augment(image)
        tensor = normalise(image[None], self.mean, self.std)[0]
        return tensor, torch.tensor(float(label))

    def _self_blended(self, image: torch.Tensor, seed: int) -> torch.Tensor:
        """A uint8 CHW crop self-blended with draws seeded by `seed` (a resumed run blends
        alike), leaving the augmentations' draws from torch's generator where they were."""
        landmarks = torch.from_numpy(MEAN_LANDMARKS)[None]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            blended, _ = self.blend(image[None].float().div_(255), landmarks)
        return blended.mul_(255).round_().to(torch.uint8)[0]
