"""Decoding of generated videos and images, and one-line errors for bad inputs."""

from __future__ import annotations

import gc

import av
import numpy as np
import pytest
from PIL import Image

from fakescope import encode, media
from fakescope.encode import make_example_video
from fakescope.media import QP_CELL, Limits, iter_frames
from fakescope.types import MediaError
from helpers import audio_only, png_header

W, H = 64, 48  # small, so encoding and decoding stay fast
ENCODERS = [  # (extension, encoder, decoded codec name)
    ("mp4", "libx264", "h264"),
    ("mkv", "libx264", "h264"),
    ("webm", "libvpx-vp9", "vp9"),
    ("avi", "mpeg4", "mpeg4"),
    ("mov", "libx265", "hevc"),
    ("mp4", "libsvtav1", "av1"),
]


def numbered(i: int, width: int = W, height: int = H) -> np.ndarray:
    """A frame that says which frame it is: 6 horizontal bands, black or white, are i's bits."""
    image = np.zeros((height, width, 3), np.uint8)
    image[:, width // 2 :] = (40, 160, 90)
    for bit, rows in enumerate(np.array_split(np.arange(height), 6)):
        image[rows, : width // 2] = 255 * (i >> bit & 1)
    return image


def frame_number(image: np.ndarray) -> int:
    bands = np.array_split(image[:, : image.shape[1] // 2], 6)
    return sum(1 << bit for bit, band in enumerate(bands) if band[2:-2].mean() > 128)


def marked(width: int, height: int) -> np.ndarray:
    """An asymmetric picture: a white block in the top-left corner on grey."""
    image = np.full((height, width, 3), 100, np.uint8)
    image[: height // 4, : width // 4] = 255
    return image


def codec_or_skip(encoder: str) -> None:
    if encoder not in av.codecs_available:
        pytest.skip(f"PyAV wheel has no {encoder} encoder")


@pytest.mark.parametrize(
    ("ext", "encoder", "codec"), ENCODERS, ids=[f"{e}-{c}" for e, c, _ in ENCODERS]
)
def test_formats_sample_evenly(tmp_path, ext, encoder, codec):
    codec_or_skip(encoder)
    path = encode.write_video(
        tmp_path / f"clip.{ext}", (numbered(i, 64, 64) for i in range(50)), 25, encoder
    )
    info = media.probe(path)
    frames = list(media.iter_frames(path, 8, info=info))
    assert (info.kind, info.codec, info.width, info.height, info.fps) == (
        "video",
        codec,
        64,
        64,
        25.0,
    )
    assert info.duration == pytest.approx(2.0, abs=0.05)
    assert info.frame_count == 50
    # Centres of 8 equal runs of 50 frames.
    expected = [int((i + 0.5) * 50 / 8) for i in range(8)]
    assert [f.index for f in frames] == expected
    assert [f.timestamp for f in frames] == pytest.approx([i / 25 for i in expected], abs=1e-6)
    for f in frames:
        assert f.image.shape == (64, 64, 3) and f.image.dtype == np.uint8
        assert frame_number(f.image) == f.index  # the decoded picture is the frame it claims


def test_count_and_limits(tmp_path):
    path = encode.write_video(tmp_path / "clip.mp4", (numbered(i) for i in range(50)), 25)
    frames = list(media.iter_frames(path, 500))  # more than the video has: every frame once
    assert [f.index for f in frames] == list(range(50))
    frames = list(media.iter_frames(path, 32, Limits(max_frames=5)))
    assert len(frames) == 5
    frames = list(media.iter_frames(path, 10, Limits(max_duration=1.0)))
    assert len(frames) == 10 and max(f.timestamp for f in frames) < 1.0


def test_seek_matches_sequential(tmp_path, monkeypatch):
    # 60 s with a keyframe every 10 s (x264's default): long enough for the seeking path.
    path = encode.write_video(
        tmp_path / "long.mp4", (numbered(i % 50, 32, 32) for i in range(1500)), 25
    )
    info = media.probe(path)
    assert info.duration == pytest.approx(60.0, abs=0.05)
    sequential = list(media.iter_frames(path, 16, info=info, seek=False))
    seeking = list(media.iter_frames(path, 16, info=info, seek=True))
    expected = [int((i + 0.5) * 1500 / 16) for i in range(16)]
    assert [f.index for f in seeking] == [f.index for f in sequential] == expected
    for a, b in zip(sequential, seeking):
        assert a.timestamp == pytest.approx(b.timestamp)
        np.testing.assert_array_equal(a.image, b.image)
    calls = []
    monkeypatch.setattr(media, "_seek_sample", lambda *a: calls.append(1) or iter(()))
    with pytest.raises(MediaError):  # the spy decodes nothing
        list(media.iter_frames(path, 16, info=info))
    assert calls, "a 60 s video should be read by seeking"


@pytest.mark.parametrize("rotation", [90, 180, 270])
def test_rotated_video_comes_out_upright(tmp_path, rotation):
    upright = marked(48, 64)
    stored = np.rot90(upright, -rotation // 90)  # what a camera writes before tagging its rotation
    path = encode.write_video(tmp_path / "rotated.mp4", [stored] * 10, 25, rotation=rotation)
    info = media.probe(path)
    frames = list(media.iter_frames(path, 2, info=info))
    assert info.rotation == rotation
    assert (info.width, info.height) == (48, 64)
    assert frames[0].image.shape == (64, 48, 3)
    assert np.abs(frames[0].image.astype(int) - upright).mean() < 4
    assert frames[0].qp is not None and frames[0].qp.shape == (64 // QP_CELL, 48 // QP_CELL)


@pytest.mark.parametrize("rotation", [0, 90, 180, 270])
def test_quantisers_turn_with_the_picture(rotation):
    width, height = 40, 24  # the last macroblocks overhang the picture by 8 px
    blocks = np.arange(6).reshape(2, 3)
    per_pixel = np.repeat(np.repeat(blocks, 16, axis=0), 16, axis=1)[:height, :width]
    upright = np.rot90(per_pixel, rotation // 90)
    cells = media.upright_qp(blocks, width, height, rotation)
    np.testing.assert_array_equal(cells, upright[::QP_CELL, ::QP_CELL])


def test_h264_frames_carry_their_quantisers(tmp_path):
    images = [numbered(i) for i in range(10)]
    for qp in (20, 40):
        path = encode.write_video(tmp_path / f"qp{qp}.mp4", images, 25, options={"qp": str(qp)})
        for frame in iter_frames(path, 10):
            assert frame.qp is not None and frame.qp.shape == (H // QP_CELL, W // QP_CELL)
            # x264 codes keyframes a little finer and B-frames a little coarser than --qp.
            assert qp - 4 <= frame.qp.min() and frame.qp.max() <= qp + 4


def test_reading_quantisers_leaves_no_decoded_frame_alive(tmp_path):
    # PyAV's `frame.side_data` is cached on the frame: a cycle that kept every sampled frame, at
    # full size, until a full garbage collection (630 MB on 32 frames of 4096 x 4096).
    path = encode.write_video(tmp_path / "clip.mp4", [numbered(i) for i in range(10)], 25)
    gc.collect()
    gc.disable()
    try:
        frames = list(iter_frames(path, 10))
        decoded = [o for o in gc.get_objects() if type(o) is av.VideoFrame]
    finally:
        gc.enable()
    # The RGB copies' own cycle with their planes is PyAV's; they are the decoded size.
    alive = [o for o in decoded if o.format.name != "rgb24"]
    assert all(f.qp is not None for f in frames) and alive == []


@pytest.mark.parametrize(("ext", "encoder"), [("webm", "libvpx-vp9"), ("avi", "mpeg4")])
def test_other_codecs_and_images_have_no_quantisers(tmp_path, ext, encoder):
    codec_or_skip(encoder)
    path = encode.write_video(
        tmp_path / f"clip.{ext}", [numbered(i) for i in range(5)], 25, encoder
    )
    assert all(f.qp is None for f in iter_frames(path, 5))
    Image.fromarray(numbered(0)).save(tmp_path / "still.jpg")
    assert next(iter_frames(tmp_path / "still.jpg")).qp is None


def test_exif_rotated_jpeg_comes_out_upright(tmp_path):
    upright = marked(40, 60)
    stored = Image.fromarray(np.ascontiguousarray(np.rot90(upright)))  # 60 x 40 on disk
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    stored.save(tmp_path / "photo.jpg", exif=exif, quality=95)
    info = media.probe(tmp_path / "photo.jpg")
    assert (info.kind, info.width, info.height, info.rotation) == ("image", 40, 60, 270)
    frames = list(media.iter_frames(tmp_path / "photo.jpg"))
    assert len(frames) == 1 and frames[0].index == 0 and frames[0].timestamp == 0.0
    assert frames[0].image.shape == (60, 40, 3)
    assert np.abs(frames[0].image.astype(int) - upright).mean() < 4


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda: Image.new("L", (4, 3), 77), (77, 77, 77)),
        (lambda: Image.new("1", (4, 3), 1), (255, 255, 255)),
        (lambda: Image.new("CMYK", (4, 3), (255, 0, 0, 0)), (0, 255, 255)),
        (lambda: Image.fromarray(np.full((3, 4), 32896, np.uint16)), (128, 128, 128)),  # 16-bit
        (
            lambda: Image.new("RGBA", (4, 3), (255, 0, 0, 0)),
            (255, 255, 255),
        ),  # transparent -> white
        (lambda: Image.new("RGBA", (4, 3), (255, 0, 0, 255)), (255, 0, 0)),
        (lambda: Image.new("LA", (4, 3), (0, 128)), (127, 127, 127)),  # half-transparent black
    ],
    ids=["L", "1", "CMYK", "I16", "RGBA-clear", "RGBA-opaque", "LA"],
)
@pytest.mark.parametrize("fmt", ["png", "tiff"])
def test_image_modes_become_rgb(tmp_path, make, expected, fmt):
    image = make()
    if fmt == "png" and image.mode == "CMYK":
        pytest.skip("PNG cannot hold CMYK")
    path = tmp_path / f"image.{fmt}"
    image.save(path)
    rgb = media.read_image(path)
    assert rgb.shape == (3, 4, 3) and rgb.dtype == np.uint8
    np.testing.assert_allclose(rgb.reshape(-1, 3), np.tile(expected, (12, 1)), atol=1)


def test_palette_with_transparency(tmp_path):
    image = Image.new("P", (4, 3), 1)
    image.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    image.save(tmp_path / "p.png", transparency=0)
    np.testing.assert_array_equal(media.read_image(tmp_path / "p.png")[0, 0], (10, 200, 30))
    Image.new("P", (4, 3), 0).save(tmp_path / "clear.gif", transparency=0)
    np.testing.assert_array_equal(media.read_image(tmp_path / "clear.gif")[0, 0], (255, 255, 255))


def test_one_pixel_image_is_fine(tmp_path):
    Image.new("RGB", (1, 1), (1, 2, 3)).save(tmp_path / "dot.png")
    info = media.probe(tmp_path / "dot.png")
    frames = list(media.iter_frames(tmp_path / "dot.png", info=info))
    assert (info.width, info.height) == (1, 1)
    np.testing.assert_array_equal(frames[0].image, [[[1, 2, 3]]])


def test_kind_is_decided_by_content(tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "image.png")
    (tmp_path / "image.mp4").write_bytes((tmp_path / "image.png").read_bytes())
    encode.write_video(tmp_path / "video.mp4", (numbered(i) for i in range(5)), 25)
    (tmp_path / "video.jpg").write_bytes((tmp_path / "video.mp4").read_bytes())
    assert media.probe(tmp_path / "image.mp4").kind == "image"
    assert media.probe(tmp_path / "video.jpg").kind == "video"
    assert len(list(media.iter_frames(tmp_path / "video.jpg", 3))) == 3


def truncated_mp4(path) -> None:
    whole = encode.write_video(path.with_name("whole.mp4"), (numbered(i) for i in range(25)), 25)
    data = whole.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # x264 in mp4 keeps its index (moov) at the end


BAD_INPUTS = {
    "missing": (lambda p: None, "no such file"),
    "zero-byte": (lambda p: p.write_bytes(b""), "empty file"),
    "truncated": (truncated_mp4, "not a readable image or video"),
    "random-bytes": (
        lambda p: p.write_bytes(np.random.default_rng(1).bytes(4096)),
        "not a readable",
    ),
    "text": (lambda p: p.write_text("hello\nthis is not a video\n" * 50), "not a readable"),
    "audio-only": (audio_only, "no video stream"),
    "png-bomb": (lambda p: p.write_bytes(png_header(30000, 30000)), "pixel limit"),
    "png-over-limit": (
        lambda p: p.write_bytes(png_header(8000, 8000)),
        "over the limit of 36,000,000",
    ),
}


@pytest.mark.parametrize("name", BAD_INPUTS)
@pytest.mark.parametrize("suffix", [".mp4", ".txt", ".png"])
def test_bad_inputs_raise_one_line_media_error(tmp_path, name, suffix):
    make, message = BAD_INPUTS[name]
    path = tmp_path / f"input{suffix}"
    make(path)
    for call in (
        media.probe,
        lambda p: list(media.iter_frames(p)),
    ):
        with pytest.raises(MediaError) as caught:
            call(path)
        text = str(caught.value)
        assert "\n" not in text and str(path) in text and message in text, text


def test_truncated_but_indexed_video_returns_what_decodes(tmp_path):
    # With the index first (faststart), the frames before the cut still decode.
    path = tmp_path / "cut.mp4"
    rng = np.random.default_rng(0)
    with av.open(str(path), "w", options={"movflags": "faststart"}) as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        for _ in range(50):  # noise: big frames, so the cut falls among them
            noise = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(noise, format="rgb24")))
        container.mux(stream.encode())
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * 0.6)])
    info = media.probe(path)
    frames = list(media.iter_frames(path, 10, info=info))
    assert info.frame_count == 50 and 0 < len(frames) < 10


def test_read_ahead_gives_the_same_frames_and_stops_cleanly(tmp_path):
    import threading

    from fakescope.media import read_ahead

    video = make_example_video(tmp_path / "v.mp4", seconds=1, size=(320, 180), fps=10)
    direct = [f.index for f in iter_frames(video, 6)]
    assert [f.index for f in read_ahead(iter_frames(video, 6), depth=2)] == direct
    early = read_ahead(iter_frames(video, 6), depth=1)
    next(early)
    early.close()  # a caller that stops early must not leave a decoding thread behind
    assert not [t for t in threading.enumerate() if t.name == "fakescope-decode"]


def test_read_ahead_raises_decoding_errors_in_the_caller():
    from fakescope.media import read_ahead

    def broken():
        yield 1
        raise MediaError("x.mp4: truncated")

    with pytest.raises(MediaError, match="truncated"):
        list(read_ahead(broken()))
