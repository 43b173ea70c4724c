"""Batches from decoded crops held in memory, self-blended and augmented as whole batches.

No decoding and no per-image Python work: a batch is gathered from the uint8 cache and
transformed at once. On a GPU that happens on the card, in the training process; on a CPU,
loader processes each make whole batches, so the augmentation runs beside the model's step.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import replace

import torch
from torch.utils.data import DataLoader, Dataset

from ..blending import SelfBlend, align, defocus_surround
from ..crops import normalise
from ..types import FakescopeError
from .batch_augment import BatchAugment
from .pack import CropSet


class TrainingBatches:
    """An epoch's (images, targets) batches for `items` = (index, self-blend?) pairs."""

    def __init__(
        self,
        crops: CropSet,
        mean: Sequence[float],
        std: Sequence[float],
        device: torch.device,
        seed: int,
        jpeg: float = 0.7,
        h264: float = 0.0,
        clean: bool = False,
        swap: float = 0.0,
        defocus: float = 0.0,
        defocus_blur: float = 0.016,
        sharpen: float = 0.5,
    ):
        self.crops = _held_for(crops, device)
        self.mean, self.std, self.device, self.seed = mean, std, device, seed
        self.clean, self.swap = clean, swap
        self.defocus, self.defocus_blur = defocus, defocus_blur
        self.donors = donor_table(self.crops) if swap else None
        self.augment = BatchAugment(crops.images.shape[-1], jpeg=jpeg, h264=h264)
        self.blend = SelfBlend(sharpen)

    def batch(self, items: Sequence[tuple[int, bool]], step: int) -> tuple[torch.Tensor, ...]:
        """The model's input and targets for one step; with `clean`, also each crop as it was
        before the degradations and codecs (cropped, flipped and self-blended alike), the
        input of a distillation teacher."""
        # Seeded per step: a resumed run draws the same augmentations as an unbroken one.
        torch.manual_seed(self.seed * 1_000_003 + step)
        rows = torch.tensor([index for index, _ in items], device=self.crops.images.device)
        cropped, landmarks = self.augment.crop(
            self.crops.images[rows].to(self.device, non_blocking=True),
            self.crops.landmarks[rows].to(self.device),
        )
        images = cropped.float().div_(255)
        targets = self.crops.labels[rows].to(self.device)
        blend = torch.tensor([flag for _, flag in items], device=self.device)
        if blend.any():
            swapped = torch.zeros_like(blend)
            if self.donors is not None:  # drawn only when asked: a run without keeps its draws
                swapped = blend & (torch.rand(len(blend), device=self.device) < self.swap)
            own = blend & ~swapped
            if own.any():
                images[own], _ = self.blend(images[own], landmarks[own])
            if swapped.any():
                images[swapped] = self._swapped(
                    images[swapped], landmarks[swapped], rows[swapped.to(rows.device)]
                )
            targets = torch.where(blend, torch.ones_like(targets), targets)
        if self.defocus:  # drawn only when asked, as the swaps are
            images = self._defocused(images, landmarks)
        if not self.clean:
            return normalise(self.augment(images), self.mean, self.std), targets
        # The augmentation writes into its batch: the clean view is taken first, as uint8.
        clean = images.mul(255).round_().clamp_(0, 255).to(torch.uint8)
        degraded = normalise(self.augment(images), self.mean, self.std)
        return degraded, targets, normalise(clean, self.mean, self.std)

    def _swapped(
        self, images: torch.Tensor, landmarks: torch.Tensor, rows: torch.Tensor
    ) -> torch.Tensor:
        """Each face blended with one of its donors (another person's face, `align`ed to it)."""
        assert self.donors is not None
        table = self.donors[rows.to(self.donors.device)]
        pick = torch.randint(table.shape[1], (len(rows),), device=table.device)
        donors = table[torch.arange(len(rows), device=table.device), pick]
        faces = self.crops.images[donors].to(self.device).float().div_(255)
        faces = align(faces, self.crops.landmarks[donors].to(self.device), landmarks)
        return self.blend(images, landmarks, faces)[0]

    def _defocused(self, images: torch.Tensor, landmarks: torch.Tensor) -> torch.Tensor:
        """A share `defocus` of the batch, reals and fakes alike, with a soft background
        (sigma from 0.5% of the crop up to `defocus_blur`: 1-3 px at 192 by default) outside
        the face outline grown 1-1.4 times, where a video call's background blur or a shallow
        depth of field leaves a real head: that sharpness step must not read as a blend's."""
        chosen = (torch.rand(len(images), device=images.device) < self.defocus).nonzero()
        chosen = chosen.flatten()
        if len(chosen):
            size = images.shape[-1]
            sigma = torch.empty(len(chosen), device=images.device).uniform_(
                0.005, self.defocus_blur
            )
            scale = torch.empty(len(chosen), device=images.device).uniform_(1.0, 1.4)
            images[chosen] = defocus_surround(
                images[chosen], landmarks[chosen], sigma * size, scale
            )
        return images

    def epoch(
        self,
        items: Sequence[tuple[int, bool]],
        batch_size: int,
        first_step: int = 0,
        workers: int = 0,
    ) -> Iterator[tuple[torch.Tensor, ...]]:
        """Full batches of `items` from step `first_step` on (a resumed epoch's position),
        made by `workers` loader processes when the device is a CPU."""
        steps = _Steps(self, items, batch_size, first_step)
        if workers and self.device.type == "cpu":
            # The workers hand over the model's input whole: normalising in the training
            # process instead cost it 10% of its input rate in contention on 2 cores.
            yield from DataLoader(steps, batch_size=None, num_workers=workers, prefetch_factor=2)
        else:
            yield from (steps[i] for i in range(len(steps)))


