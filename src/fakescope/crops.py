"""The crops stage: how a face box becomes a model input, for every stage that needs one.

The crop policy a model was trained on, the crop geometry (shared with the heat maps pasted
back), the resampling shared by training and inference, and normalised batches of crops.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

import cv2
import numpy as np
import torch

from .media import QP_CELL
from .types import Box, FakescopeError, PixelBox

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TF_MEAN = (0.5, 0.5, 0.5)
TF_STD = (0.5, 0.5, 0.5)


@dataclass(frozen=True)
class CropPolicy:
    """How a face box becomes a model input; it belongs to the model that was trained on it."""

    size: int = 224
    margin: float = 0.0  # fraction of the box's width/height added on every side
    resize: str = "stretch"  # "stretch": box -> square by stretching; "pad": isotropic resize + pad
    mean: tuple[float, float, float] = TF_MEAN
    std: tuple[float, float, float] = TF_STD

    def __post_init__(self) -> None:
        if self.resize not in ("stretch", "pad"):
            raise FakescopeError(f"crop resize must be 'stretch' or 'pad', not {self.resize!r}")

    @classmethod
    def from_dict(cls, data: dict) -> CropPolicy:
        return cls(**{**data, "mean": tuple(data["mean"]), "std": tuple(data["std"])})


def float_box(values: Iterable[float]) -> Box:
    """Four plain floats from any four numbers (numpy or torch scalars, ints)."""
    x1, y1, x2, y2 = (float(v) for v in values)
    return x1, y1, x2, y2


def whole_image_box(shape: Sequence[int]) -> Box:
    """The box covering a whole image, from its shape (height, width, ...): the face box of an
    input that already is a face crop, and the default content of a crop."""
    return 0.0, 0.0, float(shape[1]), float(shape[0])


def for_whole_image(policy: CropPolicy) -> CropPolicy:
    """The policy for an input that already is a face crop: no margin to add around it."""
    return replace(policy, margin=0.0)


def crop_geometry(box: Box, policy: CropPolicy) -> tuple[PixelBox, PixelBox]:
    """Where a crop comes from and where it lands: (source box in frame pixels, grown by the
    margin and possibly partly outside the frame; content box inside the size x size crop).

    Heat maps are pasted back through the same geometry, so crop and paste always agree.
    """
    bx1, by1, bx2, by2 = box
    mx, my = policy.margin * (bx2 - bx1), policy.margin * (by2 - by1)
    x1, y1, x2, y2 = (round(v) for v in (bx1 - mx, by1 - my, bx2 + mx, by2 + my))
    x2, y2 = max(x2, x1 + 1), max(y2, y1 + 1)
    size = policy.size
    if policy.resize == "stretch":
        return (x1, y1, x2, y2), (0, 0, size, size)
    scale = size / max(y2 - y1, x2 - x1)
    h, w = (max(1, min(size, round(n * scale))) for n in (y2 - y1, x2 - x1))
    top, left = (size - h) // 2, (size - w) // 2
    return (x1, y1, x2, y2), (left, top, left + w, top + h)


def crop_face(image: np.ndarray, box: Box, policy: CropPolicy) -> np.ndarray:
    """A policy.size square RGB uint8 crop of the box grown by policy.margin on every side.

    Parts of the grown box outside the image are black. "stretch" resizes the region to
    the square whatever its shape; "pad" keeps its aspect and centres it on black.
    """
    height, width = image.shape[:2]
    (x1, y1, x2, y2), (left, top, right, bottom) = crop_geometry(box, policy)
    region = np.zeros((y2 - y1, x2 - x1, 3), np.uint8)
    sx1, sy1, sx2, sy2 = max(x1, 0), max(y1, 0), min(x2, width), min(y2, height)
    if sx1 < sx2 and sy1 < sy2:
        region[sy1 - y1 : sy2 - y1, sx1 - x1 : sx2 - x1] = image[sy1:sy2, sx1:sx2]
    out = np.zeros((policy.size, policy.size, 3), np.uint8)
    out[top:bottom, left:right] = resize_rgb(region, width=right - left, height=bottom - top)
    return out


def crop_faces(
    images: Sequence[np.ndarray], boxes: Sequence[Box], policy: CropPolicy, crops: bool = False
) -> list[np.ndarray]:
    """`crop_face` of each (image, box); `crops`: each image already is the face crop."""
    used = for_whole_image(policy) if crops else policy
    return [crop_face(image, box, used) for image, box in zip(images, boxes, strict=True)]


def crop_face_tensor(image: torch.Tensor, box: Box, policy: CropPolicy) -> torch.Tensor:
    """`crop_face` of an H x W x 3 uint8 frame held as a tensor on any device, done there:
    on a GPU only the frame goes up. On the CPU it gives crop_face's bytes (same geometry,
    same resampling)."""
    height, width = image.shape[:2]
    (x1, y1, x2, y2), (left, top, right, bottom) = crop_geometry(box, policy)
    sx1, sy1, sx2, sy2 = max(x1, 0), max(y1, 0), min(x2, width), min(y2, height)
    # Fewer operations where nothing is black (each is a kernel launch on a GPU).
    if (sx1, sy1, sx2, sy2) == (x1, y1, x2, y2):
        region = image[y1:y2, x1:x2]
    else:
        region = image.new_zeros((y2 - y1, x2 - x1, 3))
        if sx1 < sx2 and sy1 < sy2:
            region[sy1 - y1 : sy2 - y1, sx1 - x1 : sx2 - x1] = image[sy1:sy2, sx1:sx2]
    if region.shape[:2] != (bottom - top, right - left):  # as resize_rgb: same size, same bytes
        region = resize_batch(region[None], right - left, bottom - top)[0].permute(1, 2, 0)
    if (left, top, right, bottom) == (0, 0, policy.size, policy.size):
        return region
    out = image.new_zeros((policy.size, policy.size, 3))
    out[top:bottom, left:right] = region
    return out


def crop_faces_tensor(
    images: Sequence[torch.Tensor], boxes: Sequence[Box], policy: CropPolicy, crops: bool = False
) -> torch.Tensor:
    """`crop_faces` on tensor frames, as one N x 3 x size x size uint8 batch on their device
    (`as_batch` of crop_faces on the CPU)."""
    used = for_whole_image(policy) if crops else policy
    cut = [crop_face_tensor(image, box, used) for image, box in zip(images, boxes, strict=True)]
    if not cut:
        return _empty_batch(policy.size, torch.uint8)
    return torch.stack(cut).permute(0, 3, 1, 2)


def crop_batch(
    images: Sequence[np.ndarray], boxes: Sequence[Box], policy: CropPolicy, crops: bool = False
) -> torch.Tensor:
    """The model input for the faces at `boxes` in `images`: `to_tensor` of `crop_faces`."""
    return to_tensor(crop_faces(images, boxes, policy, crops), policy)


SHARPNESS_CROP = CropPolicy(size=112)  # about the source width of DFDC's training faces


@dataclass(frozen=True)
class Cutting:
    """How faces are cut from frames for scoring."""

    policies: tuple[CropPolicy, ...]  # one crop per face and distinct policy
    # None: with NumPy on the CPU (the reference bytes); a device: each frame goes there once
    # and its faces are cut there.
    device: str | None = None
    crops: bool = False  # each frame already is the face crop


@dataclass
class Cuts:
    """The faces' crops and sharpness, in the order the faces were given."""

    crops: dict[CropPolicy, torch.Tensor]  # per policy: N x 3 x size x size RGB uint8
    sharpness: torch.Tensor  # N float64 (see sharpness), on the same device


