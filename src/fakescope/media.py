"""Media decoding: videos with PyAV, images with Pillow, always as upright RGB uint8 frames.

Every problem with an input file is raised as MediaError with a one-line message that names
the file; no PyAV or Pillow exception escapes.
"""

from __future__ import annotations

import bisect
import errno
import logging
import math
import os
import queue
import stat
import threading
from collections.abc import Generator, Iterator, Sequence
from contextlib import contextmanager
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
from av.sidedata.encparams import VideoEncParams, VideoEncParamsType
from av.sidedata.sidedata import SideDataContainer
from av.sidedata.sidedata import Type as SideDataType
from PIL import ExifTags, Image, ImageOps

from .types import FakescopeError, Frame, Limits, MediaError, MediaInfo

log = logging.getLogger(__name__)

# Below these a video is decoded sequentially: on short clips seeking costs 2-12x more.
SEQUENTIAL_MAX_SECONDS = 20.0
SEQUENTIAL_MAX_FRAMES = 500

# Pixels of the frames the decoder's threads work on at once: 4K UHD gets 2 threads, 4096x4096 one.
THREAD_PIXELS = 24_000_000

# Pillow formats fakescope accepts; lenient plugins (TGA, ...) would claim random bytes.
IMAGE_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF", "MPO", "PPM", "JPEG2000")
# FFmpeg demuxers that render text files as "video" (ANSI art); never real footage.
TEXT_DEMUXERS = {"tty", "bin", "xbin", "adf", "idf"}
# errno values of a path that is not there (as pathlib's exists() reads them).
MISSING = {errno.ENOENT, errno.ENOTDIR, errno.EBADF, errno.ELOOP}
# EXIF orientation -> counter-clockwise rotation applied by exif_transpose (2, 4, 5, 7 also mirror).
EXIF_ROTATION = {3: 180, 4: 180, 5: 270, 6: 270, 7: 90, 8: 90}
# Frame.qp's resolution: H.264 sets one quantiser per 16 x 16 macroblock; a finer cell lets
# the map follow a frame whose size is not a multiple of 16 when it is turned upright.
QP_CELL = 4


@contextmanager
def _decoding(path: Path, what: str = "cannot decode") -> Iterator[None]:
    """Turn any decoder failure into a one-line MediaError."""
    try:
        yield
    except FakescopeError:
        raise
    except Image.DecompressionBombError as exc:  # Pillow's own guard, above fakescope's limit
        raise MediaError(
            f"{path}: image is over the pixel limit ({' '.join(str(exc).split())})"
        ) from None
    except Exception as exc:  # Pillow and FFmpeg raise many types for broken files
        text = exc.strerror if isinstance(exc, av.FFmpegError) and exc.strerror else str(exc)
        message = " ".join(text.split()) or type(exc).__name__
        raise MediaError(f"{path}: {what}: {message}") from None


def _check_file(path: str | Path) -> Path:
    path = Path(path)
    try:  # one stat: face crops come by the thousand
        info = path.stat()
    except OSError as error:
        if error.errno in MISSING:
            raise MediaError(f"{path}: no such file") from None
        raise
    if not stat.S_ISREG(info.st_mode):
        raise MediaError(f"{path}: not a file")
    if info.st_size == 0:
        raise MediaError(f"{path}: empty file (0 bytes)")
    return path


def _check_pixels(path: Path, width: int, height: int, limits: Limits) -> None:
    if width * height > limits.max_pixels:
        raise MediaError(
            f"{path}: {width}x{height} pixels is over the limit of {limits.max_pixels:,} pixels"
        )


def _identify_image(path: Path) -> bool:
    try:
        with Image.open(path, formats=IMAGE_FORMATS):
            return True
    except Image.DecompressionBombError:
        return True  # an image, just too big: reported by read_image
    except Exception:
        return False


def probe(path: str | Path, limits: Limits = Limits()) -> MediaInfo:
    """What the input is, with the size of its upright frames; decodes at most one frame."""
    path = _check_file(path)
    if _identify_image(path):
        return _probe_image(path, limits)
    with _open_video(path) as (container, stream), _decoding(path, "not a readable image or video"):
        return _probe_video(path, container, stream, limits)


