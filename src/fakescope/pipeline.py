"""The Python API: media -> faces -> scores -> verdict (-> explanations) -> Report.

`Analyzer` holds the loaded models and detector so that a batch, a server or a cluster
worker pays for loading once; `analyze()` is the one-call convenience.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from .crops import (
    CropPolicy,
    Cutting,
    cut_faces,
    face_qp,
    float_box,
    normalise,
    whole_image_box,
)
from .explain import DEFAULT as DEFAULT_EXPLAIN
from .explain.cam import check_methods
from .explain.stage import explain_chosen_frames, explain_faces, frame_heat_maps
from .faces import get_detector, link_tracks
from .media import (
    Limits,
    iter_frames,
    planned_frames,
    probe,
    read_ahead,
    read_image,
    read_image_info,
)
from .models.ensemble import Ensemble, load_ensemble
from .provenance import load_trust, read_provenance
from .report import Report
from .settings import Settings
from .types import (
    DEFAULT_MODEL,
    Box,
    Detection,
    FaceScore,
    FakescopeError,
    Frame,
    MediaError,
    MediaInfo,
    NoFaceError,
    Provenance,
    SettingError,
    TrackedFace,
)
from .verdict import decide, with_provenance


@dataclass
class Decoded:
    """An input's frames and the faces detected in each, before tracking and cropping."""

    path: str
    media: MediaInfo
    frames: list[Frame]
    detections: list[list[Detection]]  # per frame
    requested: int  # frames the sampling asked for
    timings: dict[str, float]
    provenance: Provenance


@dataclass
class Prepared:
    """An input decoded, its faces found and cropped: all that scoring needs. The frames
    themselves are dropped, so many prepared inputs can wait in a queue cheaply."""

    path: str
    media: MediaInfo
    frames: list[dict]  # index, timestamp, faces found
    faces: list[tuple[int, TrackedFace]]  # (track id, face), in crop order
    # Per crop policy, the faces' crops in crop order: N x 3 x size x size RGB uint8, on the
    # Analyzer's crop device (see Analyzer.crop_device).
    crops: dict[CropPolicy, torch.Tensor]
    sharpness: torch.Tensor  # N float64, per face in crop order (crops.sharpness), same device
    qp: list[float | None]  # per face in crop order (crops.face_qp)
    timings: dict[str, float]
    provenance: Provenance  # what the file declares about its origin
    requested: int = 1  # frames the sampling asked for; fewer decoded means a truncated file
    images: dict[int, np.ndarray] | None = (
        None  # frame pixels, kept only for heat maps and thumbnails
    )


DETECT_CHUNK = 8  # frames per detector call: big enough to batch, small enough to overlap decoding


@contextmanager
def _timed(timings: dict[str, float], stage: str):
    start = time.perf_counter()
    yield
    timings[stage] = timings.get(stage, 0.0) + time.perf_counter() - start


def _short_side(box: Box) -> float:
    return float(min(box[2] - box[0], box[3] - box[1]))


def _checked_device(name: str) -> str:
    if name == "cuda" and not torch.cuda.is_available():
        raise SettingError("device cuda asked for, but PyTorch sees no CUDA GPU", "device")
    if name not in ("cpu", "cuda"):
        raise SettingError(f"unknown device {name!r}; use cpu or cuda", "device")
    return name


