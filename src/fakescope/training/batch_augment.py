"""Augmentation of whole batches on the training device.

The per-image pipeline in `augment.py` decodes and augments each crop in a loader worker,
which caps a GPU at the speed of the CPU cores. Here a batch of cached uint8 crops is
augmented where the model runs, each image with its own random parameters but the batch in
one call per transform, only the images a transform picked being computed. The per-image
filters, and the self-blending with masks shaped by each face's landmarks, are in
`fakescope.blending`, which `xai-eval` shares.

All randomness comes from torch's global generator: seed it per batch for a run that
resumes where it stopped. The transforms write into the batch they are given and return it:
a batch belongs to the pipeline, and copying it whole costs as much as most transforms.
"""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
import torch
from torchvision.io import decode_jpeg, encode_jpeg

from ..blending import ColourJitter, blur, interpolate


def resized_crop_flip(
    images: torch.Tensor,
    landmarks: torch.Tensor,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    size: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """torchvision's RandomResizedCrop then RandomHorizontalFlip on uint8 images, each with its
    own crop (area share in `scale`, aspect in `ratio`, whole pixels) and coin, resized with
    the antialiased bilinear filter inference uses; with the landmarks (B x 5 x 2, fractions
    of the crop) moved along. Done before anything turns the batch to floats: uint8
    resampling is the cheapest pass there is on a CPU."""
    batch, side = images.shape[0], images.shape[-1]
    area = torch.empty(batch).uniform_(*scale)
    aspect = torch.empty(batch).uniform_(*ratio).log().mul(0.5).exp()
    widths = (area.sqrt() * aspect * side).round().clamp(1, side).long()
    heights = (area.sqrt() / aspect * side).round().clamp(1, side).long()
    lefts = (torch.rand(batch) * (side - widths + 1)).long()
    tops = (torch.rand(batch) * (side - heights + 1)).long()
    flips = torch.rand(batch) < 0.5
    out = images.new_empty(batch, 3, size, size)
    for i, (left, top, width, height, flip) in enumerate(
        zip(lefts.tolist(), tops.tolist(), widths.tolist(), heights.tolist(), flips.tolist())
    ):
        region = images[i : i + 1, :, top : top + height, left : left + width]
        if region.shape[-2:] != (size, size) and region.device.type == "cpu":
            region = interpolate(region, "bilinear", size=(size, size))  # a uint8 kernel
        elif region.shape[-2:] != (size, size):  # CUDA resamples floats only
            region = interpolate(region.float(), "bilinear", size=(size, size))
            region = region.round_().clamp_(0, 255).to(images.dtype)
        out[i] = region[0].flip(-1) if flip else region[0]
    origin = torch.stack([lefts, tops], 1).to(landmarks) / side
    extent = torch.stack([widths, heights], 1).to(landmarks) / side
    moved = (landmarks - origin[:, None]) / extent[:, None]
    flipped = flips.to(landmarks.device)[:, None]
    moved[..., 0] = torch.where(flipped, 1 - moved[..., 0], moved[..., 0])
    return out, moved


class ResampleBatch(torch.nn.Module):
    """Shrink then enlarge back a random share of the batch, each image at its own scale and
    with its own filters, as a small source face or a platform's scaler loses detail."""

    MODES = ("bilinear", "bicubic", "nearest", "area")

    def __init__(self, p: float = 0.3, low: float = 0.3, high: float = 0.9):
        super().__init__()
        self.p, self.low, self.high = p, low, high

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        chosen = (torch.rand(images.shape[0]) < self.p).nonzero().flatten().tolist()
        if not chosen:
            return images
        size = images.shape[-2:]
        for i in chosen:
            scale = float(torch.empty(1).uniform_(self.low, self.high))
            down, up = (self.MODES[int(j)] for j in torch.randint(len(self.MODES), (2,)))
            small = interpolate(images[i : i + 1], down, scale_factor=scale)
            images[i] = interpolate(small, up, size=size)[0].clamp(0, 1)
        return images


class JpegRounds(torch.nn.Module):
    """One or two rounds of real JPEG (libjpeg on the CPU, nvJPEG on a GPU) at random
    qualities, on uint8 images. Qualities are drawn in steps of 5 so that each step is one
    batched codec call."""

    def __init__(self, p: float = 0.7, low: int = 30, high: int = 95):
        super().__init__()
        self.p, self.qualities = p, torch.arange(low, high + 1, 5)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        rounds = (torch.rand(images.shape[0]) < self.p).long()
        rounds += (rounds > 0) & (torch.rand(images.shape[0]) < 1 / 3)
        for _ in range(2):
            quality = self.qualities[torch.randint(len(self.qualities), (images.shape[0],))]
            for q in quality[rounds > 0].unique().tolist():
                rows = ((rounds > 0) & (quality == q)).nonzero().flatten().tolist()
                encoded = encode_jpeg([images[i] for i in rows], quality=q)
                # nvJPEG encodes on the card but decodes from host memory.
                decoded = decode_jpeg([e.cpu() for e in encoded], device=images.device)
                images[rows] = torch.stack(decoded)
            rounds -= (rounds > 0).long()
        return images


def h264_roundtrip(image: np.ndarray, crf: int, shift: tuple[int, int]) -> np.ndarray:
    """An H x W x 3 uint8 image (even sides) coded by x264 at `crf` and decoded again, as the
    second frame of a two-frame clip whose first frame is the image moved by `shift` (dy, dx)
    pixels: a predicted frame, like most frames of a video, not a key frame. One thread and a
    fixed setting: the same input always gives the same bytes."""
    height, width = image.shape[:2]
    encoder = av.CodecContext.create("libx264", "w")
    encoder.width, encoder.height, encoder.pix_fmt = width, height, "yuv420p"
    encoder.time_base, encoder.thread_count = Fraction(1, 25), 1
    encoder.options = {"crf": str(crf), "preset": "veryfast", "tune": "zerolatency"}
    first = np.roll(image, shift, axis=(0, 1))
    packets = []
    for pts, picture in enumerate((first, image)):
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(picture), format="rgb24")
        frame.pts = pts
        packets += encoder.encode(frame)
    packets += encoder.encode(None)
    decoder = av.CodecContext.create("h264", "r")
    decoder.thread_count = 1
    frames = [f for packet in packets for f in decoder.decode(packet)] + decoder.decode(None)
    return frames[-1].to_ndarray(format="rgb24")