def iter_frames(
    path: str | Path,
    count: int = 32,
    limits: Limits = Limits(),
    *,
    info: MediaInfo | None = None,
    seek: bool | None = None,
) -> Iterator[Frame]:
    """Yield upright RGB frames spread evenly over the input, never holding the whole video.

    seek: None picks sequential decoding for short videos and keyframe seeking for long
    ones; True/False force one (benchmarks and tests).
    """
    info = info or probe(path, limits)
    path = Path(path)
    if info.kind == "image":
        yield Frame(0, 0.0, read_image(path, limits))
        return
    n = planned_frames(info, count, limits)
    with _open_video(path) as (container, stream):
        duration = min(info.duration, limits.max_duration)
        available = _available(info, limits)
        # Target the centres of n equal runs of frames, as frame times.
        targets = [math.floor((i + 0.5) * available / n) / info.fps for i in range(n)]
        if seek is None:  # raw streams (.h264) have no timestamps to seek to
            long = duration >= SEQUENTIAL_MAX_SECONDS and info.frame_count >= SEQUENTIAL_MAX_FRAMES
            seek = long and _header_duration(container, stream) is not None
        sampler = _seek_sample if seek else _sequential_sample
        with _decoding(path, "cannot decode video"):
            found = 0
            for index, timestamp, frame in sampler(container, stream, targets, info.fps):
                found += 1
                image = _video_rgb(frame, info.rotation, info.scale)
                yield Frame(index, timestamp, image, _upright_qp(frame, info.rotation))
        if not found:
            raise MediaError(f"{path}: no video frame could be decoded (truncated or corrupt?)")


def read_frames_at(
    path: str | Path, indices: Sequence[int], limits: Limits = Limits()
) -> list[Frame]:
    """The upright RGB frames at these indices (numbered as `iter_frames` numbers them),
    decoded from the start; MediaError when the video ends before one of them."""
    info = probe(path, limits)
    path = Path(path)
    wanted = sorted(set(indices))
    found: dict[int, Frame] = {}
    if info.kind == "video" and wanted:
        with _open_video(path) as (container, stream), _decoding(path, "cannot decode video"):
            start = Fraction(stream.start_time or 0) * Fraction(stream.time_base or 1)
            for decoded, frame in enumerate(_decoded(container, stream)):
                t = _frame_time(frame, start, decoded, info.fps)
                index = round(t * info.fps)
                if index in wanted:
                    found[index] = Frame(index, t, _video_rgb(frame, info.rotation, info.scale))
                if index >= wanted[-1]:
                    break
    missing = [i for i in wanted if i not in found]
    if missing:
        raise MediaError(
            f"{path}: has no frame {missing[0]} ({info.frame_count} frames): "
            "its frames do not match the other video's"
        )
    return [found[i] for i in indices]


def planned_frames(info: MediaInfo, count: int, limits: Limits = Limits()) -> int:
    """How many frames iter_frames tries to decode (fewer come from a truncated file)."""
    if info.kind == "image":
        return 1
    return max(1, min(count, limits.max_frames, _available(info, limits)))


def _available(info: MediaInfo, limits: Limits) -> int:
    """Frames in the part of the video that is read, from its header."""
    seconds = min(info.duration, limits.max_duration)
    return max(1, min(info.frame_count, math.floor(seconds * info.fps)))


def read_image(path: str | Path, limits: Limits = Limits()) -> np.ndarray:
    """An image file as an upright RGB uint8 array (EXIF orientation applied)."""
    path = _check_file(path)
    with _decoding(path, "cannot decode image"), Image.open(path, formats=IMAGE_FORMATS) as im:
        return _decode_image(path, im, limits)


def read_image_info(
    path: str | Path, limits: Limits = Limits()
) -> tuple[MediaInfo, np.ndarray] | None:
    """`probe` and `read_image` of an image in one opening of the file (for many small files,
    such as face crops); None when the file is no image (probe then says what it is)."""
    path = _check_file(path)
    try:
        im = Image.open(path, formats=IMAGE_FORMATS)
    except Exception:  # not an image, or a bomb: probe gives the message
        return None
    with im:
        with _decoding(path, "cannot read image"):
            info = _image_info(path, im, limits)
        with _decoding(path, "cannot decode image"):
            return info, _decode_image(path, im, limits)


def _decode_image(path: Path, im: Image.Image, limits: Limits) -> np.ndarray:
    _check_pixels(path, *im.size, limits)  # from the header, before decoding
    scale = limits.scale(*im.size)
    if scale < 1:  # JPEG decodes at 1/2, 1/4 or 1/8 of its size: less to hold
        im.draft("RGB", (round(im.width * scale), round(im.height * scale)))
    return _fit(_pil_rgb(ImageOps.exif_transpose(im)), limits)


def _fit(image: np.ndarray, limits: Limits) -> np.ndarray:
    """The image downscaled to decode_pixels, if it is larger."""
    height, width = image.shape[:2]
    scale = limits.scale(width, height)
    if scale == 1:
        return image
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def _probe_image(path: Path, limits: Limits) -> MediaInfo:
    with _decoding(path, "cannot read image"), Image.open(path, formats=IMAGE_FORMATS) as im:
        return _image_info(path, im, limits)


