"""The report of one analysis, and its versioned JSON form (documented in docs/report-schema.md)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from .files import write_atomic
from .provenance import summary
from .types import MediaInfo, Provenance, SettingError, Verdict
from .version import __version__

# 1.1: inconclusive label, reason, judged faces and tracks; 1.2: frames_requested, warnings,
# media.scale, evidence per face region; 1.3: qp and unjudged per face; 1.4: provenance (the
# file's C2PA content credentials and container facts); 1.5: the model's temperature; 1.6:
# per member `explained` (whether its maps make the heat maps); 1.7: the model's temperature
# `bias`
SCHEMA_VERSION = "1.7"
# The files Report.save writes, by format; "overlay_video" needs analyze(..., overlay=True).
FILES = {
    "json": "report.json",
    "html": "report.html",
    "pdf": "report.pdf",
    "overlay_video": "overlay.mp4",
}
FORMATS = ("json", "html", "pdf")  # the report's forms; the overlay video is asked apart


def check_formats(formats: Iterable[str]) -> list[str]:
    """Formats Report.save knows, in the order given, once each."""
    chosen = list(dict.fromkeys(f.strip() for f in formats))
    unknown = [f for f in chosen if f not in FILES]
    if unknown or not chosen:
        raise SettingError(
            f"unknown format {', '.join(unknown) or repr('')}; use {', '.join(FILES)} or all",
            "format",
        )
    return chosen


def provenance_dict(provenance: Provenance) -> dict:
    """The report's `provenance` block: every field, the one-line summary, and whether there
    are credentials to show and whether they validly declare generative AI."""
    return {
        "summary": summary(provenance),
        "has_credentials": provenance.has_credentials,
        "declares_ai": provenance.declares_ai,
        **asdict(provenance),
    }


@dataclass(frozen=True)
class Report:
    """Built once by the pipeline; a later stage that adds to it (heat maps, the files written,
    the names shown) makes a new one with dataclasses.replace."""

    input: str
    media: MediaInfo
    verdict: Verdict
    model: dict
    frames: list[dict]  # every analysed frame: index, timestamp, faces found
    settings: dict
    timings: dict[str, float]
    explanations: list[dict] = field(default_factory=list)  # heat-map images per chosen frame
    # Per track id with a face in the chosen frames: evidence per face region (explain.stage).
    evidence: dict[int, dict] = field(default_factory=dict)
    files: dict[str, str] = field(
        default_factory=dict
    )  # other outputs, relative to the report's folder
    # What the file declares about its origin; never changes the verdict's label.
    provenance: Provenance = field(default_factory=lambda: Provenance("none"))
    frames_requested: int = 0  # frames the sampling asked for; `frames` holds those decoded
    warnings: list[str] = field(default_factory=list)  # one line each, e.g. a truncated file
    # The analysed frames' pixels by frame index, kept only when asked for (keep_frames);
    # never serialised.
    images: dict[int, np.ndarray] = field(default_factory=dict, repr=False, compare=False)
    # The overlay video's heat map per frame index (analyze(..., overlay=True)); not serialised.
    maps: dict[int, np.ndarray] = field(default_factory=dict, repr=False, compare=False)

    @property
    def fake_probability(self) -> float | None:
        return self.verdict.probability

    @property
    def label(self) -> str:
        return self.verdict.label

    def summary(self) -> str:
        faces = sum(len(t.faces) for t in self.verdict.tracks)
        if self.label == "no_face":
            return f"{self.input}: no face found in {len(self.frames)} frames"
        probability = (
            "" if self.fake_probability is None else f" p(fake)={self.fake_probability:.3f}"
        )
        return (
            f"{self.input}: {self.label.upper()}{probability} "
            f"({len(self.verdict.tracks)} track(s), {faces} faces, {len(self.frames)} frames): "
            f"{self.verdict.reason}"
        )

    def to_dict(self) -> dict:
        verdict = self.verdict
        return {
            "schema_version": SCHEMA_VERSION,
            "fakescope_version": __version__,
            "input": self.input,
            "kind": self.media.kind,
            "media": asdict(self.media),
            "fake_probability": verdict.probability,
            "label": verdict.label,
            "reason": verdict.reason,
            "threshold": verdict.threshold,
            "real_below": verdict.real_below,
            "deciding_track": verdict.deciding_track,
            "strategy": verdict.strategy,
            "provenance": provenance_dict(self.provenance),
            "model": self.model,
            "frames_requested": self.frames_requested,
            "frames_analysed": self.frames,
            "warnings": self.warnings,
            "tracks": [
                {
                    "track_id": track.track_id,
                    "probability": track.probability,
                    "unjudged": track.unjudged,
                    "faces": [
                        {
                            "frame_index": f.frame_index,
                            "timestamp": f.timestamp,
                            "box": list(f.box),
                            "detector_score": f.detector_score,
                            "member_scores": f.member_scores,
                            "score": f.score,
                            "size": f.size,
                            "sharpness": f.sharpness,
                            "qp": f.qp,
                            "unjudged": f.unjudged,
                            "landmarks": None
                            if f.landmarks is None
                            else np.asarray(f.landmarks).tolist(),
                        }
                        for f in track.faces
                    ],
                    "evidence": self.evidence.get(track.track_id),
                }
                for track in verdict.tracks
            ],
            "chosen_frames": verdict.chosen_frames,
            "explanations": self.explanations,
            "files": self.files,
            "settings": self.settings,
            "timings": self.timings,
        }

    def write_json(self, path: str | Path) -> Path:
        """Write atomically, so an interrupted run never leaves a half-written report."""
        return write_atomic(path, json.dumps(self.to_dict(), indent=2))

    def save(self, folder: str | Path, formats: Iterable[str] = FORMATS) -> Report:
        """Write the report in each format into `folder` (names in FILES): the one writer of
        every output form. Returns the report with those files listed, as report.json
        lists them."""
        from .reports.html import write_html
        from .reports.pdf import write_pdf
        from .reports.video import write_overlay_video

        folder, chosen = Path(folder), check_formats(formats)
        folder.mkdir(parents=True, exist_ok=True)
        saved = replace(self, files={**self.files, **{f: FILES[f] for f in chosen if f != "json"}})
        # The overlay first: the slowest, and the one that can still fail on its inputs.
        if "overlay_video" in chosen:
            write_overlay_video(saved, folder / FILES["overlay_video"])
        if "json" in chosen:
            saved.write_json(folder / FILES["json"])
        if "html" in chosen:
            write_html(saved, folder)
        if "pdf" in chosen:
            write_pdf(saved, folder)
        return saved

    def named(self, name: str) -> Report:
        """The report as shown to others: the input called `name`, the model config by its
        file name, no local paths."""
        return replace(
            self,
            input=name,
            media=replace(self.media, path=name),
            model={**self.model, "config": Path(self.model["config"]).name},
        )
