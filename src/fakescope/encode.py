"""Encoding: RGB frames into a video (the overlay video, test media), re-encodes of a video
(its first seconds copied or coded again), and the example clip."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from fractions import Fraction
from importlib import resources
from pathlib import Path
from typing import cast

import av
import cv2
import numpy as np
from av.video.stream import VideoStream
from PIL import Image

from .types import FakescopeError


def write_video(
    path: str | Path,
    frames: Iterable[np.ndarray],
    fps: float,
    codec: str = "libx264",
    *,
    rotation: int = 0,
    options: dict[str, str] | None = None,
    pix_fmt: str = "yuv420p",
) -> Path:
    """Encode RGB uint8 frames (one size) into a video; `rotation` is stored as display metadata,
    `options` go to the encoder (x264's {"qp": "40"}, say), `pix_fmt` is the coded pixel format
    (yuv444p keeps full-resolution colour, as FaceForensics++'s videos have it).

    Frames with an odd width or height lose their last column/row: 4:2:0 video needs even sizes.
    """
    path = Path(path)
    with av.open(str(path), mode="w") as container:
        stream: VideoStream | None = None
        for image in frames:
            h, w = image.shape[0] // 2 * 2, image.shape[1] // 2 * 2
            if stream is None:
                quiet = {"x265-params": "log-level=error"} if codec == "libx265" else {}
                rate = Fraction(fps).limit_denominator(1001)
                given = {**quiet, **(options or {})}
                stream = cast(VideoStream, container.add_stream(codec, rate=rate, options=given))
                stream.width, stream.height, stream.pix_fmt = w, h, pix_fmt
                if rotation:
                    stream.set_display_rotation(rotation)
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image[:h, :w]), format="rgb24")
            container.mux(stream.encode(frame))
        if stream is None:
            raise FakescopeError(f"{path}: no frames to write")
        container.mux(stream.encode())
    return path


def first_seconds(source: Path, target: Path, seconds: float) -> Path:
    """A video's first `seconds` without re-encoding: packets in decode order up to that time,
    so every frame shown before it keeps the (earlier-decoded) frames it refers to."""
    with av.open(str(source)) as src, av.open(str(target), "w") as dst:
        stream = src.streams.video[0]
        out = dst.add_stream_from_template(stream)
        start, base = stream.start_time or 0, stream.time_base or Fraction(1)
        for packet in src.demux(stream):
            if packet.dts is None:  # the demuxer's final flush packet
                continue
            if (packet.dts - start) * base >= seconds:
                break
            packet.stream = out
            dst.mux(packet)
    return target


def reencode(
    source: Path,
    target: Path,
    seconds: float,
    crf: int,
    scale: float = 1.0,
    transform: Callable[[np.ndarray], np.ndarray] | None = None,
) -> Path:
    """A video's first `seconds` coded again by x264 at `crf` (sides times `scale`), as a
    messenger or a platform re-encodes an upload; `transform` changes each decoded RGB frame
    (of the source's size) before it is coded, as an app does before it sends a video."""
    with av.open(str(source)) as src, av.open(str(target), "w") as dst:
        stream = src.streams.video[0]
        stream.thread_type = "AUTO"
        fps = Fraction(stream.average_rate or 25).limit_denominator(1001)
        out = dst.add_stream("libx264", rate=fps, options={"crf": str(crf), "preset": "veryfast"})
        out.width, out.height = (
            int(stream.width * scale) // 2 * 2,
            int(stream.height * scale) // 2 * 2,
        )
        out.pix_fmt = "yuv420p"
        base = stream.time_base or Fraction(1)
        start = float(stream.start_time * base) if stream.start_time else 0.0
        for i, frame in enumerate(src.decode(stream)):
            if frame.time is not None and frame.time - start >= seconds:
                break
            if transform is not None:
                changed = transform(frame.to_ndarray(format="rgb24"))
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(changed), format="rgb24")
            image = frame.reformat(width=out.width, height=out.height, format="yuv420p")
            image.pts, image.time_base = i, 1 / fps  # a fresh timeline at the source fps
            dst.mux(out.encode(image))
        dst.mux(out.encode())
    return target


def _asset_image(name: str) -> np.ndarray:
    with resources.files("fakescope").joinpath("assets", name).open("rb") as f:
        return np.asarray(Image.open(f).convert("RGB"))


def make_example_video(
    path: str | Path,
    seconds: float = 3,
    size: tuple[int, int] = (1280, 720),
    fps: int = 25,
    *,
    people: int = 1,
) -> Path:
    """A short clip with `people` copies of the astronaut photo drifting on a grey canvas.

    The photo (Eileen Collins, NASA, public domain; scikit-image's `astronaut`) ships in
    fakescope/assets, so the example needs no scikit-image. Each copy is scaled to 60% of
    the canvas height and placed in its own column, so every face stays apart.
    """
    width, height = size
    photo = _asset_image("astronaut.jpg")
    side = max(16, int(height * 0.6)) // 2 * 2
    photo = cv2.resize(photo, (side, side), interpolation=cv2.INTER_AREA)
    column = width / people
    if side > column:
        raise FakescopeError(f"{people} people do not fit side by side in a {width}x{height} video")
    canvas = np.zeros((height, width, 3), np.uint8)
    canvas[:] = np.linspace(60, 140, width, dtype=np.uint8)[None, :, None]  # a gradient, not flat
    slack_x, slack_y = (column - side) / 2, (height - side) / 2

    def frames() -> Iterator[np.ndarray]:
        for i in range(max(1, round(seconds * fps))):
            image = canvas.copy()
            for p in range(people):
                phase = (
                    2 * math.pi * (i / fps / 2.0 + p / max(people, 2))
                )  # 2 s cycle, people out of step
                x = int(p * column + slack_x + min(slack_x, 0.05 * width) * math.sin(phase))
                y = int(slack_y + min(slack_y, 0.03 * height) * math.cos(phase))
                image[y : y + side, x : x + side] = photo
            yield image

    return write_video(path, frames(), fps)
