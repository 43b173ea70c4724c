"""Measure a model on a labelled folder (`real/`, `fake/`), as a user would see it.

Face crops (`--crops`): AUC, log loss, accuracy, balanced accuracy and EER with 95%
bootstrap intervals, a ROC curve and a reliability diagram, as the paper and DFDC did.

Videos and images: the whole pipeline (decode, detect, track, judge, decide) per file.
Besides AUC and log loss over the files that got a probability, it reports what the labels
do at the model's decision: the false-alarm rate (reals called fake), the detection rate
(fakes called fake), the miss rate (fakes called real) and the inconclusive rate, with
Wilson 95% intervals; the same per group (a `manifest.csv` column such as `manipulation`)
and per bucket of the main face's size. `videos.csv` keeps one row per file, so that a
decision can be fitted on it (`fakescope calibrate`) without analysing again.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from rich.table import Table
from sklearn.calibration import calibration_curve
from sklearn.metrics import log_loss, roc_auc_score, roc_curve

from .crops import (
    CropPolicy,
    crop_face,
    crop_geometry,
    float_box,
    for_whole_image,
    whole_image_box,
)
from .explain.pairs import align, manipulation_mask, mask_figure
from .explain.render import frame_to_crop
from .explain.xai_eval import LabelledFace
from .files import PNG_LEVEL, write_atomic
from .media import read_frames_at, read_image
from .metrics import EPS, metrics_with_intervals
from .pipeline import Analyzer
from .report import Report
from .training.data import held_out  # the one rule for which clusters train holds out
from .types import Box, Decision, FaceScore, FakescopeError, Provenance, SettingError

SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".mp4", ".mov", ".mkv", ".webm", ".avi"}
SIZE_BUCKETS = ((0, 48), (48, 96), (96, 160), (160, None))  # px, the main face's shorter side
ANSWERS = ("fake", "real", "inconclusive", "no_face", "error")


@dataclass
class LabelledFile:
    path: Path
    label: int  # 1 = fake
    columns: dict[str, str] = field(default_factory=dict)  # its manifest row, when there is one


def _manifest(dataset: Path) -> dict[Path, dict[str, str]]:
    """Rows of `manifest.csv` in the folder or its parent, by resolved path (column `file` or
    `path`)."""
    for manifest in (dataset / "manifest.csv", dataset.parent / "manifest.csv"):
        if manifest.is_file():
            with open(manifest, newline="", encoding="utf-8") as handle:
                rows = list(csv.DictReader(handle))
            key = next((k for k in ("file", "path") if rows and k in rows[0]), None)
            if key is None:
                raise FakescopeError(f"{manifest}: needs a `file` or `path` column")
            return {(manifest.parent / row[key]).resolve(): row for row in rows}
    return {}


def labelled_files(
    dataset: Path, limit: int | None = None, held_out_share: float | None = None
) -> list[LabelledFile]:
    """Files under real/ (0) and fake/ (1); `limit` takes an even share of each, spread out.

    `held_out_share` keeps only the clusters (manifest `cluster`, else the file's stem) that
    `fakescope train --holdout SHARE` holds out of this folder: crops no member trained on."""
    if held_out_share is not None and not 0 < held_out_share < 1:  # NaN fails too
        raise SettingError(f"--held-out must be in (0, 1), got {held_out_share}", "held_out")
    manifest = _manifest(dataset)
    files = []
    for label, folder in ((0, "real"), (1, "fake")):
        found = sorted(p for p in (dataset / folder).rglob("*") if p.suffix.lower() in SUFFIXES)
        if held_out_share is not None:
            found = [
                p
                for p in found
                if held_out(manifest.get(p.resolve(), {}).get("cluster", p.stem), held_out_share)
            ]
        if limit:
            found = found[:: max(1, len(found) // (limit // 2))][: limit // 2]
        files += [LabelledFile(p, label, manifest.get(p.resolve(), {})) for p in found]
    if not files:
        raise FakescopeError(f"{dataset}: no media under real/ or fake/")
    return files


def wilson(hits: int, n: int, z: float = 1.96) -> dict[str, float]:
    """A rate with its Wilson score interval (sound for small n and rates near 0 or 1)."""
    if n == 0:
        return {"value": float("nan"), "low": float("nan"), "high": float("nan"), "n": 0}
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return {
        "value": p,
        "low": float(max(0.0, centre - half)),
        "high": float(min(1.0, centre + half)),
        "n": n,
    }


def _auc(labels: np.ndarray, probs: np.ndarray) -> dict[str, float] | None:
    if len(np.unique(labels)) < 2:
        return None
    return metrics_with_intervals(
        labels, probs, metrics=lambda y, p: {"auc": float(roc_auc_score(y, p))}
    )["auc"]


def decision_metrics(rows: list[dict], others: list[dict] | None = None) -> dict:
    """Rates at the decision over `rows` (dicts with label, predicted, probability); the AUC of
    `rows` against `others` where `rows` hold one class only (a manipulation against all reals)."""
    reals = [r for r in rows if r["label"] == 0]
    fakes = [r for r in rows if r["label"] == 1]
    scored = [r for r in rows + (others or []) if r["probability"] is not None]
    labels = np.array([r["label"] for r in scored], dtype=int)
    probs = np.clip(np.array([r["probability"] for r in scored], dtype=float), EPS, 1 - EPS)
    unanswered = [r for r in rows if r["predicted"] not in ("fake", "real")]
    return {
        "count": {"real": len(reals), "fake": len(fakes)},
        "answers": {k: sum(r["predicted"] == k for r in rows) for k in ANSWERS},
        "auc": _auc(labels, probs),
        "log_loss": float(log_loss(labels, probs, labels=[0, 1])) if len(scored) else None,
        "false_alarm": wilson(sum(r["predicted"] == "fake" for r in reals), len(reals)),
        "detection": wilson(sum(r["predicted"] == "fake" for r in fakes), len(fakes)),
        "miss": wilson(sum(r["predicted"] == "real" for r in fakes), len(fakes)),
        "inconclusive": wilson(len(unanswered), len(rows)),
    }


def size_bucket(size: float | None) -> str:
    if size is None:
        return "no face"
    for low, high in SIZE_BUCKETS:
        if high is None or size < high:
            return f"{low}+ px" if high is None else f"{low}-{high} px"
    raise AssertionError("unreachable: the last bucket is open")


def video_report(rows: list[dict], group_by: str | None) -> dict:
    """Metrics overall, per group and per size bucket, from per-file rows."""
    result = {"overall": decision_metrics(rows), "groups": {}, "sizes": {}}
    if group_by:
        for value in sorted({r["group"] for r in rows}):
            members = [r for r in rows if r["group"] == value]
            one_class = len({r["label"] for r in members}) == 1
            others = [r for r in rows if r["label"] != members[0]["label"]] if one_class else None
            result["groups"][value] = decision_metrics(members, others)
    for low, _high in (*SIZE_BUCKETS, (None, None)):
        name = "no face" if low is None else size_bucket(low)
        members = [r for r in rows if size_bucket(r["face_size"]) == name]
        if members:
            result["sizes"][name] = decision_metrics(members)
    return result


def main_face_size(report) -> float | None:
    """Median face size of the deciding track, else of the track seen most (the person the
    verdict is about)."""
    tracks = report.verdict.tracks
    if not tracks:
        return None
    chosen = next((t for t in tracks if t.track_id == report.verdict.deciding_track), None)
    chosen = chosen or max(tracks, key=lambda t: (len(t.faces), max(f.size for f in t.faces)))
    return float(np.median([f.size for f in chosen.faces]))


def analyse_files(
    analyzer: Analyzer,
    files: list[LabelledFile],
    group_by: str | None,
    progress: Callable[[str], None] | None = None,
) -> list[dict]:
    rows = []
    for number, item in enumerate(files, 1):
        row = {
            "file": str(item.path),
            "label": item.label,
            "group": item.columns.get(group_by or "", ""),
            "probability": None,
            "predicted": "error",
            "face_size": None,
            "reason": "",
            "credentials": "",
        }
        try:
            report = analyzer.analyze(item.path)
            row.update(
                probability=report.fake_probability,
                predicted=report.label,
                face_size=main_face_size(report),
                reason=report.verdict.reason,
                credentials=credentials_cell(report.provenance),
            )
        except FakescopeError as error:
            row["reason"] = str(error)
        rows.append(row)
        if progress:
            progress(f"{number}/{len(files)} {item.path.name}: {row['predicted']} {row['reason']}")
    return rows


def credentials_cell(provenance: Provenance) -> str:
    """A row's `credentials`: their state, and what they declare (`untrusted, generative AI`)."""
    return ", ".join(x for x in (provenance.credentials, provenance.origin) if x)


ROW_FIELDS = (
    "file",
    "label",
    "group",
    "probability",
    "predicted",
    "face_size",
    "reason",
    "credentials",
)


def write_rows(rows: list[dict], path: Path) -> None:
    text = io.StringIO()
    writer = csv.DictWriter(text, ROW_FIELDS, lineterminator="\n")
    writer.writeheader()
    # Rows made without a report (a video set's) have no credentials column: left empty.
    writer.writerows({k: ("" if r.get(k) is None else r[k]) for k in ROW_FIELDS} for r in rows)
    write_atomic(path, text.getvalue())


def read_rows(path: Path) -> list[dict]:
    """Rows written by `write_rows` (an evaluation's videos.csv)."""
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            raw = list(csv.DictReader(handle))
        return [
            {
                **r,
                "label": int(r["label"]),
                "probability": float(r["probability"]) if r["probability"] else None,
                "face_size": float(r["face_size"]) if r["face_size"] else None,
            }
            for r in raw
        ]
    except (OSError, KeyError, ValueError) as error:
        raise FakescopeError(f"{path}: not an evaluation's videos.csv ({error})") from None


def relabel(rows: list[dict], decision: Decision) -> list[dict]:
    """The same rows under another decision: only files with a probability change label."""
    return [
        {**r, "predicted": decision.label(r["probability"])} if r["probability"] is not None else r
        for r in rows
    ]


def plot_roc(labels: np.ndarray, probs: np.ndarray, auc: float, path: Path) -> None:
    fpr, tpr, _ = roc_curve(labels, probs)
    fig, ax = plt.subplots(figsize=(4.5, 4.5), dpi=110)
    ax.plot(fpr, tpr, lw=2, label=f"AUC {auc:.3f}")
    ax.plot([0, 1], [0, 1], "--", color="grey", lw=1)
    ax.set(
        xlabel="false positive rate (real called fake)", ylabel="true positive rate", title="ROC"
    )
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_reliability(labels: np.ndarray, probs: np.ndarray, path: Path, bins: int = 10) -> None:
    observed, predicted = calibration_curve(labels, probs, n_bins=bins, strategy="uniform")
    fig, ax = plt.subplots(figsize=(4.5, 4.5), dpi=110)
    ax.plot([0, 1], [0, 1], "--", color="grey", lw=1, label="perfect calibration")
    ax.plot(predicted, observed, "o-", lw=2, label="model")
    ax.hist(
        probs,
        bins=bins,
        range=(0, 1),
        weights=np.full(len(probs), 1 / len(probs)),
        alpha=0.25,
        label="share of images",
    )
    ax.set(
        xlabel="predicted P(fake)",
        ylabel="observed share of fakes",
        title="Reliability",
        xlim=(0, 1),
        ylim=(0, 1),
    )
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def evaluate_crops(
    analyzer: Analyzer,
    dataset: Path,
    out_dir: Path,
    limit: int | None = None,
    held_out_share: float | None = None,
) -> dict:
    files = labelled_files(dataset, limit, held_out_share)
    probs, size = [], analyzer.settings.batch_size
    for start in range(0, len(files), size):
        chunk = files[start : start + size]
        probs += list(analyzer.score_crops([read_image(f.path, analyzer.limits) for f in chunk])[1])
    labels = np.array([f.label for f in files], dtype=int)
    probs_ = np.array(probs, dtype=float)
    if len(np.unique(labels)) < 2:
        raise FakescopeError(f"{dataset}: need real and fake examples, got {len(labels)}")
    metrics = metrics_with_intervals(labels, probs_)
    out_dir.mkdir(parents=True, exist_ok=True)
    plot_roc(labels, probs_, metrics["auc"]["value"], out_dir / "roc.png")
    plot_reliability(labels, probs_, out_dir / "reliability.png")
    result = {
        "dataset": str(dataset),
        "crops": True,
        "model": analyzer.ensemble.describe(),
        "count": {"real": int((labels == 0).sum()), "fake": int((labels == 1).sum())},
        "metrics": metrics,
    }
    write_atomic(out_dir / "metrics.json", json.dumps(result, indent=2))
    np.savez_compressed(out_dir / "scores.npz", probs=probs_, labels=labels)
    return result


def evaluate_videos(
    analyzer: Analyzer,
    dataset: Path,
    out_dir: Path,
    limit: int | None = None,
    group_by: str | None = "manipulation",
    progress: Callable[[str], None] | None = None,
) -> dict:
    files = labelled_files(dataset, limit)
    if group_by and not any(group_by in f.columns for f in files):
        group_by = None  # no manifest, or no such column: nothing to group by
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = analyse_files(analyzer, files, group_by, progress)
    write_rows(rows, out_dir / "videos.csv")
    result = {
        "dataset": str(dataset),
        "crops": False,
        "model": analyzer.ensemble.describe(),
        "decision": asdict(analyzer.decision),
        "settings": analyzer.settings.__dict__,
        "group_by": group_by,
        **video_report(rows, group_by),
    }
    scored = [r for r in rows if r["probability"] is not None]
    labels = np.array([r["label"] for r in scored], dtype=int)
    if len(np.unique(labels)) == 2:
        probs = np.array([r["probability"] for r in scored], dtype=float)
        plot_roc(labels, probs, result["overall"]["auc"]["value"], out_dir / "roc.png")
        plot_reliability(labels, probs, out_dir / "reliability.png")
    write_atomic(out_dir / "metrics.json", json.dumps(result, indent=2))
    return result


def _interval(m: dict | None) -> str:
    return (
        "n/a"
        if not m or m["value"] != m["value"]
        else f"{m['value']:.2f} [{m['low']:.2f}-{m['high']:.2f}]"
    )


def results_table(result: dict, title: str) -> Table:
    """One row per subset: counts, AUC, log loss and the four rates at the decision."""
    table = Table(title=title)
    for name in (
        "subset",
        "real/fake",
        "AUC",
        "log loss",
        "false alarm",
        "detected",
        "missed",
        "inconclusive",
    ):
        table.add_column(name)

    def add(name: str, m: dict) -> None:
        c = m["count"]
        table.add_row(
            name,
            f"{c['real']}/{c['fake']}",
            _interval(m["auc"]),
            "n/a" if m["log_loss"] is None else f"{m['log_loss']:.3f}",
            *(_interval(m[k]) for k in ("false_alarm", "detection", "miss", "inconclusive")),
        )

    add("all", result["overall"])
    for name, m in result["groups"].items():
        add(f"{result['group_by']}={name}", m)
    for name, m in result["sizes"].items():
        add(f"main face {name}", m)
    return table


def metrics_line(result: dict) -> str:
    m = result["metrics"]
    parts = [f"{name} {v['value']:.3f} [{v['low']:.3f}, {v['high']:.3f}]" for name, v in m.items()]
    return f"{result['count']['real']} real, {result['count']['fake']} fake: " + "; ".join(parts)


def labelled_faces(
    analyzer: Analyzer,
    dataset: Path,
    policy: CropPolicy,
    crops: bool = True,
    limit: int | None = None,
) -> Iterator[LabelledFace]:
    """The faces of a labelled folder's images, cropped under `policy`, in `labelled_files`
    order, with the detector's box and landmarks mapped into the crop. `crops`: each image
    already is a face (the detector, run on it, only places the landmarks); otherwise its
    largest face is used and images without a face are skipped."""
    for item in labelled_files(dataset, limit):
        image = read_image(item.path, analyzer.limits)
        found = analyzer.detector.detect([image])[0]
        largest = max(
            found, key=lambda d: (d.box[2] - d.box[0]) * (d.box[3] - d.box[1]), default=None
        )
        if largest is None and not crops:
            continue
        used = for_whole_image(policy) if crops else policy
        region = whole_image_box(image.shape) if crops or largest is None else largest.box
        source, content = crop_geometry(region, used)
        crop = crop_face(image, region, used)
        if largest is None:
            yield LabelledFace(crop, item.label, float_box(content))
            continue
        box = float_box(frame_to_crop(np.reshape(largest.box, (2, 2)), source, content).ravel())
        points = (
            None if largest.landmarks is None else frame_to_crop(largest.landmarks, source, content)
        )
        yield LabelledFace(crop, item.label, box, points)


def _in_crop(face: FaceScore, policy: CropPolicy) -> tuple[Box, np.ndarray | None]:
    """A face's box and landmarks in the pixels of its crop under `policy`."""
    source, content = crop_geometry(face.box, policy)
    box = float_box(frame_to_crop(np.reshape(face.box, (2, 2)), source, content).ravel())
    points = None if face.landmarks is None else frame_to_crop(face.landmarks, source, content)
    return box, points


def _shown_faces(report: Report) -> list[tuple[FaceScore, list[FaceScore]]]:
    """Per chosen frame, the face the report shows there (its most suspicious, as
    explain.stage picks it) and all faces of that frame."""
    by_frame: dict[int, list[FaceScore]] = {}
    for track in report.verdict.tracks:
        for face in track.faces:
            by_frame.setdefault(face.frame_index, []).append(face)
    return [
        (max(by_frame[i], key=lambda f: f.score), by_frame[i]) for i in report.verdict.chosen_frames
    ]


def paired_faces(
    analyzer: Analyzer,
    dataset: Path,
    policy: CropPolicy,
    limit: int | None = None,
    figures: Path | None = None,
    skipped: list[str] | None = None,
) -> Iterator[LabelledFace]:
    """The faces that `analyze` shows (one per chosen frame) of every fake with a `pristine`
    in the folder's manifest, each with the mask of where it differs from its pristine frame
    (explain/pairs.py), and each followed by the same face in the aligned pristine frame
    (label 0, no mask): the real face it was made from, for Table 1 on real faces.
    `limit`: at most that many fakes, spread out; `figures`: one PNG per fake there
    (fake | pristine | mask) at its first chosen frame. A pair that does not align, whose
    frames do not correspond or whose pristine video is missing raises FakescopeError; with
    `skipped`, its one-line reason goes there and the pair is left out instead, unless no
    pair is left (then the first reason is raised)."""
    manifest = _manifest(dataset)
    fakes = [
        (path, row)
        for path, row in sorted(manifest.items())
        if row.get("label") == "fake" and row.get("pristine")
    ]
    if not fakes:
        raise FakescopeError(f"{dataset}: no fake in manifest.csv names its `pristine` video")
    if limit:  # spread over the manifest's order, so that every manipulation has its share
        fakes = fakes[:: max(1, len(fakes) // limit)][:limit]
    reasons: list[str] = []

    def bad(reason: str) -> None:
        if skipped is None:
            raise FakescopeError(reason)
        reasons.append(reason)

    pristines = {}
    for path, row in fakes:
        pristine = (dataset / row["pristine"]).resolve()
        if pristine.is_file():
            pristines[path] = pristine
        else:
            bad(f"{path}: its pristine video {row['pristine']} is missing")
    for path, row in fakes:
        if path not in pristines:
            continue
        try:
            faces = list(_paired(analyzer, path, pristines[path], row, policy, figures))
        except FakescopeError as error:
            bad(str(error))
            del pristines[path]
            continue
        yield from faces
    if not pristines:
        raise FakescopeError(reasons[0])
    if skipped is not None:
        skipped += reasons


def _paired(
    analyzer: Analyzer,
    path: Path,
    pristine: Path,
    row: dict[str, str],
    policy: CropPolicy,
    figures: Path | None,
) -> Iterator[LabelledFace]:
    """`paired_faces` for one fake and its pristine video."""
    report = analyzer.analyze(path, keep_frames=True)
    shown = _shown_faces(report)
    if not shown:
        return
    indices = [face.frame_index for face, _ in shown]
    first, first_faces = shown[0]
    try:
        originals = read_frames_at(pristine, indices, analyzer.limits)  # "PRISTINE: ..."
        dx, dy, _ = align(
            report.images[first.frame_index], originals[0].image, [f.box for f in first_faces]
        )
    except FakescopeError as error:
        raise FakescopeError(f"{path} and {error}") from None
    for n, ((face, faces), original) in enumerate(zip(shown, originals)):
        image = report.images[face.frame_index]
        try:
            mask = manipulation_mask(
                image, original.image, face.box, [f.box for f in faces], (dx, dy)
            )
        except FakescopeError as error:
            raise FakescopeError(
                f"{path} against {pristine}, frame {face.frame_index}: {error}"
            ) from None
        h, w = image.shape[:2]
        aligned = original.image[dy : dy + h, dx : dx + w]
        crop = crop_face(image, face.box, policy)
        cropped = crop_face(np.repeat(mask[..., None] * np.uint8(255), 3, 2), face.box, policy)
        crop_mask = cropped[..., 0] >= 128
        real = crop_face(aligned, face.box, policy)
        if figures is not None and n == 0:
            figures.mkdir(parents=True, exist_ok=True)
            figure = mask_figure(crop, real, crop_mask)
            cv2.imwrite(
                str(figures / f"{path.stem}.png"),
                cv2.cvtColor(figure, cv2.COLOR_RGB2BGR),
                [cv2.IMWRITE_PNG_COMPRESSION, PNG_LEVEL],
            )
        box, points = _in_crop(face, policy)
        group = row.get("manipulation") or "fake"
        yield LabelledFace(crop, 1, box, points, crop_mask, group, path.name)
        yield LabelledFace(real, 0, box, points, None, "real", pristine.name)
