"""Self-blended pseudo-fakes (Shiohara & Yamasaki, CVPR 2022), the one implementation that
training and `xai-eval` share.

A real face crop is blended into a slightly altered copy of itself through a mask shaped by
its landmarks, so the only evidence left is the blending boundary, which is what generalises
to unseen generators; and the mask is exact. Training (`training/batches.py`,
`training/data.py`) makes its pseudo-fakes here, and `explain/faithfulness.py` its
localisation ground truth, so explanations are scored against the masks the model trained on.

Batched where the batch is: each image with its own random parameters but the batch in one
call per transform (grouped filters, one grid resampling), only the images a transform picked
being computed. The per-image filters (`ColourJitter`, `blur`, `shift_scale`, ...) serve the
training augmentations too (`training/batch_augment.py`). Landmarks are fractions of the crop
(x, y). All randomness comes from torch's global generator: seed it (under
`torch.random.fork_rng` where other draws must not move) for blends that repeat. The
transforms write into the batch they are given and return it.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F

# Landmarks of the mean DFDC crop (fractions of the crop; eyes, nose, mouth corners), measured
# with RetinaFace on 200 train crops; they shape the masks of crops whose face has none.
MEAN_LANDMARKS = np.array(
    [[0.309, 0.292], [0.701, 0.292], [0.498, 0.492], [0.342, 0.715], [0.662, 0.715]], np.float32
)

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


def outline_masks(
    landmarks: torch.Tensor,
    scale: torch.Tensor,
    jitter: torch.Tensor,
    edge: torch.Tensor,
    shape: tuple[int, int],
) -> torch.Tensor:
    """B x 1 x H x W masks of the outlines `outline_points` lays out, their edges blurred by
    `edge` (B, a Gaussian sigma as a share of the crop)."""
    # Drawn and blurred at a quarter of the size: the blur hides the coarser raster, at a
    # sixteenth of the cost.
    small = max(8, min(shape) // 4)
    masks = fill_polygons(outline_points(landmarks, scale, jitter), small)
    masks = gaussian_blur(masks, int(small * 0.14) | 1, edge * small)
    return F.interpolate(masks, size=shape, mode="bilinear", align_corners=False)


def face_masks(landmarks: torch.Tensor, size: int) -> torch.Tensor:
    """Soft blending masks (B x 1 x size x size in [0, 1]), each a randomly scaled, deformed and
    blurred landmark outline, at a random strength."""
    batch, device = landmarks.shape[0], landmarks.device
    scale = torch.empty(batch, device=device).uniform_(0.7, 1.05)
    jitter = torch.empty(batch, len(FACE_OUTLINE), 2, device=device).uniform_(-0.08, 0.08)
    edge = torch.empty(batch, device=device).uniform_(0.012, 0.045)
    masks = outline_masks(landmarks.float(), scale, jitter, edge, (size, size))
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


def interpolate(x: torch.Tensor, mode: str, **where) -> torch.Tensor:
    """F.interpolate, antialiased and with half-pixel centres where the mode has them."""
    options = {"antialias": True, "align_corners": False} if mode in ("bilinear", "bicubic") else {}
    return F.interpolate(x, mode=mode, **where, **options)


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


def five_points(landmarks: torch.Tensor) -> torch.Tensor:
    """B x 5 x 2 (eyes, nose tip, mouth corners) from 5 or 68-point landmarks."""
    if landmarks.shape[1] == 5:
        return landmarks
    eyes = landmarks[:, 36:42].mean(1), landmarks[:, 42:48].mean(1)
    return torch.stack([*eyes, landmarks[:, 30], landmarks[:, 48], landmarks[:, 54]], 1)


def head_masks(
    landmarks: torch.Tensor,
    shape: tuple[int, int],
    scale: torch.Tensor,
    edge: torch.Tensor | None = None,
) -> torch.Tensor:
    """Soft masks (B x 1 x H x W) of each head: the face outline grown by `scale` (B) about
    the nose, past forehead and cheeks, its edge blurred by `edge` (B, a share of the image;
    by default 4%, as in a face crop)."""
    batch, device = landmarks.shape[0], landmarks.device
    jitter = torch.zeros(batch, len(FACE_OUTLINE), 2, device=device)
    edge = torch.full((batch,), 0.04, device=device) if edge is None else edge
    return outline_masks(five_points(landmarks.float()), scale, jitter, edge, shape)


def defocus_surround(
    images: torch.Tensor, landmarks: torch.Tensor, sigma: torch.Tensor, scale: torch.Tensor
) -> torch.Tensor:
    """Each image's surround, outside its head (`head_masks` at `scale`), blurred by its own
    Gaussian `sigma` (B, in px): a sharp head before a soft background, as a shallow depth of
    field or a video call's background blur shows a real person. Self-blending leaves its
    sharpness step at the inner face."""
    height, width = images.shape[-2:]
    kernel = min(int(6 * float(sigma.max())) | 1, (min(height, width) - 1) | 1)
    masks = head_masks(landmarks, (height, width), scale)
    return masks * images + (1 - masks) * gaussian_blur(images, kernel, sigma)


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


def similarity(source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """B x 2 x 3 least-squares similarities (rotation, one scale, shift; no reflection) taking
    each source point set (B x K x 2) onto its target: Umeyama's closed form in 2D."""
    source_mean, target_mean = source.mean(1, keepdim=True), target.mean(1, keepdim=True)
    s, t = source - source_mean, target - target_mean
    norm = s.pow(2).sum((1, 2)).clamp_min(1e-12)
    a = (s * t).sum((1, 2)) / norm
    b = (s[..., 0] * t[..., 1] - s[..., 1] * t[..., 0]).sum(1) / norm
    linear = torch.stack([torch.stack([a, -b], -1), torch.stack([b, a], -1)], 1)
    shift = target_mean[:, 0] - (linear @ source_mean[:, 0, :, None])[..., 0]
    return torch.cat([linear, shift[..., None]], 2)