class Analyzer:
    def __init__(
        self,
        model: str | Path = DEFAULT_MODEL,
        settings: Settings | None = None,
        device: str = "cpu",
        limits: Limits | None = None,
    ):
        self.settings = settings or Settings()
        self.device = _checked_device(device)
        self.limits = limits or Limits()
        self.ensemble: Ensemble = load_ensemble(model, self.device, self.settings.backend)
        self.decision = self.settings.decision(self.ensemble.decision)
        # PEM trust anchors for content credentials, read once (checked by Settings).
        anchors = self.settings.trust_anchors
        self.trust = load_trust(anchors) if anchors else None
        self._detector = None
        # Where faces are cut from frames and resized: None, with NumPy on the CPU (the
        # reference bytes); a device: each frame goes there once and its faces are cut there.
        self.crop_device: str | None = None if self.device == "cpu" else self.device

    @property
    def detector(self):
        if self._detector is None:  # loaded on first use: crop-only scans never need it
            # On a GPU the detector runs there too; `backend` is the scoring pass's choice.
            self._detector = get_detector(self.settings.detector, device=self.device)
        return self._detector

    @detector.setter
    def detector(self, detector) -> None:  # e.g. one tuned for concurrent calls (scan workers)
        self._detector = detector

    def score_faces(
        self, images: list[np.ndarray], boxes: list[Box], crops: bool = False
    ) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Member and ensemble P(fake) for the faces at `boxes` in `images`, the face at
        boxes[i] in images[i] (one batch per member)."""
        cutting = Cutting(tuple(self.ensemble.crop_policies), self.crop_device, crops)
        cuts = cut_faces(dict(enumerate(images)), list(enumerate(boxes)), cutting)
        return self._scores(cuts.crops)

    def score_crops(self, images: list[np.ndarray]) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Inputs that already are face crops: the whole image is the face, resized per each
        model's policy."""
        return self.score_faces(images, [whole_image_box(im.shape) for im in images], crops=True)

    def _scores(
        self, crops: dict[CropPolicy, torch.Tensor]
    ) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """The one scoring pass: member and ensemble P(fake) of uint8 crops per policy."""
        if not len(next(iter(crops.values()))):
            return {m.spec.name: np.empty(0) for m in self.ensemble.members}, np.empty(0)
        tensors = {
            # uint8 to the model's device, then normalised there (a quarter of the bytes).
            policy: normalise(batch.to(self.device), policy.mean, policy.std)
            for policy, batch in crops.items()
        }
        member = self.ensemble.score(tensors, self.settings.batch_size)
        return member, self.ensemble.combine(member)

    def prepare(
        self,
        path: str | Path,
        crops: bool = False,
        keep_images: bool = False,
        progress: Callable[[str], None] | None = None,
        media: MediaInfo | None = None,
    ) -> Prepared:
        """Decode, detect and crop (no model runs, so threads may call this while another
        thread scores). `crops`: the input is an image that already is one face crop; `media`:
        the input's probe, when the caller has made it already."""
        policies = tuple(self.ensemble.crop_policies)
        if crops:
            return prepare_crop(
                path, policies, self.limits, self.crop_device, keep_images, progress, self.trust
            )
        timings: dict[str, float] = {}
        stage = _stages(timings, progress)
        frames: list[Frame] = []
        detections: list[list[Detection]] = []
        with stage("decode"):
            media = media or probe(path, self.limits)
        with stage("provenance"):
            provenance = read_provenance(path, media, self.limits, self.trust)
        # Detection of one chunk of frames runs while the next chunk decodes.
        with closing(
            read_ahead(
                iter_frames(path, self.settings.frames, self.limits, info=media), DETECT_CHUNK
            )
        ) as decoded:
            while True:
                with stage("decode"):  # time spent waiting for frames
                    chunk = list(itertools.islice(decoded, DETECT_CHUNK))
                if not chunk:
                    break
                with stage("detect"):
                    detections += self.detector.detect([f.image for f in chunk])
                frames += chunk
        requested = planned_frames(media, self.settings.frames, self.limits)
        found = Decoded(str(path), media, frames, detections, requested, timings, provenance)
        return _finish(found, Cutting(policies, self.crop_device), keep_images, progress)

    def score(self, prepared: Sequence[Prepared]) -> list[Report]:
        """Reports (without heat maps) for prepared inputs, all their faces scored in one batch
        per model; each report's "score" timing is its share of the batch's time."""
        if not prepared:
            return []
        start = time.perf_counter()
        total = sum(len(p.faces) for p in prepared)
        qp = [q for p in prepared for q in p.qp]
        member, ensemble = self._scores(
            {
                policy: torch.cat([p.crops[policy] for p in prepared])
                for policy in self.ensemble.crop_policies
            }
        )
        sharp = torch.cat([p.sharpness for p in prepared]).tolist()  # one copy off the device
        elapsed = time.perf_counter() - start
        settings, reports, offset = self.settings, [], 0
        # The same for every report of the batch: made once.
        model = self.ensemble.describe()
        report_settings = {
            **settings.__dict__,
            "threshold": self.decision.threshold,
            "real_below": self.decision.real_below,
            "device": self.device,
            "explain": [],
        }
        for p in prepared:
            faces = [
                FaceScore(
                    track_id=track_id,
                    frame_index=face.frame_index,
                    timestamp=face.timestamp,
                    box=float_box(face.detection.box),
                    detector_score=float(face.detection.score),
                    member_scores={name: float(s[offset + i]) for name, s in member.items()},
                    score=float(ensemble[offset + i]),
                    size=_short_side(face.detection.box) / p.media.scale,  # in source pixels
                    sharpness=sharp[offset + i],
                    qp=qp[offset + i],
                    landmarks=face.detection.landmarks,
                )
                for i, (track_id, face) in enumerate(p.faces)
            ]
            offset += len(faces)
            timings = {**p.timings, "score": elapsed * len(faces) / total if total else 0.0}
            timings["total"] = sum(timings.values())
            warnings = [p.provenance.warning] if p.provenance.warning else []
            if len(p.frames) < p.requested:
                warnings.insert(
                    0,
                    f"decoded {len(p.frames)} of {p.requested} requested frames: "
                    "the file ends early (truncated?)",
                )
            verdict = decide(
                faces,
                settings.strategy,
                self.decision,
                settings.judging,
                len(p.frames),
                settings.chosen,
            )
            reports.append(
                Report(
                    input=p.path,
                    media=p.media,
                    verdict=with_provenance(verdict, p.provenance),
                    model=model,
                    frames=p.frames,
                    settings=report_settings,
                    timings=timings,
                    frames_requested=p.requested,
                    warnings=warnings,
                    provenance=p.provenance,
                )
            )
        return reports

    def analyze(
        self,
        path: str | Path,
        out_dir: str | Path | None = None,
        explain: list[str] | None = None,
        *,
        keep_frames: bool = False,
        overlay: bool = False,
        progress: Callable[[str], None] | None = None,
        media: MediaInfo | None = None,
    ) -> Report:
        """keep_frames: keep the analysed frames' pixels in `report.images` (HTML thumbnails);
        overlay: also every frame's HiResCAM++ map of its faces in `report.maps` (the overlay
        video); progress: called with each stage's name as the stage starts; media: the
        input's probe, when the caller has made it already."""
        if explain:
            check_methods(explain)
            if out_dir is None:
                raise FakescopeError("heat maps need an output folder (out_dir)")
        keep = bool(explain) or keep_frames or overlay
        prepared = self.prepare(path, keep_images=keep, progress=progress, media=media)
        if progress:
            progress("score")
        report = self.score([prepared])[0]
        extra: dict = {"settings": {**report.settings, "explain": explain or []}}
        if explain and report.verdict.chosen_frames:
            if progress:
                progress("explain")
            start = time.perf_counter()
            assert prepared.images is not None and out_dir is not None  # kept, checked above
            extra["explanations"], extra["evidence"] = explain_chosen_frames(
                self.ensemble, report.verdict, prepared.images, explain, Path(out_dir)
            )
            seconds = time.perf_counter() - start
            timings = report.timings
            extra["timings"] = {**timings, "explain": seconds, "total": timings["total"] + seconds}
        if (keep_frames or overlay) and prepared.images is not None:  # kept, asked above
            extra["images"] = prepared.images
        if overlay and prepared.images is not None:
            extra["maps"] = frame_heat_maps(self.ensemble, report.verdict, prepared.images)
        return replace(report, **extra)

    def explain_image(
        self, path: str | Path, methods: list[str], out_dir: Path, crops: bool = False
    ) -> list[tuple[float, str]]:
        """`fakescope explain`: overlays and a comparison strip for one image; returns each
        face's P(fake) and evidence sentence."""
        check_methods(methods)
        image = read_image(path, self.limits)
        if crops:
            faces = [Detection(whole_image_box(image.shape), 1.0)]
        else:
            faces = self.detector.detect([image])[0]
            if not faces:
                raise NoFaceError(f"{path}: no face found")
        _, probabilities = self.score_faces(
            [image] * len(faces), [f.box for f in faces], crops=crops
        )
        scores = [float(s) for s in probabilities]
        sentences = explain_faces(
            self.ensemble,
            image,
            faces,
            scores,
            methods,
            out_dir,
            crops=crops,
            decision=self.decision,
        )
        return list(zip(scores, sentences))


