"""The H.264 noise floor under the manipulation masks (explain/pairs.py): a real video against
itself re-encoded at FaceForensics++'s c23 (x264, CRF 23, 4:4:4 colour as FF++ codes it), on
the faces.

    python scripts/noise_floor.py ../shared/data/ffpp-dev/real/*.mp4 --frames 50

Prints percentiles of the smoothed difference (pairs.difference) over every face's grown box,
per video and over all of them, and the share of face pixels above pairs.THRESHOLD.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from fakescope.encode import write_video
from fakescope.explain.pairs import THRESHOLD, _grown, difference
from fakescope.faces import get_detector
from fakescope.media import iter_frames, read_frames_at

PERCENTILES = (50, 99, 99.9, 99.99)


def face_differences(path: Path, frames: int, detector) -> np.ndarray:
    """The smoothed difference at every face pixel of the video's first `frames` frames
    (consecutive, so that x264 codes them as it codes a video)."""
    decoded = read_frames_at(path, range(frames))
    images = [f.image[: f.image.shape[0] // 2 * 2, : f.image.shape[1] // 2 * 2] for f in decoded]
    with tempfile.TemporaryDirectory() as tmp:
        again = Path(tmp) / "again.mp4"
        fps = 25.0  # the rate does not change how x264 codes each frame at a constant CRF
        write_video(again, images, fps, options={"crf": "23"}, pix_fmt="yuv444p")
        recoded = list(iter_frames(again, len(images) * 10))  # every frame
    values = []
    for image, other, faces in zip(images, recoded, detector.detect(images)):
        diff = difference(image, other.image)
        for face in faces:
            values.append(diff[_grown(face.box, diff.shape)].ravel())
    return np.concatenate(values) if values else np.empty(0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("videos", nargs="+", type=Path)
    parser.add_argument("--frames", type=int, default=50)
    args = parser.parse_args()
    detector = get_detector("retinaface")
    every = []
    for path in args.videos:
        values = face_differences(path, args.frames, detector)
        every.append(values)
        cells = " ".join(f"p{q}={np.percentile(values, q):.2f}" for q in PERCENTILES)
        print(
            f"{path.name}: {len(values)} face px, {cells}, above {THRESHOLD:g}: "
            f"{(values > THRESHOLD).mean():.2e}"
        )
    values = np.concatenate(every)
    cells = " ".join(f"p{q}={np.percentile(values, q):.2f}" for q in PERCENTILES)
    above = (values > THRESHOLD).mean()
    print(f"all: {len(values)} face px, {cells}, above {THRESHOLD:g}: {above:.2e}")


if __name__ == "__main__":
    main()
