"""report.html (self-contained), the overlay video and `analyze --format/--overlay-video`."""

from __future__ import annotations

import base64
import io
import json
import re

import numpy as np
import pytest
from markupsafe import escape
from PIL import Image
from typer.testing import CliRunner

from fakescope.cli import app
from fakescope.encode import write_video
from fakescope.explain.regions import READING as REGIONS_READING
from fakescope.explain.regions import REGIONS
from fakescope.media import probe
from fakescope.pipeline import Analyzer, Settings
from fakescope.reports import score_colour
from fakescope.reports.html import READING, write_html

DATA_URI = re.compile(r'src="data:(image/(?:png|jpeg));base64,([A-Za-z0-9+/=]+)"')
# Any reference to another host: src/href/url() with a scheme or a protocol-relative //.
EXTERNAL = re.compile(
    r"""(?:src|href)\s*=\s*["']?\s*(?:[a-z]+:)?//|url\(\s*["']?\s*(?:[a-z]+:)?//""", re.IGNORECASE
)


@pytest.fixture(scope="module")
def analyzer(random_model):
    # The 360p clip's face is about 40 px: judged only below the default 48 px floor.
    return Analyzer(random_model, Settings(frames=4, min_face=24))


def test_html_is_self_contained_with_verdict_and_images(analyzer, small_video, tmp_path):
    report = analyzer.analyze(small_video, tmp_path, ["hirescam++"], keep_frames=True)
    report.write_json(tmp_path / "report.json")
    html = write_html(report, tmp_path).read_text()
    assert not EXTERNAL.search(html), EXTERNAL.search(html)
    assert report.label.upper() in html and f"{report.fake_probability:.3f}" in html
    assert f"{report.verdict.threshold:.2f}" in html and escape(READING) in html
    assert escape(report.verdict.reason) in html
    images = DATA_URI.findall(html)
    kinds = [kind for kind, _ in images]
    # One thumbnail per analysed frame and per track, one comparison per chosen frame.
    assert kinds.count("image/jpeg") == len(report.frames) + len(report.verdict.tracks)
    assert kinds.count("image/png") == len(report.explanations) == len(report.verdict.chosen_frames)
    for _, data in images:
        Image.open(io.BytesIO(base64.b64decode(data))).verify()
    assert html.count('<svg class="timeline"') == len(report.verdict.tracks)
    assert report.model["members"][0]["sha256"] in html and "fakescope analyze" in html
    assert 'href="report.json"' in html
    # Evidence per face region: the sentences and one table row per region.
    assert all(escape(e["evidence"]) in html for e in report.explanations)
    assert escape(report.evidence[0]["evidence"]) in html
    assert html.count("<tr><td>") >= len(REGIONS) and "<td>outside the face</td>" in html
    assert escape(REGIONS_READING) in html  # how to read them: where the model looked


def test_html_without_frames_or_heat_maps(analyzer, small_video, tmp_path):
    report = analyzer.analyze(small_video)
    html = write_html(report, tmp_path).read_text()
    assert "data:image" not in html and "--explain hirescam++" in html
    assert report.label.upper() in html


def test_no_face_report(analyzer, tmp_path):
    blank = write_video(tmp_path / "blank.mp4", [np.full((120, 160, 3), 90, np.uint8)] * 10, 10)
    report = analyzer.analyze(blank, tmp_path, ["hirescam++"], keep_frames=True)
    assert report.label == "no_face"
    html = write_html(report, tmp_path).read_text()
    assert "NO FACE" in html and not EXTERNAL.search(html)
    from fakescope.reports.pdf import write_pdf

    pdf = write_pdf(report, tmp_path).read_bytes()
    assert pdf.startswith(b"%PDF-") and pdf.count(b"/Type /Page\n") == 1


def test_inconclusive_report_says_why_and_shows_unjudged_tracks(
    random_model, small_video, tmp_path
):
    report = Analyzer(random_model, Settings(frames=4)).analyze(
        small_video, keep_frames=True
    )  # a 40 px face
    assert report.label == "inconclusive" and report.fake_probability is None
    html = write_html(report, tmp_path).read_text()
    assert (
        "INCONCLUSIVE" in html
        and "no face can be judged" in html
        and "not judged</b>: every face too small" in html
    )
    assert "#4b5b8f" in html  # the inconclusive colour, off the green-red scale
    assert "INCONCLUSIVE" in report.summary().upper() and "p(fake)" not in report.summary()


def test_score_colours_run_green_yellow_red():
    assert score_colour(0.0) == (26, 152, 80) and score_colour(1.0) == (215, 48, 39)
    assert score_colour(0.8, threshold=0.8) == score_colour(0.5) == (240, 200, 40)


