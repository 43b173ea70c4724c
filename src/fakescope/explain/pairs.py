"""Where a fake was really manipulated: masks from a fake frame and the pristine frame it was
made from (FaceForensics++ fakes are made frame by frame onto their pristine video).

The pristine frame is aligned first (some fakes are a few pixels narrower than their
pristine video: a crop of it), at the offset that minimises the difference away from the
faces. The per-pixel difference is smoothed, thresholded above H.264's noise (THRESHOLD,
measured in docs/explanations.md), cleaned morphologically and kept to the face.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
from scipy import ndimage

from ..types import Box, FakescopeError

SIGMA = 2.0  # px: smoothing of the difference before the threshold (H.264 noise is grainy)
# Levels (0-255) of the smoothed difference above H.264's noise (docs/explanations.md): 99.99%
# of face pixels stay below 10.7 when a real video is re-encoded at FF++'s c23
# (scripts/noise_floor.py); a margin above it, as a pair's two videos were encoded apart.
THRESHOLD = 12.0
ALIGN_MAX = 6.0  # mean grey difference away from the faces above which a pair does not align
FACE_MARGIN = 0.25  # the face kept: its box grown by this share of its size on every side
MIN_AREA = 0.01  # mask components smaller than this share of the face box are dropped


def _grown(box: Box, shape: Sequence[int], margin: float = FACE_MARGIN) -> tuple[slice, slice]:
    x1, y1, x2, y2 = box
    mx, my = margin * (x2 - x1), margin * (y2 - y1)
    rows = slice(max(0, int(y1 - my)), min(int(shape[0]), int(np.ceil(y2 + my))))
    cols = slice(max(0, int(x1 - mx)), min(int(shape[1]), int(np.ceil(x2 + mx))))
    return rows, cols


def _grey(image: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32)


def away_from_faces(shape: Sequence[int], faces: Sequence[Box]) -> np.ndarray:
    """H x W bool: the pixels outside every face's grown box."""
    away = np.ones(tuple(shape[:2]), bool)
    for box in faces:
        away[_grown(box, shape)] = False
    return away


def align(fake: np.ndarray, pristine: np.ndarray, faces: Sequence[Box]) -> tuple[int, int, float]:
    """(dx, dy, residual): the pristine frame's window pristine[dy:dy + h, dx:dx + w] that
    matches the h x w fake frame best away from its faces, and that mean grey difference."""
    (h, w), (ph, pw) = fake.shape[:2], pristine.shape[:2]
    if ph < h or pw < w:
        raise FakescopeError(
            f"the fake ({w} x {h}) is larger than its pristine video ({pw} x {ph}): no pair"
        )
    away = away_from_faces(fake.shape, faces)
    if not away.any():
        away[:] = True
    f, p = _grey(fake), _grey(pristine)
    residual, dx, dy = min(
        (float(np.abs(f - p[y : y + h, x : x + w])[away].mean()), x, y)
        for y in range(ph - h + 1)
        for x in range(pw - w + 1)
    )
    return dx, dy, residual


def difference(fake: np.ndarray, pristine: np.ndarray) -> np.ndarray:
    """H x W float32: the largest colour channel's absolute difference, smoothed by SIGMA."""
    diff = np.abs(fake.astype(np.int16) - pristine.astype(np.int16)).max(2).astype(np.float32)
    return cv2.GaussianBlur(diff, (0, 0), SIGMA)


def manipulation_mask(
    fake: np.ndarray,
    pristine: np.ndarray,
    face: Box,
    faces: Sequence[Box] = (),
    offset: tuple[int, int] | None = None,
    threshold: float = THRESHOLD,
) -> np.ndarray:
    """H x W bool over the fake frame: where it differs from its pristine frame at `face`.

    `faces`: every face of the frame (default: `face`), kept out of the alignment; `offset`:
    (dx, dy) of a previous `align` of the pair, else found here. Raises FakescopeError when
    the frames do not align (a different video, or frames that do not correspond).
    """
    faces = list(faces) or [face]
    h, w = fake.shape[:2]
    if offset is None:
        dx, dy, _ = align(fake, pristine, faces)
    else:
        dx, dy = offset
    window = pristine[dy : dy + h, dx : dx + w]
    if window.shape != fake.shape:
        raise FakescopeError(f"pristine frame {pristine.shape[:2]} too small for offset {offset}")
    away = away_from_faces(fake.shape, faces)
    residual = float(np.abs(_grey(fake) - _grey(window))[away].mean()) if away.any() else 0.0
    if residual > ALIGN_MAX:
        raise FakescopeError(
            f"the fake does not align with its pristine video: the frames differ by "
            f"{residual:.1f} grey levels away from the face (aligned pairs: under {ALIGN_MAX:g})"
        )
    rows, cols = _grown(face, fake.shape)
    near = np.zeros((h, w), bool)
    near[rows, cols] = True
    above = (difference(fake, window) > threshold) & near
    # Opening drops isolated noise; closing joins a face's pieces across its edges and lines.
    small = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5))
    large = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (15, 15))
    cleaned = cv2.morphologyEx(above.astype(np.uint8), cv2.MORPH_OPEN, small)
    cleaned = cv2.morphologyEx(cleaned, cv2.MORPH_CLOSE, large)
    filled = ndimage.binary_fill_holes(cleaned) & near
    labels, count = ndimage.label(filled)
    if not count:
        return filled
    x1, y1, x2, y2 = face
    sizes = np.bincount(labels.ravel(), minlength=count + 1)
    keep = sizes >= MIN_AREA * max(1.0, (x2 - x1) * (y2 - y1))
    keep[0] = False
    return keep[labels]


def mask_figure(fake: np.ndarray, pristine: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """fake | pristine | fake with the mask's outline and a tint inside it, side by side (RGB
    crops of one size): what a reader checks a mask against."""
    shown = fake.copy()
    inside = mask.astype(bool)
    shown[inside] = (0.6 * shown[inside] + 0.4 * np.array([255, 0, 255])).astype(np.uint8)
    contours, _ = cv2.findContours(
        inside.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE
    )
    cv2.drawContours(shown, contours, -1, (255, 0, 255), 1)
    return np.concatenate([fake, pristine, shown], axis=1)
