"""Evidence per face region: which parts of a face carry a heat map's positive mass.

Regions are laid out in crop pixels from the face box and the detector's 5 landmarks (eyes,
nose tip, mouth corners), mapped into the crop through the crop geometry that pastes maps
back (`render.frame_to_crop`). "Left" and "right" are as seen in the picture. Every crop
pixel belongs to exactly one region, so the shares of a map sum to 1.

- eyes, nose, mouth: ellipses around the landmarks, sized by the distance between the eyes;
- face boundary: a band across the edge of the face ellipse (the box's width, from the chin
  to a fifth of the box above its top; from 82% to 112% of its radii), where blending seams
  and the jaw line lie;
- forehead: inside that band and more than a third of the eye distance above the eye line;
- cheeks: the rest of the inside; outside the face: the rest of the crop.
"""

from __future__ import annotations

import numpy as np

from ..types import Box, Decision
from . import DEFAULT

REGIONS = (
    "left eye",
    "right eye",
    "nose",
    "mouth",
    "forehead",
    "cheeks",
    "face boundary",
    "outside the face",
)
METHOD = DEFAULT  # the map whose evidence is reported per region
# How to read the regions, as measured against real manipulations (xai-eval --pairs on
# ffpp-dev, docs/explanations.md): shown beside every region table.
READING = (
    "These shares say where the model looked, not where the face was changed. On 100 faces "
    "of FaceForensics++ fakes, 67% of HiResCAM++'s heat lay on what was manipulated (a blob at "
    "the face's centre: 62%), but its hottest spot did so less often than the centre (83% "
    "against 86%). The region holding most of it had been changed for 77% of faces, and was "
    "the region changed most for 25%. Always answering 'mouth' would have been right for 97% "
    "and 57%: these manipulations change most of the inner face."
)
BAND = (0.82, 1.12)  # inner and outer edge of the face boundary band, in face-ellipse radii
# Landmarks where the detector gives none (face crops): their usual place in a face box.
TEMPLATE = np.array([(0.31, 0.40), (0.69, 0.40), (0.50, 0.58), (0.35, 0.77), (0.65, 0.77)])


def template_landmarks(box: Box) -> np.ndarray:
    x1, y1, x2, y2 = box
    return np.array([x1, y1]) + TEMPLATE * np.array([x2 - x1, y2 - y1])


def _inside(xs: np.ndarray, ys: np.ndarray, centre, axes, direction) -> np.ndarray:
    """Points inside an ellipse with semi-axes `axes` along `direction` and its normal."""
    dx, dy = xs - centre[0], ys - centre[1]
    u = dx * direction[0] + dy * direction[1]
    v = -dx * direction[1] + dy * direction[0]
    return (u / axes[0]) ** 2 + (v / axes[1]) ** 2 <= 1


