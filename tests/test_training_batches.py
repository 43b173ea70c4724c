"""The training pack, the decoded crop cache, and batched augmentation and self-blending."""

from __future__ import annotations

import io
from dataclasses import replace
from pathlib import Path
from tempfile import TemporaryDirectory

import numpy as np
import pytest
import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image
from skimage.draw import polygon as draw_polygon
from skimage.transform import SimilarityTransform

from fakescope.blending import (
    HULL_STRENGTHS,
    MEAN_LANDMARKS,
    SelfBlend,
    adjust_colour,
    align,
    convex_hulls,
    defocus_surround,
    face_masks,
    fill_polygons,
    five_points,
    hull_masks,
    match_colour,
    outline_points,
    similarity,
)
from fakescope.faces import get_detector
from fakescope.training.batch_augment import (
    BatchAugment,
    H264Rounds,
    JpegRounds,
    h264_roundtrip,
    resized_crop_flip,
)
from fakescope.training.batches import TrainingBatches, donor_table
from fakescope.training.data import list_samples
from fakescope.training.pack import (
    CropSet,
    build_pack,
    choose_within_budget,
    load_folder,
    load_pack,
    unpack,
)
from fakescope.types import FakescopeError
from helpers import copy_first


def _mean_landmarks(batch: int) -> torch.Tensor:
    return torch.from_numpy(MEAN_LANDMARKS)[None].repeat(batch, 1, 1)


def test_polygon_fill_matches_scikit_image():
    rng = np.random.default_rng(0)
    for _ in range(5):
        angles = np.sort(rng.uniform(0, 2 * np.pi, 9))
        radius = rng.uniform(0.2, 0.45)
        xs = 0.5 + radius * np.cos(angles)
        ys = 0.5 + radius * 0.8 * np.sin(angles)
        ours = (
            fill_polygons(torch.tensor(np.stack([xs, ys], 1))[None].float(), 96)[0, 0]
            .bool()
            .numpy()
        )
        expected = np.zeros((96, 96), bool)
        # scikit-image fills pixel centres at integer coordinates; ours at (i + 0.5) / size.
        rr, cc = draw_polygon(ys * 96 - 0.5, xs * 96 - 0.5, (96, 96))
        expected[rr, cc] = True
        iou = (ours & expected).sum() / (ours | expected).sum()
        assert iou > 0.97


def test_masks_cover_the_landmarks_and_follow_them():
    torch.manual_seed(0)
    landmarks = _mean_landmarks(8)
    masks = face_masks(landmarks, 112)
    assert masks.shape == (8, 1, 112, 112) and masks.min() >= 0 and masks.max() <= 1
    for x, y in MEAN_LANDMARKS:  # the outline never shrinks below 0.7 of the face
        assert (masks[:, 0, int(y * 112), int(x * 112)] > 0.4).all()
    assert masks[:, 0, 2, 2].max() < 0.05  # a corner of the crop is background
    shifted = landmarks + torch.tensor([0.12, 0.05])
    torch.manual_seed(0)
    moved = face_masks(shifted, 112)
    xs = torch.arange(112.0)

    def centroid_x(m: torch.Tensor) -> torch.Tensor:
        return (m[:, 0].sum(1) * xs).sum(1) / m[:, 0].sum((1, 2))

    assert torch.allclose(
        centroid_x(moved) - centroid_x(masks), torch.full((8,), 0.12 * 112), atol=3
    )


def _face68(batch: int) -> torch.Tensor:
    """A 68-point face: a jaw arc, brows above the eyes, and points inside, as fractions."""
    angles = torch.linspace(np.pi * 0.05, np.pi * 0.95, 17)
    jaw = torch.stack([0.5 - 0.4 * angles.cos(), 0.45 + 0.45 * angles.sin()], 1)
    brows = torch.stack([torch.linspace(0.15, 0.85, 10), torch.full((10,), 0.25)], 1)
    inner = 0.5 + (torch.rand(41, 2, generator=torch.Generator().manual_seed(0)) - 0.5) * 0.4
    return torch.cat([jaw, brows, inner])[None].repeat(batch, 1, 1)


def test_hulls_match_scipy_and_fill_as_scikit_image():
    from scipy.spatial import ConvexHull

    points = _face68(1) + torch.rand(1, 68, 2) * 0.02
    (ours,) = convex_hulls(points).numpy()
    reference = points[0].numpy()[ConvexHull(points[0].numpy()).vertices]
    assert {tuple(v) for v in ours.round(5)} == {tuple(v) for v in reference.round(5)}
    mask = fill_polygons(convex_hulls(points), 96)[0, 0].bool().numpy()
    expected = np.zeros((96, 96), bool)
    rr, cc = draw_polygon(reference[:, 1] * 96 - 0.5, reference[:, 0] * 96 - 0.5, (96, 96))
    expected[rr, cc] = True
    assert (mask & expected).sum() / (mask | expected).sum() > 0.97


