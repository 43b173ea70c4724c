"""A training pack: one file that carries a face-crop data set to a GPU box, and the decoded
in-memory cache that training draws its batches from.

The pack stores each crop's original file bytes, never re-encoded: a pack that re-encoded
its crops (128 px WebP) taught a model that encoding, and it fell from 0.94 to 0.75 AUC on
the original JPEGs. A byte budget is met by keeping whole clusters (a real source video
with its fakes) instead. Each crop also carries the detector's 5 landmarks, found once at
pack time, which shape the self-blending masks.
"""

from __future__ import annotations

import io
import json
import random
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.numpy import save_file

from ..blending import MEAN_LANDMARKS
from ..crops import resize_batch
from ..faces import FaceDetector, Landmarks68
from ..files import atomic_path
from ..types import FakescopeError
from .data import Sample, list_samples

PACK_FORMAT = "fakescope-pack/1"
# Detection runs on the crop centred in a grey canvas: a tight crop leaves the detector no
# context around the face, and it misses faces that touch the border.
_CANVAS = 1.43


@dataclass(frozen=True)
class CropSet:
    """Face crops decoded once: uint8 N x 3 x size x size, with labels, clusters and landmarks."""

    images: torch.Tensor
    labels: torch.Tensor  # float, 1 = fake
    clusters: list[str]
    landmarks: torch.Tensor  # N x 5 x 2 or N x 68 x 2, fractions of the crop

    def __len__(self) -> int:
        return len(self.clusters)

    def subset(self, indices: list[int]) -> CropSet:
        rows = torch.tensor(indices, dtype=torch.long)
        return CropSet(
            self.images[rows],
            self.labels[rows],
            [self.clusters[i] for i in indices],
            self.landmarks[rows],
        )


def decode_all(blobs: Iterable[bytes], count: int, size: int, chunk: int = 256) -> torch.Tensor:
    """count x 3 x size x size uint8: each encoded crop decoded, then resized as inference
    resizes a crop, many of one shape at a time (one call per image was 15 times slower
    and left gigabytes of freed buffers behind)."""
    out = torch.empty(count, 3, size, size, dtype=torch.uint8)
    waiting: dict[tuple[int, ...], list[tuple[int, np.ndarray]]] = defaultdict(list)

    def flush(shape: tuple[int, ...]) -> None:
        group = waiting.pop(shape)
        rows = [i for i, _ in group]
        pixels = torch.from_numpy(np.stack([p for _, p in group]))
        if shape[:2] == (size, size):
            out[rows] = pixels.permute(0, 3, 1, 2)
        else:
            out[rows] = resize_batch(pixels, size, size)

    for i, data in enumerate(blobs):
        with Image.open(io.BytesIO(data)) as image:
            pixels = np.array(image.convert("RGB"))
        waiting[pixels.shape].append((i, pixels))
        if len(waiting[pixels.shape]) == chunk:
            flush(pixels.shape)
    for shape in list(waiting):
        flush(shape)
    return out