def test_cli_formats_and_overlay_video(random_model, small_video, tmp_path):
    runner = CliRunner()
    args = [
        "analyze",
        str(small_video),
        "--model",
        str(random_model),
        "--frames",
        "4",
        "--explain",
        "hirescam++",
    ]
    result = runner.invoke(app, [*args, "--out", str(tmp_path / "all"), "--overlay-video"])
    assert result.exit_code == 0, result.output
    assert (
        result.output.splitlines()[1].strip().endswith(".") and "evidence" in result.output
    )  # regions
    folder = tmp_path / "all" / small_video.stem
    report = json.loads((folder / "report.json").read_text())
    assert report["files"] == {
        "overlay_video": "overlay.mp4",
        "html": "report.html",
        "pdf": "report.pdf",
    }
    assert (folder / "report.html").is_file()
    check_pdf(folder / "report.pdf", report, tmp_path / "pages")
    info = probe(folder / "overlay.mp4")
    assert (info.kind, info.codec, info.width, info.height, info.frame_count) == (
        "video",
        "h264",
        640,
        360,
        4,
    )

    result = runner.invoke(app, [*args, "--out", str(tmp_path / "json"), "--format", "json"])
    assert result.exit_code == 0, result.output
    folder = tmp_path / "json" / small_video.stem
    report = json.loads((folder / "report.json").read_text())
    # One overlay per method and one comparison per chosen frame, nothing else. (Here 2 chosen
    # frames: sampled 0.5 s apart, this 40 px face moves more than its size between the 2nd
    # and 3rd frames, and the tracker makes two tracks of two faces.)
    assert report["chosen_frames"]
    pngs = [
        name
        for e in report["explanations"]
        for name in (e["overlays"]["hirescam++"], e["comparison"])
    ]
    assert sorted(p.name for p in folder.iterdir()) == sorted(["report.json", *pngs])
    assert len(set(pngs)) == 2 * len(report["chosen_frames"])
    result = runner.invoke(app, [*args, "--out", str(tmp_path / "pdf"), "--format", "pdf"])
    assert result.exit_code == 0, result.output
    assert {p.suffix for p in (tmp_path / "pdf" / small_video.stem).iterdir()} == {".pdf", ".png"}
    assert runner.invoke(app, [*args, "--format", "docx"]).exit_code == 2


def check_pdf(path, report: dict, pages_dir) -> None:
    """Render every page with poppler's pdftoppm: the right count, none blank, the verdict's
    colour on page 1, and the heat maps and timeline embedded as images."""
    import math
    import shutil
    import subprocess

    from fakescope.reports.pdf import LABEL_COLOURS, STRIPS_PER_PAGE

    assert path.read_bytes().startswith(b"%PDF-")
    if shutil.which("pdftoppm") is None:
        pytest.skip("pdftoppm (poppler-utils) is not installed")
    pages_dir.mkdir()
    subprocess.run(["pdftoppm", "-r", "40", "-png", str(path), str(pages_dir / "page")], check=True)
    pages = sorted(pages_dir.glob("page-*.png"))
    assert (
        len(pages) == 1 + math.ceil(len(report["explanations"]) / STRIPS_PER_PAGE) + 1
    )  # + regions
    for page in pages:
        assert np.asarray(Image.open(page).convert("L")).std() > 5, page.name
    first = np.asarray(Image.open(pages[0]).convert("RGB")).reshape(-1, 3).astype(int)
    colour = np.array(LABEL_COLOURS[report["label"]])
    assert (np.abs(first - colour).sum(1) < 30).sum() > 500  # the verdict box
    listed = subprocess.run(
        ["pdfimages", "-list", str(path)], capture_output=True, text=True, check=True
    )
    images = len(listed.stdout.splitlines()) - 2  # two header lines
    assert images >= len(report["explanations"]) + len(report["tracks"])


def test_overlay_video_shows_the_reports_verdict(random_model, small_video, tmp_path, monkeypatch):
    from fakescope.reports import video

    drawn: list[str] = []
    real_text = video._text
    monkeypatch.setattr(
        video,
        "_text",
        lambda image, text, *rest: drawn.append(text) or real_text(image, text, *rest),
    )
    report = Analyzer(random_model, Settings(frames=4)).analyze(small_video, overlay=True)
    saved = report.save(tmp_path, ["json", "overlay_video"])
    written = json.loads((tmp_path / "report.json").read_text())
    faces = [f for t in written["tracks"] for f in t["faces"]]
    assert any(f["unjudged"] for f in faces)  # the 40 px face is too small to judge
    probability = written["fake_probability"]
    shown = written["label"] + ("" if probability is None else f" P(fake) {probability:.3f}")
    lines = [t for t in drawn if " s  " in t]  # "<time> s  <verdict>", once per frame
    assert len(lines) == len(written["frames_analysed"]) == 4
    assert all(line.split(" s  ", 1)[1] == shown for line in lines)
    assert saved.files["overlay_video"] == "overlay.mp4" and (tmp_path / "overlay.mp4").is_file()