def test_hull_masks_cover_the_face_at_sbi_blend_ratios():
    torch.manual_seed(0)
    masks = hull_masks(_face68(32), 128)
    assert masks.shape == (32, 1, 128, 128) and masks.min() >= 0
    centre = masks[:, 0, 64, 64]
    # The centre of the face is inside every hull; each mask peaks at its blend ratio.
    peaks = masks.amax((1, 2, 3))
    assert set((peaks / centre).round(decimals=2).tolist()) == {1.0}
    assert {round(v, 2) for v in peaks.tolist()} <= set(HULL_STRENGTHS.tolist())
    assert len({round(v, 2) for v in peaks.tolist()}) >= 3
    assert masks[:, 0, 2, 2].max() < 0.05  # a corner of the crop is background


def test_self_blend_with_68_landmarks_changes_only_the_face():
    torch.manual_seed(0)
    images = torch.rand(6, 3, 96, 96)
    blended, masks = SelfBlend()(images.clone(), _face68(6))
    assert masks.shape == (6, 1, 96, 96)
    outside, inside = masks[:, 0] == 0, masks[:, 0] > 0.2
    difference = (blended - images).abs().amax(1)
    assert outside.any() and difference[outside].max() == 0
    assert difference[inside].mean() > 0.02


def test_outline_scales_about_the_nose():
    landmarks = _mean_landmarks(1)
    big = outline_points(landmarks, torch.ones(1), torch.zeros(1, 10, 2))
    small = outline_points(landmarks, torch.full((1,), 0.5), torch.zeros(1, 10, 2))
    nose = landmarks[:, 2:3]
    assert torch.allclose(small - nose, (big - nose) / 2)


def test_self_blend_changes_pixels_only_inside_the_mask():
    torch.manual_seed(1)
    images = torch.rand(4, 3, 64, 64)
    torch.manual_seed(2)
    blended, masks = SelfBlend()(images, _mean_landmarks(4))
    outside = (masks == 0).expand_as(images)
    assert torch.equal(blended[outside], images[outside])
    assert (blended - images).abs().amax() > 0.02


def test_self_blend_sharpen_share_sets_which_way_the_face_changes():
    """With sharpen 0 no blended face is sharper than the crop it came from (the face is
    blurred or downscaled); with sharpen 1 the faces are sharper, in both landmark layouts."""

    def detail(images: torch.Tensor, inside: torch.Tensor) -> torch.Tensor:
        laplace = torch.tensor([[0.0, 1, 0], [1, -4, 1], [0, 1, 0]]).repeat(3, 1, 1, 1)
        edges = torch.nn.functional.conv2d(images, laplace, groups=3).abs().mean(1, keepdim=True)
        return (edges * inside).sum((1, 2, 3)) / inside.sum((1, 2, 3))

    torch.manual_seed(0)
    smooth = torch.nn.functional.interpolate(
        torch.rand(16, 3, 24, 24), size=(96, 96), mode="bicubic"
    )
    images = smooth.clamp(0, 1)
    for landmarks in (_mean_landmarks(16), _face68(16)):
        ratios = {}
        for sharpen in (0.0, 1.0):
            torch.manual_seed(1)
            blended, masks = SelfBlend(sharpen)(images.clone(), landmarks)
            inside = (masks[:, :, 1:-1, 1:-1] > 0.2).float()
            ratios[sharpen] = detail(blended, inside) / detail(images, inside)
        assert ratios[0.0].max() < 1 and ratios[1.0].mean() > ratios[0.0].mean() + 0.15


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = (a.float() - b.float()).pow(2).mean().item()
    return 10 * np.log10(255**2 / max(mse, 1e-12))


def test_jpeg_rounds_are_libjpeg():
    torch.manual_seed(0)
    smooth = torch.nn.functional.interpolate(torch.rand(3, 3, 8, 8), size=(64, 64), mode="bicubic")
    images = (smooth.clamp(0, 1) * 255).to(torch.uint8)
    assert torch.equal(JpegRounds(p=0)(images.clone()), images)
    out = JpegRounds(p=1, low=50, high=50)(images.clone())
    for image, ours in zip(images, out, strict=True):
        buffer = io.BytesIO()
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(buffer, format="JPEG", quality=50)
        reference = torch.from_numpy(np.array(Image.open(buffer))).permute(2, 0, 1)
        # One or two rounds at q50: close to Pillow's single round, far from lossless.
        assert _psnr(ours, reference) > 33
        assert 0 < (ours.float() - image.float()).abs().mean() < 8


def _smooth_images(batch: int, size: int) -> torch.Tensor:
    smooth = torch.nn.functional.interpolate(
        torch.rand(batch, 3, 8, 8), size=(size, size), mode="bicubic"
    )
    return (smooth.clamp(0, 1) * 255).to(torch.uint8)


