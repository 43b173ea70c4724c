"""Face detection on real photos and generated videos, and track linking."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from fakescope import encode, faces, media
from fakescope.faces import link_tracks
from fakescope.types import Detection, FakescopeError
from helpers import shared_data_dir

torch.set_num_threads(1)  # MTCNN runs in torch; keep the tests light on a shared machine


@pytest.fixture(scope="module")
def retinaface() -> faces.FaceDetector:
    return faces.get_detector("retinaface", threads=1)


@pytest.fixture(scope="module")
def mtcnn() -> faces.FaceDetector:
    pytest.importorskip(
        "facenet_pytorch", reason="install with `pip install --no-deps facenet-pytorch`"
    )
    return faces.get_detector("mtcnn")


def photo(name: str) -> np.ndarray:
    return media.read_image(shared_data_dir() / "photos" / f"{name}.png")


@pytest.mark.parametrize(("name", "count"), [("1face", 1), ("3faces", 3), ("4faces", 4)])
@pytest.mark.parametrize("backend", ["retinaface", "mtcnn"])
def test_photos_face_counts(request, backend, name, count):
    image = photo(name)  # 128 x 128: found only thanks to the upsampling front end
    detector = request.getfixturevalue(backend)
    [found] = detector.detect([image])
    assert len(found) == count
    for d in found:
        x1, y1, x2, y2 = d.box
        assert 0 <= x1 < x2 <= 128 and 0 <= y1 < y2 <= 128 and d.score >= 0.9
        assert d.landmarks.shape == (5, 2)
        # Eyes, nose and mouth lie inside (or on the edge of) their face box.
        assert np.all((d.landmarks >= [x1 - 2, y1 - 2]) & (d.landmarks <= [x2 + 2, y2 + 2]))


def test_retinaface_in_pytorch_finds_what_onnxruntime_finds(retinaface):
    """The GPU path (the ONNX graph converted to PyTorch), run here on the CPU, against
    onnxruntime on the same photos."""
    converted = faces.get_detector("retinaface", backend="torch")
    images = [photo("3faces"), photo("4faces")]
    for ours, reference in zip(converted.detect(images), retinaface.detect(images), strict=True):
        assert len(ours) == len(reference) > 0
        for a, b in zip(ours, reference, strict=True):
            assert np.allclose(a.box, b.box, atol=1e-2) and abs(a.score - b.score) < 1e-4
            assert np.allclose(a.landmarks, b.landmarks, atol=1e-2)


def test_retinaface_decoding_matches_the_package(retinaface):
    """Decoding only the anchors over the threshold gives exactly what the package's
    preprocess + postprocess (which decode every anchor) give, on photos and video frames."""
    from retinaface.postprocess import postprocess
    from retinaface.preprocess import preprocess

    video = shared_data_dir() / "ffpp-dev" / "real" / "ffpp_yt_c23_033.mp4"
    frames = [f.image for f in media.iter_frames(video, 3)]
    for images in ([photo("3faces"), photo("4faces")], frames):
        batch = np.stack(images)
        inputs = faces.retinaface_inputs(batch)
        assert inputs.flags.c_contiguous and np.array_equal(inputs, preprocess(batch))
        outputs = retinaface._session.run(None, {"input": inputs})
        for threshold in (0.5, 0.9):
            ours = faces.retinaface_detections(outputs, *batch.shape[1:3], threshold)
            package = postprocess(
                [o.copy() for o in outputs], *inputs.shape, score_threshold=threshold
            )
            assert sum(map(len, ours)) > 0
            for found, reference in zip(ours, package, strict=True):
                assert [d.box for d in found] == [
                    (f.x, f.y, f.x + f.width, f.y + f.height) for f in reference
                ]
                assert [d.score for d in found] == [f.score for f in reference]
                for d, f in zip(found, reference, strict=True):
                    assert d.landmarks.tolist() == [[p.x, p.y] for p in f.landmarks]


def test_blank_and_tiny_images_have_no_face(retinaface):
    blank = [np.zeros((1, 1, 3), np.uint8), np.full((240, 320, 3), 128, np.uint8)]
    assert retinaface.detect(blank) == [[], []]
    assert retinaface.detect([]) == []


def test_working_scale(retinaface):
    assert retinaface.working_scale(128, 128) == pytest.approx(2.5)  # small photos are enlarged
    assert retinaface.working_scale(720, 1280) == pytest.approx(0.5)  # big frames shrink to 640
    assert retinaface.working_scale(480, 640) == 1.0
    assert retinaface.working_scale(10, 4000) * 4000 <= 2 * 640  # thin images stay bounded


def test_unknown_or_missing_backend(monkeypatch):
    with pytest.raises(FakescopeError, match="unknown face detector"):
        faces.get_detector("blazeface")
    monkeypatch.setitem(sys.modules, "facenet_pytorch", None)  # import now fails
    with pytest.raises(FakescopeError, match="--no-deps facenet-pytorch"):
        faces.get_detector("mtcnn")


@pytest.fixture(scope="module")
def example_frames(tmp_path_factory):
    path = encode.make_example_video(tmp_path_factory.mktemp("video") / "example.mp4", seconds=2)
    info = media.probe(path)
    frames = list(media.iter_frames(path, 12, info=info))
    assert (info.width, info.height, info.fps, info.frame_count) == (1280, 720, 25.0, 50)
    return frames


def test_example_video_has_one_face_per_frame_and_one_track(retinaface, example_frames):
    found = retinaface.detect([f.image for f in example_frames])
    assert [len(d) for d in found] == [1] * len(example_frames)
    for d in (d[0] for d in found):  # the face sits in the middle third of the 1280 x 720 frame
        cx, cy = (d.box[0] + d.box[2]) / 2, (d.box[1] + d.box[3]) / 2
        assert 400 < cx < 880 and 100 < cy < 450 and d.box[2] - d.box[0] > 50
    tracks = link_tracks([(f.index, f.timestamp, d) for f, d in zip(example_frames, found)])
    assert len(tracks) == 1 and len(tracks[0].faces) == len(example_frames)
    assert [t.frame_index for t in tracks[0].faces] == [f.index for f in example_frames]


def test_two_people_give_two_tracks(tmp_path, retinaface):
    path = encode.make_example_video(tmp_path / "two.mp4", seconds=2, people=2)
    frames = list(media.iter_frames(path, 10))
    found = retinaface.detect([f.image for f in frames])
    assert [len(d) for d in found] == [2] * len(frames)
    tracks = link_tracks([(f.index, f.timestamp, d) for f, d in zip(frames, found)])
    assert [t.track_id for t in tracks] == [0, 1]
    centres = [[(f.detection.box[0] + f.detection.box[2]) / 2 for f in t.faces] for t in tracks]
    assert all(len(c) == len(frames) for c in centres)
    # One track stays in each half of the frame, though both faces move.
    assert sorted((max(c) < 640, min(c) > 640) for c in centres) == [(False, True), (True, False)]
    assert all(max(c) - min(c) > 20 for c in centres)


def det(x: float, y: float, size: float = 40, score: float = 0.99) -> Detection:
    return Detection((x, y, x + size, y + size), score)


def test_link_tracks_rules():
    frames = [
        (0, 0.0, [det(100, 100), det(400, 100)]),
        # Far apart in time: both moved by more than their overlap allows, less than a face size.
        (30, 1.2, [det(430, 110), det(130, 90)]),
        (60, 2.4, [det(455, 120), det(160, 85), det(250, 300, 20, score=0.91)]),  # a weak one-off
        (90, 3.6, [det(460, 125), det(165, 80)]),
    ]
    frames += [(90 + 30 * i, 3.6 + 1.2 * i, [det(460, 125), det(165, 80)]) for i in range(1, 8)]
    tracks = link_tracks(frames)
    assert len(tracks) == 2  # the weak, rare detection is dropped
    left, right = tracks
    assert [f.detection.box[0] for f in left.faces[:4]] == [100, 130, 160, 165]
    assert [f.detection.box[0] for f in right.faces[:4]] == [400, 430, 455, 460]
    # A confident face seen once stays: a person can appear briefly.
    frames[2][2][2] = det(250, 300, 20, score=0.999)
    assert len(link_tracks(frames)) == 3
    # A jump of several face sizes is a new person.
    assert len(link_tracks([(0, 0.0, [det(100, 100)]), (1, 0.04, [det(300, 100)])])) == 2