class H264Rounds(torch.nn.Module):
    """Real H.264 (x264 through PyAV) on a random share `p` of uint8 images, as a platform
    or a messenger codes a face in a video: at a CRF drawn from `crf`; on a share `shrink`
    coded smaller first (a face that was small in its frame, enlarged back after decoding);
    on a share `twice` coded coarsely and then again finely (a re-upload of a re-encode),
    the decoder seeing only the last coding. About 15 ms a 192 px face on one core
    (docs/training.md): a batch is coded whole in the loader processes, beside the model's
    step."""

    def __init__(
        self,
        p: float = 0.3,
        crf: tuple[int, int] = (23, 45),
        shrink: float = 0.5,
        scale: tuple[float, float] = (0.3, 0.9),
        twice: float = 0.25,
        fine: tuple[int, int] = (18, 28),
    ):
        super().__init__()
        self.p, self.crf, self.shrink, self.scale = p, crf, shrink, scale
        self.twice, self.fine = twice, fine

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        chosen = (torch.rand(images.shape[0]) < self.p).nonzero().flatten().tolist()
        side = images.shape[-1]
        for i in chosen:
            draws = torch.rand(3).tolist()
            crfs = [int(torch.randint(self.crf[0], self.crf[1] + 1, ()))]
            if draws[0] < self.twice:
                crfs.append(int(torch.randint(self.fine[0], self.fine[1] + 1, ())))
            coded = side
            if draws[1] < self.shrink:
                factor = self.scale[0] + draws[2] * (self.scale[1] - self.scale[0])
                coded = max(16, round(side * factor / 2) * 2)
            face = images[i : i + 1].cpu()
            if coded != side:
                face = interpolate(face.float(), "bilinear", size=(coded, coded))
                face = face.round_().clamp_(0, 255).to(torch.uint8)
            pixels = np.ascontiguousarray(face[0].permute(1, 2, 0).numpy())
            if pixels.shape[0] % 2:  # 4:2:0 needs even sides
                pixels = np.ascontiguousarray(np.pad(pixels, ((0, 1), (0, 1), (0, 0)), "edge"))
            for crf in crfs:
                dy, dx = torch.randint(-4, 5, (2,)).tolist()
                pixels = h264_roundtrip(pixels, crf, (dy, dx))
            out = torch.from_numpy(pixels[:coded, :coded]).permute(2, 0, 1)[None]
            if coded != side:
                out = interpolate(out.float(), "bilinear", size=(side, side))
                out = out.round_().clamp_(0, 255).to(torch.uint8)
            images[i] = out[0].to(images.device)
        return images


class BatchAugment(torch.nn.Module):
    """The degradations of `augment.training_transform`, batched: crop and flip (`crop`, on
    the uint8 batch, before self-blending), then colour, blur, resampling, H.264 on a share
    `h264` and JPEG rounds on a share `jpeg` (`forward`), on reals and fakes alike."""

    def __init__(self, size: int, jpeg: float = 0.7, h264: float = 0.0):
        super().__init__()
        self.size = size
        self.colour = ColourJitter(0.2, 0.2, 0.2, 0.03, p=0.5)
        self.resample = ResampleBatch()
        self.h264 = H264Rounds(p=h264)
        self.jpeg = JpegRounds(p=jpeg)

    def crop(
        self, images: torch.Tensor, landmarks: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 B x 3 x H x W and their landmarks, randomly cropped and flipped."""
        return resized_crop_flip(images, landmarks, (0.8, 1.0), (0.9, 1.1), self.size)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Float B x 3 x size x size in [0, 1] in; uint8 out, as a codec leaves it."""
        images = self.resample(blur(self.colour(images), (0.3, 1.5), p=0.2))
        coded = self.h264(images.mul_(255).round_().clamp_(0, 255).to(torch.uint8))
        return self.jpeg(coded)