def warp(images: torch.Tensor, transforms: torch.Tensor) -> torch.Tensor:
    """Each image moved by its transform (B x 2 x 3, from crop fractions to crop fractions),
    bilinear, edges repeated."""
    inverse = torch.linalg.inv(transforms[:, :, :2])
    back = -(inverse @ transforms[:, :, 2:])[..., 0]
    # grid_sample asks where each output pixel comes from, in g = 2f - 1: the inverse map
    # f -> inverse f + back, written in g.
    theta = torch.cat([inverse, (inverse.sum(2) + 2 * back - 1)[..., None]], 2)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def mirrored(landmarks: torch.Tensor) -> torch.Tensor:
    """Which faces' landmarks (B x 5 x 2 or B x 68 x 2) are those of a mirrored face, as a
    flipped crop leaves them: the first eye right of the second."""
    first, second = (0, 1) if landmarks.shape[1] == 5 else (36, 45)
    return landmarks[:, first, 0] > landmarks[:, second, 0]


def align(images: torch.Tensor, landmarks: torch.Tensor, onto: torch.Tensor) -> torch.Tensor:
    """Faces (float B x 3 x H x W, their landmarks B x K x 2) moved so that their landmarks lie
    on `onto`'s (B x K x 2) as nearly as a similarity allows, mirrored first where `onto` is
    mirrored and they are not."""
    flip = mirrored(onto) != mirrored(landmarks)
    images, landmarks = images.clone(), landmarks.clone()
    images[flip] = images[flip].flip(-1)
    landmarks[flip, :, 0] = 1 - landmarks[flip, :, 0]
    return warp(images, similarity(landmarks.float(), onto.float()))


def match_colour(source: torch.Tensor, target: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """`source` with each channel's mean and spread under each mask set to `target`'s there
    (Face X-ray's colour correction, so that the blend's edge is not a colour step)."""
    weights = masks / masks.sum((2, 3), keepdim=True).clamp_min(1e-6)

    def moments(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean = (x * weights).sum((2, 3), keepdim=True)
        return mean, ((x - mean).pow(2) * weights).sum((2, 3), keepdim=True).sqrt()

    (source_mean, source_std), (target_mean, target_std) = moments(source), moments(target)
    scale = target_std / source_std.clamp_min(1e-3)
    return ((source - source_mean) * scale + target_mean).clamp(0, 1)


class SelfBlend(torch.nn.Module):
    """Pseudo-fakes from real faces: each face blended into a slightly altered copy of itself
    through a mask shaped by its landmarks. With 5 landmarks, a deformed face outline laid
    out from them (`face_masks`); with 68, the SBI paper's recipe: hull masks (`hull_masks`)
    and its source-target changes (RGB shifts of up to 20 levels, hue, saturation,
    brightness and contrast, downscaling or sharpening, a small shift and scale).

    `sharpen` is the share of altered copies sharpened rather than blurred or downscaled: a
    sharpened face on its own surround is the sharpness step that a real head before a
    blurred background shows too."""

    def __init__(self, sharpen: float = 0.5) -> None:
        super().__init__()
        self.sharpen = sharpen
        self.colour = ColourJitter(brightness=0.15, contrast=0.0, saturation=0.2, hue=0.03)
        self.colour68 = ColourJitter(brightness=0.1, contrast=0.1, saturation=0.3, hue=0.03)

    def forward(
        self, images: torch.Tensor, landmarks: torch.Tensor, donors: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(blended, masks) for float B x 3 x H x W images in [0, 1]. With `donors` (other
        people's faces, float B x 3 x H x W, `align`ed to each image's landmarks), each face
        takes its donor's, colour-matched under the mask, instead of an altered copy of
        itself: Face X-ray's blended images, whose inner face is another identity."""
        hull = landmarks.shape[1] == 68
        # The altered copy is drawn before the mask, as it always was: runs repeat their draws.
        if donors is None:
            target = shift_scale(
                self._target68(images) if hull else self._target(images), 0.03, (0.95, 1.05)
            )
        masks = (hull_masks if hull else face_masks)(landmarks, images.shape[-1])
        if donors is not None:
            target = match_colour(donors, images, masks)  # needs the mask: drawn after it
        return (masks * target + (1 - masks) * images).clamp(0, 1), masks

    def _target(self, images: torch.Tensor) -> torch.Tensor:
        target = self.colour(images.clone())
        soft = torch.rand(images.shape[0], device=images.device) < 1 - self.sharpen
        blurred = soft.nonzero().flatten()
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
        shrunk = torch.rand(batch) < 1 - self.sharpen
        if shrunk.any():
            size = images.shape[-2:]
            for i in shrunk.nonzero().flatten().tolist():
                scale = float(torch.empty(1).uniform_(0.5, 0.9))
                small = interpolate(target[i : i + 1], "bilinear", scale_factor=scale)
                target[i] = interpolate(small, "bilinear", size=size)[0].clamp(0, 1)
        if (~shrunk).any():
            sharp = (~shrunk).nonzero().flatten().to(device)
            factor = torch.empty(len(sharp), device=device).uniform_(1.2, 2.0)
            target[sharp] = sharpen(target[sharp], factor)
        return target
