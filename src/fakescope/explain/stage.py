"""The explanation stage of an analysis: heat maps for the chosen frames, pasted back onto the
full frame, written as overlay PNGs and one side-by-side comparison PNG per chosen frame.

Maps are computed only for the chosen frames (paper step 5b), with one forward and one
backward pass per member; scores in the report come from the scoring pass and never change.
The stage takes typed records (the ensemble, the verdict, frame pixels), nothing from above.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from ..faces import crop_face, crop_geometry, for_whole_image, to_tensor
from ..models.ensemble import Ensemble
from ..types import FaceScore, Verdict
from .cam import check_methods, explain
from .render import COMPARISON, Box, comparison_image, overlay, paste_heatmap


def frame_maps(
    ensemble: Ensemble,
    frames: list[tuple[np.ndarray, list[Box]]],
    methods: list[str],
    whole: bool = False,
) -> list[dict[str, np.ndarray]]:
    """Frame-sized [0, 1] maps per method for each (image, face boxes): each member's map pasted
    at every face box, faces combined by maximum, members by the ensemble's weights.

    All faces of all frames go through one explanation pass per member: a single backward
    over a batch costs little more than over one crop. `whole`: each image is the face crop.
    """
    total = sum(m.weight for m in ensemble.members)
    combined = [{m: np.zeros(image.shape[:2], np.float32) for m in methods} for image, _ in frames]
    located = [(i, image, box) for i, (image, boxes) in enumerate(frames) for box in boxes]
    if not located:
        return combined
    for member in ensemble.members:
        policy = for_whole_image(member.spec.crop) if whole else member.spec.crop
        batch = to_tensor([crop_face(image, box, policy) for _, image, box in located], policy)
        device = next(member.model.parameters()).device
        result = explain(member.model, batch.to(device), methods, member.cam_layers)
        for method in methods:
            faces_max = [np.zeros(image.shape[:2], np.float32) for image, _ in frames]
            for j, (i, image, box) in enumerate(located):
                source, content = crop_geometry(box, policy)
                pasted = paste_heatmap(image.shape[:2], source, result[method].display[j], content)
                np.maximum(faces_max[i], pasted, out=faces_max[i])
            for maps, member_map in zip(combined, faces_max):
                maps[method] += member.weight / total * member_map
    return combined


def _with_comparison(methods: list[str]) -> list[str]:
    return list(
        dict.fromkeys(check_methods(methods) + list(COMPARISON))
    )  # the strip needs all four


def _save_overlays(
    image: np.ndarray,
    maps: dict[str, np.ndarray],
    methods: list[str],
    out_dir: Path,
    prefix: str = "",
) -> dict[str, str]:
    names = {}
    for method in methods:
        name = f"{prefix}{method.replace('+', 'p')}.png"
        Image.fromarray(overlay(image, maps[method], alpha=0.5)).save(
            out_dir / name, compress_level=1
        )
        names[method] = name
    return names


def explain_chosen_frames(
    ensemble: Ensemble,
    verdict: Verdict,
    images: dict[int, np.ndarray],
    methods: list[str],
    out_dir: Path,
) -> list[dict]:
    """Write heat-map images for the verdict's chosen frames; returns their report.json index."""
    wanted = _with_comparison(methods)
    out_dir.mkdir(parents=True, exist_ok=True)
    faces_by_frame: dict[int, list[FaceScore]] = {}
    for track in verdict.tracks:
        for face in track.faces:
            faces_by_frame.setdefault(face.frame_index, []).append(face)
    chosen = verdict.chosen_frames
    all_maps = frame_maps(
        ensemble, [(images[i], [f.box for f in faces_by_frame[i]]) for i in chosen], wanted
    )
    entries = []
    for frame_index, maps in zip(chosen, all_maps):
        image = images[frame_index]
        worst = max(faces_by_frame[frame_index], key=lambda f: f.score)
        overlays = _save_overlays(image, maps, methods, out_dir, f"frame{frame_index:05d}_")
        comparison = f"frame{frame_index:05d}_comparison.png"
        comparison_image(image, worst.box, maps, worst.score).save(out_dir / comparison)
        entries.append(
            {
                "frame_index": frame_index,
                "timestamp": worst.timestamp,
                "overlays": overlays,
                "comparison": comparison,
                "face_box": list(worst.box),
                "face_score": worst.score,
            }
        )
    return entries


def explain_faces(
    ensemble: Ensemble,
    image: np.ndarray,
    boxes: list[Box],
    scores: list[float],
    methods: list[str],
    out_dir: Path,
    whole: bool = False,
) -> None:
    """`fakescope explain`: overlays of every method and a comparison strip around the face
    with the highest score, for the faces at `boxes` in one image."""
    maps = frame_maps(ensemble, [(image, boxes)], _with_comparison(methods), whole=whole)[0]
    out_dir.mkdir(parents=True, exist_ok=True)
    _save_overlays(image, maps, methods, out_dir)
    worst = int(np.argmax(scores))
    comparison_image(image, boxes[worst], maps, float(scores[worst])).save(
        out_dir / "comparison.png"
    )
