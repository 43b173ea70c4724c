"""Augmentation and self-blending of whole batches on the training device.

The per-image pipeline in `augment.py` decodes and augments each crop in a loader worker,
which caps a GPU at the speed of the CPU cores. Here a batch of cached uint8 crops is
augmented where the model runs, each image with its own random parameters but the batch in
one call per transform (grouped convolutions, one grid resampling), only the images a transform
picked being computed; and self-blended with masks shaped by each face's landmarks, as the
SBI paper shapes them by a face's landmark hull.

All randomness comes from torch's global generator: seed it per batch for a run that
resumes where it stopped. The transforms write into the batch they are given and return it:
a batch belongs to the pipeline, and copying it whole costs as much as most transforms.
"""

from __future__ import annotations

from fractions import Fraction

import av
import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torchvision.io import decode_jpeg, encode_jpeg

# The face outline in a frame set by the landmarks: u across the face in inter-ocular
# distances from the eyes' midpoint, v down in eye-to-mouth distances. Forehead to chin and
# cheek to cheek, roughly the convex hull of a 68-point landmark model.
FACE_OUTLINE = torch.tensor(
    [
        (-0.95, -0.75),
        (0.0, -1.0),
        (0.95, -0.75),
        (1.1, 0.3),
        (0.9, 1.25),
        (0.4, 1.8),
        (0.0, 1.9),
        (-0.4, 1.8),
        (-0.9, 1.25),
        (-1.1, 0.3),
    ]
)
MASK_STRENGTHS = torch.tensor([0.5, 0.75, 1.0, 1.0, 1.0])


def outline_points(
    landmarks: torch.Tensor, scale: torch.Tensor, jitter: torch.Tensor
) -> torch.Tensor:
    """B x K x 2 outline vertices (fractions of the crop) from B x 5 x 2 landmarks.

    `scale` (B) shrinks or grows the outline about the nose; `jitter` (B x K x 2) moves each
    vertex, in the face frame's units.
    """
    left_eye, right_eye, nose, mouth_left, mouth_right = landmarks.unbind(1)
    eyes = (left_eye + right_eye) / 2
    across = right_eye - left_eye
    down = (mouth_left + mouth_right) / 2 - eyes
    uv = FACE_OUTLINE.to(landmarks)[None] + jitter
    points = eyes[:, None] + uv[..., :1] * across[:, None] + uv[..., 1:] * down[:, None]
    return nose[:, None] + scale[:, None, None] * (points - nose[:, None])


def fill_polygons(points: torch.Tensor, size: int) -> torch.Tensor:
    """B x 1 x size x size masks, 1 inside each convex polygon (B x K x 2, crop fractions)."""
    centres = (torch.arange(size, device=points.device, dtype=points.dtype) + 0.5) / size
    gy, gx = torch.meshgrid(centres, centres, indexing="ij")
    gx, gy = gx.flatten()[None], gy.flatten()[None]
    edges = points.roll(-1, dims=1) - points
    positive = torch.ones(points.shape[0], size * size, dtype=torch.bool, device=points.device)
    negative = positive.clone()
    # Inside a convex polygon, the point is on the same side of every edge (either winding).
    for k in range(points.shape[1]):
        ex, ey = edges[:, k, :1], edges[:, k, 1:]
        px, py = points[:, k, :1], points[:, k, 1:]
        side = ex * (gy - py) - ey * (gx - px)
        positive &= side >= 0
        negative &= side <= 0
    return (positive | negative).to(points.dtype).view(-1, 1, size, size)


