"""Rendering: heat maps pasted back onto the frame, coloured overlays and the comparison strip."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

import cv2
import matplotlib
import numpy as np
from PIL import Image, ImageDraw
from torch import Tensor

from ..crops import whole_image_box
from ..types import Box, FakescopeError

COMPARISON = ("gradcam-n", "gradcam-n1", "hirescam", "hirescam++")
CAPTIONS = {  # the comparison strip's caption per method
    "gradcam-n": "GradCAM N",
    "gradcam-n1": "GradCAM N-1",
    "hirescam": "HiResCAM",
    "hirescam++": "HiResCAM++",
}
TILE = 224


@dataclass
class Pasted:
    """A crop's heat map put back onto the frame: `pixels` fill the frame window
    [rows, cols], the frame pixels whose centres lie inside the source box."""

    rows: slice
    cols: slice
    pixels: np.ndarray  # float32, the window's shape


def paste_window(
    frame_shape: Sequence[int],
    source_box: Box,
    heatmap: np.ndarray | Tensor,
    content_box: Box | None = None,
) -> Pasted | None:
    """A crop's heat map put back where the crop came from, computed only over the frame
    window the source box covers; None when no frame pixel lies inside the box.

    Crop geometry contract: `content_box` (x1, y1, x2, y2 in crop pixels; default the whole
    crop) is the part of the crop that shows the frame's `source_box` (x1, y1, x2, y2 in frame
    pixels; the expanded face box, possibly partly outside the frame). 'stretch' crops use the
    default; 'pad' crops pass the rectangle the resized face occupies inside the padding.
    """
    heat = (
        heatmap.detach().cpu().float().numpy()
        if isinstance(heatmap, Tensor)
        else np.asarray(heatmap, np.float32)
    )
    x1, y1, x2, y2 = source_box
    cx1, cy1, cx2, cy2 = content_box or whole_image_box(heat.shape)
    if x2 <= x1 or y2 <= y1 or cx2 <= cx1 or cy2 <= cy1:
        raise FakescopeError(f"empty crop geometry: source {source_box}, content {content_box}")
    # Frame pixels whose centres (index + 0.5) lie inside the source box.
    xs, ys = np.arange(int(frame_shape[1])) + 0.5, np.arange(int(frame_shape[0])) + 0.5
    cols, rows = np.flatnonzero((xs >= x1) & (xs <= x2)), np.flatnonzero((ys >= y1) & (ys <= y2))
    if not len(cols) or not len(rows):
        return None
    left, top = int(cols[0]), int(rows[0])
    # Cut the content out first so that padding cannot bleed in at its edges.
    cut_x, cut_y = math.floor(cx1), math.floor(cy1)
    heat = np.ascontiguousarray(heat[cut_y : math.ceil(cy2), cut_x : math.ceil(cx2)])
    cx1, cx2, cy1, cy2 = cx1 - cut_x, cx2 - cut_x, cy1 - cut_y, cy2 - cut_y
    sx, sy = (cx2 - cx1) / (x2 - x1), (cy2 - cy1) / (y2 - y1)
    # Window pixel index -> crop pixel index, both with pixel centres at index + 0.5.
    to_crop = np.array(
        [
            [sx, 0, cx1 + (left + 0.5 - x1) * sx - 0.5],
            [0, sy, cy1 + (top + 0.5 - y1) * sy - 0.5],
        ]
    )
    pixels = cv2.warpAffine(
        heat,
        to_crop,
        (len(cols), len(rows)),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_REPLICATE,
    )
    return Pasted(slice(top, top + len(rows)), slice(left, left + len(cols)), pixels)


def frame_to_crop(points: np.ndarray, source_box: Box, content_box: Box) -> np.ndarray:
    """N x 2 frame pixel coordinates -> crop pixel coordinates, through the crop geometry of
    `paste_window` (same contract), so regions laid out in the crop match the pasted map."""
    x1, y1, x2, y2 = source_box
    cx1, cy1, cx2, cy2 = content_box
    scale = np.array([(cx2 - cx1) / (x2 - x1), (cy2 - cy1) / (y2 - y1)])
    return np.array([cx1, cy1]) + (np.asarray(points, np.float64) - np.array([x1, y1])) * scale


@cache
def _lut(cmap: str) -> np.ndarray:
    """256 RGB colours of the colour map, 0-255 as float32."""
    return (matplotlib.colormaps[cmap](np.linspace(0, 1, 256))[:, :3] * 255).astype(np.float32)


def overlay(
    image: np.ndarray, heatmap: np.ndarray, alpha: float = 0.5, cmap: str = "turbo"
) -> np.ndarray:
    """RGB uint8 image with the [0, 1] heat map blended in at an opacity of alpha * value: it
    rises with the value, so where the map falls to 0 its colour fades into the picture without
    an edge (and weak values barely tint it); pixels at 0 stay as they are."""
    if image.shape[:2] != heatmap.shape:
        raise FakescopeError(f"heat map {heatmap.shape} does not match image {image.shape[:2]}")
    out = image.copy()
    positive = heatmap > 0
    rows, cols = np.flatnonzero(positive.any(axis=1)), np.flatnonzero(positive.any(axis=0))
    if not len(rows):
        return out
    # Blend only the box around the map's support: faces cover a small part of a frame.
    window = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    heat = np.clip(heatmap[window], 0, 1)
    colour = _lut(cmap)[np.rint(heat * 255).astype(np.uint8)]
    weight = (alpha * heat)[..., None]
    out[window] = np.rint(image[window].astype(np.float32) * (1 - weight) + colour * weight).astype(
        np.uint8
    )
    return out


def _caption(tile: Image.Image, text: str) -> Image.Image:
    canvas = Image.new("RGB", (tile.width, tile.height + 22), "white")
    canvas.paste(tile, (0, 22))
    ImageDraw.Draw(canvas).text((6, 5), text, fill="black")
    return canvas


def comparison_image(
    image: np.ndarray, box: tuple, maps: dict[str, np.ndarray], score: float
) -> Image.Image:
    """face | GradCAM N | GradCAM N-1 | HiResCAM | HiResCAM++ around one face, zoomed to its box."""
    x1, y1, x2, y2 = box
    pad = 0.25 * max(x2 - x1, y2 - y1)
    left, top = max(0, int(x1 - pad)), max(0, int(y1 - pad))
    right, bottom = min(image.shape[1], int(x2 + pad)), min(image.shape[0], int(y2 + pad))
    region = image[top:bottom, left:right]

    def tile(pixels: np.ndarray) -> Image.Image:
        return Image.fromarray(pixels).resize((TILE, TILE), Image.Resampling.BILINEAR)

    tiles = [_caption(tile(region), f"face  p(fake)={score:.2f}")]
    for method in COMPARISON:
        if method in maps:
            heat = maps[method][top:bottom, left:right]
            tiles.append(_caption(tile(overlay(region, heat, alpha=0.55)), CAPTIONS[method]))
    strip = Image.new("RGB", (sum(t.width for t in tiles), tiles[0].height), "white")
    for i, t in enumerate(tiles):
        strip.paste(t, (i * TILE, 0))
    return strip