def _image_info(path: Path, im: Image.Image, limits: Limits) -> MediaInfo:
    _check_pixels(path, *im.size, limits)
    rotation = EXIF_ROTATION.get(im.getexif().get(ExifTags.Base.Orientation, 1), 0)
    width, height = im.size[::-1] if rotation in (90, 270) else im.size
    scale = limits.scale(width, height)
    assert im.format is not None  # Image.open sets it for every format it opens
    return MediaInfo(
        str(path), "image", width, height, 0.0, 0.0, 1, im.format.lower(), rotation, scale
    )


def _pil_rgb(im: Image.Image) -> np.ndarray:
    """RGB uint8 from any Pillow mode, scaling high bit depths and compositing alpha on white."""
    if im.mode.startswith("I;16") or im.mode in ("I", "F"):
        # Pillow's convert("RGB") clips these at 255 instead of scaling them.
        values: np.ndarray = np.asarray(im, dtype=np.float32)
        peak = values.max()
        if im.mode.startswith("I;16") or (im.mode == "I" and peak > 255):
            values = values / 257  # 0..65535 -> 0..255
        elif im.mode == "F" and peak <= 1.0:
            values = values * 255
        gray = np.clip(values + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if im.mode in ("RGBA", "LA", "PA", "La", "RGBa") or (
        im.mode == "P" and "transparency" in im.info
    ):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        im = Image.alpha_composite(white, rgba)
    return np.array(im.convert("RGB"), dtype=np.uint8)


@contextmanager
def _open_video(
    path: Path,
) -> Iterator[tuple[av.container.InputContainer, av.video.stream.VideoStream]]:
    """The container and its first real video stream (cover art in audio files does not count)."""
    with _decoding(path, "not a readable image or video"):
        container = av.open(str(path), mode="r")
    try:
        if container.format.name in TEXT_DEMUXERS:
            raise MediaError(f"{path}: not a readable image or video (a text file?)")
        cover_art = av.stream.Disposition.attached_pic
        streams = [s for s in container.streams.video if not s.disposition & cover_art]
        if not streams:
            raise MediaError(f"{path}: no video stream (audio-only or data file?)")
        stream = streams[0]
        ctx = stream.codec_context  # None for a stream no decoder can open (probe then fails)
        h264 = ctx is not None and ctx.name == "h264"
        # Frame threading, as decoding is the cost of this stage; but not for H.264, whose
        # frame threads export a frame's quantisers before its decoding thread has written
        # them all (2.6% of face QPs changed between two runs): slices give the same numbers
        # every run, and cost `analyze` nothing measurable on 2 cores (1.80 s against 1.85 s).
        stream.thread_type = "SLICE" if h264 else "AUTO"
        if ctx is not None:
            # Each frame carries its quantisers (Frame.qp): how coarsely the face was coded.
            ctx.options = {**ctx.options, "export_side_data": "venc_params"}
            # Each frame thread holds frames at full size: fewer threads for big frames.
            threads = THREAD_PIXELS // max(1, ctx.width * ctx.height)
            if threads < (os.cpu_count() or 1):
                ctx.thread_count = max(1, threads)
        yield container, stream
    finally:
        container.close()


def _probe_video(path: Path, container, stream, limits: Limits) -> MediaInfo:
    ctx = stream.codec_context
    _check_pixels(path, ctx.width, ctx.height, limits)
    fps = float(stream.average_rate or stream.guessed_rate or stream.base_rate or 0)
    if fps <= 0:
        raise MediaError(f"{path}: video has no frame rate")
    duration = _header_duration(container, stream)
    if duration is None:  # raw streams (.h264): count packets, without decoding
        with av.open(str(path)) as other:
            duration = sum(1 for p in other.demux(other.streams[stream.index]) if p.size) / fps
    frame_count = stream.frames or round(duration * fps)
    first = next(_decoded(container, stream), None)
    if first is None:  # also garbage that FFmpeg took for an image by its extension
        raise MediaError(f"{path}: not a readable image or video: no frame could be decoded")
    rotation = round(first.rotation / 90) * 90 % 360  # display matrix, counter-clockwise
    width, height = (ctx.height, ctx.width) if rotation in (90, 270) else (ctx.width, ctx.height)
    codec = ctx.codec.canonical_name  # "av1", not the decoder's name "libdav1d"
    return MediaInfo(
        str(path),
        "video",
        width,
        height,
        duration,
        fps,
        frame_count,
        codec,
        rotation,
        limits.scale(width, height),
    )


def _header_duration(container, stream) -> float | None:
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    if container.duration:  # Matroska/WebM: only the container knows
        return container.duration / av.time_base
    return None


def _decoded(container, stream) -> Iterator[av.VideoFrame]:
    """The stream's frames until its end, or until its data breaks off: a truncated file
    still gives the frames before the cut."""
    try:
        yield from container.decode(stream)
    except av.InvalidDataError as exc:
        log.warning("%s: decoding stopped early: %s", container.name, exc.strerror)


def _frame_time(frame, start: Fraction, decoded: int, fps: float) -> float:
    return float(frame.pts * frame.time_base - start) if frame.pts is not None else decoded / fps


def _sequential_sample(container, stream, targets: list[float], fps: float):
    """Decode from the start and keep the frame nearest each target."""
    start = (stream.start_time or 0) * stream.time_base
    half = 0.5 / fps
    i = 0
    for decoded, frame in enumerate(_decoded(container, stream)):
        t = _frame_time(frame, start, decoded, fps)
        if t < targets[i] - half:
            continue
        yield round(t * fps), t, frame
        while i < len(targets) and targets[i] - half <= t:  # one frame can serve close targets
            i += 1
        if i == len(targets):
            return


def _seek_sample(container, stream, targets: list[float], fps: float):
    """Seek to the keyframe before each target and decode forward to it.

    The seek is skipped when no keyframe lies between the last decoded frame and the
    target: decoding on is then cheaper than going back to the same keyframe.
    """
    base = stream.time_base
    start = (stream.start_time or 0) * base
    half = 0.5 / fps
    keyframes = sorted(
        float(e.timestamp * base - start) for e in stream.index_entries if e.is_keyframe
    )
    frames: Iterator | None = None
    last = -math.inf
    for target in targets:
        if target - half <= last:
            continue  # the previous frame already served this target
        before = bisect.bisect_right(keyframes, target)  # keyframes at or before the target
        if frames is None or len(keyframes) < 2 or (before and keyframes[before - 1] > last):
            container.seek(
                int((target + float(start)) / base), stream=stream, backward=True, any_frame=False
            )
            frames = _decoded(container, stream)
        for frame in frames:
            if frame.pts is None:
                continue
            last = _frame_time(frame, start, 0, fps)
            if last >= target - half:
                yield round(last * fps), last, frame
                break
        else:
            return  # the stream ended early (truncated file)


def _upright_qp(frame: av.VideoFrame, rotation: int) -> np.ndarray | None:
    """Frame.qp of a decoded frame: None unless its decoder exported H.264 quantisers."""
    # A container of our own, not `frame.side_data`: PyAV caches that one on the frame, and
    # the cycle keeps every full-size frame alive until a full garbage collection (+630 MB
    # on 32 frames of 4096 x 4096).
    side_data = SideDataContainer(frame)  # type: ignore[call-arg]  # the stub lacks __init__
    params = side_data.get(SideDataType.VIDEO_ENC_PARAMS)
    if not isinstance(params, VideoEncParams) or params.codec_type != VideoEncParamsType.H264:
        return None
    return upright_qp(params.qp_map(), frame.width, frame.height, rotation)


def upright_qp(macroblocks: np.ndarray, width: int, height: int, rotation: int) -> np.ndarray:
    """A quantiser per 16 x 16 macroblock of a width x height picture, spread over
    QP_CELL-pixel cells, trimmed to the picture (its last macroblocks may overhang it) and
    turned like `_video_rgb` turns the image."""
    per_block = 16 // QP_CELL
    grid = macroblocks.astype(np.int8)  # 0-51, or down to -12 at 10 bits
    cells = np.repeat(np.repeat(grid, per_block, axis=0), per_block, axis=1)
    cells = cells[: -(-height // QP_CELL), : -(-width // QP_CELL)]
    return np.ascontiguousarray(np.rot90(cells, rotation // 90)) if rotation else cells


def _video_rgb(frame, rotation: int, scale: float = 1.0) -> np.ndarray:
    # Converted and downscaled in one step: a big frame never exists in RGB at full size.
    width, height = max(1, round(frame.width * scale)), max(1, round(frame.height * scale))
    image = frame.reformat(width, height, "rgb24", interpolation="AREA").to_ndarray()
    # np.rot90 turns counter-clockwise, the sense of the display matrix.
    return np.ascontiguousarray(np.rot90(image, rotation // 90)) if rotation else image


def read_ahead(frames: Iterator[Frame], depth: int = 8) -> Generator[Frame, None, None]:
    """The same frames, decoded in a background thread up to `depth` ahead, so decoding
    overlaps whatever the caller does with each frame (FFmpeg releases the GIL).

    Errors in decoding are raised in the caller; a caller that stops early stops the thread.
    """
    buffer: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def offer(item) -> bool:
        while not stop.is_set():  # never block for good: the caller may have gone
            try:
                buffer.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for frame in frames:
                if not offer(frame):
                    return
            offer(done)
        except BaseException as error:
            offer(error)

    worker = threading.Thread(target=produce, name="fakescope-decode", daemon=True)
    worker.start()
    try:
        while (item := buffer.get()) is not done:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        worker.join()
