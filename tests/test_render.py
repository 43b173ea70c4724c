"""Heat-map rendering and writing: the windowed paste against a full-frame warp as the oracle,
the frame maps and written PNGs against the full-frame path, and the background writer's
guarantees (every file whole before it returns, one-line errors, no thread left behind)."""

from __future__ import annotations

import errno
import math
import threading
from pathlib import Path

import cv2
import matplotlib
import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
from PIL import Image

from fakescope.crops import CropPolicy, crop_batch, crop_geometry
from fakescope.explain.cam import explain
from fakescope.explain.render import comparison_image, overlay
from fakescope.explain.stage import explain_faces, frame_maps
from fakescope.files import PNG_LEVEL, BackgroundWriter
from fakescope.models.ensemble import Ensemble, Member
from fakescope.models.registry import ModelSpec
from fakescope.types import Detection, FakescopeError
from helpers import paste_heatmap

METHODS = ["gradcam-n", "gradcam-n1", "hirescam", "hirescam++"]
# OpenCV's warpAffine samples bilinearly from float32 source coordinates. Over the whole frame
# the matrix's translation is about -x1 * scale, and float32 cancellation there moves the map
# by up to ~1e-5 on a 1280 px frame (measured 7.7e-6 against float64 sampling); the window's
# matrix has a small translation, so the windowed paste is the more exact of the two (5.8e-7).
EXACT_ATOL = 1e-6  # against bilinear sampling in float64
FULL_FRAME_ATOL = 1e-5  # against the full-frame warp


def full_frame_paste(shape, source, heat, content=None) -> np.ndarray:
    """The full-frame path: warp the crop's map onto the whole frame, zero outside the box."""
    height, width = shape
    x1, y1, x2, y2 = source
    cx1, cy1, cx2, cy2 = content or (0, 0, heat.shape[1], heat.shape[0])
    left, top = math.floor(cx1), math.floor(cy1)
    heat = np.ascontiguousarray(heat[top : math.ceil(cy2), left : math.ceil(cx2)])
    cx1, cx2, cy1, cy2 = cx1 - left, cx2 - left, cy1 - top, cy2 - top
    sx, sy = (cx2 - cx1) / (x2 - x1), (cy2 - cy1) / (y2 - y1)
    to_crop = np.array([[sx, 0, cx1 + (0.5 - x1) * sx - 0.5], [0, sy, cy1 + (0.5 - y1) * sy - 0.5]])
    out = cv2.warpAffine(
        heat,
        to_crop,
        (width, height),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_REPLICATE,
    )
    return np.where(inside_box(shape, source), out, 0.0).astype(np.float32)


def inside_box(shape, box) -> np.ndarray:
    """Frame pixels whose centres lie inside the box."""
    xs, ys = np.arange(shape[1]) + 0.5, np.arange(shape[0]) + 0.5
    return ((ys >= box[1]) & (ys <= box[3]))[:, None] & ((xs >= box[0]) & (xs <= box[2]))


def float64_paste(shape, source, heat, content=None) -> np.ndarray:
    """The same geometry sampled in float64: bilinear, half-pixel centres, edges replicated."""
    x1, y1, x2, y2 = source
    cx1, cy1, cx2, cy2 = content or (0, 0, heat.shape[1], heat.shape[0])
    left, top = math.floor(cx1), math.floor(cy1)
    heat = heat[top : math.ceil(cy2), left : math.ceil(cx2)].astype(np.float64)

    def taps(frame_size, start, end, crop_start, crop_end, size):
        at = crop_start + (np.arange(frame_size) + 0.5 - start) * (crop_end - crop_start) / (
            end - start
        )
        at -= 0.5
        low = np.floor(at)
        clip = lambda i: np.clip(i, 0, size - 1).astype(int)  # noqa: E731
        return clip(low), clip(low + 1), at - low

    x0, x1_, fx = taps(shape[1], x1, x2, cx1 - left, cx2 - left, heat.shape[1])
    y0, y1_, fy = taps(shape[0], y1, y2, cy1 - top, cy2 - top, heat.shape[0])
    rows = heat[y0] * (1 - fy)[:, None] + heat[y1_] * fy[:, None]
    out = rows[:, x0] * (1 - fx) + rows[:, x1_] * fx
    return np.where(inside_box(shape, source), out, 0.0)


def smooth_map(rng: np.random.Generator, size: int) -> np.ndarray:
    """Like a display map: a coarse grid upsampled bilinearly and scaled to [0, 1]."""
    grid = torch.from_numpy(rng.random((1, 1, 7, 7), dtype=np.float32))
    up = F.interpolate(grid, (size, size), mode="bilinear", align_corners=False)[0, 0].numpy()
    return (up - up.min()) / (up.max() - up.min())