def _predicted_frame_qp(image: np.ndarray, crf: int) -> tuple[int, float]:
    """What FFmpeg's decoder reports of the last frame of the clip h264_roundtrip codes: its
    picture type and mean macroblock quantiser (the pipeline's measure, media.Frame.qp)."""
    import av

    from fakescope.encode import write_video
    from fakescope.media import _upright_qp

    with TemporaryDirectory() as tmp:
        path = write_video(
            Path(tmp) / "clip.mp4",
            [np.roll(image, (2, -1), axis=(0, 1)), image],
            25,
            options={"crf": str(crf), "preset": "veryfast", "tune": "zerolatency"},
        )
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.codec_context.options = {"export_side_data": "venc_params"}
            last = list(container.decode(stream))[-1]
            qp = _upright_qp(last, 0)
            assert qp is not None
            return int(last.pict_type), float(qp.mean())


def test_h264_rounds_code_through_x264_as_a_video_would():
    import av

    torch.manual_seed(0)
    images = _smooth_images(4, 64)
    assert torch.equal(H264Rounds(p=0)(images.clone()), images)
    pixels = np.ascontiguousarray(images[0].permute(1, 2, 0).numpy())
    errors = [
        np.abs(h264_roundtrip(pixels, crf, (2, -1)).astype(int) - pixels).mean()
        for crf in (18, 30, 45)
    ]
    assert 0 < errors[0] < errors[1] < errors[2]  # coarser coding, more loss
    # The same settings in a file (the decoder's view): a predicted frame whose quantiser
    # follows the CRF, as the --max-qp limit reads it from real videos.
    kind, qp = _predicted_frame_qp(pixels, 35)
    assert kind == av.video.frame.PictureType.P and 30 < qp < 45, (kind, qp)
    assert _predicted_frame_qp(pixels, 45)[1] > qp
    # Seeded: the same draws give the same bytes (a resumed run codes alike).
    torch.manual_seed(1)
    first = H264Rounds(p=1, shrink=0.5, twice=0.5)(images.clone())
    torch.manual_seed(1)
    again = H264Rounds(p=1, shrink=0.5, twice=0.5)(images.clone())
    assert torch.equal(first, again) and first.dtype == torch.uint8
    assert first.shape == images.shape and not torch.equal(first, images)


def test_h264_shrink_loses_detail_an_odd_side_survives():
    torch.manual_seed(0)
    sharp = torch.randint(0, 256, (1, 3, 63, 63), dtype=torch.uint8)
    whole = H264Rounds(p=1, crf=(23, 23), shrink=0, twice=0)(sharp.clone())
    shrunk = H264Rounds(p=1, crf=(23, 23), shrink=1, scale=(0.3, 0.3), twice=0)(sharp.clone())
    assert whole.shape == shrunk.shape == sharp.shape
    loss = [(x.float() - sharp.float()).abs().mean() for x in (whole, shrunk)]
    assert loss[1] > loss[0]


def test_colour_changes_match_torchvision_per_image():
    torch.manual_seed(0)
    images = torch.rand(3, 3, 16, 16)
    factors = torch.tensor([0.8, 1.0, 1.2]).view(3, 1, 1, 1)
    one, zero = torch.ones(3, 1, 1, 1), torch.zeros(3, 1, 1, 1)
    cases = (
        (adjust_colour(images, factors, one, one, zero), TF.adjust_brightness),
        (adjust_colour(images, one, factors, one, zero), TF.adjust_contrast),
        (adjust_colour(images, one, one, factors, zero), TF.adjust_saturation),
    )
    for ours, reference in cases:
        for i in range(3):
            expected = reference(images[i], float(factors[i]))
            assert torch.allclose(ours[i], expected, atol=2e-3)
    assert torch.allclose(adjust_colour(images, one, one, one, zero), images, atol=1e-5)
    # Hue turns about the grey axis: each pixel's RGB mean stays, and turning back restores it.
    muted = images * 0.5 + 0.25
    turn = torch.full((3, 1, 1, 1), 0.05)
    shifted = adjust_colour(muted, one, one, one, turn)
    assert torch.allclose(shifted.mean(1), muted.mean(1), atol=1e-5)
    assert (shifted - muted).abs().mean() > 0.01
    assert torch.allclose(adjust_colour(shifted, one, one, one, -turn), muted, atol=1e-5)


def test_full_crop_is_the_image_or_its_mirror_with_its_landmarks():
    torch.manual_seed(0)
    images = torch.randint(0, 256, (8, 3, 12, 12), dtype=torch.uint8)
    landmarks = _mean_landmarks(8)
    out, moved = resized_crop_flip(images, landmarks, (1.0, 1.0), (1.0, 1.0), 12)
    for image, result, before, after in zip(images, out, landmarks, moved, strict=True):
        if torch.equal(result, image):
            assert torch.allclose(after, before)
        else:
            assert torch.equal(result, image.flip(-1))
            assert torch.allclose(after[:, 0], 1 - before[:, 0]) and torch.equal(
                after[:, 1], before[:, 1]
            )
    smaller, _ = resized_crop_flip(images, landmarks, (0.5, 0.5), (1.0, 1.0), 12)
    assert not torch.equal(smaller, out)


