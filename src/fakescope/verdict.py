"""From per-face scores to a track and video verdict, and the frames whose heat maps are shown.

A video's probability is the highest of its tracks' probabilities: a video is fake if any
person in it is.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from .types import FaceScore, TrackVerdict, Verdict


def mean_strategy(p: np.ndarray) -> float:
    return float(np.mean(p))


def confident_strategy(p: np.ndarray, high: float = 0.8, low: float = 0.2) -> float:
    """DFDC 1st place: trust a consistent majority of confident frames, else the mean."""
    n = len(p)
    fakes = int(np.count_nonzero(p > high))
    if fakes > n // 2.5 and fakes > 11:
        return float(np.mean(p[p > high]))
    if np.count_nonzero(p < low) > 0.9 * n:
        return float(np.mean(p[p < low]))
    return float(np.mean(p))


STRATEGIES = {"mean": mean_strategy, "confident": confident_strategy}


def choose_frames(faces: list[FaceScore], k: int = 4) -> list[int]:
    """The k most suspicious frames of a track, spread in time.

    The timeline is cut into k equal spans of the track's frames and the highest-scoring
    frame of each span is taken, so the shown maps do not all come from one moment.
    """
    if not faces:
        return []
    ordered = sorted(faces, key=lambda f: f.frame_index)
    spans = [span for span in np.array_split(np.arange(len(ordered)), min(k, len(ordered))) if len(span)]
    chosen = [ordered[max(span, key=lambda i: ordered[i].score)].frame_index for span in spans]
    return sorted(chosen)


def decide(faces: list[FaceScore], strategy: str = "confident", threshold: float = 0.5, k: int = 4) -> Verdict:
    by_track: dict[int, list[FaceScore]] = defaultdict(list)
    for face in faces:
        by_track[face.track_id].append(face)
    aggregate = STRATEGIES[strategy]
    tracks = [
        TrackVerdict(track_id, aggregate(np.array([f.score for f in track])), sorted(track, key=lambda f: f.frame_index))
        for track_id, track in sorted(by_track.items())
    ]
    if not tracks:
        return Verdict(None, "no_face", threshold, strategy, [], [])
    worst = max(tracks, key=lambda t: t.probability)
    label = "fake" if worst.probability >= threshold else "real"
    return Verdict(worst.probability, label, threshold, strategy, tracks, choose_frames(worst.faces, k))
