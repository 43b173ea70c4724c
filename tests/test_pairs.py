"""Manipulation masks from fake/pristine pairs (explain/pairs.py), reading frames by index, the
localisation metrics added for them, and `xai-eval --pairs` with its bad inputs."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from scipy.stats import bootstrap
from sklearn.metrics import jaccard_score
from typer.testing import CliRunner

from fakescope.cli import app
from fakescope.encode import make_example_video, write_video
from fakescope.explain.faithfulness import top_k_chance, top_k_iou
from fakescope.explain.pairs import THRESHOLD, align, manipulation_mask
from fakescope.media import iter_frames, read_frames_at
from fakescope.metrics import mean_with_interval
from fakescope.types import FakescopeError, MediaError

runner = CliRunner()


def textured(shape: tuple[int, int], seed: int = 0) -> np.ndarray:
    """A smooth random RGB picture, like a frame's background."""
    noise = np.random.default_rng(seed).normal(128, 60, (*shape, 3)).astype(np.float32)
    return np.clip(cv2.GaussianBlur(noise, (0, 0), 3) * 3 - 256, 0, 255).astype(np.uint8)


def noisy(image: np.ndarray, seed: int) -> np.ndarray:
    """The picture with a compression-like noise of a few levels."""
    noise = np.random.default_rng(seed).normal(0, 2, image.shape)
    return np.clip(image + noise, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def pair():
    """(fake, pristine, face box, true mask): the fake is the pristine frame 6 px narrower
    (cut at x = 3), with an ellipse on the face changed by 40 levels; both noisy."""
    pristine = textured((240, 326))
    fake = pristine[:, 3:323].copy()
    truth = np.zeros(fake.shape[:2], np.uint8)
    cv2.ellipse(truth, (160, 120), (40, 55), 0, 0, 360, 1, -1)
    changed = fake.astype(np.int16) + 40 * truth[..., None]
    fake = np.clip(changed, 0, 255).astype(np.uint8)
    return noisy(fake, 1), noisy(pristine, 2), (110.0, 55.0, 210.0, 185.0), truth.astype(bool)


def test_align_finds_the_crop_of_a_narrower_fake(pair):
    fake, pristine, box, _ = pair
    dx, dy, residual = align(fake, pristine, [box])
    assert (dx, dy) == (3, 0) and residual < 4


def test_mask_recovers_the_manipulated_ellipse(pair):
    fake, pristine, box, truth = pair
    mask = manipulation_mask(fake, pristine, box)
    assert jaccard_score(truth.ravel(), mask.ravel()) > 0.9


def test_noise_alone_gives_no_mask(pair):
    _, pristine, box, _ = pair
    assert not manipulation_mask(noisy(pristine, 5), noisy(pristine, 6), box).any()


def test_mask_is_kept_to_the_face(pair):
    """A change far from the face (a logo, say) is not part of the face's mask."""
    fake, pristine, box, truth = pair
    marked = fake.copy()
    marked[5:40, 5:40] = 255 - marked[5:40, 5:40]
    mask = manipulation_mask(marked, pristine, box, offset=(3, 0))
    assert not mask[:50, :50].any() and jaccard_score(truth.ravel(), mask.ravel()) > 0.9


def test_pairs_that_do_not_match_say_so(pair):
    fake, pristine, box, _ = pair
    with pytest.raises(FakescopeError, match="does not align"):
        manipulation_mask(fake, noisy(textured(pristine.shape[:2], seed=9), 3), box)
    with pytest.raises(FakescopeError, match="larger than its pristine"):
        align(pristine, fake, [box])


def test_threshold_sits_above_the_noise_of_two_encodings():
    """Two independent noisy copies never reach the threshold once smoothed."""
    from fakescope.explain.pairs import difference

    picture = textured((120, 160))
    assert difference(noisy(picture, 1), noisy(picture, 2)).max() < THRESHOLD / 2


def test_read_frames_at_matches_iter_frames(tmp_path):
    frames = [np.full((32, 48, 3), 20 * i, np.uint8) for i in range(10)]
    path = write_video(tmp_path / "v.mp4", frames, 10.0, options={"qp": "0"})
    sampled = list(iter_frames(path, 10))
    picked = read_frames_at(path, [7, 2, 7])
    assert [f.index for f in picked] == [7, 2, 7]
    by_index = {f.index: f.image for f in sampled}
    for frame in picked:
        np.testing.assert_array_equal(frame.image, by_index[frame.index])
    with pytest.raises(MediaError, match="has no frame 12"):
        read_frames_at(path, [3, 12])


def test_top_k_iou_against_sklearn():
    gen = torch.Generator().manual_seed(0)
    maps, masks = torch.rand(4, 20, 20, generator=gen), torch.rand(4, 20, 20, generator=gen) > 0.6
    ious = top_k_iou(maps, masks, 0.25)
    for m, mask, iou in zip(maps, masks, ious):
        top = m.flatten() >= m.flatten().sort(descending=True).values[99]
        assert float(iou) == pytest.approx(jaccard_score(mask.flatten(), top))
    assert top_k_iou(torch.zeros(1, 5, 5), masks[:1, :5, :5]).isnan().all()
    # A random top-k: its mean IoU comes near the chance level.
    rand = torch.stack(
        [top_k_iou(torch.rand(1, 20, 20, generator=gen), masks[:1]) for _ in range(400)]
    )
    assert float(rand.mean()) == pytest.approx(float(top_k_chance(masks[:1])), abs=0.01)


def test_mean_with_interval_against_scipy_and_by_cluster():
    values = np.random.default_rng(0).normal(0.5, 0.2, 60)
    ours = mean_with_interval(values, rounds=4000)
    theirs = bootstrap((values,), np.mean, n_resamples=4000, method="percentile", random_state=0)
    assert ours["value"] == pytest.approx(values.mean())
    assert ours["low"] == pytest.approx(theirs.confidence_interval.low, abs=0.01)
    assert ours["high"] == pytest.approx(theirs.confidence_interval.high, abs=0.01)
    # Ten copies of each image: resampling images would narrow the interval, clusters do not.
    copies = np.repeat(values, 10)
    clustered = mean_with_interval(copies, np.repeat(np.arange(60), 10), rounds=4000)
    assert clustered["high"] - clustered["low"] == pytest.approx(
        ours["high"] - ours["low"], rel=0.15
    )
    assert np.isnan(mean_with_interval([np.nan])["value"])


# --- the command ------------------------------------------------------------------------------


def folder(tmp_path: Path, pristine: str | None, fake_video: Path, real_video: Path) -> Path:
    """A data set: real/a.mp4, fake/b.mp4 and a manifest naming `pristine` for the fake."""
    (tmp_path / "set" / "real").mkdir(parents=True)
    (tmp_path / "set" / "fake").mkdir()
    (tmp_path / "set" / "real" / "a.mp4").write_bytes(real_video.read_bytes())
    (tmp_path / "set" / "fake" / "b.mp4").write_bytes(fake_video.read_bytes())
    with open(tmp_path / "set" / "manifest.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "label", "manipulation", "pristine"])
        writer.writerow(["real/a.mp4", "real", "", ""])
        writer.writerow(["fake/b.mp4", "fake", "Test", pristine or ""])
    return tmp_path / "set"


def xai_pairs(dataset: Path, model: Path, out: Path):
    return runner.invoke(
        app,
        [
            "xai-eval", str(dataset), "--pairs", "--localisation-only", "--model", str(model),
            "--methods", "hirescam++,hirescam,centre prior", "--sanity-images", "1",
            "--sanity-depth", "1", "--out", str(out),
        ],
    )  # fmt: skip


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    where = tmp_path_factory.mktemp("pairs")
    return {
        "two": make_example_video(where / "two.mp4", seconds=2, size=(640, 360)),
        "one": make_example_video(where / "one.mp4", seconds=1, size=(640, 360)),
        "other": make_example_video(where / "other.mp4", seconds=2, size=(640, 360), people=2),
    }


@pytest.mark.parametrize(
    "pristine, real, message",
    [
        ("real/missing.mp4", "two", "its pristine video real/missing.mp4 is missing"),
        ("real/a.mp4", "one", "has no frame"),
        ("real/a.mp4", "other", "does not align"),
    ],
)
def test_bad_pairs_get_one_line(random_model, videos, tmp_path, pristine, real, message):
    dataset = folder(tmp_path, pristine, videos["two"], videos[real])
    result = xai_pairs(dataset, random_model, tmp_path / "out")
    assert result.exit_code != 0 and message in result.output, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.output


def test_pairs_on_ffpp(random_model, shared_data, tmp_path):
    """One FaceForensics++ fake against its pristine video: masks on the faces analyze shows,
    localisation per manipulation with intervals, a mask figure."""
    result = runner.invoke(
        app,
        [
            "xai-eval", str(shared_data / "ffpp-dev"), "--pairs", "--limit", "1",
            "--localisation-only", "--model", str(random_model),
            "--methods", "hirescam++,hirescam,centre prior", "--sanity-images", "1",
            "--sanity-depth", "1", "--out", str(tmp_path),
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "xai.json").read_text())
    groups = set(data["localisation"]) - {"all", "P(fake) >= 0.5", "P(fake) < 0.5"}
    assert groups == {"Deepfakes"}  # --limit 1: the manifest's first fake
    local = data["localisation"]["Deepfakes"]
    assert data["region_truth"] == "mask" and local["images"] == data["masked_images"] > 0
    for metric in ("pointing_game", "mass_inside_mask", "iou_top_k", "top_region_hit"):
        for value in local[metric].values():
            assert value["low"] <= value["value"] <= value["high"]
    assert sum(local["mask_regions"].values()) == pytest.approx(1.0)
    assert set(data["table1_by_label"]["hirescam++"]) == {"real", "fake"}
    assert len(list((tmp_path / "masks").glob("*.png"))) == 1


def test_xai_eval_localises_per_group_against_given_masks():
    """Batches of real manipulations: results per group and by the model's P(fake), each with
    an interval; the top region compared with the mask's own largest region."""
    import timm

    from fakescope.explain.regions import REGIONS
    from fakescope.explain.xai_eval import EvalBatch, xai_eval

    torch.manual_seed(0)
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=1).eval()
    inputs = torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    masks = torch.zeros(4, 64, 64, dtype=torch.bool)
    masks[:3, 16:48, 16:48] = True  # the fourth is a real face: no mask
    regions = torch.full((4, 64, 64), REGIONS.index("cheeks"), dtype=torch.long)
    regions[:, 40:, :] = REGIONS.index("mouth")
    batch = EvalBatch(
        inputs,
        torch.tensor([1.0, 1, 1, 0]),
        masks,
        regions,
        targets=masks,
        groups=["A", "A", "B", "real"],
        sources=["a1", "a2", "b1", "r1"],
    )
    results = xai_eval(
        model, [batch], ["hirescam++", "centre prior"], sanity_images=1, sanity_depth=1, steps=0,
        region_truth="mask",
    )  # fmt: skip
    local = results["localisation"]
    assert local["all"]["images"] == 3 and local["A"]["images"] == 2 and local["B"]["images"] == 1
    assert local["P(fake) >= 0.5"]["images"] + local["P(fake) < 0.5"]["images"] == 3
    assert local["all"]["truth_regions"] == {"cheeks": 3}  # the mask lies mostly in the cheeks
    assert local["all"]["chance"]["fixed_region"]["value"] == 1.0
    assert local["all"]["mask_regions"]["cheeks"] == pytest.approx(24 / 32)
    prior = local["all"]["mass_inside_mask"]["centre prior"]
    assert 0.25 < prior["low"] <= prior["value"] <= prior["high"] < 1  # centred on the mask
    assert set(results["table1_by_label"]["hirescam++"]) == {"real", "fake"}


def test_a_bad_pair_is_left_out_with_a_warning(random_model, videos, tmp_path):
    """A folder with a good pair (here a fake identical to its pristine video) and one that
    does not align: the report comes, and the bad pair is named in one warning line."""
    dataset = folder(tmp_path, "real/a.mp4", videos["two"], videos["two"])
    (dataset / "fake" / "c.mp4").write_bytes(videos["other"].read_bytes())
    with open(dataset / "manifest.csv", "a", newline="") as handle:
        csv.writer(handle).writerow(["fake/c.mp4", "fake", "Test", "real/a.mp4"])
    result = xai_pairs(dataset, random_model, tmp_path / "out")
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.output.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "c.mp4" in warnings[0] and "does not align" in warnings[0]
    data = json.loads((tmp_path / "out" / "xai.json").read_text())
    assert len(data["skipped"]) == 1 and data["masked_images"] == 0  # identical: nothing changed
