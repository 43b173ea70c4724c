"""report.pdf: the verdict, a P(fake) timeline and a row per track, the heat-map gallery and
the evidence per face region, made with fpdf2. Page 1 holds the verdict, timelines and
tracks; then up to three heat-map strips per page; then the region table."""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from fpdf import FPDF

from ..explain.regions import READING as REGIONS_READING
from ..files import atomic_path
from ..provenance import container_lines, summary
from ..report import Report
from ..types import Provenance, TrackVerdict
from ..version import __version__
from . import GREEN, RED, region_table, score_colour

STRIPS_PER_PAGE = 3
WIDTH = 180  # mm of text width on A4 with 15 mm margins
LABEL_COLOURS = {
    "fake": RED,
    "real": GREEN,
    "inconclusive": (75, 91, 143),
    "no_face": (107, 114, 128),
}


def _text(value: object) -> str:
    """The core PDF fonts cover Latin-1 only: anything else (e.g. in a file name) becomes '?'."""
    return (
        str(value)
        .replace("≥", ">=")
        .replace("·", "-")
        .encode("latin-1", "replace")
        .decode("latin-1")
    )


def _timeline_png(
    track: TrackVerdict, threshold: float, real_below: float, duration: float
) -> io.BytesIO:
    fig, ax = plt.subplots(figsize=(7.2, 1.7), dpi=110)
    for f in track.faces:
        red, green, blue = score_colour(f.score, threshold)
        colour = (red / 255, green / 255, blue / 255)
        ax.scatter(
            f.timestamp,
            f.score,
            s=16,
            color=colour if f.unjudged is None else "white",
            edgecolors=colour,
            linewidths=1.2,
            zorder=3,
        )
    ax.axhline(threshold, color="#444", linestyle="--", linewidth=0.8)
    if real_below < threshold:
        ax.axhline(real_below, color="#888", linestyle=":", linewidth=0.8)
    ax.set_xlim(0, max(duration, max((f.timestamp for f in track.faces), default=0), 1e-6))
    ax.set_ylim(0, 1)
    ax.set_xlabel("seconds", fontsize=7)
    ax.set_ylabel("P(fake)", fontsize=7)
    ax.tick_params(labelsize=7)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    buffer.seek(0)
    return buffer


def render_pdf(report: Report, out_dir: Path) -> bytes:
    verdict = report.verdict
    pdf = FPDF(format="A4")
    pdf.set_auto_page_break(True, margin=15)
    pdf.set_margins(15, 15, 15)
    pdf.set_title(_text(f"fakescope report: {Path(report.input).name}"))
    pdf.set_creator(f"fakescope {__version__}")
    pdf.add_page()
    pdf.set_font("Helvetica", "B", 16)
    pdf.cell(
        WIDTH,
        9,
        _text(f"fakescope report: {Path(report.input).name}"),
        new_x="LMARGIN",
        new_y="NEXT",
    )
    pdf.set_font("Helvetica", "", 9)
    faces = sum(len(t.faces) for t in verdict.tracks)
    pdf.cell(
        WIDTH,
        5,
        _text(
            f"{report.media.kind}, {len(report.frames)} frame(s) analysed, {faces} face(s) "
            f"in {len(verdict.tracks)} track(s); model {report.model['name']}; "
            f"fakescope {__version__}"
        ),
        new_x="LMARGIN",
        new_y="NEXT",
    )
    pdf.ln(3)
    pdf.set_fill_color(*LABEL_COLOURS.get(verdict.label, RED))
    pdf.set_text_color(255, 255, 255)
    pdf.set_font("Helvetica", "B", 20)
    probability = "" if verdict.probability is None else f"   P(fake) {verdict.probability:.3f}"
    pdf.cell(
        WIDTH,
        14,
        _text(f" {verdict.label.replace('_', ' ').upper()}{probability}"),
        fill=True,
        new_x="LMARGIN",
        new_y="NEXT",
    )
    pdf.set_text_color(0, 0, 0)
    pdf.set_fill_color(235, 238, 242)  # table headings from here on
    pdf.set_font("Helvetica", "", 9)
    pdf.multi_cell(
        WIDTH,
        5,
        _text(
            f"fake at >= {verdict.threshold:.3f}, real below {verdict.real_below:.3f} "
            f"({verdict.strategy} strategy). Why: {verdict.reason}."
        ),
        new_x="LMARGIN",
        new_y="NEXT",
    )
    deciding = (
        report.evidence.get(verdict.deciding_track) if verdict.deciding_track is not None else None
    )
    if deciding:
        pdf.set_font("Helvetica", "I", 10)
        pdf.multi_cell(
            WIDTH, 5, _text(f"Where: {deciding['evidence']}"), new_x="LMARGIN", new_y="NEXT"
        )
    _provenance(pdf, report.provenance)
    pdf.ln(2)
    _tracks(pdf, report)
    if report.explanations:
        _gallery(pdf, report, out_dir)
        header, rows = region_table(report)
        if rows:
            _regions(pdf, header, rows)
    return bytes(pdf.output())


