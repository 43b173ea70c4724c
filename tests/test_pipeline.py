"""End to end: media -> faces -> scores -> verdict -> report, through the API and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from fakescope.cli import app
from fakescope.models.onnx_runtime import RUN_CROPS
from fakescope.pipeline import Analyzer, Settings
from helpers import copy_first

runner = CliRunner()


@pytest.fixture(scope="module")
def analyzer(random_model):
    return Analyzer(random_model, Settings(frames=8))


def test_generated_720p_video_gives_one_track_and_a_complete_report(
    analyzer, example_video, tmp_path
):
    report = analyzer.analyze(example_video)
    data = report.to_dict()
    assert (
        data["kind"] == "video"
        and data["media"]["width"] == 1280
        and data["media"]["height"] == 720
    )
    assert len(data["frames_analysed"]) == 8
    assert len(data["tracks"]) == 1 and len(data["tracks"][0]["faces"]) == 8
    face = data["tracks"][0]["faces"][0]
    assert set(face) == {
        "frame_index",
        "timestamp",
        "box",
        "detector_score",
        "member_scores",
        "score",
        "size",
        "sharpness",
        "qp",
        "unjudged",
        "landmarks",
    }
    assert face["member_scores"]["random-lite0"] == pytest.approx(face["score"])
    box = face["box"]
    assert (
        face["size"] == pytest.approx(min(box[2] - box[0], box[3] - box[1])) and face["size"] >= 48
    )
    assert (
        face["sharpness"] > 6 and face["unjudged"] is None and data["tracks"][0]["unjudged"] is None
    )
    assert 0 < face["qp"] < 30  # x264's default quality (CRF 23)
    assert 0 <= data["fake_probability"] <= 1 and data["label"] in ("fake", "real", "inconclusive")
    assert (
        data["reason"] and data["deciding_track"] == 0 and data["real_below"] <= data["threshold"]
    )
    assert 1 <= len(data["chosen_frames"]) <= 4
    assert data["model"]["members"][0]["sha256"]
    assert {"decode", "detect", "score", "total"} <= set(data["timings"])
    timestamps = [f["timestamp"] for f in data["frames_analysed"]]
    assert timestamps == sorted(timestamps) and timestamps[-1] < 2.0


def test_explanations_do_not_change_scores(analyzer, example_video, tmp_path):
    plain = analyzer.analyze(example_video).to_dict()
    explained = analyzer.analyze(example_video, tmp_path, ["hirescam++", "gradcam-n"]).to_dict()
    scores = lambda d: [f["score"] for t in d["tracks"] for f in t["faces"]]  # noqa: E731
    assert scores(plain) == scores(explained)
    assert len(explained["explanations"]) == len(explained["chosen_frames"])
    entry = explained["explanations"][0]
    comparison = Image.open(tmp_path / entry["comparison"])
    assert comparison.width == 5 * 224
    overlay = Image.open(tmp_path / entry["overlays"]["hirescam++"])
    assert overlay.size == (1280, 720)


def test_a_heat_map_that_cannot_be_written_fails_in_one_line(
    analyzer, example_video, tmp_path, monkeypatch
):
    import errno
    import threading

    from fakescope.types import FakescopeError

    real_save = Image.Image.save

    def full_after_one(self, fp, *args, **kwargs):
        if "comparison" in str(fp):  # the disk fills up after the first overlays
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(self, fp, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", full_after_one)
    with pytest.raises(FakescopeError, match=r"comparison\.png: cannot write: No space left"):
        analyzer.analyze(example_video, tmp_path, ["hirescam++"])
    written = list(tmp_path.iterdir())
    assert all(p.name.endswith("hirescampp.png") for p in written)  # whole files only
    for path in written:
        with Image.open(path) as png:
            assert png.size == (1280, 720)
    assert not [t for t in threading.enumerate() if t.name.startswith("fakescope-writer")]


def test_a_coarsely_coded_video_is_inconclusive_and_says_why(
    analyzer, random_model, example_video, tmp_path
):
    from fakescope.encode import write_video
    from fakescope.media import iter_frames

    frames = (f.image for f in iter_frames(example_video, 50))
    coarse = write_video(tmp_path / "coarse.mp4", frames, 25, options={"qp": "45"})
    report = analyzer.analyze(coarse)
    faces = [f for t in report.verdict.tracks for f in t.faces]
    assert faces and all(f.qp is not None and f.qp > 40 for f in faces)
    assert all(
        f.unjudged and f.unjudged.startswith("too compressed (median H.264 QP") for f in faces
    )
    assert report.label == "inconclusive" and report.fake_probability is None
    assert "too compressed" in report.verdict.reason
    # The same faces with the limit lifted are judged again.
    lifted = Analyzer(random_model, Settings(frames=8, max_qp=51)).analyze(coarse)
    assert [f.unjudged for t in lifted.verdict.tracks for f in t.faces] == [None] * len(faces)


def test_two_people_stay_two_tracks(analyzer, tmp_path):
    from fakescope.encode import make_example_video

    video = make_example_video(tmp_path / "two.mp4", seconds=2, people=2)
    report = analyzer.analyze(video)
    assert len(report.verdict.tracks) == 2
    assert all(len(t.faces) == 8 for t in report.verdict.tracks)


def test_celebdf_clip_end_to_end(shared_data, tmp_path):
    """The shipped model on a real deepfake clip: each number traced back to its source."""
    MTCNN = pytest.importorskip("facenet_pytorch").MTCNN
    from fakescope.crops import crop_face, to_tensor
    from fakescope.faces import iou
    from fakescope.types import Decision
    from fakescope.verdict import confident_strategy

    clip = sorted((shared_data / "celebdf-clips" / "fake").glob("*.mp4"))[0]
    analyzer = Analyzer(settings=Settings(frames=8))
    report = analyzer.analyze(clip, tmp_path, ["hirescam++"], keep_frames=True)
    assert report.media.kind == "video" and len(report.frames) == 8
    judged = [t for t in report.verdict.tracks if t.unjudged is None]
    assert judged and report.verdict.deciding_track is not None

    # Faces where an independent detector (facenet-pytorch's MTCNN) finds them.
    mtcnn = MTCNN(keep_all=True, device="cpu")
    main = max(report.verdict.tracks, key=lambda t: len(t.faces))
    for face in main.faces:
        boxes, _ = mtcnn.detect(Image.fromarray(report.images[face.frame_index]))
        assert boxes is not None and max(iou(face.box, tuple(b)) for b in boxes) > 0.5

    # Each face's score is the members' calibrated P(fake) of that face's crop, averaged
    # with the ensemble's weights, then the ensemble's own temperature and bias on its logit.
    ensemble = analyzer.ensemble
    faces = [f for t in report.verdict.tracks for f in t.faces]
    mean = np.zeros(len(faces))
    for member in ensemble.members:
        crops = [crop_face(report.images[f.frame_index], f.box, member.spec.crop) for f in faces]
        with torch.inference_mode():
            logits = member.model(to_tensor(crops, member.spec.crop)).flatten()
        p = torch.sigmoid(logits / member.spec.temperature).numpy()
        mean += member.weight * p / sum(m.weight for m in ensemble.members)
    z = np.log(mean / (1 - mean)) / ensemble.temperature + ensemble.bias
    expected = 1 / (1 + np.exp(-z))
    np.testing.assert_allclose([f.score for f in faces], expected, atol=1e-4)
    assert np.ptp(expected) > 0.01  # the faces differ, so the scores do

    # The video's probability is the confident aggregate of its worst judged track.
    per_track = [
        confident_strategy(np.array([f.score for f in t.faces if f.unjudged is None]), 8)
        for t in judged
    ]
    assert [t.probability for t in judged] == pytest.approx(per_track)
    assert report.fake_probability == pytest.approx(max(per_track))
    decision = Decision(report.verdict.threshold, report.verdict.real_below)
    assert report.label == decision.label(report.fake_probability)

    # Heat maps: blended in around the chosen faces only, and not flat there.
    assert [e["frame_index"] for e in report.explanations] == report.verdict.chosen_frames
    for entry in report.explanations:
        frame = report.images[entry["frame_index"]].astype(int)
        shown = np.asarray(Image.open(tmp_path / entry["overlays"]["hirescam++"])).astype(int)
        changed = np.abs(shown - frame).sum(axis=2) > 0
        x1, y1, x2, y2 = (round(v) for v in entry["face_box"])
        rows, cols = np.nonzero(changed.any(axis=1))[0], np.nonzero(changed.any(axis=0))[0]
        side = max(x2 - x1, y2 - y1)
        # Opacity follows the map's value, so weak parts leave the picture as it is: the
        # painted pixels lie around the face, not necessarily over all of its box.
        assert len(rows) and rows[0] >= y1 - side and rows[-1] <= y2 + side
        assert cols[0] >= x1 - side and cols[-1] <= x2 + side
        assert np.abs(shown - frame)[y1:y2, x1:x2].sum(axis=2).std() > 5


def test_cli_analyze_writes_report_and_summary(random_model, example_video, tmp_path):
    result = runner.invoke(
        app,
        [
            "analyze",
            str(example_video),
            "--model",
            str(random_model),
            "--frames",
            "4",
            "--out",
            str(tmp_path),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "astronaut.mp4:" in result.output and "p(fake)=" in result.output
    data = json.loads((tmp_path / "astronaut" / "report.json").read_text())
    assert data["schema_version"] == "1.7" and len(data["frames_analysed"]) == 4
    assert data["provenance"]["summary"] == "no content credentials"


def test_cli_bad_and_faceless_inputs_get_one_line_and_distinct_codes(random_model, tmp_path):
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video at all")
    blank = tmp_path / "blank.png"
    Image.fromarray(np.full((200, 200, 3), 128, np.uint8)).save(blank)
    bad = runner.invoke(
        app, ["analyze", str(junk), "--model", str(random_model), "--out", str(tmp_path)]
    )
    assert bad.exit_code == 3 and "Traceback" not in bad.output
    assert len([line for line in bad.output.splitlines() if line.startswith("error:")]) == 1
    faceless = runner.invoke(
        app, ["analyze", str(blank), "--model", str(random_model), "--out", str(tmp_path)]
    )
    assert faceless.exit_code == 4 and "no face" in faceless.output


def test_cli_without_weights_says_so(monkeypatch, tmp_path, example_video):
    import fakescope.models.ensemble as ensemble

    monkeypatch.setattr(ensemble, "WEIGHTS_DIR", tmp_path)
    result = runner.invoke(app, ["analyze", str(example_video), "--out", str(tmp_path)])
    assert result.exit_code == 5 and "no default weights are installed" in result.output


def test_scan_crops_on_a_folder(random_model, shared_data, tmp_path):
    crops = tmp_path / "crops"
    copy_first(shared_data / "dfdc-faces" / "val" / "fake", crops, 3)
    (crops / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    out = tmp_path / "results.jsonl"
    result = runner.invoke(
        app,
        [
            "scan",
            str(crops),
            "--crops",
            "--model",
            str(random_model),
            "--out",
            str(out),
            "--db",
            str(tmp_path / "results.sqlite"),
        ],
    )
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 4 and result.exit_code == 1
    good = [r for r in rows if r["error"] is None]
    assert len(good) == 3 and all(0 <= r["fake_probability"] <= 1 and r["faces"] == 1 for r in good)
    assert next(r for r in rows if r["error"])["path"].endswith("broken.jpg")


def test_onnx_fast_path_equals_eager_pytorch(random_model, example_video):
    # 12 faces: more than one ONNX Runtime run (RUN_CROPS) in one scoring batch.
    fast = Analyzer(random_model, Settings(frames=12, backend="onnx")).analyze(example_video)
    eager = Analyzer(random_model, Settings(frames=12, backend="torch")).analyze(example_video)
    assert (
        fast.model["members"][0]["backend"] == "onnxruntime"
        and eager.model["members"][0]["backend"] == "torch"
    )
    a = [f.score for t in fast.verdict.tracks for f in t.faces]
    b = [f.score for t in eager.verdict.tracks for f in t.faces]
    assert len(a) == len(b) == 12 > RUN_CROPS
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_explanations_give_evidence_per_face_region(analyzer, example_video, tmp_path):
    data = analyzer.analyze(example_video, tmp_path, ["hirescam++"]).to_dict()
    assert data["schema_version"] == "1.7"
    face = data["tracks"][0]["faces"][0]
    assert np.asarray(face["landmarks"]).shape == (5, 2)  # RetinaFace's, in frame pixels
    for entry in data["explanations"]:
        assert sum(entry["regions"].values()) == pytest.approx(1.0)
        assert entry["evidence"].endswith(".") and entry["track_id"] == 0
    evidence = data["tracks"][0]["evidence"]
    assert evidence["faces"] == len(data["chosen_frames"]) and sum(
        evidence["regions"].values()
    ) == pytest.approx(1.0)


def test_real_clip_pdf_and_regions_with_the_shipped_model(shared_data, tmp_path):
    """`analyze --format all` on a Celeb-DF clip: report.pdf with images, region shares per
    chosen frame summing to 1 over the named regions."""
    from fakescope.explain.regions import REGIONS

    clip = shared_data / "celebdf-clips" / "fake" / "id10_id12_0004_segment_1.mp4"
    result = CliRunner().invoke(
        app,
        ["analyze", str(clip), "--frames", "8", "--explain", "hirescam++", "--out", str(tmp_path)],
    )
    assert result.exit_code == 0, result.output
    folder = tmp_path / clip.stem
    data = json.loads((folder / "report.json").read_text())
    assert data["explanations"] and data["files"]["pdf"] == "report.pdf"
    for entry in data["explanations"]:
        assert list(entry["regions"]) == list(REGIONS) and sum(
            entry["regions"].values()
        ) == pytest.approx(1.0)
    pdf = (folder / "report.pdf").read_bytes()
    assert (
        pdf.startswith(b"%PDF-") and pdf.count(b"/Subtype /Image") >= len(data["explanations"]) + 1
    )


def test_faces_cut_on_the_device_path_match_the_cpu_path(random_model, tmp_path):
    """Analyzer.crop_device set (what a GPU gets), here on CPU tensors: the same crop bytes,
    sharpness within float64 rounding and so the same scores, for a video with two people
    and for face crop images of other sizes."""
    from fakescope.encode import make_example_video

    cpu = Analyzer(random_model, Settings(frames=4))
    tensors = Analyzer(random_model, Settings(frames=4))
    tensors.crop_device = "cpu"
    video = make_example_video(tmp_path / "two.mp4", seconds=1, people=2)
    crops = []
    for i, size in enumerate([(80, 80), (150, 90), (20, 30)]):
        crops.append(tmp_path / f"crop{i}.png")
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (*size, 3), np.uint8)).save(
            crops[-1]
        )
    faceless = tmp_path / "grey.png"
    Image.fromarray(np.full((64, 64, 3), 128, np.uint8)).save(faceless)
    inputs = [(video, False)] + [(c, True) for c in crops] + [(faceless, False)]
    for (path, crop), faces in zip(inputs, [8, 1, 1, 1, 0], strict=True):
        a, b = cpu.prepare(path, crop), tensors.prepare(path, crop)
        assert len(a.faces) == len(b.faces) == faces
        assert all(torch.equal(a.crops[p], b.crops[p]) for p in a.crops)
        torch.testing.assert_close(a.sharpness, b.sharpness, rtol=1e-12, atol=1e-9)
    reports_a = cpu.score([cpu.prepare(p, c) for p, c in inputs])
    reports_b = tensors.score([tensors.prepare(p, c) for p, c in inputs])
    for x, y in zip(reports_a, reports_b, strict=True):
        assert x.label == y.label and x.fake_probability == y.fake_probability
        assert [f.score for t in x.verdict.tracks for f in t.faces] == [
            f.score for t in y.verdict.tracks for f in t.faces
        ]
