"""The GPU path gives the CPU path's results: scores within 1e-4 of each other, for whole
videos (detection, crops and scoring on the card) and for crops. These run only where PyTorch
sees a CUDA GPU (`python -m pytest tests/test_cuda.py` on a GPU box); elsewhere they skip."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest
import torch

from fakescope.pipeline import Analyzer
from fakescope.scan import run_scan
from helpers import astronaut

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _face_scores(report) -> np.ndarray:
    faces = sorted(
        (face for track in report.verdict.tracks for face in track.faces),
        key=lambda face: (face.frame_index, face.box),
    )
    return np.array([[face.score, *face.member_scores.values()] for face in faces])


def test_a_video_scores_the_same_on_the_gpu(example_video):
    cpu = Analyzer(device="cpu").analyze(example_video)
    gpu = Analyzer(device="cuda").analyze(example_video)
    assert gpu.label == cpu.label
    assert _face_scores(gpu).shape == _face_scores(cpu).shape
    assert np.abs(_face_scores(gpu) - _face_scores(cpu)).max() <= 1e-4
    assert abs(gpu.fake_probability - cpu.fake_probability) <= 1e-4


def test_a_crop_scan_scores_the_same_on_the_gpu(tmp_path):
    # Generated crops: a GPU box may not have the shared data beside the project.
    crops, photo = tmp_path / "crops", astronaut()
    crops.mkdir()
    for i in range(80):
        x, y, side = 150 + i % 9 - 4, 40 + i % 7 - 3, 170 + i % 11
        crop = photo.crop((x, y, x + side, y + side)).rotate(i % 13 - 6)
        crop.save(crops / f"{i:03d}.jpg", quality=60 + i % 35)
    scores = {}
    for device in ("cpu", "cuda"):
        db = tmp_path / f"{device}.sqlite"
        run_scan(Analyzer(device=device), [crops], db, crops=True, quiet=True)
        with sqlite3.connect(db) as con:
            scores[device] = dict(con.execute("SELECT path, fake_probability FROM results"))
    assert len(scores["cpu"]) == 80 and scores["cuda"].keys() == scores["cpu"].keys()
    assert max(abs(scores["cuda"][p] - scores["cpu"][p]) for p in scores["cpu"]) <= 1e-4


def test_training_batches_are_made_on_the_card():
    from fakescope.training.batches import TrainingBatches
    from fakescope.training.pack import CropSet

    eyes_nose_mouth = [[0.35, 0.4], [0.65, 0.4], [0.5, 0.55], [0.38, 0.7], [0.62, 0.7]]
    crops = CropSet(
        torch.randint(0, 256, (64, 3, 64, 64), dtype=torch.uint8),
        torch.zeros(64),
        [f"c{i}" for i in range(64)],
        torch.tensor(eyes_nose_mouth).repeat(64, 1, 1),
    )
    batches = TrainingBatches(crops, (0.5,) * 3, (0.5,) * 3, torch.device("cuda"), seed=0)
    assert batches.crops.images.is_cuda  # gathered on the card, nothing crosses the bus
    images, targets = batches.batch([(i, i % 4 == 0) for i in range(32)], step=0)
    assert images.is_cuda and images.shape == (32, 3, 64, 64) and images.dtype == torch.float32
    assert targets.tolist() == [float(i % 4 == 0) for i in range(32)]