def _provenance(pdf: FPDF, provenance: Provenance) -> None:
    """The content-credentials panel under the verdict: one line when there are none, a
    shaded box (red when they declare generative AI) when there are."""
    facts = container_lines(provenance)
    container = f" The file states: {'; '.join(facts)}." if facts else ""
    if not provenance.has_credentials:
        pdf.set_font("Helvetica", "", 8)
        pdf.set_text_color(89, 99, 110)
        pdf.multi_cell(
            WIDTH,
            4.5,
            _text(f"Provenance: {summary(provenance)}.{container}"),
            new_x="LMARGIN",
            new_y="NEXT",
        )
        pdf.set_text_color(0, 0, 0)
        return
    pdf.ln(1)
    pdf.set_fill_color(*((253, 236, 234) if provenance.declares_ai else (246, 248, 250)))
    title = (
        "Content credentials declare generative AI"
        if provenance.declares_ai
        else "Content credentials (C2PA)"
    )
    pdf.set_font("Helvetica", "B", 10)
    pdf.cell(WIDTH, 6, _text(title), fill=True, new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", "", 9)
    ingredients = ", ".join(f"{i['title']} ({i['relationship']})" for i in provenance.ingredients)
    lines = [
        f"{summary(provenance)}.",
        f"Claim generator: {provenance.claim_generator}." if provenance.claim_generator else "",
        f"Ingredients: {ingredients}." if ingredients else "",
        container.strip(),
        "A signature proves who signed the file, not that its content is true; the verdict "
        "above is the model's own.",
    ]
    pdf.multi_cell(
        WIDTH, 4.5, _text(" ".join(x for x in lines if x)), fill=True, new_x="LMARGIN", new_y="NEXT"
    )
    pdf.set_fill_color(235, 238, 242)  # back to the table headings' shade


def _heading(pdf: FPDF, text: str) -> None:
    pdf.set_font("Helvetica", "B", 12)
    pdf.cell(WIDTH, 8, _text(text), new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", "", 9)


def _tracks(pdf: FPDF, report: Report) -> None:
    verdict = report.verdict
    if not verdict.tracks:
        _heading(pdf, "No face found")
        return
    _heading(pdf, "Tracks (one per person)")
    duration = report.media.duration or max((f["timestamp"] for f in report.frames), default=0.0)
    with pdf.table(col_widths=(14, 20, 20, 126), text_align="LEFT", line_height=5) as table:
        table.row(["track", "P(fake)", "faces", "judged / where the evidence is"])
        for t in verdict.tracks:
            judged = sum(f.unjudged is None for f in t.faces)
            evidence = report.evidence.get(t.track_id)
            note = f"not judged: {t.unjudged}" if t.probability is None else f"{judged} judged"
            if evidence:
                note += f". {evidence['evidence']}"
            probability = "-" if t.probability is None else f"{t.probability:.3f}"
            table.row([str(t.track_id), probability, str(len(t.faces)), _text(note)])
    if report.media.kind == "video":
        for t in verdict.tracks[:3]:  # the rest are in report.json and report.html
            pdf.ln(2)
            pdf.cell(
                WIDTH,
                5,
                _text(f"Track {t.track_id}: P(fake) per face over time (dashed: fake at or above)"),
                new_x="LMARGIN",
                new_y="NEXT",
            )
            pdf.image(_timeline_png(t, verdict.threshold, verdict.real_below, duration), w=WIDTH)


def _gallery(pdf: FPDF, report: Report, out_dir: Path) -> None:
    for i, e in enumerate(report.explanations):
        if i % STRIPS_PER_PAGE == 0:
            pdf.add_page()
            _heading(pdf, "Heat maps: face | GradCAM N | GradCAM N-1 | HiResCAM | HiResCAM++")
            pdf.multi_cell(
                WIDTH,
                4.5,
                "Warm colours mark what pushed the model toward 'fake'.",
                new_x="LMARGIN",
                new_y="NEXT",
            )
        pdf.image(str(out_dir / e["comparison"]), w=WIDTH)
        caption = (
            f"{e['timestamp']:.2f} s, frame {e['frame_index']}, face P(fake) {e['face_score']:.3f}"
        )
        if e.get("evidence"):
            caption += f". {e['evidence']}"
        pdf.multi_cell(WIDTH, 4.5, _text(caption), new_x="LMARGIN", new_y="NEXT")
        pdf.ln(3)


def _regions(pdf: FPDF, header: list[str], rows: list[list[str]]) -> None:
    pdf.add_page()
    _heading(pdf, "Evidence per face region (share of HiResCAM++'s positive heat)")
    pdf.multi_cell(
        WIDTH,
        4.5,
        _text(
            "Per chosen frame (its most suspicious face) and per track over its faces in "
            "those frames; left and right as seen in the picture; each column sums to 100%. "
            + REGIONS_READING
        ),
        new_x="LMARGIN",
        new_y="NEXT",
    )
    pdf.ln(2)
    first = 34
    rest = (WIDTH - first) / max(1, len(header) - 1)
    with pdf.table(
        col_widths=(first, *([rest] * (len(header) - 1))),
        line_height=5,
        text_align=("LEFT", *(["RIGHT"] * (len(header) - 1))),
    ) as table:
        for row in [header, *rows]:
            table.row([_text(c) for c in row])


def write_pdf(report: Report, out_dir: str | Path) -> Path:
    """Write `report.pdf` in out_dir atomically; heat-map images are read from out_dir."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "report.pdf"
    with atomic_path(path) as tmp:
        tmp.write_bytes(render_pdf(report, out_dir))
    return path
