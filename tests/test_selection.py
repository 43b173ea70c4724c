"""Choosing models on full-frame videos: the video set decides each video as `analyze` does."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import av
import cv2
import numpy as np
import pytest
import torch
from scipy.stats import bootstrap
from sklearn.metrics import roc_auc_score

from fakescope.encode import make_example_video, reencode
from fakescope.faces import RetinaFaceDetector
from fakescope.metrics import auc_difference
from fakescope.pipeline import Analyzer
from fakescope.selection import (
    RECORDED,
    SOFT,
    build_video_set,
    by_fold,
    crossfit,
    half_of,
    load_video_set,
    save_video_set,
    scene_groups,
    score_video_set,
    soft_background,
    video_auc,
)
from fakescope.settings import Settings
from fakescope.types import FakescopeError


def test_scene_groups_join_every_video_made_from_a_source():
    files = [
        "real/ffpp_yt_c23_033.mp4",
        "fake/ffpp_df_c23_033_097.mp4",
        "real/ffpp_yt_c23_097.mp4",
        "real/ffpp_yt_c23_100.mp4",
        "fake/ffpp_fs_c23_100_101.mp4",
        "clip.mp4",
    ]
    groups = scene_groups(files)
    assert groups[0] == groups[1] == groups[2]
    assert groups[3] == groups[4] != groups[0]
    assert len(set(groups)) == 3
    assert {half_of(g) for g in groups} == {0, 1}


def test_a_crossfitted_decision_never_sees_the_fold_it_labels():
    files = [
        "real/ffpp_yt_c23_001.mp4",
        "fake/ffpp_df_c23_001_002.mp4",
        "real/ffpp_yt_c23_002.mp4",
        "real/ffpp_yt_c23_003.mp4",
        "fake/ffpp_fs_c23_003_004.mp4",
        "real/ffpp_yt_c23_005.mp4",
        "fake/ffpp_f2f_c23_005_006.mp4",
        "fake/ffpp_df_c23_005_007.mp4",
        "real/ffpp_yt_c23_008.mp4",
        "fake/ffpp_df_c23_008_009.mp4",
    ]
    labels = [0 if f.startswith("real") else 1 for f in files]
    probs = [0.2, 0.9, 0.65, 0.3, 0.6, 0.1, 0.8, None, 0.45, 0.7]
    fold = [g % 2 for g in scene_groups(files)]
    assert set(fold) == {0, 1}

    def rows(values):
        return [
            {"file": f, "label": y, "probability": p, "predicted": "inconclusive"}
            for f, y, p in zip(files, labels, values, strict=True)
        ]

    labelled, decisions = crossfit(rows(probs), max_false_alarm=0.0, max_miss=0.0)
    assert sorted(r["file"] for r in labelled) == sorted(files)
    for row in labelled:
        f = fold[files.index(row["file"])]
        if row["probability"] is None:
            assert row["predicted"] == "inconclusive"  # nothing to decide: left as it was
        else:
            assert row["predicted"] == decisions[f].label(row["probability"])
    # Moving fold 0's scores moves only the decision fitted on them, which labels fold 1.
    moved = [p if p is None or f else min(0.99, p + 0.25) for p, f in zip(probs, fold)]
    _, after = crossfit(rows(moved), max_false_alarm=0.0, max_miss=0.0)
    assert after[0] == decisions[0] and after[1] != decisions[1]
    # The same videos changed (re-encoded, blurred) are judged by those decisions, fold by fold.
    assert by_fold(rows(probs), decisions) == labelled
    for row, f in zip(by_fold(rows(moved), decisions), fold, strict=True):
        if row["probability"] is not None:
            assert row["predicted"] == decisions[f].label(row["probability"])


def test_an_auc_difference_is_paired_and_resamples_scenes():
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], 40)
    first = labels + rng.normal(0, 1.2, 80)
    second = first + labels * 0.4 + rng.normal(0, 0.3, 80)

    def difference(lab, a, b):
        return roc_auc_score(lab, b) - roc_auc_score(lab, a)

    ours = auc_difference(labels, first, second, rounds=2000)
    theirs = bootstrap(
        (labels, first, second),
        difference,
        paired=True,
        vectorized=False,
        n_resamples=2000,
        method="percentile",
        random_state=0,
    ).confidence_interval
    assert ours["value"] == pytest.approx(difference(labels, first, second))
    ties = np.round(first)  # the rank form counts ties half, as roc_auc_score does
    assert auc_difference(labels, ties, first)["value"] == pytest.approx(
        difference(labels, ties, first)
    )
    assert ours["low"] == pytest.approx(theirs.low, abs=0.01)
    assert ours["high"] == pytest.approx(theirs.high, abs=0.01)
    assert 0 < ours["low"] < ours["value"] < ours["high"]
    # The same model twice differs by nothing, in every draw.
    assert auc_difference(labels, first, first) == {"value": 0.0, "low": 0.0, "high": 0.0}
    # Ten copies of each video in one scene: resampling videos would narrow it, scenes do not.
    copies = [np.repeat(x, 10) for x in (labels, first, second)]
    clustered = auc_difference(*copies, clusters=np.repeat(np.arange(80), 10), rounds=2000)
    assert clustered["high"] - clustered["low"] == pytest.approx(
        ours["high"] - ours["low"], rel=0.15
    )
    with pytest.raises(FakescopeError, match="reals and fakes"):
        auc_difference(labels[:40], first[:40], second[:40])


def _first_frame(path) -> np.ndarray:
    with av.open(str(path)) as container:
        return next(container.decode(video=0)).to_ndarray(format="rgb24")


def _detail(image: np.ndarray) -> float:
    return float(cv2.Laplacian(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), cv2.CV_64F).var())


def test_a_soft_background_keeps_the_heads_and_blurs_the_rest(tmp_path):
    video = make_example_video(tmp_path / "clip.mp4", seconds=1, fps=8)
    noise = np.random.default_rng(0).normal(0, 12, (720, 1280, 3))
    frame = (_first_frame(video) + noise).clip(0, 255).astype(np.uint8)
    detector = RetinaFaceDetector()
    (face,) = detector.detect([frame])[0]
    soft = soft_background(detector)(frame)
    x1, y1, x2, y2 = (round(v) for v in face.box)
    cx, cy, w, h = (x1 + x2) // 2, (y1 + y2) // 2, (x2 - x1) // 4, (y2 - y1) // 4
    inner = np.s_[cy - h : cy + h, cx - w : cx + w]
    assert np.abs(soft[inner].astype(int) - frame[inner]).mean() < 0.5  # the face kept
    corner = np.s_[:150, :150]
    assert _detail(soft[corner]) < _detail(frame[corner]) / 20  # the background's grain gone
    # The blur grows with the face: a sigma of 4% of its box.
    assert _detail(soft_background(detector, blur=0.01)(frame)[corner]) > 2 * _detail(soft[corner])
    bare = noise.clip(0, 255).astype(np.uint8)
    assert soft_background(detector)(bare) is bare  # no face: nothing to keep sharp
    # A re-encode codes the changed frames: here each one inverted.
    inverted = _first_frame(
        reencode(video, tmp_path / "inv.mp4", 1, 18, transform=lambda f: 255 - f)
    )
    assert np.abs(inverted.astype(int) - (255 - _first_frame(video))).mean() < 3


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("videos")
    (root / "real").mkdir()
    (root / "fake").mkdir()
    make_example_video(root / "real" / "clip_001.mp4", seconds=2, fps=8)
    make_example_video(root / "fake" / "clip_001_002.mp4", seconds=2, fps=8)
    shutil.copy(root / "real" / "clip_001.mp4", root / "real" / "clip_003.mp4")
    return root


def test_a_video_set_decides_each_video_as_analyze_does(folder, tmp_path):
    settings = Settings(frames=8, max_qp=51)
    analyzer = Analyzer("default", settings)
    built = build_video_set(folder, analyzer, crfs=(45,), seconds=2, soft=23)
    assert [(v.label, v.variant) for v in built.videos] == [
        (0, RECORDED),
        (0, "crf45"),
        (0, SOFT),
        (0, RECORDED),
        (0, "crf45"),
        (0, SOFT),
        (1, RECORDED),
        (1, "crf45"),
        (1, SOFT),
    ]
    assert len(built.crops) == sum(len(v.faces) for v in built.videos) > 0
    save_video_set(built, tmp_path / "set.safetensors")
    video_set = load_video_set(tmp_path / "set.safetensors")
    assert torch.equal(video_set.crops, built.crops) and video_set.videos == built.videos

    rows = score_video_set(video_set, "default", settings)
    for row in rows:
        if row["variant"] == RECORDED:
            report = analyzer.analyze(folder / row["file"])
            assert report.fake_probability is not None
            assert row["probability"] == pytest.approx(report.fake_probability, abs=1e-6)
            assert row["predicted"] == report.label
    coded = [r for r in rows if r["variant"] in ("crf45", SOFT)]
    assert all(r["probability"] is not None for r in coded), [r["reason"] for r in coded]
    # Each face keeps the quantiser the QP limit reads.
    assert all(f.qp is not None for v in video_set.videos for f in v.faces)
    assert video_auc(rows) is not None
    assert video_auc([r for r in rows if r["label"] == 0]) is None


def test_a_model_cut_otherwise_or_a_foreign_file_is_one_line(folder, tmp_path):
    analyzer = Analyzer("default", Settings(frames=8))
    video_set = build_video_set(folder, analyzer, crfs=(), limit=2)
    wider = replace(video_set, policy=replace(video_set.policy, size=224))
    with pytest.raises(FakescopeError, match="crop policy"):
        score_video_set(wider, "default")
    (tmp_path / "other.safetensors").write_text(json.dumps({"not": "a set"}))
    with pytest.raises(FakescopeError, match="not a video set"):
        load_video_set(tmp_path / "other.safetensors")
