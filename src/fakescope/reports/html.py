"""report.html: one self-contained page (every image inline as a data URI, no external asset)
that shows the verdict, each face track over time, the analysed frames, the heat maps of the
chosen frames and all that is needed to reproduce the result."""

from __future__ import annotations

import base64
import io
import json
import shlex
from pathlib import Path

import matplotlib
import numpy as np
from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup, escape
from PIL import Image, ImageDraw

from ..explain.regions import READING as REGIONS_READING
from ..files import write_atomic
from ..provenance import container_lines, summary
from ..report import SCHEMA_VERSION, Report
from ..settings import command_args
from ..types import FaceScore, FakescopeError, Provenance, TrackVerdict
from ..version import __version__
from . import GREEN, INCONCLUSIVE, RED, UNJUDGED, hex_colour, region_table, score_colour

READING = (
    "Warm colours mark the regions that pushed the model toward 'fake'; HiResCAM++ keeps only "
    "what the last layer also marks, at the finer resolution of the layer before."
)
STRIP_WIDTH = 192  # px, analysed-frame thumbnails
FACE_SIZE = 112  # px, track thumbnails

_env = Environment(
    loader=PackageLoader("fakescope.reports", "templates"),
    autoescape=select_autoescape(["html", "j2"]),
)


def write_html(report: Report, out_dir: str | Path) -> Path:
    """Write OUT_DIR/report.html; heat-map images are read from OUT_DIR, frame thumbnails need
    `report.images` (Analyzer.analyze(..., keep_frames=True)) and are left out without them."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # errors="replace": undecodable file names
    return write_atomic(out_dir / "report.html", render_html(report, out_dir), errors="replace")


def render_html(report: Report, out_dir: Path) -> str:
    verdict, threshold = report.verdict, report.verdict.threshold
    faces_by_frame = verdict.faces_by_frame()
    duration = report.media.duration or max((f["timestamp"] for f in report.frames), default=0.0)
    tracks = [
        {
            "id": t.track_id,
            "probability": t.probability,
            "unjudged": t.unjudged,
            "colour": UNJUDGED
            if t.probability is None
            else hex_colour(score_colour(t.probability, threshold)),
            "faces": len(t.faces),
            "judged": sum(f.unjudged is None for f in t.faces),
            "thumbnail": _face_thumbnail(report, t),
            "timeline": timeline_svg(t, threshold, verdict.real_below, duration)
            if report.media.kind == "video"
            else None,
        }
        for t in verdict.tracks
    ]
    frames = [
        {
            **f,
            "thumbnail": _frame_thumbnail(
                report.images[f["index"]], faces_by_frame.get(f["index"], []), threshold
            )
            if f["index"] in report.images
            else None,
            "score": max((face.score for face in faces_by_frame.get(f["index"], [])), default=None),
        }
        for f in report.frames
    ]
    explanations = [
        {
            **e,
            "image": _file_uri(out_dir / e["comparison"]),
            "colour": hex_colour(score_colour(e["face_score"], threshold)),
        }
        for e in report.explanations
    ]
    files = {name: rel for name, rel in report.files.items() if rel != "report.html"}
    if (out_dir / "report.json").exists():
        files = {"report": "report.json", **files}
    header, rows = region_table(report)
    return _env.get_template("report.html.j2").render(
        regions_header=header,
        regions_rows=rows,
        regions_reading=REGIONS_READING,
        evidence=report.evidence,
        report=report,
        version=__version__,
        tracks=tracks,
        frames=frames,
        explanations=explanations,
        verdict_colour=_verdict_colour(report),
        turbo=_turbo_gradient(),
        reading=READING,
        files=files,
        command=reproduce_command(report),
        settings_json=json.dumps(report.settings, indent=2),
        name=Path(report.input).name,
        schema=SCHEMA_VERSION,
        faces=sum(len(t.faces) for t in verdict.tracks),
        provenance=report.provenance,
        provenance_summary=summary(report.provenance),
        provenance_class=_provenance_class(report.provenance),
        container=container_lines(report.provenance),
    )


def _provenance_class(provenance: Provenance) -> str:
    if provenance.declares_ai:
        return "ai"
    if provenance.credentials in ("tampered", "invalid", "unreadable", "not_read"):
        return "tampered"
    return "capture" if provenance.origin == "camera capture" else ""


def reproduce_command(report: Report) -> str:
    """The `fakescope analyze` command that gives this result again: the settings that change a
    result (Settings marks them), the device and the heat-map methods."""
    s = report.settings
    args = [
        "fakescope",
        "analyze",
        report.input,
        "--model",
        report.model.get("config") or report.model["name"],
        *command_args(s),
        "--device",
        s["device"],
    ]
    args += ["--explain", ",".join(s.get("explain") or []) or "none"]
    return " ".join(shlex.quote(str(a)) for a in args)


def timeline_svg(
    track: TrackVerdict,
    threshold: float,
    real_below: float,
    duration: float,
    width: int = 640,
    height: int = 170,
) -> Markup:
    """P(fake) of each face of the track against its timestamp, with the decision's lines; faces
    that are not judged are hollow."""
    left, right, top, bottom = 40, 12, 10, 30
    span = max(duration, max((f.timestamp for f in track.faces), default=0.0), 1e-6)

    def x(t: float) -> float:
        return left + (width - left - right) * t / span

    def y(p: float) -> float:
        return top + (height - top - bottom) * (1 - p)

    parts = [
        (
            f'<svg class="timeline" viewBox="0 0 {width} {height}" role="img" '
            f'aria-label="P(fake) of track {track.track_id} over time">'
        )
    ]
    for p in (0.0, 0.5, 1.0):
        parts.append(
            f'<line x1="{left}" x2="{width - right}" y1="{y(p):.1f}" y2="{y(p):.1f}" class="grid"/>'
            f'<text x="{left - 6}" y="{y(p) + 4:.1f}" text-anchor="end">{p:.1f}</text>'
        )
    for t in (0.0, span / 2, span):
        parts.append(
            f'<text x="{x(t):.1f}" y="{height - 12}" text-anchor="middle">{t:.1f} s</text>'
        )
    lines = [(threshold, f"fake at ≥ {threshold:.3f}", -4)]
    if real_below < threshold:
        lines.append((real_below, f"real below {real_below:.3f}", 12))
    for value, text, offset in lines:  # labels sit in the band or above it, clear of most points
        parts.append(
            f'<line x1="{left}" x2="{width - right}" y1="{y(value):.1f}" y2="{y(value):.1f}" '
            'class="threshold"/>'
            f'<text x="{width - right}" y="{y(value) + offset:.1f}" text-anchor="end" '
            'class="threshold-label">'
            f"{text}</text>"
        )
    points = " ".join(f"{x(f.timestamp):.1f},{y(f.score):.1f}" for f in track.faces)
    parts.append(f'<polyline points="{points}" class="score"/>')
    for f in track.faces:
        colour = hex_colour(score_colour(f.score, threshold))
        paint = (
            f'fill="{colour}"'
            if f.unjudged is None
            else f'fill="white" stroke="{colour}" stroke-width="1.5"'
        )
        note = "" if f.unjudged is None else f", not judged: {f.unjudged}"
        parts.append(
            f'<circle cx="{x(f.timestamp):.1f}" cy="{y(f.score):.1f}" r="4" {paint}>'
            f"<title>t={f.timestamp:.2f} s, "
            f"frame {f.frame_index}: p(fake)={f.score:.3f}{escape(note)}</title></circle>"
        )
    parts.append("</svg>")
    return Markup("".join(parts))


def _verdict_colour(report: Report) -> str:
    """By the answer, not the score: with two thresholds a score's shade would not tell it."""
    return {"no_face": "#6b7280", "inconclusive": INCONCLUSIVE, "real": hex_colour(GREEN)}.get(
        report.label, hex_colour(RED)
    )


