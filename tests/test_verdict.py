import numpy as np
import pytest

from fakescope.types import FaceScore
from fakescope.verdict import choose_frames, confident_strategy, decide, mean_strategy


def test_confident_majority_of_confident_fakes_uses_their_mean():
    p = np.array([0.9] * 12 + [0.1] * 8)  # 12 > 20 // 2.5 = 8 and 12 > 11
    assert confident_strategy(p) == pytest.approx(0.9)


def test_confident_needs_more_than_eleven_fakes():
    p = np.array([0.9] * 11 + [0.5] * 2)  # 11 fakes is not > 11
    assert confident_strategy(p) == pytest.approx(p.mean())


def test_confident_nearly_all_real_uses_mean_of_low_scores():
    p = np.array([0.1] * 19 + [0.05] * 10 + [0.7])  # 29 < 0.2 > 0.9 * 30 = 27
    assert confident_strategy(p) == pytest.approx(np.mean(p[p < 0.2]))


def test_confident_otherwise_plain_mean():
    p = np.array([0.1, 0.5, 0.9, 0.3])
    assert confident_strategy(p) == pytest.approx(0.45)
    assert mean_strategy(p) == pytest.approx(0.45)


def test_count_threshold_uses_floor_division_by_2_5():
    # n = 30: n // 2.5 = 12.0; 12 fakes is not > 12, 13 is.
    twelve = np.array([0.95] * 12 + [0.5] * 18)
    thirteen = np.array([0.95] * 13 + [0.5] * 17)
    assert confident_strategy(twelve) == pytest.approx(twelve.mean())
    assert confident_strategy(thirteen) == pytest.approx(0.95)


def face(track, frame, score):
    return FaceScore(track, frame, frame / 10, (0, 0, 10, 10), 0.99, {"m": score}, score)


def test_video_probability_is_the_most_suspicious_track():
    faces = [face(0, i, 0.1) for i in range(20)] + [face(1, i, 0.7) for i in range(20)]
    verdict = decide(faces, "mean", threshold=0.5)
    assert [round(t.probability, 3) for t in verdict.tracks] == [0.1, 0.7]
    assert verdict.probability == pytest.approx(0.7)
    assert verdict.label == "fake"
    assert len(verdict.chosen_frames) == 4


def test_no_faces_gives_no_face_label():
    verdict = decide([], "confident")
    assert verdict.label == "no_face" and verdict.probability is None and verdict.chosen_frames == []


def test_chosen_frames_are_the_peaks_of_spread_spans():
    scores = [0.1, 0.9, 0.2, 0.3, 0.8, 0.1, 0.2, 0.2, 0.95, 0.1, 0.7, 0.6]
    faces = [face(0, i, s) for i, s in enumerate(scores)]
    assert choose_frames(faces, k=4) == [1, 4, 8, 10]
    assert choose_frames(faces[:2], k=4) == [0, 1]