def cut_faces(
    frames: Mapping[int, np.ndarray], faces: Sequence[tuple[int, Box]], cutting: Cutting
) -> Cuts:
    """Each face's crop per policy and its sharpness; a face is (frame index, box)."""
    boxes = [box for _, box in faces]
    device, crops = cutting.device, cutting.crops
    if device is None:
        images = [frames[i] for i, _ in faces]
        batches = {
            p: as_batch(crop_faces(images, boxes, p, crops), p.size) for p in cutting.policies
        }
        values = [sharpness(image, box) for image, box in zip(images, boxes)]
        return Cuts(batches, torch.tensor(values, dtype=torch.float64))
    if not faces:  # on the device too: a batch's crops are concatenated there
        empty = {p: as_batch([], p.size).to(device) for p in cutting.policies}
        return Cuts(empty, torch.empty(0, dtype=torch.float64, device=device))
    uploaded = {i: _to_device(frames[i], device) for i in dict.fromkeys(i for i, _ in faces)}
    tensors = [uploaded[i] for i, _ in faces]
    batches = {p: crop_faces_tensor(tensors, boxes, p, crops) for p in cutting.policies}
    return Cuts(batches, sharpness_tensor(crop_faces_tensor(tensors, boxes, SHARPNESS_CROP)))


def _to_device(image: np.ndarray, device: str) -> torch.Tensor:
    tensor = torch.from_numpy(image)
    if device == "cpu":
        return tensor
    # Pinned, then copied without waiting: a copy from pageable memory would first wait for
    # all the work queued on the device (the model's batches).
    return tensor.pin_memory().to(device, non_blocking=True)


def sharpness(image: np.ndarray, box: Box) -> float:
    """Variance of the Laplacian of the face box at 112 x 112 grey: how much fine detail the
    face holds once brought to a common size (low: blurred or upscaled)."""
    grey = cv2.cvtColor(crop_face(image, box, SHARPNESS_CROP), cv2.COLOR_RGB2GRAY)
    return float(cv2.Laplacian(grey, cv2.CV_64F).var())


