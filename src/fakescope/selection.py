"""Choosing a model by what its users see: whole labelled videos, decided as `analyze` decides.

DFDC's held-out crops reward what carries within DFDC: two fine-tunes that got better there
got worse on full-frame FaceForensics++ videos as they trained (docs/model-card.md). So a
run's epochs, and runs, are compared on full-frame videos. Each video, as recorded and
re-encoded, is decoded and its faces found and cut once by the pipeline (`build_video_set`);
a candidate model then only scores those crops, and each video is decided by
`verdict.decide` as `analyze` would decide it (`score_video_set`). The videos' FF++ scenes
(a real video and every fake made with its faces) split the set in two halves: choose on
one, fit the decision on the other (`scripts/select_epoch.py`).
"""

from __future__ import annotations

import json
import re
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import cv2
import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from sklearn.metrics import roc_auc_score

from .blending import head_masks
from .crops import CropPolicy, normalise
from .encode import reencode
from .evaluate import labelled_files, relabel
from .faces import FaceDetector
from .files import atomic_path
from .models.ensemble import load_ensemble
from .pipeline import Analyzer
from .settings import Settings
from .types import Decision, FaceScore, FakescopeError
from .verdict import decide, fit_decision

SET_FORMAT = "fakescope-video-set/1"
RECORDED = "as recorded"
SOFT = "soft background"


def scene_groups(files: Sequence[str]) -> list[int]:
    """FF++ scenes: connected components of the source ids in each file name
    (`ffpp_df_c23_033_097` is a fake of 033 with 097's face, so 033, 097 and every video made
    from either are one scene). A name without ids is a scene of its own."""
    parent: dict[str, str] = {}

    def find(a: str) -> str:
        while parent.setdefault(a, a) != a:
            a = parent[a]
        return a

    ids = [re.findall(r"_(\d{3})(?=_|$)", Path(f).stem) or [Path(f).stem] for f in files]
    for group in ids:
        for other in group[1:]:
            parent[find(other)] = find(group[0])
    roots = sorted({find(g[0]) for g in ids})
    return [roots.index(find(g[0])) for g in ids]


@dataclass(frozen=True)
class SetVideo:
    """One variant of one labelled video: its faces as the pipeline found them, their crops
    at rows `start` to `start + len(faces)` of the set."""

    file: str
    label: int  # 1 = fake
    variant: str  # RECORDED; "crf35": x264 at CRF 35, the first `seconds`; or SOFT
    scene: int
    group: str  # the manifest's manipulation column
    frames: int  # frames analysed
    start: int
    faces: tuple[FaceScore, ...]


@dataclass(frozen=True)
class VideoSet:
    videos: list[SetVideo]
    crops: torch.Tensor  # uint8 N x 3 x size x size, cut by `policy`
    policy: CropPolicy


def soft_background(
    detector: FaceDetector, blur: float = 0.04, scale: float = 1.3
) -> Callable[[np.ndarray], np.ndarray]:
    """A frame transform that keeps every head sharp and blurs the rest, as a video call's
    background blur or a phone's portrait mode shows a real person. A head is the face
    outline of the detector's landmarks grown `scale` times about the nose
    (`blending.head_masks`), its edge feathered over 6% of the face's box side (an app's
    segmentation edge); the Gaussian's sigma is `blur` times the largest face's box side."""

    def transform(frame: np.ndarray) -> np.ndarray:
        found = [(d.box, d.landmarks) for d in detector.detect([frame])[0]]
        heads = [(box, points) for box, points in found if points is not None]
        if not heads:
            return frame
        height, width = frame.shape[:2]
        sides = np.array([min(x2 - x1, y2 - y1) for (x1, y1, x2, y2), _ in heads])
        landmarks = np.stack([points / (width, height) for _, points in heads])
        masks = head_masks(
            torch.from_numpy(landmarks).float(),
            (height, width),
            torch.full((len(heads),), scale),
            torch.from_numpy(0.06 * sides / min(height, width)).float(),  # a share of the frame
        )
        keep = masks.amax(0)[0].numpy()[..., None]
        soft = cv2.GaussianBlur(frame, (0, 0), float(blur * sides.max()))
        return (keep * frame + (1 - keep) * soft).round().astype(np.uint8)

    return transform