def face_masks(landmarks: torch.Tensor, size: int) -> torch.Tensor:
    """Soft blending masks (B x 1 x size x size in [0, 1]), each a randomly scaled, deformed and
    blurred landmark outline, at a random strength."""
    batch, device = landmarks.shape[0], landmarks.device
    scale = torch.empty(batch, device=device).uniform_(0.7, 1.05)
    jitter = torch.empty(batch, len(FACE_OUTLINE), 2, device=device).uniform_(-0.08, 0.08)
    # Drawn and blurred at a quarter of the size: the blur hides the coarser raster, at a
    # sixteenth of the cost.
    small = max(8, size // 4)
    masks = fill_polygons(outline_points(landmarks.float(), scale, jitter), small)
    sigma = torch.empty(batch, 1, device=device).uniform_(0.012, 0.045) * small
    masks = gaussian_blur(masks, int(small * 0.14) | 1, sigma.flatten())
    masks = F.interpolate(masks, size=(size, size), mode="bilinear", align_corners=False)
    strength = MASK_STRENGTHS.to(device)[
        torch.randint(len(MASK_STRENGTHS), (batch,), device=device)
    ]
    return masks * strength.view(-1, 1, 1, 1)


def _uniform(batch: int, low: float, high: float, device: torch.device) -> torch.Tensor:
    return torch.empty(batch, 1, 1, 1, device=device).uniform_(low, high)


_GREY = torch.tensor([0.299, 0.587, 0.114])  # torchvision's rgb_to_grayscale weights


def hue_rotation(turns: torch.Tensor) -> torch.Tensor:
    """B x 3 x 3 rotations of RGB about the grey axis: a hue change that keeps each pixel's
    mean of R, G and B (HSV's hue shift, which torchvision does per image, keeps max and min)."""
    angle = turns.flatten() * 2 * torch.pi
    cos, sin = angle.cos()[:, None, None], angle.sin()[:, None, None]
    third = torch.full((3, 3), 1 / 3, device=turns.device, dtype=turns.dtype)
    cross = torch.tensor(
        [[0, -1, 1], [1, 0, -1], [-1, 1, 0]], device=turns.device, dtype=turns.dtype
    )
    eye = torch.eye(3, device=turns.device, dtype=turns.dtype)
    return cos * eye + (1 - cos) * third + sin * cross / 3**0.5


def adjust_colour(
    images: torch.Tensor,
    brightness: torch.Tensor,
    contrast: torch.Tensor,
    saturation: torch.Tensor,
    hue: torch.Tensor,
) -> torch.Tensor:
    """Per-image colour changes on float B x 3 x H x W in [0, 1]; factors are B x 1 x 1 x 1, with
    1 (0 for hue, in turns) leaving an image unchanged. Brightness, contrast and saturation
    blend as torchvision's adjust_* do; hue is a `hue_rotation`."""
    weights = _GREY.to(images).view(1, 3, 1, 1)
    # In place after the first product: every full-size temporary costs as much as the math.
    out = (images * brightness).clamp_(0, 1)
    grey_mean = (out * weights).sum(1, keepdim=True).mean((2, 3), keepdim=True)
    out = out.sub_(grey_mean).mul_(contrast).add_(grey_mean).clamp_(0, 1)
    grey = (out * weights).sum(1, keepdim=True)
    out = out.sub_(grey).mul_(saturation).add_(grey).clamp_(0, 1)
    rotated = torch.bmm(hue_rotation(hue), out.flatten(2)).view_as(out)
    return rotated.clamp_(0, 1)


class ColourJitter(torch.nn.Module):
    """Random per-image brightness, contrast, saturation and hue, on a random share `p`."""

    def __init__(
        self, brightness: float, contrast: float, saturation: float, hue: float, p: float = 1.0
    ):
        super().__init__()
        self.ranges = (brightness, contrast, saturation)
        self.hue, self.p = hue, p

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        chosen = _chosen(images, self.p)
        if not len(chosen):
            return images
        batch, device = len(chosen), images.device
        b, c, s = (_uniform(batch, 1 - r, 1 + r, device) for r in self.ranges)
        h = _uniform(batch, -self.hue, self.hue, device)
        images[chosen] = adjust_colour(images[chosen], b, c, s, h)
        return images


def _chosen(images: torch.Tensor, p: float) -> torch.Tensor:
    """The indices of a random share `p` of the batch."""
    return (torch.rand(images.shape[0], device=images.device) < p).nonzero().flatten()


def resample_axes(
    images: torch.Tensor,
    scale: tuple[torch.Tensor, torch.Tensor],
    centre: tuple[torch.Tensor, torch.Tensor],
    size: int,
) -> torch.Tensor:
    """Each image's window (x, y half-sizes `scale` and `centre`, B each, in normalised
    coordinates -1..1; a negative x scale mirrors) resampled to size x size, bilinear, edges
    repeated. An axis-aligned grid laid out by broadcasting: affine_grid's general matrix
    product costs more than the sampling itself on a CPU."""
    base = (torch.arange(size, device=images.device, dtype=images.dtype) * 2 + 1) / size - 1
    gx = scale[0].to(images.dtype)[:, None] * base + centre[0].to(images.dtype)[:, None]
    gy = scale[1].to(images.dtype)[:, None] * base + centre[1].to(images.dtype)[:, None]
    batch = images.shape[0]
    grid = torch.stack(
        [gx[:, None, :].expand(batch, size, size), gy[:, :, None].expand(batch, size, size)], -1
    )
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


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
            region = _interpolate(region, "bilinear", size=(size, size))  # a uint8 kernel
        elif region.shape[-2:] != (size, size):  # CUDA resamples floats only
            region = _interpolate(region.float(), "bilinear", size=(size, size))
            region = region.round_().clamp_(0, 255).to(images.dtype)
        out[i] = region[0].flip(-1) if flip else region[0]
    origin = torch.stack([lefts, tops], 1).to(landmarks) / side
    extent = torch.stack([widths, heights], 1).to(landmarks) / side
    moved = (landmarks - origin[:, None]) / extent[:, None]
    flipped = flips.to(landmarks.device)[:, None]
    moved[..., 0] = torch.where(flipped, 1 - moved[..., 0], moved[..., 0])
    return out, moved


def shift_scale(images: torch.Tensor, translate: float, scale: tuple[float, float]) -> torch.Tensor:
    """Each image moved by up to `translate` of its size along each axis and zoomed by a
    factor in `scale` about its centre (no rotation), edges repeated."""
    batch, device = images.shape[0], images.device
    zoom = torch.empty(batch, device=device).uniform_(*scale)
    # A shift of t image widths is 2t in normalised coordinates; the grid samples the inverse.
    tx, ty = (torch.empty(batch, device=device).uniform_(-translate, translate) for _ in "xy")
    return resample_axes(
        images, (1 / zoom, 1 / zoom), (-2 * tx / zoom, -2 * ty / zoom), images.shape[-1]
    )


def _taps(images: torch.Tensor, weights: torch.Tensor, dim: int) -> torch.Tensor:
    """Each image filtered along `dim` (-1: across, -2: down) by its own taps (B x K), over the
    positions where all K taps fall inside: K multiply-adds of shifted views. PyTorch's CPU
    grouped convolutions took 1 to 12 ms an image for the same work, depending on the batch."""
    length = images.shape[dim] - weights.shape[1] + 1
    taps = weights.to(images.dtype).view(-1, 1, 1, 1, weights.shape[1])
    out = images.narrow(dim, 0, length) * taps[..., 0]
    for k in range(1, weights.shape[1]):
        out.addcmul_(images.narrow(dim, k, length), taps[..., k])
    return out


def gaussian_blur(images: torch.Tensor, size: int, sigma: torch.Tensor) -> torch.Tensor:
    """A size x size Gaussian blur of B x C x H x W images, each with its own sigma (B),
    borders reflected: kornia's gaussian_blur2d, in two 1-D passes."""
    offsets = torch.arange(size, device=images.device, dtype=images.dtype) - size // 2
    kernels = torch.exp(-(offsets**2) / (2 * sigma.to(images.dtype)[:, None] ** 2))
    kernels = kernels / kernels.sum(1, keepdim=True)
    half = size // 2
    across = _taps(F.pad(images, (half, half, 0, 0), mode="reflect"), kernels, -1)
    return _taps(F.pad(across, (0, 0, half, half), mode="reflect"), kernels, -2)


def sharpen(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Each image pushed away from its 3 x 3 smoothed self by its factor (B; 1 is the image
    itself), border pixels kept: kornia's sharpness (PIL's ImageEnhance.Sharpness)."""
    ones = torch.ones(images.shape[0], 3, device=images.device, dtype=images.dtype)
    neighbours = _taps(_taps(images, ones, -1), ones, -2)  # 3 x 3 sums
    out = images.clone()
    inner = out[..., 1:-1, 1:-1]
    # Smoothed: (the 3 x 3 sum + 4 x centre) / 13, PIL's SMOOTH kernel.
    smooth = neighbours.add_(inner, alpha=4).div_(13).clamp_(0, 1)
    inner.sub_(smooth).mul_(factor.view(-1, 1, 1, 1)).add_(smooth).clamp_(0, 1)
    return out


def blur(images: torch.Tensor, sigma: tuple[float, float], p: float = 1.0) -> torch.Tensor:
    """A 5 x 5 Gaussian blur of a random share `p` of the batch, each image with its own sigma;
    only the chosen images are filtered."""
    chosen = _chosen(images, p)
    if not len(chosen):
        return images
    sigmas = torch.empty(len(chosen), device=images.device).uniform_(*sigma)
    images[chosen] = gaussian_blur(images[chosen], 5, sigmas)
    return images


# Blend ratios of the SBI paper: a partly blended face is a fake too.
HULL_STRENGTHS = torch.tensor([0.25, 0.5, 0.75, 1.0, 1.0, 1.0])
# Points of the 68-point layout without the brows: a hull from the eyes down.
BELOW_BROWS = [*range(17), *range(27, 68)]


def convex_hulls(points: torch.Tensor) -> torch.Tensor:
    """B x K x 2 vertices of each point set's convex hull (B x N x 2), the last vertex
    repeated to a common K (a repeated vertex adds an empty edge, which every pixel passes)."""
    hulls = [cv2.convexHull(p.detach().cpu().numpy().astype(np.float32))[:, 0] for p in points]
    count = max(len(h) for h in hulls)
    padded = [np.concatenate([h, np.repeat(h[-1:], count - len(h), axis=0)]) for h in hulls]
    return torch.from_numpy(np.stack(padded)).to(points)


def elastic(masks: torch.Tensor, amplitude: float, cells: int = 4) -> torch.Tensor:
    """Each mask warped by its own smooth random displacement (a cells x cells field of
    Gaussian offsets, `amplitude` in normalised coordinates, upsampled bicubically)."""
    batch, size = masks.shape[0], masks.shape[-1]
    field = torch.randn(batch, 2, cells, cells, device=masks.device) * amplitude
    field = F.interpolate(field, size=(size, size), mode="bicubic", align_corners=False)
    base = (torch.arange(size, device=masks.device, dtype=masks.dtype) * 2 + 1) / size - 1
    gy, gx = torch.meshgrid(base, base, indexing="ij")
    grid = torch.stack([gx, gy], -1)[None] + field.permute(0, 2, 3, 1)
    return F.grid_sample(masks, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def hull_masks(landmarks: torch.Tensor, size: int) -> torch.Tensor:
    """SBI's blending masks from 68-point landmarks (B x 68 x 2, crop fractions): the convex
    hull of every point, of the points below the brows, or of a random 60-100% of them;
    warped elastically, blurred (sigma 1-5% of the crop: the paper's kernels of 5-25 px at
    its 380 px) and set to a blend ratio drawn from {0.25, 0.5, 0.75, 1, 1, 1}."""
    batch, device = landmarks.shape[0], landmarks.device
    kind = torch.randint(3, (batch,)).tolist()
    keep = torch.rand(batch, landmarks.shape[1]) < torch.empty(batch, 1).uniform_(0.6, 1.0)
    sets = []
    for i, k in enumerate(kind):
        rows = [range(68), BELOW_BROWS, keep[i].nonzero().flatten().tolist() or range(68)][k]
        chosen = landmarks[i, list(rows)]
        sets.append(torch.cat([chosen, chosen[-1:].expand(68 - len(chosen), 2)]))
    small = max(8, size // 4)
    masks = fill_polygons(convex_hulls(torch.stack(sets)), small)
    masks = elastic(masks, 0.03)
    sigma = torch.empty(batch, device=device).uniform_(0.01, 0.05) * small
    masks = gaussian_blur(masks, int(small * 0.14) | 1, sigma)
    masks = F.interpolate(masks, size=(size, size), mode="bilinear", align_corners=False)
    strength = HULL_STRENGTHS.to(device)[torch.randint(len(HULL_STRENGTHS), (batch,))]
    return masks.clamp_(0, 1) * strength.view(-1, 1, 1, 1)


class SelfBlend(torch.nn.Module):
    """Pseudo-fakes from real faces: each face blended into a slightly altered copy of itself
    through a mask shaped by its landmarks. With 5 landmarks, a deformed face outline laid
    out from them (`face_masks`); with 68, the SBI paper's recipe: hull masks (`hull_masks`)
    and its source-target changes (RGB shifts of up to 20 levels, hue, saturation,
    brightness and contrast, downscaling or sharpening, a small shift and scale)."""

    def __init__(self) -> None:
        super().__init__()
        self.colour = ColourJitter(brightness=0.15, contrast=0.0, saturation=0.2, hue=0.03)
        self.colour68 = ColourJitter(brightness=0.1, contrast=0.1, saturation=0.3, hue=0.03)

    def forward(
        self, images: torch.Tensor, landmarks: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(blended, masks) for float B x 3 x H x W images in [0, 1]."""
        hull = landmarks.shape[1] == 68
        target = shift_scale(
            self._target68(images) if hull else self._target(images), 0.03, (0.95, 1.05)
        )
        masks = (hull_masks if hull else face_masks)(landmarks, images.shape[-1])
        return (masks * target + (1 - masks) * images).clamp(0, 1), masks

    def _target(self, images: torch.Tensor) -> torch.Tensor:
        target = self.colour(images.clone())
        blurred = (torch.rand(images.shape[0], device=images.device) < 0.5).nonzero().flatten()
        sharpened = torch.ones(images.shape[0], dtype=torch.bool, device=images.device)
        sharpened[blurred] = False
        if len(blurred):
            target[blurred] = blur(target[blurred], (0.5, 1.5))
        if sharpened.any():
            factor = torch.empty(int(sharpened.sum()), device=images.device).uniform_(1.2, 2.0)
            target[sharpened] = sharpen(target[sharpened], factor)
        return target

    def _target68(self, images: torch.Tensor) -> torch.Tensor:
        batch, device = images.shape[0], images.device
        shift = torch.empty(batch, 3, 1, 1, device=device).uniform_(-20 / 255, 20 / 255)
        target = self.colour68((images + shift).clamp_(0, 1))
        shrunk = torch.rand(batch) < 0.5
        if shrunk.any():
            size = images.shape[-2:]
            for i in shrunk.nonzero().flatten().tolist():
                scale = float(torch.empty(1).uniform_(0.5, 0.9))
                small = _interpolate(target[i : i + 1], "bilinear", scale_factor=scale)
                target[i] = _interpolate(small, "bilinear", size=size)[0].clamp(0, 1)
        if (~shrunk).any():
            sharp = (~shrunk).nonzero().flatten().to(device)
            factor = torch.empty(len(sharp), device=device).uniform_(1.2, 2.0)
            target[sharp] = sharpen(target[sharp], factor)
        return target


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
            small = _interpolate(images[i : i + 1], down, scale_factor=scale)
            images[i] = _interpolate(small, up, size=size)[0].clamp(0, 1)
        return images


def _interpolate(x: torch.Tensor, mode: str, **where) -> torch.Tensor:
    options = {"antialias": True, "align_corners": False} if mode in ("bilinear", "bicubic") else {}
    return F.interpolate(x, mode=mode, **where, **options)


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
                face = _interpolate(face.float(), "bilinear", size=(coded, coded))
                face = face.round_().clamp_(0, 255).to(torch.uint8)
            pixels = np.ascontiguousarray(face[0].permute(1, 2, 0).numpy())
            if pixels.shape[0] % 2:  # 4:2:0 needs even sides
                pixels = np.ascontiguousarray(np.pad(pixels, ((0, 1), (0, 1), (0, 0)), "edge"))
            for crf in crfs:
                dy, dx = torch.randint(-4, 5, (2,)).tolist()
                pixels = h264_roundtrip(pixels, crf, (dy, dx))
            out = torch.from_numpy(pixels[:coded, :coded]).permute(2, 0, 1)[None]
            if coded != side:
                out = _interpolate(out.float(), "bilinear", size=(side, side))
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