def _turbo_gradient() -> str:
    """The heat maps' colour map (explain.overlay uses turbo) as a CSS gradient, low to high."""
    stops = matplotlib.colormaps["turbo"](np.linspace(0, 1, 11))[:, :3] * 255
    return (
        "linear-gradient(to right, "
        + ", ".join(hex_colour((int(red), int(green), int(blue))) for red, green, blue in stops)
        + ")"
    )


def _data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _jpeg_uri(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=82)
    return _data_uri(buffer.getvalue(), "image/jpeg")


def _file_uri(path: Path) -> str:
    if not path.is_file():
        raise FakescopeError(f"{path}: heat-map image listed in the report is missing")
    return _data_uri(path.read_bytes(), "image/png")


def _frame_thumbnail(image: np.ndarray, faces: list[FaceScore], threshold: float) -> str:
    scale = STRIP_WIDTH / image.shape[1]
    thumb = Image.fromarray(image).resize(
        (STRIP_WIDTH, max(1, round(image.shape[0] * scale))), Image.Resampling.BILINEAR
    )
    draw = ImageDraw.Draw(thumb)
    for face in faces:
        draw.rectangle(
            [v * scale for v in face.box], outline=score_colour(face.score, threshold), width=2
        )
    return _jpeg_uri(thumb)


def _face_thumbnail(report: Report, track: TrackVerdict) -> str | None:
    """The track's most suspicious face, with a margin around its box."""
    face = max(track.faces, key=lambda f: f.score)
    if face.frame_index not in report.images:
        return None
    image = report.images[face.frame_index]
    x1, y1, x2, y2 = face.box
    cx, cy, half = (
        (x1 + x2) / 2,
        (y1 + y2) / 2,
        0.7 * max(x2 - x1, y2 - y1),
    )  # square, so no distortion
    region = image[max(0, int(cy - half)) : int(cy + half), max(0, int(cx - half)) : int(cx + half)]
    if region.size == 0:
        return None
    return _jpeg_uri(
        Image.fromarray(region).resize((FACE_SIZE, FACE_SIZE), Image.Resampling.BILINEAR)
    )