def _stages(timings: dict[str, float], progress: Callable[[str], None] | None):
    """A context manager per stage name: adds its seconds to `timings`, tells `progress`."""

    def stage(name: str):
        if progress:
            progress(name)
        return _timed(timings, name)

    return stage


def _finish(
    decoded: Decoded,
    cutting: Cutting,
    keep_images: bool,
    progress: Callable[[str], None] | None,
) -> Prepared:
    """Tracks, crops, sharpness and quantisers for decoded frames and their detections."""
    frames, detections, timings = decoded.frames, decoded.detections, decoded.timings
    stage = _stages(timings, progress)
    with stage("detect"):
        tracks = link_tracks([(f.index, f.timestamp, d) for f, d in zip(frames, detections)])
    by_index = {f.index: f.image for f in frames}
    faces = [(track.track_id, face) for track in tracks for face in track.faces]
    with stage("crop"):
        cuts = cut_faces(by_index, [(f.frame_index, f.detection.box) for _, f in faces], cutting)
        quantisers = {f.index: f.qp for f in frames}
        scale = decoded.media.scale
        qp = [face_qp(quantisers[f.frame_index], f.detection.box, scale) for _, f in faces]
    summary = [
        {"index": f.index, "timestamp": f.timestamp, "faces": len(d)}
        for f, d in zip(frames, detections)
    ]
    return Prepared(
        path=decoded.path,
        media=decoded.media,
        frames=summary,
        faces=faces,
        crops=cuts.crops,
        sharpness=cuts.sharpness,
        qp=qp,
        timings=timings,
        provenance=decoded.provenance,
        requested=decoded.requested,
        images=by_index if keep_images else None,
    )