def test_cropped_landmarks_stay_on_the_same_features():
    # A bright dot at each landmark: after any crop and flip, the dots are where the moved
    # landmarks say.
    torch.manual_seed(2)
    images = torch.zeros(16, 3, 100, 100, dtype=torch.uint8)
    landmarks = _mean_landmarks(16)
    for x, y in (landmarks[0] * 100).long().tolist():
        images[:, :, y - 1 : y + 2, x - 1 : x + 2] = 255
    out, moved = resized_crop_flip(images, landmarks, (0.6, 0.9), (0.8, 1.2), 100)
    for image, points in zip(out, moved, strict=True):
        for x, y in (points * 100).tolist():
            assert image[0, int(y), int(x)] > 60


def test_batch_augment_is_seeded_and_keeps_shapes():
    images = torch.rand(6, 3, 64, 64)
    augment = BatchAugment(64)
    cropped, _ = augment.crop((images * 255).to(torch.uint8), _mean_landmarks(6))
    assert cropped.shape == (6, 3, 64, 64) and cropped.dtype == torch.uint8
    torch.manual_seed(5)
    first = augment(images.clone())
    torch.manual_seed(5)
    again = augment(images.clone())
    assert first.dtype == torch.uint8 and first.shape == (6, 3, 64, 64)
    assert torch.equal(first, again)
    assert (first.float() / 255 - images).abs().mean() > 0.01


def _write_folder(root: Path, clusters: int) -> None:
    rng = np.random.default_rng(0)
    lines = ["path,label,cluster"]
    for c in range(clusters):
        for label, count in (("real", 1), ("fake", 2)):
            for k in range(count):
                path = root / label / f"c{c}_{k}.jpg"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(rng.integers(0, 255, (40, 40, 3), np.uint8)).save(path, quality=90)
                lines.append(f"{label}/{path.name},{label},cluster{c}")
    (root / "manifest.csv").write_text("\n".join(lines) + "\n")


def test_budget_keeps_whole_clusters_real_first(tmp_path):
    _write_folder(tmp_path, clusters=6)
    samples = list_samples(tmp_path)
    sizes = [1000] * len(samples)
    chosen = choose_within_budget(samples, sizes, budget=7000, seed=0)
    # Three clusters fit as real + one fake (6000 bytes), then one more fake.
    assert len(chosen) == 7
    picked = [samples[i] for i in chosen]
    by_cluster: dict[str, list[int]] = {}
    for s in picked:
        by_cluster.setdefault(s.cluster, []).append(s.label)
    assert sorted(len(v) for v in by_cluster.values()) == [2, 2, 3]
    assert all(0 in labels for labels in by_cluster.values())


class _NoFaces:
    def detect(self, images):
        return [[] for _ in images]


def test_pack_keeps_the_original_bytes(tmp_path):
    _write_folder(tmp_path / "data", clusters=3)
    counts = build_pack(tmp_path / "data", tmp_path / "p.safetensors", _NoFaces(), budget_mb=None)
    assert counts["crops"] == 9 and counts["real"] == 3 and counts["fake"] == 6
    packed = load_pack(tmp_path / "p.safetensors", 32)
    folder = load_folder(list_samples(tmp_path / "data"), 32)
    order = sorted(range(9), key=lambda i: (folder.labels[i].item(), folder.clusters[i]))
    packed_order = sorted(range(9), key=lambda i: (packed.labels[i].item(), packed.clusters[i]))
    # Decoded from the same bytes, by the same resize: pixel-identical.
    assert torch.equal(packed.images[packed_order], folder.images[order])
    assert torch.allclose(packed.landmarks, torch.from_numpy(MEAN_LANDMARKS).expand(9, 5, 2))
    # Unpacked, every crop is its original file again, byte for byte.
    unpack(tmp_path / "p.safetensors", tmp_path / "back")
    for original in (tmp_path / "data").glob("*/*.jpg"):
        relative = original.relative_to(tmp_path / "data")
        assert (tmp_path / "back" / relative).read_bytes() == original.read_bytes()


def test_cached_crops_are_resized_as_inference_resizes_them(tmp_path):
    from fakescope.crops import resize_rgb

    _write_folder(tmp_path, clusters=3)
    Image.new("RGB", (50, 30), (200, 10, 10)).save(tmp_path / "real" / "wide.jpg")
    samples = list_samples(tmp_path)
    crops = load_folder(samples, 24)
    for sample, image in zip(samples, crops.images, strict=True):
        expected = resize_rgb(np.array(Image.open(sample.path).convert("RGB")), width=24, height=24)
        assert torch.equal(image, torch.from_numpy(expected).permute(2, 0, 1))


def test_a_pack_fits_its_budget(tmp_path):
    _write_folder(tmp_path / "data", clusters=8)
    budget_mb = 0.03
    counts = build_pack(
        tmp_path / "data", tmp_path / "p.safetensors", _NoFaces(), budget_mb=budget_mb
    )
    assert 0 < counts["crops"] < 24
    assert counts["bytes"] == (tmp_path / "p.safetensors").stat().st_size <= budget_mb * 2**20