def build_video_set(
    folder: Path,
    analyzer: Analyzer,
    crfs: Sequence[int] = (35,),
    seconds: float = 10.0,
    limit: int | None = None,
    progress: Callable[[str], None] | None = None,
    soft: int | None = None,
) -> VideoSet:
    """Every video under folder/{real,fake} as recorded and, for each of `crfs`, its first
    `seconds` re-encoded by x264, cut by the analyzer's model's crop policy; with `soft`, also
    its first `seconds` with the background blurred (`soft_background`), coded at CRF `soft`."""
    (policy, *others) = analyzer.ensemble.crop_policies
    if others:
        raise FakescopeError("a video set is cut for one crop policy: use a one-member model")
    files = labelled_files(folder, limit)
    scenes = scene_groups([f.path.name for f in files])
    videos: list[SetVideo] = []
    crops: list[torch.Tensor] = []
    start = 0
    for item, scene in zip(files, scenes, strict=True):
        with tempfile.TemporaryDirectory() as tmp:
            variants = {RECORDED: item.path}
            for crf in crfs:
                variants[f"crf{crf}"] = reencode(item.path, Path(tmp) / f"{crf}.mp4", seconds, crf)
            if soft is not None:
                variants[SOFT] = reencode(
                    item.path,
                    Path(tmp) / "soft.mp4",
                    seconds,
                    soft,
                    transform=soft_background(analyzer.detector),
                )
            for variant, path in variants.items():
                prepared = analyzer.prepare(path)
                (report,) = analyzer.score([prepared])
                rows = {(t, f.frame_index): i for i, (t, f) in enumerate(prepared.faces)}
                faces = [f for t in report.verdict.tracks for f in t.faces]
                order = torch.tensor(
                    [rows[f.track_id, f.frame_index] for f in faces], dtype=torch.long
                )
                crops.append(prepared.crops[policy][order].cpu())
                videos.append(
                    SetVideo(
                        str(item.path.relative_to(folder)),
                        item.label,
                        variant,
                        scene,
                        item.columns.get("manipulation", ""),
                        len(report.frames),
                        start,
                        tuple(replace(f, unjudged=None, landmarks=None) for f in faces),
                    )
                )
                start += len(faces)
                if progress:
                    progress(f"{item.path.name} {variant}: {len(faces)} faces")
    empty = torch.empty(0, 3, policy.size, policy.size, dtype=torch.uint8)
    return VideoSet(videos, torch.cat(crops) if crops else empty, policy)


def save_video_set(video_set: VideoSet, path: Path) -> None:
    videos = [{**asdict(v), "faces": [asdict(f) for f in v.faces]} for v in video_set.videos]
    metadata = {
        "format": SET_FORMAT,
        "policy": json.dumps(asdict(video_set.policy)),
        "videos": json.dumps(videos),
    }
    with atomic_path(path) as tmp:
        save_file({"crops": video_set.crops.contiguous()}, str(tmp), metadata=metadata)


def load_video_set(path: Path) -> VideoSet:
    try:
        with safe_open(str(path), "pt") as handle:
            metadata = handle.metadata() or {}
            if metadata.get("format") != SET_FORMAT:
                raise ValueError(f"format {metadata.get('format')!r}")
            crops = handle.get_tensor("crops")
    except Exception as error:  # a truncated or foreign file: say which, in one line
        raise FakescopeError(f"{path}: not a video set ({error})") from None
    videos = []
    for v in json.loads(metadata["videos"]):
        faces = tuple(FaceScore(**{**f, "box": tuple(f["box"])}) for f in v.pop("faces"))
        videos.append(SetVideo(**v, faces=faces))
    return VideoSet(videos, crops, CropPolicy.from_dict(json.loads(metadata["policy"])))