def prepare_crop(
    path: str | Path,
    policies: Sequence[CropPolicy],
    limits: Limits,
    crop_device: str | None = None,
    keep_images: bool = False,
    progress: Callable[[str], None] | None = None,
    trust: str | None = None,
) -> Prepared:
    """`Analyzer.prepare` of an image that already is one face crop. It needs no model, so
    worker processes can run it (a crop scan on a GPU). `trust`: PEM trust anchors."""
    timings: dict[str, float] = {}
    stage = _stages(timings, progress)
    with stage("decode"):
        media, image = _read_crop(path, limits)
    with stage("provenance"):
        provenance = read_provenance(path, media, limits, trust)
    decoded = Decoded(
        str(path),
        media,
        frames=[Frame(0, 0.0, image)],
        detections=[[Detection(whole_image_box(image.shape), 1.0)]],
        requested=1,
        timings=timings,
        provenance=provenance,
    )
    cutting = Cutting(tuple(policies), crop_device, crops=True)
    return _finish(decoded, cutting, keep_images, progress)


def _read_crop(path: str | Path, limits: Limits) -> tuple[MediaInfo, np.ndarray]:
    """A face crop image, probed and decoded in one opening of the file."""
    found = read_image_info(path, limits)
    if found is None:  # no image: probe says what it is
        media = probe(path, limits)
        if media.kind != "image":
            raise MediaError(f"{path}: a video, but face crop images were expected")
        found = media, read_image(path, limits)
    return found


def analyze(
    path: str | Path,
    model: str | Path = DEFAULT_MODEL,
    out_dir: str | Path | None = None,
    explain: list[str] | None = None,
    device: str = "cpu",
    **settings,
) -> Report:
    """Analyse one video or image. A file without faces gives a report labelled "no_face".

    explain: heat-map methods; None: HiResCAM++ when there is an out_dir to write it to
    ([] for none, the fast path)."""
    if explain is None:
        explain = [DEFAULT_EXPLAIN] if out_dir is not None else []
    return Analyzer(model, Settings(**settings), device).analyze(path, out_dir, explain)