def donor_table(crops: CropSet, k: int = 16) -> torch.Tensor:
    """N x k: for each real crop, the k real crops of other clusters (other people) whose
    landmarks lie nearest its own, the donors of its swapped blends (Face X-ray picks its
    donors so); -1 for fakes, which are never blended."""
    reals = (crops.labels == 0).nonzero().flatten().cpu()
    clusters = {c: i for i, c in enumerate(dict.fromkeys(crops.clusters))}
    cluster = torch.tensor([clusters[crops.clusters[i]] for i in reals.tolist()])
    if cluster.unique().numel() < 2:
        raise FakescopeError("swapped blends need real crops of at least two clusters (people)")
    points = crops.landmarks[reals].flatten(1).float().cpu()
    k = min(k, len(reals) - int(cluster.bincount().max()))  # every pick from another cluster
    table = torch.full((len(crops), k), -1, dtype=torch.long)
    for start in range(0, len(reals), 1024):
        distances = torch.cdist(points[start : start + 1024], points)
        same = cluster[start : start + 1024, None] == cluster[None]
        nearest = distances.masked_fill_(same, float("inf")).topk(k, largest=False).indices
        table[reals[start : start + 1024]] = reals[nearest]
    return table.to(crops.images.device)


def _held_for(crops: CropSet, device: torch.device) -> CropSet:
    """The cache in the GPU's memory when it takes at most half of what is free there: a batch
    is then gathered on the card, and nothing crosses the bus. Elsewhere it stays as it is."""
    if device.type != "cuda" or crops.images.numel() > torch.cuda.mem_get_info(device)[0] // 2:
        return crops
    return replace(
        crops,
        images=crops.images.to(device),
        labels=crops.labels.to(device),
        landmarks=crops.landmarks.to(device),
    )


class _Steps(Dataset):
    """An epoch's batches by step, for loader processes."""

    def __init__(
        self,
        batches: TrainingBatches,
        items: Sequence[tuple[int, bool]],
        batch_size: int,
        first_step: int,
    ):
        self.batches, self.items, self.batch_size, self.first = (
            batches,
            items,
            batch_size,
            first_step,
        )

    def __len__(self) -> int:
        return max(0, len(self.items) // self.batch_size - self.first)

    def __getitem__(self, position: int) -> tuple[torch.Tensor, ...]:
        step = self.first + position
        return self.batches.batch(
            self.items[step * self.batch_size : (step + 1) * self.batch_size], step
        )


def eval_batches(
    crops: CropSet,
    batch_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    device: torch.device,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Every crop once, unaugmented, in order."""
    for start in range(0, len(crops), batch_size):
        images = crops.images[start : start + batch_size].to(device)
        yield normalise(images, mean, std), crops.labels[start : start + batch_size]
