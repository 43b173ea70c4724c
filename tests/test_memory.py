"""Memory follows the frames analysed, not the input's resolution: big frames are downscaled
while decoding. And inputs are checked before any model loads."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from fakescope.cli import app
from fakescope.media import Limits, iter_frames, probe, read_image

SRC = Path(__file__).resolve().parents[1] / "src"
PEAK_LIMIT_MB = 1536  # issue 14: a 4096x4096 bomb stays under 1.5 GB (private memory)
RESIDENT_LIMIT_MB = 2048  # with shared libraries mapped (see peak_memory_mb)


def bomb(path: Path, frames: int, side: int = 4096) -> Path:
    """A tiny H.264 file of `frames` side x side frames (one picture, repeated: a few KB)."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=Fraction(25), options={"preset": "ultrafast"})
        stream.width = stream.height = side
        stream.pix_fmt = "yuv420p"
        picture = np.full((side, side, 3), 100, np.uint8)
        picture[side // 4 : side // 2, side // 4 : side // 2] = 200
        frame = av.VideoFrame.from_ndarray(picture, format="rgb24").reformat(format="yuv420p")
        for i in range(frames):
            frame.pts = i
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


@pytest.fixture(scope="module")
def big_video(tmp_path_factory) -> Path:
    return bomb(tmp_path_factory.mktemp("bomb") / "bomb.mp4", frames=32)  # as in issue 14


def test_big_frames_are_decoded_at_a_bounded_size(big_video):
    limits = Limits()
    info = probe(big_video, limits)
    assert (info.width, info.height) == (4096, 4096) and info.scale < 1
    frames = list(iter_frames(big_video, 4, limits, info=info))
    assert len(frames) == 4
    for frame in frames:
        height, width = frame.image.shape[:2]
        assert height * width <= limits.decode_pixels and abs(width - 4096 * info.scale) <= 1


def test_big_images_are_decoded_at_a_bounded_size(tmp_path):
    for name in ("big.jpg", "big.png"):
        Image.new("RGB", (3000, 2000), (90, 120, 150)).save(tmp_path / name)
        image = read_image(tmp_path / name, Limits(decode_pixels=600_000))
        assert image.shape[0] * image.shape[1] <= 600_000 and image.shape[2] == 3
        assert abs(image.shape[1] / image.shape[0] - 1.5) < 0.01  # the aspect ratio kept


def test_small_frames_are_untouched(example_video):
    info = probe(example_video)
    assert info.scale == 1
    [frame] = iter_frames(example_video, 1, info=info)
    assert frame.image.shape == (info.height, info.width, 3)


def peak_memory_mb(command: list[str], env: dict[str, str]) -> tuple[int, float, float]:
    """(exit code, peak private memory, peak resident memory) of `command`, in MB.

    It runs under a small wrapper process, so that ru_maxrss covers this command alone and not
    earlier children of the caller. Private memory (RssAnon, sampled every 10 ms) is what an
    input can make grow. Resident memory (ru_maxrss) adds the pages of shared libraries the
    process maps, which depends on the page cache: right after PyTorch is installed the
    kernel maps up to 250 MB more of its CUDA libraries than where they have long been on disk.
    """
    wrapper = (
        "import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]); "
        "print(r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    )
    outer = subprocess.Popen(
        [sys.executable, "-c", wrapper, *command],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    children = Path(f"/proc/{outer.pid}/task/{outer.pid}/children")
    private = 0
    while outer.poll() is None:
        try:
            for pid in children.read_text().split():
                status = Path(f"/proc/{pid}/status").read_text()
                fields = dict(line.split(":", 1) for line in status.splitlines())
                private = max(private, int(fields["RssAnon"].split()[0]))
        except (OSError, KeyError, ValueError):  # a process is starting or ending
            pass
        time.sleep(0.01)
    code, resident = map(int, outer.communicate()[0].split()[-2:])
    return code, private / 1024, resident / 1024


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc (Linux)")
def test_a_4096_video_bomb_stays_under_the_memory_limit(big_video, random_model, tmp_path):
    """`fakescope analyze` on 32 frames of 4096x4096, in a process of its own."""
    command = [
        sys.executable,
        "-m",
        "fakescope.cli",
        "analyze",
        str(big_video),
        "--model",
        str(random_model),
        "--out",
        str(tmp_path / "out"),
    ]  # the default 32 frames, HTML and JSON
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    code, private, resident = peak_memory_mb(command, env)
    assert code in (0, 4)  # a verdict, or no face: not an error
    assert private < PEAK_LIMIT_MB, f"private {private:.0f} MB, resident {resident:.0f} MB"
    assert resident < RESIDENT_LIMIT_MB, f"private {private:.0f} MB, resident {resident:.0f} MB"


def test_inputs_are_checked_before_the_models_load(tmp_path):
    bad = tmp_path / "notes.mp4"
    bad.write_text("just text\n" * 10)
    start = time.monotonic()
    result = CliRunner().invoke(
        app, ["analyze", str(bad), "--model", str(tmp_path / "missing.json")]
    )
    assert result.exit_code == 3, result.output  # the media error, not the missing model (5)
    assert "notes.mp4" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert time.monotonic() - start < 5


def test_a_truncated_video_says_what_was_decoded(tmp_path, random_model):
    """A faststart mp4 (index first) cut at a third: the header promises 50 frames, a third
    decode."""
    faststart = tmp_path / "faststart.mp4"
    noise = np.random.default_rng(0).integers(
        0, 255, (50, 240, 320, 3), dtype=np.uint8
    )  # similar-sized frames
    with av.open(str(faststart), "w", options={"movflags": "faststart"}) as container:
        stream = container.add_stream("libx264", rate=Fraction(25), options={"preset": "ultrafast"})
        stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
        for image in noise:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())
    assert probe(faststart).frame_count == 50
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(faststart.read_bytes()[: faststart.stat().st_size // 3])
    result = CliRunner().invoke(
        app,
        [
            "analyze",
            str(cut),
            "--model",
            str(random_model),
            "--frames",
            "8",
            "--format",
            "json",
            "--out",
            str(tmp_path / "out"),
        ],
    )
    assert result.exit_code in (0, 4), result.output
    report = json.loads((tmp_path / "out" / "cut" / "report.json").read_text())
    assert report["frames_requested"] == 8 and 0 < len(report["frames_analysed"]) < 8
    assert report["warnings"] and "of 8 requested frames" in report["warnings"][0]
    assert f"warning: {cut}: decoded {len(report['frames_analysed'])} of 8" in result.stderr
    whole = CliRunner().invoke(
        app,
        [
            "analyze",
            str(faststart),
            "--model",
            str(random_model),
            "--frames",
            "8",
            "--format",
            "json",
            "--out",
            str(tmp_path / "out"),
        ],
    )
    report = json.loads((tmp_path / "out" / "faststart" / "report.json").read_text())
    assert whole.exit_code in (0, 4) and "warning" not in whole.stderr and report["warnings"] == []
    assert len(report["frames_analysed"]) == report["frames_requested"] == 8


# Found by tests/test_fuzz.py: an mp4 whose video stream no decoder can open (no codec context).
NO_CODEC_MP4 = (
    "eNpjYGBQSCupLMgszs9lYGBiANFAbJRYlmyYW2BiyMDAHJCbn1/GwMCQk1uWkcKAAphfgDEjAwghACOqKnS+AwNe"
    "wAREVSVFidlAdkxJNthOZkzTQHbjtwervQZArADmqqSmlBQDaZnUnOIShA6QuQJQvYyfclMyE0E6clPQ/e4AxqFH"
    "wBzdjJScIphMWWZKKgDfWyOJ"
)


def test_a_stream_without_a_decoder_is_a_media_error(tmp_path):
    import base64
    import zlib

    from fakescope.types import MediaError

    path = tmp_path / "input.mp4"
    path.write_bytes(zlib.decompress(base64.b64decode(NO_CODEC_MP4)))
    with pytest.raises(MediaError):
        probe(path)
