"""Forms of a Report people look at: a self-contained HTML page (`html`) and an overlay video
(`video`). The JSON form stays with the Report itself (`fakescope.report`)."""

from __future__ import annotations

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
    return tuple(round(a + (b - a) * t) for a, b in zip(low, high))


def hex_colour(rgb: tuple[int, int, int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb)