def crop_landmarks(
    detector: FaceDetector, crops: list[np.ndarray], points68: Landmarks68 | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """N x 5 x 2 landmarks as fractions of each crop, the mean crop's where none is found;
    with `points68`, also N x 68 x 2, found in the detected box (the whole crop where there
    is none: a crop is the detector's tight box)."""
    canvases, shapes = [], []
    for crop in crops:
        height, width = crop.shape[:2]
        side = round(max(height, width) * _CANVAS)
        canvas = np.full((side, side, 3), 127, np.uint8)
        top, left = (side - height) // 2, (side - width) // 2
        canvas[top : top + height, left : left + width] = crop
        canvases.append(canvas)
        shapes.append((top, left, height, width))
    found = detector.detect(canvases)
    result = np.repeat(MEAN_LANDMARKS[None], len(crops), axis=0)
    sixty_eight = np.zeros((len(crops), 68, 2), np.float32) if points68 else None
    for i, (detections, (top, left, height, width)) in enumerate(zip(found, shapes, strict=True)):
        best = max(detections, key=lambda d: d.score, default=None)
        if best is not None and best.landmarks is not None:
            result[i] = (best.landmarks - [left, top]) / [width, height]
        if points68 is not None and sixty_eight is not None:
            box = (0.0, 0.0, width - 1.0, height - 1.0)
            if best is not None:
                x1, y1, x2, y2 = best.box
                box = (x1 - left, y1 - top, x2 - left, y2 - top)
            sixty_eight[i] = points68(crops[i], box) / [width, height]
    return result, sixty_eight


# Bytes a crop adds besides its file: offset, label, landmarks, name and cluster; 68-point
# landmarks add 68 x 2 float16.
PER_CROP_OVERHEAD = 160
LANDMARKS68_BYTES = 68 * 2 * 2


def choose_within_budget(
    samples: list[Sample], sizes: list[int], budget: int, seed: int
) -> list[int]:
    """Indices of whole clusters, in a seeded order, while their bytes fit the budget: each
    cluster's real with one fake first, then the remaining fakes of the chosen clusters.
    `sizes` are what each crop costs in the pack."""
    by_cluster: dict[str, list[int]] = defaultdict(list)
    for i, sample in enumerate(samples):
        by_cluster[sample.cluster].append(i)
    order = sorted(by_cluster)
    random.Random(seed).shuffle(order)
    chosen: list[int] = []
    used = 0
    rest: list[int] = []
    for cluster in order:
        members = sorted(
            by_cluster[cluster], key=lambda i: (samples[i].label, samples[i].path.name)
        )
        reals = [i for i in members if samples[i].label == 0]
        fakes = [i for i in members if samples[i].label == 1]
        first = reals + fakes[:1]
        cost = sum(sizes[i] for i in first)
        if used + cost > budget:
            continue
        chosen += first
        used += cost
        rest += fakes[1:]
    for i in rest:
        if used + sizes[i] <= budget:
            chosen.append(i)
            used += sizes[i]
    return sorted(chosen)


def build_pack(
    root: str | Path,
    out: str | Path,
    detector: FaceDetector,
    budget_mb: float | None = 50,
    seed: int = 0,
    batch: int = 64,
    progress: Callable[[int, int], None] | None = None,
    points68: Landmarks68 | None = None,
) -> dict[str, int]:
    """Write `root/{real,fake}` (clusters from its manifest) as one pack file; returns counts.
    `progress(done, total)` is called after each batch of crops. With `points68`, each crop
    also carries 68 landmarks (float16, 272 bytes), for self-blending masks shaped as SBI's."""
    samples = list_samples(root)
    overhead = PER_CROP_OVERHEAD + (LANDMARKS68_BYTES if points68 else 0)
    sizes = [s.path.stat().st_size + overhead for s in samples]
    budget = sum(sizes) if budget_mb is None else int(budget_mb * 2**20)
    chosen = choose_within_budget(samples, sizes, budget, seed)
    if not chosen:
        raise FakescopeError(f"{root}: no cluster fits a budget of {budget_mb} MB")
    blobs, landmarks, landmarks68 = [], [], []
    for start in range(0, len(chosen), batch):
        part = [samples[i] for i in chosen[start : start + batch]]
        data = [s.path.read_bytes() for s in part]
        crops = []
        for raw in data:
            with Image.open(io.BytesIO(raw)) as image:
                crops.append(np.array(image.convert("RGB")))
        five, sixty_eight = crop_landmarks(detector, crops, points68)
        landmarks.append(five)
        if sixty_eight is not None:
            landmarks68.append(sixty_eight)
        blobs += data
        if progress is not None:
            progress(len(blobs), len(chosen))
    offsets = np.cumsum([0] + [len(b) for b in blobs]).astype(np.int64)
    tensors: dict[str, np.ndarray] = {
        "bytes": np.frombuffer(b"".join(blobs), np.uint8),
        "offsets": offsets,
        "labels": np.array([samples[i].label for i in chosen], np.uint8),
        "landmarks": np.concatenate(landmarks).astype(np.float32),
    }
    if landmarks68:
        tensors["landmarks68"] = np.concatenate(landmarks68).astype(np.float16)
    metadata = {
        "format": PACK_FORMAT,
        "clusters": json.dumps([samples[i].cluster for i in chosen]),
        "names": json.dumps(
            [f"{('real', 'fake')[samples[i].label]}/{samples[i].path.name}" for i in chosen]
        ),
    }
    out = Path(out)
    with atomic_path(out) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    labels = tensors["labels"]
    return {
        "crops": len(chosen),
        "real": int((labels == 0).sum()),
        "fake": int((labels == 1).sum()),
        "bytes": out.stat().st_size,
    }


def is_pack(path: str | Path) -> bool:
    return Path(path).suffix == ".safetensors" and Path(path).is_file()


def _read_pack(path: str | Path) -> tuple[dict[str, np.ndarray], dict[str, str], list[bytes]]:
    """(tensors, metadata, each crop's file bytes) of a pack, in one read."""
    try:
        with safe_open(str(path), "np") as handle:
            metadata = handle.metadata() or {}
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    except Exception as exc:  # a truncated or foreign file: say which, in one line
        raise FakescopeError(f"{path}: not a training pack ({exc})") from None
    if metadata.get("format") != PACK_FORMAT:
        raise FakescopeError(f"{path}: not a training pack (format {metadata.get('format')!r})")
    data, offsets = tensors["bytes"], tensors["offsets"]
    blobs = [data[offsets[i] : offsets[i + 1]].tobytes() for i in range(len(offsets) - 1)]
    return tensors, metadata, blobs


def unpack(path: str | Path, folder: str | Path) -> Path:
    """Write a pack's crops back as files (their original bytes) under folder/{real,fake}."""
    _, metadata, blobs = _read_pack(path)
    folder = Path(folder)
    for name, data in zip(json.loads(metadata["names"]), blobs, strict=True):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    return folder


def load_pack(path: str | Path, size: int, points: int = 5) -> CropSet:
    """Decode every crop of a pack at `size` x `size`, as inference resizes a crop, with its
    5 or 68 landmarks."""
    tensors, metadata, blobs = _read_pack(path)
    key = {5: "landmarks", 68: "landmarks68"}[points]
    if key not in tensors:
        raise FakescopeError(
            f"{path}: no {points}-point landmarks (`fakescope pack --landmarks68` adds them)"
        )
    images = decode_all(iter(blobs), len(blobs), size)
    return CropSet(
        images,
        torch.from_numpy(tensors["labels"].astype(np.float32)),
        json.loads(metadata["clusters"]),
        torch.from_numpy(tensors[key].astype(np.float32)),
    )


def load_folder(samples: list[Sample], size: int) -> CropSet:
    """Decode a folder's crops at `size`; the mean crop's landmarks stand in for detected ones."""
    images = decode_all((s.path.read_bytes() for s in samples), len(samples), size)
    landmarks = torch.from_numpy(np.repeat(MEAN_LANDMARKS[None], len(samples), axis=0))
    labels = torch.tensor([float(s.label) for s in samples])
    return CropSet(images, labels, [s.cluster for s in samples], landmarks)
