"""overlay.mp4: the analysed frames with the HiResCAM++ heat map the analysis made over every
face (Analyzer.analyze(..., overlay=True)), face boxes coloured by P(fake) and the verdict, to
scrub through one result."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from ..encode import write_video
from ..explain.render import overlay
from ..report import Report
from ..types import FakescopeError
from . import UNJUDGED, score_colour

MAX_SIDE = 1280  # px: bigger frames are scaled down, encoding cost grows with the area
MAX_FPS = 10.0


def write_overlay_video(report: Report, path: str | Path) -> Path:
    """H.264 video of the analysed frames, with the maps and the verdict of the report."""
    if not report.images or (report.verdict.tracks and not report.maps):
        raise FakescopeError(
            "the overlay video needs the frames and their maps: analyze(..., overlay=True)"
        )
    duration = report.media.duration
    # Analysed frames are spread over the input, so showing them at n/duration keeps its pace.
    fps = min(max(len(report.frames) / duration, 1.0), MAX_FPS) if duration > 0 else 1.0
    return write_video(path, _frames(report), fps)


def verdict_line(report: Report) -> str:
    """The verdict each frame shows: the report's own (label and P(fake))."""
    verdict = report.verdict
    probability = "" if verdict.probability is None else f" P(fake) {verdict.probability:.3f}"
    return f"{verdict.label}{probability}"


def _frames(report: Report) -> Iterator[np.ndarray]:
    threshold = report.verdict.threshold
    by_frame = report.verdict.faces_by_frame()
    red, green, blue = (int(UNJUDGED[i : i + 2], 16) for i in (1, 3, 5))
    unjudged = (red, green, blue)
    probability = report.verdict.probability
    verdict_colour = (
        (255, 255, 255) if probability is None else score_colour(probability, threshold)
    )
    for info in report.frames:
        image, faces = report.images[info["index"]], by_frame.get(info["index"], [])
        if info["index"] in report.maps:
            image = overlay(image, report.maps[info["index"]], alpha=0.5)
        scale = min(1.0, MAX_SIDE / max(image.shape[:2]))
        image = (
            cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
            if scale < 1
            else image.copy()
        )
        unit = max(image.shape[:2]) / 1000  # text and lines scale with the frame
        for face in faces:
            x1, y1, x2, y2 = (round(v * scale) for v in face.box)
            # A face the verdict does not judge is grey, as in the HTML report.
            colour = score_colour(face.score, threshold) if face.unjudged is None else unjudged
            cv2.rectangle(image, (x1, y1), (x2, y2), colour, max(2, round(3 * unit)))
            _text(
                image,
                f"{face.score:.2f}",
                (x1, max(y1 - round(8 * unit), round(20 * unit))),
                unit,
                colour,
            )
        line = f"{info['timestamp']:.2f} s  {verdict_line(report)}"
        _text(image, line, (round(12 * unit), round(40 * unit)), unit, verdict_colour)
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