def test_windowed_paste_equals_full_frame_warp():
    rng = np.random.default_rng(0)
    shape = (360, 640)
    for case in range(60):
        heat = smooth_map(rng, 64)
        x1, y1 = rng.uniform(-40, 600), rng.uniform(-40, 320)
        w, h = rng.uniform(3, 300), rng.uniform(3, 300)
        box = (x1, y1, x1 + w, y1 + h)
        if case % 3 == 0:  # whole-pixel boxes put pixel centres exactly half a pixel inside
            box = tuple(float(round(v)) for v in box)
        content = (0.0, 10.5, 64.0, 53.5) if case % 2 else None  # a 'pad' crop's content
        got = paste_heatmap(shape, box, heat, content)
        np.testing.assert_allclose(
            got, float64_paste(shape, box, heat, content), rtol=0, atol=EXACT_ATOL
        )
        np.testing.assert_allclose(
            got, full_frame_paste(shape, box, heat, content), rtol=0, atol=FULL_FRAME_ATOL
        )
        assert (got[~inside_box(shape, box)] == 0).all()


def test_paste_outside_the_frame_is_empty():
    heat = np.ones((8, 8), np.float32)
    assert not paste_heatmap((20, 20), (30, 30, 40, 40), heat).any()
    assert not paste_heatmap((20, 20), (-10, 5, -1, 9), heat).any()


@pytest.fixture(scope="module")
def ensemble() -> Ensemble:
    """Two random members with different crop geometries and weights."""
    torch.manual_seed(0)
    members = []
    for name, policy, weight in [
        ("stretch", CropPolicy(64, margin=0.2), 1.0),
        ("pad", CropPolicy(64, resize="pad"), 3.0),
    ]:
        model = timm.create_model("tf_efficientnet_b0", pretrained=False, num_classes=1).eval()
        torch.nn.init.normal_(model.get_classifier().weight, std=0.5)
        members.append(Member(ModelSpec(name, "tf_efficientnet_b0", policy), model, weight))
    return Ensemble("two", members, "")


@pytest.fixture(scope="module")
def frames() -> list[tuple[np.ndarray, list[Detection]]]:
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 256, (90, 160, 3), dtype=np.uint8) for _ in range(3)]
    return [
        # two overlapping faces, one of them wide (the pad crop letterboxes it)
        (images[0], [Detection((20.3, 10.7, 70.1, 60.2), 0.9), Detection((50, 30, 120, 62), 0.8)]),
        (images[1], [Detection((-12.5, 40.0, 30.0, 100.0), 0.7)]),  # partly outside
        (images[2], []),
    ]


def slow_frame_maps(ensemble: Ensemble, frames, methods) -> list[dict[str, np.ndarray]]:
    """frame_maps through full-frame pastes, faces by maximum, members by weight."""
    total = sum(m.weight for m in ensemble.members)
    combined = [{m: np.zeros(image.shape[:2], np.float32) for m in methods} for image, _ in frames]
    located = [(i, image, face) for i, (image, faces) in enumerate(frames) for face in faces]
    for member in ensemble.members:
        policy = member.spec.crop
        batch = crop_batch([image for _, image, _ in located], [f.box for *_, f in located], policy)
        result = explain(member.model, batch, methods, member.cam_layers)
        for method in methods:
            faces_max = [np.zeros(image.shape[:2], np.float32) for image, _ in frames]
            for j, (i, image, face) in enumerate(located):
                source, content = crop_geometry(face.box, policy)
                heat = result[method].display[j].numpy()
                np.maximum(faces_max[i], full_frame_paste(image.shape[:2], source, heat, content),
                           out=faces_max[i])  # fmt: skip
            for maps, member_map in zip(combined, faces_max):
                maps[method] += member.weight / total * member_map
    return combined


def test_frame_maps_equal_the_full_frame_path(ensemble, frames):
    got = frame_maps(ensemble, frames, METHODS)
    expected = slow_frame_maps(ensemble, frames, METHODS)
    for fast, slow in zip(got, expected):
        for method in METHODS:
            np.testing.assert_allclose(
                fast.maps[method], slow[method], rtol=0, atol=FULL_FRAME_ATOL
            )
    assert all(got[0].maps[m].any() for m in METHODS)
    assert not any(got[2].maps[m].any() for m in METHODS)


def test_written_pngs_equal_the_full_frame_path(ensemble, frames, tmp_path):
    image, faces = frames[0]
    methods = ["hirescam++", "gradcam-n"]
    explain_faces(ensemble, image, faces, [0.2, 0.9], methods, tmp_path)
    reference = slow_frame_maps(ensemble, [(image, faces)], METHODS)[0]
    fast = frame_maps(ensemble, [(image, faces)], METHODS)[0].maps
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "comparison.png",
        "gradcam-n.png",
        "hirescampp.png",
    ]  # and no temporary file left
    for method in methods:
        written = np.asarray(Image.open(tmp_path / f"{method.replace('+', 'p')}.png"))
        np.testing.assert_array_equal(written, overlay(image, fast[method], alpha=0.5))
        expected = overlay(image, reference[method], alpha=0.5)
        # A map ~1e-6 away can round to the neighbouring colour level, and only where it moved.
        moved = fast[method] != reference[method]
        differ = (written != expected).any(axis=2)
        assert np.abs(written.astype(int) - expected).max() <= 1 and not (differ & ~moved).any()
    written = np.asarray(Image.open(tmp_path / "comparison.png"))
    np.testing.assert_array_equal(
        written, np.asarray(comparison_image(image, faces[1].box, fast, 0.9))
    )
    assert Image.open(tmp_path / "comparison.png").size == (5 * 224, 246)