def test_a_broken_pack_is_one_clear_error(tmp_path):
    _write_folder(tmp_path / "data", clusters=2)
    build_pack(tmp_path / "data", tmp_path / "p.safetensors", _NoFaces(), budget_mb=None)
    data = (tmp_path / "p.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(FakescopeError, match="not a training pack"):
        load_pack(tmp_path / "cut.safetensors", 32)


def test_blended_items_become_fakes_and_resume_draws_the_same_batch(tmp_path):
    _write_folder(tmp_path, clusters=4)
    crops = load_folder(list_samples(tmp_path), 32)
    reals = [i for i in range(len(crops)) if crops.labels[i] == 0]
    items = [(reals[0], True), (reals[1], False), (reals[2], True), (reals[3], False)] * 2
    batches = TrainingBatches(crops, (0.5,) * 3, (0.5,) * 3, torch.device("cpu"), seed=3)
    full = list(batches.epoch(items, batch_size=4))
    assert full[0][1].tolist() == [1.0, 0.0, 1.0, 0.0]
    resumed = list(batches.epoch(items, batch_size=4, first_step=1))
    assert len(resumed) == 1 and torch.equal(resumed[0][0], full[1][0])
    # Loader processes make the same batches as the training process.
    parallel = list(batches.epoch(items, batch_size=4, workers=2))
    assert all(torch.equal(a[0], b[0]) for a, b in zip(parallel, full, strict=True))


def test_the_clean_view_is_the_crop_before_its_degradations(tmp_path):
    """A distillation teacher sees each crop cropped, flipped and self-blended as the model
    does, but before colour, blur, resampling and codecs; asking for it changes no draw."""
    _write_folder(tmp_path, clusters=4)
    crops = load_folder(list_samples(tmp_path), 32)
    items = [(i, i % 3 == 0) for i in range(8)]
    args = (crops, (0.5,) * 3, (0.5,) * 3, torch.device("cpu"))
    plain = TrainingBatches(*args, seed=3, jpeg=1.0, h264=1.0).batch(items, step=2)
    paired = TrainingBatches(*args, seed=3, jpeg=1.0, h264=1.0, clean=True)
    degraded, targets, clean = paired.batch(items, step=2)
    assert torch.equal(degraded, plain[0]) and torch.equal(targets, plain[1])
    assert not torch.equal(clean, degraded)  # every crop went through two codecs
    # With the degradations taken out, the degraded view is the clean one.
    paired.augment.forward = lambda images: images.mul(255).round_().clamp_(0, 255).byte()
    degraded, _, clean = paired.batch(items, step=2)
    assert torch.equal(degraded, clean)


@pytest.mark.slow
def test_pack_landmarks_come_from_the_detector(shared_data, tmp_path):
    """On real DFDC crops the detector finds each face: eyes above nose above mouth."""
    root = tmp_path / "dfdc"
    for label in ("real", "fake"):
        copy_first(shared_data / "dfdc-faces" / "val" / label, root / label, 6)
    build_pack(root, tmp_path / "p.safetensors", get_detector("retinaface", score_threshold=0.5))
    landmarks = load_pack(tmp_path / "p.safetensors", 64).landmarks
    assert not torch.allclose(landmarks, torch.from_numpy(MEAN_LANDMARKS).expand_as(landmarks))
    eyes_y, nose_y, mouth_y = (
        landmarks[:, :2, 1].mean(1),
        landmarks[:, 2, 1],
        landmarks[:, 3:, 1].mean(1),
    )
    assert ((eyes_y < nose_y) & (nose_y < mouth_y)).all()
    assert (landmarks[:, 0, 0] < landmarks[:, 1, 0]).all()  # left eye on the left of the crop


def test_pack_command_writes_a_pack_and_refuses_bad_options(tmp_path):
    from typer.testing import CliRunner

    from fakescope.cli import app

    _write_folder(tmp_path / "data", clusters=2)
    runner = CliRunner()
    done = runner.invoke(
        app, ["pack", str(tmp_path / "data"), "--out", str(tmp_path / "p.safetensors")]
    )
    assert done.exit_code == 0 and "6 crops (2 real, 4 fake)" in done.output
    assert len(load_pack(tmp_path / "p.safetensors", 16)) == 6
    wrong = runner.invoke(app, ["pack", str(tmp_path / "data"), "--out", str(tmp_path / "p.npz")])
    assert wrong.exit_code == 2 and "a pack is a .safetensors file" in wrong.output
    assert not (tmp_path / "p.npz").exists()
    negative = runner.invoke(
        app,
        [
            "pack",
            str(tmp_path / "data"),
            "--out",
            str(tmp_path / "q.safetensors"),
            "--budget-mb",
            "-1",
        ],
    )
    assert negative.exit_code == 2 and len(negative.output.strip().splitlines()) == 1


def test_axis_resampling_matches_affine_grid():
    import torch.nn.functional as F

    from fakescope.blending import resample_axes

    torch.manual_seed(0)
    images = torch.rand(3, 3, 20, 20)
    sx, sy = torch.tensor([0.9, -0.7, 1.0]), torch.tensor([0.8, 0.95, 1.0])
    cx, cy = torch.tensor([0.1, -0.2, 0.0]), torch.tensor([-0.05, 0.3, 0.0])
    theta = torch.zeros(3, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2], theta[:, 1, 1], theta[:, 1, 2] = sx, cx, sy, cy
    grid = F.affine_grid(theta, [3, 3, 16, 16], align_corners=False)
    expected = F.grid_sample(images, grid, padding_mode="border", align_corners=False)
    got = resample_axes(images, (sx, sy), (cx, cy), 16)
    assert torch.allclose(got, expected, atol=1e-6)


def test_shift_scale_moves_content_by_the_drawn_fraction():
    from fakescope.blending import shift_scale

    images = torch.zeros(1, 3, 40, 40)
    images[..., 10:20, 10:20] = 1.0  # a square whose centre is at (15, 15)
    torch.manual_seed(3)
    moved = shift_scale(images, 0.1, (1.0, 1.0))
    torch.manual_seed(3)
    torch.empty(1).uniform_(1.0, 1.0)
    tx, ty = (float(torch.empty(1).uniform_(-0.1, 0.1)) for _ in "xy")
    ys, xs = torch.nonzero(moved[0, 0] > 0.5, as_tuple=True)
    assert abs(xs.float().mean() + 0.5 - (15 + 40 * tx)) < 0.6
    assert abs(ys.float().mean() + 0.5 - (15 + 40 * ty)) < 0.6
    assert torch.equal(shift_scale(images, 0.0, (1.0, 1.0)), images)


def test_gaussian_blur_and_sharpening_match_kornia():
    from kornia.enhance import sharpness
    from kornia.filters import gaussian_blur2d

    from fakescope.blending import gaussian_blur, sharpen

    torch.manual_seed(1)
    images = torch.rand(5, 3, 20, 24)
    sigma = torch.tensor([0.3, 0.8, 1.2, 2.0, 5.0])
    for size in (3, 5, 7):
        expected = gaussian_blur2d(images, size, torch.stack([sigma, sigma], 1))
        assert torch.allclose(gaussian_blur(images, size, sigma), expected, atol=1e-6)
    factor = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0])
    assert torch.allclose(sharpen(images, factor), sharpness(images, factor), atol=1e-6)