def region_labels(
    size: tuple[int, int],
    box: Box,
    landmarks: np.ndarray | None = None,
) -> np.ndarray:
    """H x W int8 index into REGIONS for a crop of `size` (H, W); box and landmarks in crop
    pixels (landmarks: left eye, right eye, nose, left and right mouth corner)."""
    points = template_landmarks(box) if landmarks is None else np.asarray(landmarks, np.float64)
    left_eye, right_eye, nose, mouth_left, mouth_right = points
    height, width = size
    ys, xs = np.mgrid[0:height, 0:width] + 0.5
    across = right_eye - left_eye
    d = max(float(np.hypot(*across)), 1.0)
    across = across / d if d > 1.0 else np.array([1.0, 0.0])
    down = np.array([-across[1], across[0]])  # the face's vertical, eye line towards the chin
    eyes = (left_eye + right_eye) / 2
    mouth = (mouth_left + mouth_right) / 2
    x1, y1, x2, y2 = box
    # Detector boxes stop near the brows: the face ellipse reaches a fifth of the box higher.
    half_w, half_h = max((x2 - x1) / 2, 1.0), max(0.6 * (y2 - y1), 1.0)
    radius = np.hypot((xs - (x1 + x2) / 2) / half_w, (ys - (y2 - half_h)) / half_h)
    above = (xs - eyes[0]) * down[0] + (ys - eyes[1]) * down[1] < -d / 3

    labels = np.full(size, REGIONS.index("cheeks"), np.int8)
    labels[above] = REGIONS.index("forehead")
    labels[radius >= BAND[0]] = REGIONS.index("face boundary")
    labels[radius >= BAND[1]] = REGIONS.index("outside the face")
    nose_centre = eyes + 0.6 * (nose - eyes)
    nose_length = float(np.hypot(*(nose - eyes)))
    mouth_width = float(np.hypot(*(mouth_right - mouth_left)))
    shapes = (
        ("mouth", mouth, (mouth_width / 2 + 0.2 * d, 0.3 * d)),
        ("nose", nose_centre, (0.3 * d, 0.5 * nose_length + 0.15 * d)),
        ("left eye", left_eye, (0.4 * d, 0.25 * d)),
        ("right eye", right_eye, (0.4 * d, 0.25 * d)),
    )
    for name, centre, axes in shapes:  # later ones win where they overlap: the eyes
        labels[_inside(xs, ys, centre, axes, across)] = REGIONS.index(name)
    return labels


def region_shares(heat: np.ndarray, labels: np.ndarray) -> dict[str, float] | None:
    """Each region's share of the map's positive mass (summing to 1); None for an empty map."""
    positive = np.clip(np.asarray(heat, np.float64), 0, None)
    total = positive.sum()
    if total <= 0:
        return None
    mass = np.bincount(labels.ravel(), positive.ravel(), minlength=len(REGIONS))
    return {name: float(m / total) for name, m in zip(REGIONS, mass)}


def mean_shares(
    shares: list[dict[str, float] | None], weights: list[float] | None = None
) -> dict[str, float] | None:
    """Weighted mean of several faces' (or members') shares, skipping empty maps."""
    weights = weights or [1.0] * len(shares)
    kept = [(s, w) for s, w in zip(shares, weights) if s is not None and w > 0]
    if not kept:
        return None
    total = sum(w for _, w in kept)
    return {name: sum(s[name] * w for s, w in kept) / total for name in REGIONS}


def _where(region: str) -> str:
    return region if region == "outside the face" else f"at the {region}"


def evidence_sentence(
    shares: dict[str, float] | None,
    probability: float | None = None,
    decision: Decision | None = None,
) -> str:
    """Plain words naming the fewest regions that hold half of the evidence (at most three),
    e.g. 'Most of the evidence is at the mouth (41%) and at the face boundary (22%).', saying
    how sure it is: when three regions are needed the map is spread out and points nowhere in
    particular; when the face's (or track's) P(fake) is in the decision's inconclusive band
    the model is unsure, and below it the map shows what pushed a real face toward fake."""
    if shares is None:
        return "No region holds evidence: the heat map is empty."
    ranked = sorted(shares.items(), key=lambda kv: -kv[1])
    named = [f"{_where(region)} ({100 * share:.0f}%)" for region, share in ranked[:3]]
    if ranked[0][1] >= 0.5:
        sentence = f"Most of the evidence is {named[0]}."
    elif ranked[0][1] + ranked[1][1] >= 0.5:
        sentence = f"Most of the evidence is {named[0]} and {named[1]}."
    else:
        sentence = (
            f"The evidence is spread out, so no region stands out: {named[0]}, {named[1]} "
            f"and {named[2]}."
        )
    if probability is None or decision is None:
        return sentence
    label = decision.label(probability)
    if label == "inconclusive":
        return f"{sentence} The model is unsure (P(fake) {probability:.2f}): a weak pointer."
    if label == "real":
        return (
            f"{sentence} The model finds this face real (P(fake) {probability:.2f}): this is "
            "only what pushed it toward fake."
        )
    return sentence
