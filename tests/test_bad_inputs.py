"""A corpus of hostile and odd inputs through `fakescope scan` in one batch, and a few through
`analyze`.

Every input ends as a one-line error or a correct result; the batch goes on; rows stored
earlier survive; the exit code says something failed.
"""

from __future__ import annotations

import json
import os
import sqlite3
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from fakescope.cli import app
from fakescope.encode import write_video
from helpers import astronaut, audio_only, png_header

runner = CliRunner()
SCORED = ("fake", "real", "inconclusive")  # a face found: any answer but no_face


def face_frame(width: int = 192, height: int = 144) -> np.ndarray:
    """The astronaut's photo, 80% of the frame's height, on grey."""
    frame = np.full((height, width, 3), 90, np.uint8)
    side = int(height * 0.8)
    x, y = (width - side) // 2, (height - side) // 2
    frame[y : y + side, x : x + side] = cv2.resize(
        np.asarray(astronaut()), (side, side), interpolation=cv2.INTER_AREA
    )
    return frame


def variable_frame_rate(path: Path) -> None:
    """Frames 40 ms and 120 ms apart, alternately."""
    image = face_frame()
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = image.shape[1], image.shape[0], "yuv420p"
        stream.codec_context.time_base = Fraction(1, 1000)
        pts = 0
        for i in range(24):
            frame = av.VideoFrame.from_ndarray(np.roll(image, i, axis=1), format="rgb24")
            frame.pts, frame.time_base = pts, Fraction(1, 1000)
            pts += 40 if i % 2 else 120
            container.mux(stream.encode(frame))
        container.mux(stream.encode())


def truncated(path: Path) -> None:
    whole = write_video(path.with_name("whole-" + path.name), [face_frame()] * 25, 25)
    data = whole.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # x264 in mp4 keeps its index (moov) at the end
    whole.unlink()


def image_as(mode: str):
    def make(path: Path) -> None:
        photo = astronaut()
        if mode == "I;16":  # 16-bit grey, full range
            Image.fromarray(np.asarray(photo.convert("L"), np.uint16) * 257).save(path)
        elif mode == "RGBA":  # transparent border around the face
            rgba = photo.convert("RGBA")
            alpha = np.zeros(rgba.size[::-1], np.uint8)
            alpha[40:-40, 40:-40] = 255
            rgba.putalpha(Image.fromarray(alpha))
            rgba.save(path)
        else:
            photo.convert(mode).save(path)

    return make


def non_utf8(path: Path) -> None:
    astronaut().save(os.path.join(os.fsencode(path.parent), b"caf\xe9-photo.png"), format="PNG")


def symlink_loop(folder: Path) -> None:
    folder.mkdir()
    (folder / "self").symlink_to(".")  # a folder link: not followed
    (folder / "a").symlink_to("b")  # a file-link loop: ELOOP when opened
    (folder / "b").symlink_to("a")
    astronaut().save(folder / "face.jpg")


# name -> (maker, expected): "error: <text in the message>", a label, or "scored" (fake or real).
CORPUS = {
    "zero.mp4": (lambda p: p.write_bytes(b""), "error: empty file"),
    "truncated.mp4": (truncated, "error: not a readable image or video"),
    "random.mp4": (
        lambda p: p.write_bytes(np.random.default_rng(1).bytes(4096)),
        "error: not a readable",
    ),
    "notes.txt": (
        lambda p: p.write_text("hello\nthis is not a video\n" * 50),
        "error: not a readable",
    ),
    "audio.mp4": (audio_only, "error: no video stream"),
    "dot.png": (lambda p: Image.new("RGB", (1, 1), (1, 2, 3)).save(p), "no_face"),
    "bomb.png": (lambda p: p.write_bytes(png_header(30000, 30000)), "error: pixel limit"),
    "gray.png": (image_as("L"), "scored"),
    "cmyk.jpg": (image_as("CMYK"), "scored"),
    "deep.png": (image_as("I;16"), "scored"),
    "alpha.png": (image_as("RGBA"), "scored"),
    "rotated.mp4": (
        lambda p: write_video(
            p, [np.ascontiguousarray(np.rot90(face_frame(), -1))] * 10, 10, rotation=90
        ),
        "scored",
    ),
    "vfr.mp4": (variable_frame_rate, "scored"),
    # Ten minutes at 1 fps with a 10 s keyframe interval: a long video that takes a second to make.
    "long.mp4": (
        lambda p: write_video(
            p, (np.roll(face_frame(128, 96), i % 7, axis=1) for i in range(600)), 1
        ),
        "scored",
    ),
    "caf\udce9-photo.png": (non_utf8, "scored"),
    "loop/face.jpg": (lambda p: symlink_loop(p.parent), "scored"),
    "loop/a": (lambda p: None, "error: Too many levels of symbolic links"),
    "loop/b": (lambda p: None, "error: Too many levels of symbolic links"),
    "loop/pipe": (os.mkfifo, "error: not a regular file"),  # opening it would block
}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("corpus")
    for name, (make, _) in CORPUS.items():
        try:
            make(folder / name)
        except (UnicodeEncodeError, OSError) as error:  # e.g. a file system that wants UTF-8 names
            pytest.skip(f"cannot make {name!r} here: {error}")
    return folder


