"""Full-frame videos the model never saw (ffpp-dev): who may decide a verdict, and the video
evaluation."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from fakescope.cli import app
from fakescope.evaluate import read_rows
from fakescope.pipeline import Analyzer, Settings

runner = CliRunner()
pytestmark = pytest.mark.slow


def test_background_faces_on_a_studio_wall_cannot_decide(shared_data):
    """ffpp_yt_c23_033: a real presenter (about 60 px) before a video wall of 15-41 px faces.
    Before judging, a 24 px wall face decided the video (FAKE 0.628)."""
    report = Analyzer(settings=Settings()).analyze(
        shared_data / "ffpp-dev" / "real" / "ffpp_yt_c23_033.mp4"
    )
    sizes = {t.track_id: float(np.median([f.size for f in t.faces])) for t in report.verdict.tracks}
    presenter = max(report.verdict.tracks, key=lambda t: len(t.faces))
    assert len(report.verdict.tracks) >= 4 and sizes[presenter.track_id] >= 48
    assert report.verdict.deciding_track == presenter.track_id
    for track in report.verdict.tracks:
        if sizes[track.track_id] < 40:
            assert track.probability is None and "too small" in track.unjudged
    assert report.fake_probability == pytest.approx(presenter.probability)
    assert set(report.verdict.chosen_frames) <= {f.frame_index for f in presenter.faces}


def test_evaluate_videos_reports_rates_per_group_and_face_size(shared_data, tmp_path):
    result = runner.invoke(
        app,
        [
            "evaluate",
            str(shared_data / "ffpp-dev"),
            "--limit",
            "4",
            "--frames",
            "8",
            "--out",
            str(tmp_path),
        ],
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    rows = read_rows(tmp_path / "videos.csv")
    assert len(rows) == 4 and {r["label"] for r in rows} == {0, 1}
    assert metrics["group_by"] == "manipulation" and "original(youtube)" in metrics["groups"]
    overall = metrics["overall"]
    reals = [r for r in rows if r["label"] == 0]
    assert overall["false_alarm"]["value"] == pytest.approx(
        np.mean([r["predicted"] == "fake" for r in reals])
    )
    assert (
        overall["false_alarm"]["low"]
        <= overall["false_alarm"]["value"]
        <= overall["false_alarm"]["high"]
    )
    assert sum(m["count"]["real"] + m["count"]["fake"] for m in metrics["sizes"].values()) == 4
    assert "false alarm" in result.output and "inconclusive" in result.output
