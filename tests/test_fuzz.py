"""Fuzzing the decoding boundary: any bytes in a file give valid RGB frames or a MediaError."""

from __future__ import annotations

import io
import tempfile
from pathlib import Path

import av
import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from PIL import Image

from fakescope import media
from fakescope.types import MediaError


def _seeds() -> dict[str, bytes]:
    """A small H.264 mp4 with its index first (so a cut still decodes), a PNG and a JPEG."""
    with tempfile.TemporaryDirectory() as folder:  # faststart rewrites the file: no BytesIO
        video = Path(folder) / "seed.mp4"
        with av.open(str(video), "w", options={"movflags": "faststart"}) as container:
            stream = container.add_stream("libx264", rate=8)
            stream.width, stream.height, stream.pix_fmt = 48, 32, "yuv420p"
            for i in range(8):
                image = np.full((32, 48, 3), (i * 20, 90, 200 - i * 20), np.uint8)
                container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
            container.mux(stream.encode())
        seeds = {"mp4": video.read_bytes()}
    picture = Image.fromarray(np.arange(24 * 16 * 3, dtype=np.uint8).reshape(16, 24, 3))
    for kind in ("png", "jpeg"):
        encoded = io.BytesIO()
        picture.save(encoded, format=kind)
        seeds[kind] = encoded.getvalue()
    return seeds


SEEDS = _seeds()


@st.composite
def mutated(draw) -> tuple[str, bytes]:
    kind = draw(st.sampled_from(["mp4", "png", "jpeg", "random"]))
    if kind == "random":
        return kind, draw(st.binary(max_size=2048))
    data = bytearray(SEEDS[kind])
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data) - 1))
        action = draw(st.sampled_from(["flip", "cut", "insert", "zero"]))
        if action == "flip":
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif action == "cut":
            del data[at:]
            if not data:
                break
        elif action == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=64))
        else:
            end = at + draw(st.integers(1, 64))
            data[at:end] = bytes(len(data[at:end]))
    return kind, bytes(data)


def _check(image: np.ndarray) -> None:
    assert isinstance(image, np.ndarray) and image.dtype == np.uint8
    assert image.ndim == 3 and image.shape[2] == 3 and image.shape[0] > 0 and image.shape[1] > 0


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sample=mutated())
def test_decoding_never_raises_anything_but_media_error(folder, sample):
    kind, data = sample
    path = folder / f"input.{kind}"
    path.write_bytes(data)
    for decode in (
        lambda p: [f.image for f in media.iter_frames(p, 4)],
        lambda p: [media.read_image(p)],
    ):
        try:
            images = decode(path)
        except MediaError as error:
            assert "\n" not in str(error)
            event(f"{kind}: MediaError")
            continue
        event(f"{kind}: decoded")
        assert images
        for image in images:
            _check(image)