def rows(db: Path) -> dict[str, dict]:
    with sqlite3.connect(db) as con:
        con.row_factory = sqlite3.Row
        return {os.fsdecode(r["path"]): dict(r) for r in con.execute("SELECT * FROM results")}


def test_corpus_scans_in_one_batch(corpus, random_model, tmp_path):
    db, out = tmp_path / "results.sqlite", tmp_path / "results.jsonl"
    common = ["--db", str(db), "--model", str(random_model), "--frames", "4", "--quiet"]
    earlier = runner.invoke(
        app, ["scan", str(corpus / "gray.png"), str(corpus / "dot.png"), *common]
    )
    assert earlier.exit_code == 0, earlier.output
    kept = rows(db)

    result = runner.invoke(app, ["scan", str(corpus), *common, "--out", str(out)])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert (
        f"scanned {len(CORPUS)} inputs ({len(CORPUS) - 2} new, 2 already stored)" in result.stdout
    )
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    stored = rows(db)
    assert all(stored[path] == row for path, row in kept.items())  # nothing stored earlier is lost
    for name, (_, expected) in CORPUS.items():
        path = str(corpus / name)
        if name.startswith("loop/") and expected.startswith(
            "error"
        ):  # unreadable: reported, never stored
            assert path not in stored
            [line] = [e for e in errors if path in e]
        elif expected.startswith("error"):
            assert stored[path]["label"] == "error", name
            [line] = [e for e in errors if path in e]
            assert line == f"error: {stored[path]['error']}"
        else:
            row = stored[path]
            assert row["label"] in (SCORED if expected == "scored" else (expected,)), (name, row)
            assert row["error"] is None and (row["faces"] > 0) == (expected == "scored")
            continue
        assert expected.removeprefix("error: ") in line, (name, line)
    assert len(errors) == sum(e.startswith("error") for _, e in CORPUS.values())

    # The non-UTF-8 name: exact bytes in the store, and back from the JSON lines.
    exported = {os.fsencode(json.loads(line)["path"]) for line in out.read_text().splitlines()}
    assert os.path.join(os.fsencode(corpus), b"caf\xe9-photo.png") in exported
    assert len(exported) == len(stored)


@pytest.mark.parametrize(
    ("name", "code", "message"),
    [
        ("zero.mp4", 3, "empty file"),
        ("notes.txt", 3, "not a readable"),
        ("bomb.png", 3, "pixel limit"),
        ("dot.png", 4, "no face found"),
        ("blank.mp4", 4, "no face found"),
    ],
)
def test_analyze_gives_one_line_and_a_distinct_code(
    corpus, random_model, tmp_path, name, code, message
):
    path = corpus / name
    if name == "blank.mp4":
        path = write_video(tmp_path / name, [np.full((96, 128, 3), 120, np.uint8)] * 10, 10)
    result = runner.invoke(
        app,
        [
            "analyze",
            str(path),
            "--model",
            str(random_model),
            "--frames",
            "4",
            "--out",
            str(tmp_path),
        ],
    )
    assert result.exit_code == code and "Traceback" not in result.output
    [line] = [line for line in result.output.splitlines() if str(path) in line]
    assert message in line


def test_hard_limits_are_options(corpus, random_model, tmp_path):
    result = runner.invoke(
        app,
        [
            "scan",
            str(corpus / "gray.png"),
            "--db",
            str(tmp_path / "r.sqlite"),
            "--model",
            str(random_model),
            "--max-pixels",
            "1000",
            "--quiet",
        ],
    )
    assert result.exit_code == 1 and "over the limit of 1,000 pixels" in result.stderr
    result = runner.invoke(
        app,
        [
            "analyze",
            str(corpus / "long.mp4"),
            "--model",
            str(random_model),
            "--frames",
            "4",
            "--max-duration",
            "60",
            "--out",
            str(tmp_path),
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "long" / "report.json").read_text())
    assert [f["timestamp"] for f in report["frames_analysed"]] == [
        7.0,
        22.0,
        37.0,
        52.0,
    ]  # centres of 4 runs of 60 s
