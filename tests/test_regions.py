"""Evidence per face region: the layout, the crop geometry, the shares and the sentence."""

from __future__ import annotations

import numpy as np
import pytest

from fakescope.crops import CropPolicy, crop_geometry
from fakescope.explain.regions import (
    REGIONS,
    evidence_sentence,
    mean_shares,
    region_labels,
    region_shares,
    template_landmarks,
)
from fakescope.explain.render import frame_to_crop
from helpers import paste_heatmap

BOX = (40.0, 50.0, 160.0, 190.0)


def test_landmarks_fall_in_their_regions_and_every_pixel_has_one():
    points = template_landmarks(BOX)
    labels = region_labels((224, 224), BOX, points)
    at = lambda x, y: REGIONS[labels[int(y), int(x)]]  # noqa: E731
    assert [at(*p) for p in points[:3]] == ["left eye", "right eye", "nose"]
    assert at(*points[3:].mean(0)) == "mouth"
    assert at(100, 45) == "forehead"  # above the eyes, inside the face
    assert at(100, 195) == "face boundary"  # the chin
    assert at(3, 3) == "outside the face"
    assert at(60, 140) == "cheeks"
    assert set(np.unique(labels)) == set(range(len(REGIONS)))


def test_regions_follow_a_tilted_face():
    """Rotating the landmarks about the face centre moves the eye regions with them."""
    points = template_landmarks(BOX)
    centre = np.array([100.0, 120.0])
    angle = np.deg2rad(30)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    tilted = (points - centre) @ rotation.T + centre
    labels = region_labels((224, 224), BOX, tilted)
    for point, name in zip(tilted[:3], REGIONS[:3]):
        assert REGIONS[labels[int(point[1]), int(point[0])]] == name


def test_shares_sum_to_one_and_follow_the_mass():
    labels = region_labels((224, 224), BOX)
    heat = np.zeros((224, 224), np.float32)
    mouth = template_landmarks(BOX)[3:].mean(0)
    heat[int(mouth[1]), int(mouth[0])] = 3.0
    heat[3, 3] = 1.0
    heat[100, 100] = -5.0  # negative values carry no evidence
    shares = region_shares(heat, labels)
    assert shares["mouth"] == pytest.approx(0.75) and shares["outside the face"] == pytest.approx(
        0.25
    )
    assert sum(shares.values()) == pytest.approx(1.0)
    assert region_shares(np.zeros((224, 224)), labels) is None
    assert (
        mean_shares([shares, None, {r: 1.0 * (r == "nose") for r in REGIONS}], [1, 5, 3])["nose"]
        == 0.75
    )


@pytest.mark.parametrize("resize", ["stretch", "pad"])
def test_landmarks_map_into_the_crop_where_the_pasted_map_puts_them(resize):
    """A map peaked at a landmark's crop position, pasted back, peaks at the landmark."""
    policy = CropPolicy(size=96, margin=0.2, resize=resize)
    box, landmark = (300.0, 100.0, 380.0, 220.0), np.array([[331.0, 150.0]])
    source, content = crop_geometry(box, policy)
    x, y = frame_to_crop(landmark, source, content)[0]
    ys, xs = np.mgrid[0:96, 0:96] + 0.5
    heat = np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / 8).astype(np.float32)
    frame = paste_heatmap((480, 640), source, heat, content)
    row, col = np.unravel_index(frame.argmax(), frame.shape)
    assert abs(col + 0.5 - landmark[0, 0]) <= 1 and abs(row + 0.5 - landmark[0, 1]) <= 1


def test_evidence_sentence():
    shares = dict.fromkeys(REGIONS, 0.0)
    assert (
        evidence_sentence({**shares, "mouth": 0.6, "nose": 0.4})
        == "Most of the evidence is at the mouth (60%)."
    )
    assert evidence_sentence(
        {**shares, "mouth": 0.41, "face boundary": 0.22, "nose": 0.2, "cheeks": 0.17}
    ) == ("Most of the evidence is at the mouth (41%) and at the face boundary (22%).")
    spread = {
        **shares,
        "outside the face": 0.28,
        "nose": 0.2,
        "cheeks": 0.19,
        "mouth": 0.18,
        "left eye": 0.15,
    }
    assert evidence_sentence(spread) == (
        "The evidence is spread out, so no region stands out: outside the face (28%), at the "
        "nose (20%) and at the cheeks (19%)."
    )
    assert "empty" in evidence_sentence(None)


def test_evidence_sentence_says_when_the_model_is_unsure():
    from fakescope.types import Decision

    shares = {**dict.fromkeys(REGIONS, 0.0), "mouth": 0.7, "nose": 0.3}
    decision = Decision(threshold=0.6, real_below=0.4)
    plain = "Most of the evidence is at the mouth (70%)."
    assert evidence_sentence(shares, 0.9, decision) == plain
    assert evidence_sentence(shares, 0.5, decision) == (
        f"{plain} The model is unsure (P(fake) 0.50): a weak pointer."
    )
    assert evidence_sentence(shares, 0.1, decision).startswith(
        f"{plain} The model finds this face real (P(fake) 0.10)"
    )
    assert evidence_sentence(shares, None, decision) == plain