def test_blur_filters_only_the_chosen_images():
    from fakescope.blending import blur, gaussian_blur

    torch.manual_seed(1)
    images = torch.rand(16, 3, 12, 12)
    torch.manual_seed(5)
    out = blur(images.clone(), (0.5, 1.5), p=0.4)
    torch.manual_seed(5)
    chosen = (torch.rand(16) < 0.4).nonzero().flatten()
    sigmas = torch.empty(len(chosen)).uniform_(0.5, 1.5)
    assert 0 < len(chosen) < 16
    assert torch.equal(out[chosen], gaussian_blur(images[chosen], 5, sigmas))
    others = torch.ones(16, dtype=torch.bool)
    others[chosen] = False
    assert torch.equal(out[others], images[others])


class _Points68:
    """Stands in for dlib: the 68 points of `_face68`, scaled into the box it is given."""

    def __init__(self) -> None:
        self.boxes: list[tuple[float, ...]] = []

    def __call__(self, image, box):
        self.boxes.append(tuple(box))
        x1, y1, x2, y2 = box
        return _face68(1)[0].numpy() * [x2 - x1, y2 - y1] + [x1, y1]


def test_a_pack_carries_68_landmarks_when_asked(tmp_path):
    _write_folder(tmp_path / "data", clusters=2)
    points = _Points68()
    build_pack(tmp_path / "data", tmp_path / "p.safetensors", _NoFaces(), None, points68=points)
    packed = load_pack(tmp_path / "p.safetensors", 32, points=68)
    assert packed.landmarks.shape == (6, 68, 2)
    # No face detected: the whole crop is the box, so the points are the crop fractions.
    assert points.boxes == [(0.0, 0.0, 39.0, 39.0)] * 6
    expected = _face68(1)[0] * 39 / 40
    assert torch.allclose(packed.landmarks[0], expected, atol=2e-3)  # float16 in the file
    assert load_pack(tmp_path / "p.safetensors", 32).landmarks.shape == (6, 5, 2)
    build_pack(tmp_path / "data", tmp_path / "five.safetensors", _NoFaces(), None)
    with pytest.raises(FakescopeError, match="no 68-point landmarks"):
        load_pack(tmp_path / "five.safetensors", 32, points=68)


def test_dlib_landmarks_land_on_a_real_face(shared_data):
    from fakescope.faces import Landmarks68

    crop = sorted((shared_data / "dfdc-faces" / "val" / "real").glob("*.jpg"))[0]
    image = np.array(Image.open(crop).convert("RGB"))
    points = Landmarks68()(image, (0, 0, image.shape[1] - 1, image.shape[0] - 1))
    assert points.shape == (68, 2)
    eyes, mouth, jaw = points[36:48], points[48:68], points[0:17]
    assert eyes[:, 1].mean() < points[30, 1] < mouth[:, 1].mean()  # eyes, nose tip, mouth
    assert jaw[:, 0].min() < eyes[:, 0].min() and jaw[:, 1].max() > mouth[:, 1].max()


