"""Batch scoring of many files: one JSON line per input; a bad input is an error row, never a stop."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

from .media import read_image
from .types import FakescopeError, NoFaceError


def iter_inputs(paths: Iterable[Path]) -> Iterator[Path]:
    """Files given, and files under folders given (sorted; symlinked folders are not followed, so loops end)."""
    for path in paths:
        if path.is_dir():
            for root, dirs, files in os.walk(path, followlinks=False):
                dirs.sort()
                for name in sorted(files):
                    if not name.startswith("."):
                        yield Path(root) / name
        else:
            yield path


@dataclass
class ScanSummary:
    scored: int = 0
    failed: int = 0
    out: str = ""

    def line(self) -> str:
        return f"scanned {self.scored + self.failed} inputs: {self.scored} scored, {self.failed} errors -> {self.out}"


def _error_row(path: Path, error: BaseException) -> dict:
    message = str(error) if isinstance(error, FakescopeError) else f"unexpected {type(error).__name__}: {error}"
    return {"path": str(path), "fake_probability": None, "label": "error" if not isinstance(error, NoFaceError) else "no_face",
            "faces": 0, "error": message}


def _batched(items: Iterable, size: int) -> Iterator[list]:
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def scan_rows(analyzer, paths: Iterable[Path], crops: bool = False) -> Iterator[dict]:
    inputs = iter_inputs(paths)
    if crops:
        for batch in _batched(inputs, analyzer.settings.batch_size):
            images, good = [], []
            for path in batch:
                try:
                    images.append(read_image(path, analyzer.limits))
                    good.append(path)
                except Exception as error:  # noqa: BLE001 - one bad file must not stop the batch
                    yield _error_row(path, error)
            if good:
                _, scores = analyzer.score_crops(images)
                for path, score in zip(good, scores):
                    yield {"path": str(path), "fake_probability": float(score),
                           "label": "fake" if score >= analyzer.settings.threshold else "real", "faces": 1, "error": None}
        return
    for path in inputs:
        try:
            report = analyzer.analyze(path)
        except Exception as error:  # noqa: BLE001
            yield _error_row(path, error)
            continue
        if report.label == "no_face":
            yield _error_row(path, NoFaceError("no face found"))
            continue
        faces = sum(len(t.faces) for t in report.verdict.tracks)
        yield {"path": str(path), "fake_probability": report.fake_probability, "label": report.label, "faces": faces, "error": None}


def run_scan(analyzer, paths: Iterable[Path], out_file: Path, crops: bool = False) -> ScanSummary:
    summary = ScanSummary(out=str(out_file))
    out_file.parent.mkdir(parents=True, exist_ok=True)
    with open(out_file, "a") as handle:
        for row in scan_rows(analyzer, paths, crops):
            handle.write(json.dumps(row) + "\n")
            handle.flush()
            if row["error"]:
                summary.failed += 1
            else:
                summary.scored += 1
    return summary
