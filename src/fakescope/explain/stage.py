"""The explanation stage of an analysis: heat maps for the chosen frames, pasted back onto the
full frame, written as overlay PNGs and one side-by-side comparison PNG per chosen frame.
Each face's map is pasted only into its window of the frame; the PNGs are rendered and
written in background threads (files.BackgroundWriter), all complete when the stage returns.

Maps are computed only for the chosen frames (paper step 5b), with one forward and one
backward pass per member; scores in the report come from the scoring pass and never change.
The stage takes typed records (the ensemble, the verdict, frame pixels), nothing from above.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from ..crops import crop_batch, crop_geometry, for_whole_image
from ..files import BackgroundWriter
from ..models.ensemble import Ensemble
from ..types import Decision, Detection, FaceScore, Verdict
from .cam import check_methods, explain
from .regions import METHOD, evidence_sentence, mean_shares, region_labels, region_shares
from .render import COMPARISON, Pasted, comparison_image, frame_to_crop, overlay, paste_window


@dataclass
class FrameMaps:
    maps: dict[str, np.ndarray]  # method -> frame-sized [0, 1] map
    regions: list[dict[str, float] | None]  # per face: shares of regions.METHOD's positive mass


def frame_maps(
    ensemble: Ensemble,
    frames: list[tuple[np.ndarray, list[Detection]]],
    methods: list[str],
    crops: bool = False,
) -> list[FrameMaps]:
    """Frame-sized [0, 1] maps per method for each (image, faces): each member's map pasted
    at every face box, faces combined by maximum, the explained members by the ensemble's
    weights; and, when regions.METHOD is among the methods, each face's evidence per region.

    All faces of all frames go through one explanation pass per member: a single backward
    over a batch costs little more than over one crop. `crops`: each image is the face crop.
    """
    explained = ensemble.explained_members
    total = sum(m.weight for m in explained)
    combined = [
        FrameMaps({m: np.zeros(image.shape[:2], np.float32) for m in methods}, [])
        for image, _ in frames
    ]
    located = [(i, image, face) for i, (image, faces) in enumerate(frames) for face in faces]
    if not located:
        return combined
    per_member: list[list[dict[str, float] | None]] = []  # member -> face -> shares
    for member in explained:
        policy = for_whole_image(member.spec.crop) if crops else member.spec.crop
        batch = crop_batch(
            [image for _, image, _ in located], [face.box for _, _, face in located], policy
        )
        device = next(member.model.parameters()).device
        result = explain(member.model, batch.to(device), methods, member.cam_layers)
        geometry = [crop_geometry(face.box, policy) for _, _, face in located]
        # One copy from the device per method; the maps are pasted on the CPU.
        display = {m: result[m].display.float().cpu().numpy() for m in methods}
        for method in methods:
            by_frame: list[list[Pasted]] = [[] for _ in frames]
            for j, ((i, image, _), (source, content)) in enumerate(zip(located, geometry)):
                pasted = paste_window(image.shape[:2], source, display[method][j], content)
                if pasted is not None:
                    by_frame[i].append(pasted)
            for frame, faces in zip(combined, by_frame):
                _add_faces(frame.maps[method], member.weight / total, faces)
        if METHOD in methods:
            shares = []
            for j, ((_, _, face), (source, content)) in enumerate(zip(located, geometry)):
                box = frame_to_crop(np.reshape(face.box, (2, 2)), source, content).ravel()
                points = (
                    None
                    if face.landmarks is None
                    else frame_to_crop(face.landmarks, source, content)
                )
                labels = region_labels((policy.size, policy.size), tuple(box), points)
                shares.append(region_shares(display[METHOD][j], labels))
            per_member.append(shares)
    if per_member:
        weights = [m.weight for m in explained]
        for j, (i, _, _) in enumerate(located):
            combined[i].regions.append(mean_shares([shares[j] for shares in per_member], weights))
    return combined


def _add_faces(target: np.ndarray, weight: float, faces: list[Pasted]) -> None:
    """target += weight * (the faces' maps combined by maximum), touching only the window
    around the faces: the rest of the frame would add zeros."""
    if not faces:
        return
    top, left = min(f.rows.start for f in faces), min(f.cols.start for f in faces)
    bottom, right = max(f.rows.stop for f in faces), max(f.cols.stop for f in faces)
    combined = np.zeros((bottom - top, right - left), np.float32)
    for f in faces:
        part = combined[
            f.rows.start - top : f.rows.stop - top, f.cols.start - left : f.cols.stop - left
        ]
        np.maximum(part, f.pixels, out=part)
    target[top:bottom, left:right] += weight * combined


def _with_comparison(methods: list[str]) -> list[str]:
    # The comparison strip needs all four.
    return list(dict.fromkeys(check_methods(methods) + list(COMPARISON)))


def _save_overlays(
    writer: BackgroundWriter,
    image: np.ndarray,
    maps: dict[str, np.ndarray],
    methods: list[str],
    out_dir: Path,
    prefix: str = "",
) -> dict[str, str]:
    names = {}
    for method in methods:
        name = f"{prefix}{method.replace('+', 'p')}.png"
        writer.png(out_dir / name, partial(overlay, image, maps[method], alpha=0.5))
        names[method] = name
    return names


def _detection(face: FaceScore) -> Detection:
    return Detection(face.box, face.detector_score, face.landmarks)


OVERLAY_METHOD = "hirescam++"  # the overlay video's map


def frame_heat_maps(
    ensemble: Ensemble, verdict: Verdict, images: dict[int, np.ndarray]
) -> dict[int, np.ndarray]:
    """OVERLAY_METHOD's map of every frame with faces, by frame index. One explanation pass
    per frame, so memory follows one frame's faces; kept in float16 (half of float32's memory,
    within one of the overlay's 256 colour levels)."""
    return {
        index: frame_maps(
            ensemble, [(images[index], [_detection(f) for f in faces])], [OVERLAY_METHOD]
        )[0]
        .maps[OVERLAY_METHOD]
        .astype(np.float16)
        for index, faces in verdict.faces_by_frame().items()
    }


def explain_chosen_frames(
    ensemble: Ensemble,
    verdict: Verdict,
    images: dict[int, np.ndarray],
    methods: list[str],
    out_dir: Path,
) -> tuple[list[dict], dict[int, dict]]:
    """Write heat-map images for the verdict's chosen frames. Returns their report.json index
    and, per track with a face in those frames, its evidence per region (the mean over them)."""
    wanted = _with_comparison(methods)
    faces_by_frame = verdict.faces_by_frame()
    chosen = verdict.chosen_frames
    frames = [(images[i], [_detection(f) for f in faces_by_frame[i]]) for i in chosen]
    decision = Decision(verdict.threshold, verdict.real_below)
    track_probability = {t.track_id: t.probability for t in verdict.tracks}
    entries: list[dict] = []
    by_track: dict[int, list[dict[str, float] | None]] = {}
    with BackgroundWriter() as writer:
        for frame_index, result in zip(chosen, frame_maps(ensemble, frames, wanted)):
            image, faces = images[frame_index], faces_by_frame[frame_index]
            for face, shares in zip(faces, result.regions):
                by_track.setdefault(face.track_id, []).append(shares)
            worst = max(range(len(faces)), key=lambda k: faces[k].score)
            face, shares = faces[worst], result.regions[worst]
            prefix = f"frame{frame_index:05d}_"
            overlays = _save_overlays(writer, image, result.maps, methods, out_dir, prefix)
            comparison = f"{prefix}comparison.png"
            writer.png(
                out_dir / comparison,
                partial(comparison_image, image, face.box, result.maps, face.score),
            )
            entries.append(
                {
                    "frame_index": frame_index,
                    "timestamp": face.timestamp,
                    "overlays": overlays,
                    "comparison": comparison,
                    "face_box": list(face.box),
                    "face_score": face.score,
                    "track_id": face.track_id,
                    "regions": shares,
                    "evidence": evidence_sentence(shares, face.score, decision),
                }
            )
    tracks = {}
    for track_id, track_shares in by_track.items():
        mean = mean_shares(track_shares)
        tracks[track_id] = {
            "regions": mean,
            "evidence": evidence_sentence(mean, track_probability.get(track_id), decision),
            "faces": len(track_shares),
        }
    return entries, tracks


def explain_faces(
    ensemble: Ensemble,
    image: np.ndarray,
    faces: list[Detection],
    scores: list[float],
    methods: list[str],
    out_dir: Path,
    crops: bool = False,
    decision: Decision | None = None,
) -> list[str]:
    """`fakescope explain`: overlays of every method and a comparison strip around the face
    with the highest score, for the faces in one image; returns each face's evidence sentence."""
    result = frame_maps(ensemble, [(image, faces)], _with_comparison(methods), crops=crops)[0]
    worst = int(np.argmax(scores))
    with BackgroundWriter() as writer:
        _save_overlays(writer, image, result.maps, methods, out_dir)
        writer.png(
            out_dir / "comparison.png",
            partial(comparison_image, image, faces[worst].box, result.maps, float(scores[worst])),
        )
    return [
        evidence_sentence(shares, score, decision) for shares, score in zip(result.regions, scores)
    ]