def rescored(
    video_set: VideoSet, model: str | Path, device: str = "cpu", backend: str = "auto", chunk=256
) -> tuple[list[list[FaceScore]], Decision]:
    """Each video's faces with `model`'s P(fake), and the model's fitted decision."""
    ensemble = load_ensemble(model, device, backend)
    if ensemble.crop_policies != [video_set.policy]:
        raise FakescopeError(
            f"{model}: its crop policy is not the video set's ({video_set.policy}); "
            "build a set with this model"
        )
    policy = video_set.policy
    scores = []
    for part in video_set.crops.split(chunk):
        batch = normalise(part.to(device), policy.mean, policy.std)
        scores.append(ensemble.combine(ensemble.score({policy: batch})))
    score = np.concatenate(scores) if scores else np.empty(0)
    faces = [
        [
            replace(f, score=float(score[video.start + i]), member_scores={})
            for i, f in enumerate(video.faces)
        ]
        for video in video_set.videos
    ]
    return faces, ensemble.decision


def score_video_set(
    video_set: VideoSet, model: str | Path, settings: Settings | None = None, device: str = "cpu"
) -> list[dict]:
    """Each video decided with `model`'s scores of the set's crops: rows as `evaluate` writes
    them (file, label, group, probability, predicted, face_size, reason), plus variant and
    scene. The default settings judge every face whatever its QP (max_qp 51): a choice
    of model needs the ranking of coarsely coded faces too."""
    settings = settings or Settings(max_qp=51)
    faces, fitted = rescored(video_set, model, device, settings.backend)
    return decided_rows(video_set, faces, settings.decision(fitted), settings)


def decided_rows(
    video_set: VideoSet, faces: list[list[FaceScore]], decision: Decision, settings: Settings
) -> list[dict]:
    """The rows of `score_video_set` from faces already scored (`rescored`): one scoring
    serves several settings."""
    rows = []
    for video, scored in zip(video_set.videos, faces, strict=True):
        verdict = decide(scored, settings.strategy, decision, settings.judging, video.frames)
        rows.append(
            {
                "file": video.file,
                "label": video.label,
                "group": video.group,
                "probability": verdict.probability,
                "predicted": verdict.label,
                "face_size": None,
                "reason": verdict.reason,
                "variant": video.variant,
                "scene": video.scene,
            }
        )
    return rows


def crossfit(
    rows: list[dict], folds: int = 2, max_false_alarm: float = 0.1, max_miss: float = 0.1
) -> tuple[list[dict], list[Decision]]:
    """Each row labelled by a decision fitted without its FF++ scene's fold (`half_of`, scenes
    from the file names), and the decision of each fold: honest rates for a fitted
    decision on a few dozen videos, where one fitted on all of them would flatter it."""
    fold_of = [half_of(g, folds) for g in scene_groups([r["file"] for r in rows])]
    decisions = []
    for fold in range(folds):
        fit = [r for r, f in zip(rows, fold_of) if f != fold and r["probability"] is not None]
        decisions.append(
            fit_decision(
                np.array([r["label"] for r in fit]),
                np.array([r["probability"] for r in fit]),
                max_false_alarm,
                max_miss,
            )
        )
    return by_fold(rows, decisions), decisions


def by_fold(rows: list[dict], decisions: list[Decision]) -> list[dict]:
    """Rows labelled by the decision of their scene's fold, as `crossfit` fitted it: the same
    videos changed (re-encoded, their background blurred) are judged by the decision fitted
    without their scenes."""
    fold_of = scene_groups([r["file"] for r in rows])
    return [relabel([r], decisions[half_of(g, len(decisions))])[0] for r, g in zip(rows, fold_of)]


def video_auc(rows: list[dict]) -> float | None:
    """Video AUC over the rows with a probability; None without both classes."""
    scored = [(r["label"], r["probability"]) for r in rows if r["probability"] is not None]
    if len({label for label, _ in scored}) < 2:
        return None
    return float(roc_auc_score([lab for lab, _ in scored], [p for _, p in scored]))


def half_of(scene: int, halves: int = 2) -> int:
    """The half a scene is in: every other scene, as `scripts/crossfit_decision.py` folds."""
    return scene % halves