def test_similarity_is_the_least_squares_fit_of_scikit_image():
    rng = np.random.default_rng(0)
    source = rng.uniform(0.2, 0.8, (4, 5, 2))
    turn = rng.uniform(-0.5, 0.5, 4)
    scale = rng.uniform(0.7, 1.3, 4)
    rotation = np.stack([[np.cos(turn), -np.sin(turn)], [np.sin(turn), np.cos(turn)]]).transpose(
        2, 0, 1
    )
    target = scale[:, None, None] * source @ rotation.transpose(0, 2, 1) + rng.uniform(
        -0.1, 0.1, (4, 1, 2)
    )
    target += rng.normal(0, 0.01, target.shape)  # not exact: the least-squares answer is tested
    ours = similarity(torch.tensor(source), torch.tensor(target)).numpy()
    for i in range(4):
        oracle = SimilarityTransform.from_estimate(source[i], target[i])
        np.testing.assert_allclose(ours[i], oracle.params[:2], atol=1e-9)


def _dots(points: torch.Tensor, size: int) -> torch.Tensor:
    """1 x 3 x size x size, a 3 x 3 white dot on each point (fractions), black elsewhere."""
    image = torch.zeros(1, 3, size, size)
    for x, y in (points * size).long().tolist():
        image[..., y - 1 : y + 2, x - 1 : x + 2] = 1
    return image


def _centroids(image: torch.Tensor, near: torch.Tensor, size: int) -> torch.Tensor:
    """The brightness centroid of `image` within 6 px of each of `near`'s points, fractions."""
    ys, xs = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij")
    found = []
    for x, y in (near * size).tolist():
        window = image[0, 0] * (((xs - x).abs() < 6) & ((ys - y).abs() < 6))
        found.append(torch.stack([(window * xs).sum(), (window * ys).sum()]) / window.sum())
    return torch.stack(found) / size


def test_align_puts_a_donor_s_landmarks_on_the_face_s_mirrored_or_not():
    size = 96
    donor = torch.from_numpy(MEAN_LANDMARKS)
    turn = torch.tensor(0.2)
    rotation = torch.stack(
        [torch.stack([turn.cos(), -turn.sin()]), torch.stack([turn.sin(), turn.cos()])]
    )
    face = 1.1 * (donor - 0.5) @ rotation.T + torch.tensor([0.52, 0.47])
    flipped = face.clone()
    flipped[:, 0] = 1 - flipped[:, 0]  # a mirrored crop keeps the points' order
    for onto in (face, flipped):
        moved = align(_dots(donor, size), donor[None], onto[None])
        assert (_centroids(moved, onto, size) - onto).abs().max() < 1 / size


def test_colour_matching_gives_the_face_s_moments_under_the_mask():
    torch.manual_seed(0)
    source, target = torch.rand(2, 3, 32, 32) * 0.3, torch.rand(2, 3, 32, 32) * 0.4 + 0.3
    masks = torch.zeros(2, 1, 32, 32)
    masks[..., 8:24, 8:24] = 1
    matched = match_colour(source, target, masks)[..., 8:24, 8:24].flatten(2)
    inside = target[..., 8:24, 8:24].flatten(2)
    assert torch.allclose(matched.mean(2), inside.mean(2), atol=1e-4)
    assert torch.allclose(matched.std(2), inside.std(2), atol=1e-3)


def _people(count: int) -> CropSet:
    """One real crop per cluster (a smooth ramp for the first, a fine checkerboard for the
    rest) with landmarks further apart the later the crop, and a fake."""
    images = (
        torch.linspace(64, 192, 32).round().to(torch.uint8).expand(count + 1, 3, 32, 32).clone()
    )
    images[1:, :, ::2, ::2] = 255
    images[1:, :, 1::2, 1::2] = 0
    landmarks = _mean_landmarks(count + 1) + torch.arange(count + 1.0).pow(2).view(-1, 1, 1) * 0.01
    labels = torch.tensor([0.0] * count + [1.0])
    return CropSet(images, labels, [f"c{i}" for i in range(count)] + ["c0"], landmarks)


def test_donors_are_other_people_nearest_in_landmarks():
    crops = _people(5)
    table = donor_table(crops, k=2)
    assert table[:5].tolist() == [[1, 2], [0, 2], [1, 0], [2, 4], [3, 2]]
    assert table[5].tolist() == [-1, -1]  # fakes are never blended
    with pytest.raises(FakescopeError, match="two clusters"):
        donor_table(crops.subset([0, 5]))
    # Where a cluster holds several reals, no pick falls within it.
    crowded = replace(crops, clusters=["a", "a", "a", "b", "c", "a"])
    assert donor_table(crowded, k=4).tolist()[:3] == [[3, 4]] * 3