def writer_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("fakescope-writer")]


def test_writer_finishes_every_file_before_leaving(tmp_path):
    pixels = np.arange(48 * 64 * 3, dtype=np.uint8).reshape(48, 64, 3)
    started = threading.Event()

    def slow_render() -> np.ndarray:
        started.set()
        threading.Event().wait(0.05)
        return pixels

    with BackgroundWriter(threads=2) as writer:
        for i in range(6):
            writer.png(tmp_path / "deep" / f"{i}.png", slow_render)
        assert started.wait(5)
    assert sorted(p.name for p in (tmp_path / "deep").iterdir()) == [f"{i}.png" for i in range(6)]
    for i in range(6):
        with Image.open(tmp_path / "deep" / f"{i}.png") as png:
            np.testing.assert_array_equal(np.asarray(png), pixels)
            assert png.format == "PNG"
    assert not writer_threads()
    assert PNG_LEVEL == 1


def test_a_failed_write_is_one_line_and_leaves_no_partial_file(tmp_path):
    def disk_full(tmp: Path) -> None:
        tmp.write_bytes(b"\x89PNG half")
        raise OSError(errno.ENOSPC, "No space left on device")

    good = np.zeros((4, 4, 3), np.uint8)
    with pytest.raises(FakescopeError) as failure:
        with BackgroundWriter() as writer:
            writer.png(tmp_path / "a.png", lambda: good)
            writer.submit(tmp_path / "b.png", disk_full)
    message = str(failure.value)
    assert message == f"{tmp_path / 'b.png'}: cannot write: No space left on device"
    assert "\n" not in message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png"]  # whole, or not there
    assert not writer_threads()

    # A folder that cannot be made: a file stands where it should be.
    (tmp_path / "taken").write_text("not a folder")
    with pytest.raises(FakescopeError, match=r"taken/x\.png: cannot write"):
        with BackgroundWriter() as writer:
            writer.png(tmp_path / "taken" / "x.png", lambda: good)
    assert not writer_threads()


def test_a_failure_in_the_block_drops_files_not_started(tmp_path):
    gate = threading.Event()
    good = np.zeros((4, 4, 3), np.uint8)

    def blocked() -> np.ndarray:
        gate.wait(5)
        return good

    with pytest.raises(KeyError):
        with BackgroundWriter(threads=1) as writer:
            writer.png(tmp_path / "first.png", blocked)
            for i in range(5):
                writer.png(tmp_path / f"later{i}.png", lambda: good)
            gate.set()
            raise KeyError("rendering failed")
    names = sorted(p.name for p in tmp_path.iterdir())
    assert "first.png" in names and all(not n.endswith(".tmp") for n in names)
    assert not writer_threads()


def test_cli_explain_reports_a_write_error_in_one_line(random_model, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from fakescope.cli import app

    face = tmp_path / "face.png"
    Image.fromarray(np.random.default_rng(2).integers(0, 256, (64, 64, 3), np.uint8)).save(face)

    def no_space(self, fp, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", no_space)
    result = CliRunner().invoke(
        app,
        ["explain", str(face), "--crops", "--model", str(random_model), "--out", str(tmp_path)],
    )
    assert result.exit_code == FakescopeError.exit_code
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "cannot write: No space left on device" in lines[0], result.output
    assert "Traceback" not in result.output
    assert not list((tmp_path / "face").glob("*")) and not writer_threads()


def test_overlay_opacity_rises_with_the_map_without_edges():
    """Opacity alpha * value: zeros leave the picture as it is, and a map that falls smoothly
    to zero changes the picture smoothly (no hard edge where it reaches zero)."""
    image = np.full((4, 64, 3), 100, np.uint8)
    ramp = np.tile(np.clip((np.arange(64, dtype=np.float32) - 15) / 48, 0, 1), (4, 1))
    out = overlay(image, ramp, alpha=0.5).astype(int)
    np.testing.assert_array_equal(out[:, :16], 100)
    steps = np.abs(np.diff(out[0], axis=0)).max(1)
    assert steps.max() <= 12  # about alpha * 255 / 48 per step of the ramp, plus the colours'
    colour = (matplotlib.colormaps["turbo"](1.0)[:3] * np.array([255.0, 255, 255])).round()
    np.testing.assert_allclose(out[0, -1], np.rint(0.5 * 100 + 0.5 * colour), atol=1)
