"""Forms of a Report people look at: a self-contained HTML page (`html`), a PDF (`pdf`) and an
overlay video (`video`). The JSON form stays with the Report itself (`fakescope.report`)."""

from __future__ import annotations

from ..explain.regions import REGIONS
from ..report import Report

# Score colours shared by the HTML report, the overlay video and the web page (static/app.js):
# green at 0, yellow at the decision threshold, red at 1.
GREEN, YELLOW, RED = (26, 152, 80), (240, 200, 40), (215, 48, 39)
INCONCLUSIVE = "#4b5b8f"  # the model cannot tell: a colour off the green-red scale
UNJUDGED = "#9ca3af"  # a track or face too small, blurred or brief to judge


def score_colour(score: float, threshold: float = 0.5) -> tuple[int, int, int]:
    """RGB for a P(fake): green below the threshold shading through yellow (at it) to red."""
    if score < threshold:
        low, high, t = GREEN, YELLOW, score / threshold
    else:
        low, high, t = YELLOW, RED, (score - threshold) / (1 - threshold)
    t = min(max(t, 0.0), 1.0)
    red, green, blue = (round(a + (b - a) * t) for a, b in zip(low, high))
    return red, green, blue


def hex_colour(rgb: tuple[int, int, int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def region_table(report: Report) -> tuple[list[str], list[list[str]]]:
    """Evidence per face region as (header, rows of percentages): one column per chosen frame
    (its most suspicious face), then one per track; empty when no heat map was made."""
    columns = [
        (f"{e['timestamp']:.2f} s", e["regions"]) for e in report.explanations if e.get("regions")
    ]
    columns += [
        (f"track {track_id}", e["regions"])
        for track_id, e in sorted(report.evidence.items())
        if e["regions"]
    ]
    if not columns:
        return [], []
    header = ["region", *(name for name, _ in columns)]
    rows = [
        [region, *(f"{100 * shares[region]:.0f}%" for _, shares in columns)] for region in REGIONS
    ]
    return header, rows