def test_swapped_blends_carry_another_person_s_face(tmp_path):
    """The smooth face takes on its donors' fine texture inside the mask; a run that does
    not ask for swaps draws exactly as before."""
    crops = _people(4)
    args = (crops, (0.0,) * 3, (1.0,) * 3, torch.device("cpu"))
    items = [(0, True)] * 4 + [(1, False)] * 4
    no_degradations = lambda images: images.mul(255).round_().clamp_(0, 255).byte()  # noqa: E731
    swapped = TrainingBatches(*args, seed=1, jpeg=0.0, swap=1.0)
    own = TrainingBatches(*args, seed=1, jpeg=0.0)
    swapped.augment.forward = own.augment.forward = no_degradations
    images, targets = swapped.batch(items, step=0)
    assert targets.tolist() == [1.0] * 4 + [0.0] * 4

    def texture(faces: torch.Tensor) -> torch.Tensor:  # mean step between rows, in levels
        return (faces[:, :, 1:] - faces[:, :, :-1]).abs().mean((1, 2, 3)) * 255

    assert (texture(images[:4]) > 5).all()  # the checkerboard; the ramp has no step down
    assert (texture(own.batch(items, step=0)[0][:4]) < 1).all()
    assert torch.equal(swapped.batch(items, step=0)[0], images)  # seeded by step
    assert torch.equal(
        TrainingBatches(*args, seed=1, jpeg=0.0, swap=0.0).batch(items, 0)[0],
        TrainingBatches(*args, seed=1, jpeg=0.0).batch(items, 0)[0],
    )


def _checkerboards(count: int, size: int = 64) -> torch.Tensor:
    images = torch.zeros(count, 3, size, size)
    images[..., ::2, ::2] = images[..., 1::2, 1::2] = 1.0
    return images


def _texture(images: torch.Tensor) -> torch.Tensor:
    """Mean step between neighbouring columns: 1 on the checkerboard, 0 once flat."""
    return (images[..., 1:] - images[..., :-1]).abs().mean((0, 1))


def test_a_defocused_surround_keeps_the_head_sharp_and_blurs_its_background():
    landmarks = _mean_landmarks(2)
    sigma, scale = torch.tensor([2.0, 2.0]), torch.tensor([1.0, 1.0])
    out = defocus_surround(_checkerboards(2), landmarks, sigma, scale)
    steps = _texture(out)
    centre = steps[28:36, 28:36].mean()  # between the eyes and the mouth
    corners = torch.stack([steps[:6, :6], steps[:6, -6:]]).mean()  # beside the forehead
    assert centre > 0.99 and corners < 0.15
    # A head grown wider keeps more of the crop sharp.
    wider = _texture(defocus_surround(_checkerboards(2), landmarks, sigma, scale * 1.4))
    assert (wider > 0.5).sum() > (steps > 0.5).sum()
    # 68 points give the head of their eyes, nose tip and mouth corners.
    sixty_eight = torch.rand(2, 68, 2)
    for rows, point in zip(
        [range(36, 42), range(42, 48), [30], [48], [54]], landmarks[0], strict=True
    ):
        sixty_eight[:, list(rows)] = point
    assert torch.allclose(five_points(sixty_eight), landmarks)


def test_defocused_batches_soften_reals_and_fakes_alike():
    """A run that asks for a defocused surround gets it on its crops, blended or not; a run
    that does not draws exactly as before."""
    small_faces = 0.5 + (_mean_landmarks(2) - 0.5) * 0.6  # a head grown 1.4 times still fits
    crops = CropSet(
        (_checkerboards(2) * 255).to(torch.uint8), torch.tensor([0.0, 1.0]), ["a", "b"], small_faces
    )
    args = (crops, (0.0,) * 3, (1.0,) * 3, torch.device("cpu"))
    items = [(0, False), (0, True), (1, False)]
    no_degradations = lambda images: images.mul(255).round_().clamp_(0, 255).byte()  # noqa: E731
    soft = TrainingBatches(*args, seed=1, jpeg=0.0, defocus=1.0)
    sharp = TrainingBatches(*args, seed=1, jpeg=0.0)
    soft.augment.forward = sharp.augment.forward = no_degradations
    images, targets = soft.batch(items, step=0)
    assert targets.tolist() == [0.0, 1.0, 1.0]
    unblurred = sharp.batch(items, 0)[0]
    # The same crops and blends: the heads are untouched, and every surround is softer.
    assert torch.equal(images[..., 28:36, 28:36], unblurred[..., 28:36, 28:36])
    for i in range(3):
        assert _texture(images[i : i + 1]).mean() < _texture(unblurred[i : i + 1]).mean()
    # A stronger blur allowed, a softer surround on the same draws.
    stronger = TrainingBatches(*args, seed=1, jpeg=0.0, defocus=1.0, defocus_blur=0.1)
    stronger.augment.forward = no_degradations
    softer = stronger.batch(items, step=0)[0]
    assert torch.equal(softer[..., 28:36, 28:36], unblurred[..., 28:36, 28:36])
    assert _texture(softer).mean() < _texture(images).mean()
    assert torch.equal(
        TrainingBatches(*args, seed=1, jpeg=0.0, defocus=0.0).batch(items, 0)[0],
        TrainingBatches(*args, seed=1, jpeg=0.0).batch(items, 0)[0],
    )