def face_qp(qp: np.ndarray | None, box: Box, scale: float) -> float | None:
    """The mean H.264 quantiser of the cells a face box (frame pixels) covers: how coarsely
    the encoder kept that face. `qp` is its frame's Frame.qp, `scale` frame / source pixels;
    None when the frame has no quantisers there or the box lies outside it."""
    if qp is None:
        return None
    cell = QP_CELL * scale
    x1, y1, x2, y2 = box
    rows = slice(max(0, math.floor(y1 / cell)), max(0, math.ceil(y2 / cell)))
    cols = slice(max(0, math.floor(x1 / cell)), max(0, math.ceil(x2 / cell)))
    covered = qp[rows, cols]
    # FFmpeg reports 0 for macroblocks it kept no quantiser for (seen in field-coded frames);
    # a true 0 is lossless and could never make a face too compressed, so 0 is left out.
    coded = covered[covered > 0]
    return float(coded.mean()) if coded.size else None


# OpenCV's RGB -> grey for uint8: weights 0.299, 0.587, 0.114 in 15-bit fixed point, rounded
# (equal to cv2.cvtColor on all 2^24 colours).
GREY_WEIGHTS = (9798, 19235, 3735)
GREY_SHIFT = 15


def sharpness_tensor(crops: torch.Tensor) -> torch.Tensor:
    """`sharpness` of N x 3 x 112 x 112 uint8 SHARPNESS_CROP crops on any device, as N
    float64: OpenCV's grey and 3 x 3 Laplacian (reflected border) in torch, so the faces of a
    frame on a GPU never come back to the CPU."""
    r, g, b = crops.to(torch.int32).unbind(1)
    wr, wg, wb = GREY_WEIGHTS
    grey = (r * wr + g * wg + b * wb + (1 << (GREY_SHIFT - 1))) >> GREY_SHIFT
    padded = torch.nn.functional.pad(grey[:, None].double(), (1, 1, 1, 1), mode="reflect")
    kernel = torch.tensor(
        [[0, 1, 0], [1, -4, 1], [0, 1, 0]], dtype=torch.float64, device=crops.device
    )
    laplacian = torch.nn.functional.conv2d(padded, kernel.view(1, 1, 3, 3))
    return laplacian.flatten(1).var(dim=1, correction=0)


def resize_rgb(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """HWC uint8 resize shared by training and inference: a model sees crops resampled the
    way it was trained on (a resampler mismatch alone cost 0.007 val AUC). Antialiased
    bilinear, so shrinking averages instead of aliasing."""
    if image.shape[:2] == (height, width):
        return image
    batch = torch.from_numpy(np.ascontiguousarray(image))[None]
    return resize_batch(batch, width, height)[0].permute(1, 2, 0).numpy()


def resize_batch(images: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """`resize_rgb` for N x H x W x 3 uint8 images of one size at once: N x 3 x height x width."""
    tensor = images.permute(0, 3, 1, 2).float()
    resized = torch.nn.functional.interpolate(
        tensor, size=(height, width), mode="bilinear", antialias=True
    )
    return resized.round_().clamp_(0, 255).to(torch.uint8)


def _empty_batch(size: int, dtype: torch.dtype) -> torch.Tensor:
    return torch.empty((0, 3, size, size), dtype=dtype).contiguous(
        memory_format=torch.channels_last
    )


def as_batch(crops: Sequence[np.ndarray], size: int) -> torch.Tensor:
    """size x size HWC uint8 crops as one N x 3 x size x size uint8 tensor (channels_last)."""
    if not crops:
        return _empty_batch(size, torch.uint8)
    # NHWC uint8 permuted to NCHW is already channels_last in memory; ops keep that layout.
    return torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2)


def to_tensor(crops: Sequence[np.ndarray], policy: CropPolicy) -> torch.Tensor:
    """N x 3 x size x size float32, normalised by the policy's mean/std, channels_last."""
    return normalise(as_batch(crops, policy.size), policy.mean, policy.std)


def normalise(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 N x 3 x H x W crops as the model's float input, channels_last: scaled to [0, 1],
    then by the policy's mean and std. Inference and both training paths go through here."""
    mean_t = torch.tensor(mean, dtype=torch.float32, device=images.device).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32, device=images.device).view(1, 3, 1, 1)
    # In place after one copy (always a copy: the caller's tensor is never written): the same
    # arithmetic, a third of the memory traffic.
    # Converted, then laid out: twice as fast as both in one step on a CPU.
    scaled = images.to(torch.float32, copy=True).contiguous(memory_format=torch.channels_last)
    return scaled.div_(255).sub_(mean_t).div_(std_t)
