"""The explanation stage of an analysis: heat maps for the chosen frames, pasted back onto the
full frame, written as overlay PNGs and one side-by-side comparison PNG per chosen frame.

Maps are computed only for the chosen frames (paper step 5b), with one forward and one
backward pass per member; scores in the report come from the scoring pass and never change.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from .explain import METHODS, explain, overlay, paste_heatmap
from .faces import crop_face, crop_geometry, for_whole_image, to_tensor
from .types import FakescopeError, NoFaceError

COMPARISON = ("gradcam-n", "gradcam-n1", "hirescam", "hirescam++")
LABELS = {"gradcam-n": "GradCAM N", "gradcam-n1": "GradCAM N-1", "hirescam": "HiResCAM", "hirescam++": "HiResCAM++"}
TILE = 224


def check_methods(methods: list[str]) -> list[str]:
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise FakescopeError(f"unknown explanation method(s) {', '.join(unknown)}; known: {', '.join(METHODS)}")
    return methods


def frame_maps(ensemble, frames: list[tuple[np.ndarray, list[tuple]]], methods: list[str],
               whole: bool = False) -> list[dict[str, np.ndarray]]:
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
                np.maximum(faces_max[i], paste_heatmap(image.shape[:2], source, result[method].display[j], content), out=faces_max[i])
            for maps, member_map in zip(combined, faces_max):
                maps[method] += member.weight / total * member_map
    return combined


def _caption(tile: Image.Image, text: str) -> Image.Image:
    canvas = Image.new("RGB", (tile.width, tile.height + 22), "white")
    canvas.paste(tile, (0, 22))
    ImageDraw.Draw(canvas).text((6, 5), text, fill="black")
    return canvas


def comparison_image(image: np.ndarray, box: tuple, maps: dict[str, np.ndarray], score: float) -> Image.Image:
    """face | GradCAM N | GradCAM N-1 | HiResCAM | HiResCAM++ around one face, zoomed to its box."""
    x1, y1, x2, y2 = box
    pad = 0.25 * max(x2 - x1, y2 - y1)
    left, top = max(0, int(x1 - pad)), max(0, int(y1 - pad))
    right, bottom = min(image.shape[1], int(x2 + pad)), min(image.shape[0], int(y2 + pad))
    region = image[top:bottom, left:right]

    def tile(pixels: np.ndarray) -> Image.Image:
        return Image.fromarray(pixels).resize((TILE, TILE), Image.BILINEAR)

    tiles = [_caption(tile(region), f"face  p(fake)={score:.2f}")]
    for method in COMPARISON:
        if method in maps:
            heat = maps[method][top:bottom, left:right]
            tiles.append(_caption(tile(overlay(region, heat, alpha=0.55)), LABELS[method]))
    strip = Image.new("RGB", (sum(t.width for t in tiles), tiles[0].height), "white")
    for i, t in enumerate(tiles):
        strip.paste(t, (i * TILE, 0))
    return strip


def explain_chosen_frames(analyzer, report, images: dict[int, np.ndarray], methods: list[str], out_dir: Path) -> list[dict]:
    """Write heat-map images for the report's chosen frames; returns their index for report.json."""
    methods = check_methods(methods)
    wanted = list(dict.fromkeys(methods + [m for m in COMPARISON]))  # the comparison needs all four
    out_dir.mkdir(parents=True, exist_ok=True)
    faces_by_frame: dict[int, list] = {}
    for track in report.verdict.tracks:
        for face in track.faces:
            faces_by_frame.setdefault(face.frame_index, []).append(face)
    chosen = report.verdict.chosen_frames
    all_maps = frame_maps(analyzer.ensemble, [(images[i], [f.box for f in faces_by_frame[i]]) for i in chosen], wanted)
    entries = []
    for frame_index, maps in zip(chosen, all_maps):
        image = images[frame_index]
        faces = faces_by_frame[frame_index]
        overlays = {}
        for method in methods:
            name = f"frame{frame_index:05d}_{method.replace('+', 'p')}.png"
            Image.fromarray(overlay(image, maps[method], alpha=0.5)).save(out_dir / name, compress_level=1)
            overlays[method] = name
        worst = max(faces, key=lambda f: f.score)
        comparison = f"frame{frame_index:05d}_comparison.png"
        comparison_image(image, worst.box, maps, worst.score).save(out_dir / comparison)
        entries.append({"frame_index": frame_index, "timestamp": worst.timestamp, "overlays": overlays,
                        "comparison": comparison, "face_box": list(worst.box), "face_score": worst.score})
    return entries


def explain_image(analyzer, path, methods: list[str], out_dir: Path, crops: bool = False) -> list[float]:
    """`fakescope explain`: overlays and a comparison strip for one image; returns face scores."""
    from .media import read_image

    methods = check_methods(methods)
    image = read_image(path, analyzer.limits)
    if crops:
        boxes = [(0.0, 0.0, float(image.shape[1]), float(image.shape[0]))]
    else:
        boxes = [d.box for d in analyzer.detector.detect([image])[0]]
        if not boxes:
            raise NoFaceError(f"{path}: no face found")
    _, scores = analyzer.score_faces([image] * len(boxes), boxes, whole=crops)
    wanted = list(dict.fromkeys(methods + list(COMPARISON)))
    maps = frame_maps(analyzer.ensemble, [(image, boxes)], wanted, whole=crops)[0]
    out_dir.mkdir(parents=True, exist_ok=True)
    for method in methods:
        Image.fromarray(overlay(image, maps[method], alpha=0.5)).save(out_dir / f"{method.replace('+', 'p')}.png")
    worst = int(np.argmax(scores))
    comparison_image(image, boxes[worst], maps, float(scores[worst])).save(out_dir / "comparison.png")
    return [float(s) for s in scores]
