"""overlay.mp4: the analysed frames with the HiResCAM++ heat map over every face, face boxes
coloured by P(fake) and the running verdict, to scrub through one result."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from ..explain.render import overlay
from ..explain.stage import frame_maps
from ..media import write_video
from ..models.ensemble import Ensemble
from ..report import Report
from ..types import Detection, FaceScore, FakescopeError
from ..verdict import STRATEGIES
from . import score_colour

METHOD = "hirescam++"
MAX_SIDE = 1280  # px: bigger frames are scaled down, encoding cost grows with the area
MAX_FPS = 10.0


def write_overlay_video(ensemble: Ensemble, report: Report, path: str | Path) -> Path:
    """H.264 video of the analysed frames. HiResCAM++ runs on every frame with faces (one
    forward and backward pass per member and frame), so it costs about as much as scoring."""
    if not report.images:
        raise FakescopeError("the overlay video needs the frames: analyze(..., keep_frames=True)")
    duration = report.media.duration
    # Analysed frames are spread over the input, so showing them at n/duration keeps its pace.
    fps = min(max(len(report.frames) / duration, 1.0), MAX_FPS) if duration > 0 else 1.0
    return write_video(path, _frames(ensemble, report), fps)


def _frames(ensemble: Ensemble, report: Report) -> Iterator[np.ndarray]:
    threshold = report.verdict.threshold
    aggregate, frames = STRATEGIES[report.verdict.strategy], len(report.frames)
    by_frame: dict[int, list[FaceScore]] = {}
    for track in report.verdict.tracks:
        for face in track.faces:
            by_frame.setdefault(face.frame_index, []).append(face)
    seen: dict[int, list[float]] = {}  # track id -> scores so far, for the running verdict
    for info in report.frames:
        image, faces = report.images[info["index"]], by_frame.get(info["index"], [])
        if faces:
            heat = frame_maps(
                ensemble, [(image, [Detection(f.box, f.detector_score) for f in faces])], [METHOD]
            )[0].maps[METHOD]
            image = overlay(image, heat, alpha=0.5)
        scale = min(1.0, MAX_SIDE / max(image.shape[:2]))
        image = (
            cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
            if scale < 1
            else image.copy()
        )
        unit = max(image.shape[:2]) / 1000  # text and lines scale with the frame
        for face in faces:
            seen.setdefault(face.track_id, []).append(face.score)
            x1, y1, x2, y2 = (round(v * scale) for v in face.box)
            colour = score_colour(face.score, threshold)
            cv2.rectangle(image, (x1, y1), (x2, y2), colour, max(2, round(3 * unit)))
            _text(
                image,
                f"{face.score:.2f}",
                (x1, max(y1 - round(8 * unit), round(20 * unit))),
                unit,
                colour,
            )
        running = max(
            (aggregate(np.array(scores), frames) for scores in seen.values()), default=None
        )
        line = f"{info['timestamp']:.2f} s  P(fake) so far: " + (
            "no face yet" if running is None else f"{running:.3f}"
        )
        colour = (255, 255, 255) if running is None else score_colour(running, threshold)
        _text(image, line, (round(12 * unit), round(40 * unit)), unit, colour)
        yield image


def _text(
    image: np.ndarray, text: str, origin: tuple[int, int], unit: float, colour: tuple[int, int, int]
) -> None:
    """Text with a dark outline, readable on any background."""
    scale, thickness = 0.9 * unit, max(1, round(2 * unit))
    cv2.putText(
        image, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), thickness + 3, cv2.LINE_AA
    )
    cv2.putText(
        image, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, colour, thickness, cv2.LINE_AA
    )
