"""`fakescope xai-eval`: every explanation method of one model scored on the same metrics
(faithfulness.py) over labelled face crops and self-blended pseudo-fakes; xai.json and xai.md."""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..crops import to_tensor
from ..models.ensemble import Member
from ..models.registry import resolve_cam_layers
from ..types import Box, FakescopeError, SettingError
from .agnostic import AGNOSTIC, CENTRE_PRIOR, SAMPLES, agnostic_map, centre_prior
from .cam import HIRESCAM_PP, METHODS, explain, minmax, upsample
from .faithfulness import (
    TABLE1_KEYS,
    TABLE1_PAPER,
    aggregate_table1,
    blend_boundary,
    closest_to_paper,
    deletion_insertion,
    mass_inside,
    pointing_game,
    randomisation_check,
    self_blended,
    table1_stats,
    top_region_hits,
)
from .regions import REGIONS, region_labels


@dataclass
class EvalBatch:
    inputs: Tensor  # B x 3 x H x W, normalised
    labels: Tensor  # B, 1 = fake
    masks: Tensor | None = None  # B x H x W bool, the manipulated pixels (self-blended fakes)
    regions: Tensor | None = None  # B x H x W indices into regions.REGIONS, beside masks
    boxes: Tensor | None = None  # B x 4 face boxes in crop pixels; default the whole crop


@dataclass
class LabelledFace:
    """A face crop to explain, with where the face lies in it (crop pixels)."""

    crop: np.ndarray  # size x size RGB uint8
    label: int  # 1 = fake
    box: Box
    landmarks: np.ndarray | None = None  # 5 x 2, as regions.region_labels takes them


EVAL_METHODS: tuple[str, ...] = (*METHODS, *AGNOSTIC, CENTRE_PRIOR)


def _maps(
    model: nn.Module,
    batch: EvalBatch,
    methods: Sequence[str],
    layers: tuple[str, str],
    samples: int,
    seconds: dict[str, float] | None = None,
) -> dict[str, Tensor]:
    """Raw maps by method, CAMs on their layer's grid: the CAMs from one pass, the others one
    method at a time, adding their time to `seconds` where given."""
    cams = [m for m in methods if m in METHODS]
    raw = {}
    if cams:
        result = explain(model, batch.inputs, cams, layers)
        raw.update({m: result[m].raw for m in cams})
    for m in methods:
        start = time.perf_counter()
        if m in AGNOSTIC:
            raw[m] = agnostic_map(model, batch.inputs, m, samples)
        elif m == CENTRE_PRIOR:
            raw[m] = centre_prior(batch.inputs, batch.boxes).to(batch.inputs.device)
        if seconds is not None and m not in METHODS:
            seconds[m] = seconds.get(m, 0.0) + time.perf_counter() - start
    return raw


def _cam_seconds(
    model: nn.Module, batch: EvalBatch, methods: Sequence[str], layers: tuple[str, str]
) -> dict[str, float]:
    """Each CAM alone on one batch: what its pass costs when it is the only method asked for."""
    seconds = {}
    for m in methods:
        if m in METHODS:
            start = time.perf_counter()
            explain(model, batch.inputs, [m], layers)
            seconds[m] = (time.perf_counter() - start) / len(batch.inputs)
    return seconds


def xai_eval(
    model: nn.Module,
    batches: Iterable[EvalBatch | tuple],
    methods: Sequence[str] = METHODS,
    layers: tuple[str, str] | None = None,
    baseline: str = "mean",
    sanity_images: int = 8,
    sanity_depth: int = 4,
    batch_size: int = 64,
    steps: int = 20,
    samples: int = SAMPLES,
) -> dict:
    """Table 1, deletion/insertion AUCs, localisation, seconds per image and the sanity check.

    Batches are `EvalBatch`es or (inputs, labels, masks) tuples; masks, where given and not
    empty, mark the manipulated pixels. Methods: any of EVAL_METHODS. Localisation is given
    beside its chance level: the mask's share of the crop for the pointing game and the
    mass inside, and for the top region the share of the seam's most common region.
    """
    unknown = [m for m in methods if m not in EVAL_METHODS]
    if unknown:
        raise FakescopeError(
            f"unknown method(s) {', '.join(unknown)}; known: {', '.join(EVAL_METHODS)}"
        )
    layers = layers or resolve_cam_layers(model)
    variants = [m for m in methods if m in HIRESCAM_PP]
    computed = list(dict.fromkeys([*methods, *(["hirescam"] if variants else [])]))
    table1: dict[str, list] = {v: [] for v in variants}
    keys = ("deletion", "insertion", "pointing", "mass", "region_hit")
    per_image: dict[str, dict[str, list]] = {k: {m: [] for m in methods} for k in keys}
    labels_seen: list[Tensor] = []
    sanity_inputs: list[Tensor] = []
    mask_share: list[Tensor] = []
    seam_regions: list[Tensor] = []
    seconds: dict[str, float] = {}  # the other methods' total time
    cam_seconds: dict[str, float] = {}
    masked = 0
    for item in batches:
        batch = item if isinstance(item, EvalBatch) else EvalBatch(*item)
        inputs, labels, masks = batch.inputs, batch.labels, batch.masks
        if not cam_seconds:
            cam_seconds = _cam_seconds(model, batch, methods, layers)
        raw = _maps(model, batch, computed, layers, samples, seconds)
        size = inputs.shape[-2:]
        display = {m: minmax(upsample(raw[m], size).clamp_min(0)) for m in methods}
        for v in variants:
            table1[v].append(table1_stats(upsample(raw[v], size), upsample(raw["hirescam"], size)))
        labels_seen.append(labels.float().view(-1))
        has_mask = (
            masks.flatten(1).any(1)
            if masks is not None
            else torch.zeros(len(inputs), dtype=torch.bool)
        )
        masked += int(has_mask.sum())
        if masks is not None and has_mask.any():
            where = masks[has_mask]
            mask_share.append(where.flatten(1).float().mean(1))
            if batch.regions is not None:
                regions, seam = batch.regions[has_mask], blend_boundary(where)
                counts = torch.zeros(len(where), int(regions.max()) + 1).scatter_add_(
                    1, regions.flatten(1).long(), seam.flatten(1).float()
                )
                seam_regions.append(counts.argmax(1))
        for m in methods:
            if steps:  # 0: localisation only
                deletion, insertion = deletion_insertion(
                    model, inputs, display[m], baseline, steps, batch_size=batch_size
                )
                per_image["deletion"][m].append(deletion)
                per_image["insertion"][m].append(insertion)
            if has_mask.any():
                shown = display[m][has_mask].cpu()
                per_image["pointing"][m].append(pointing_game(shown, where.cpu()).float())
                per_image["mass"][m].append(mass_inside(shown, where.cpu()))
                if batch.regions is not None:
                    hits = top_region_hits(shown, seam.cpu(), regions.cpu())
                    per_image["region_hit"][m].append(hits.float())
        if sum(len(x) for x in sanity_inputs) < sanity_images:
            sanity_inputs.append(inputs)
    if not labels_seen:
        raise FakescopeError("xai_eval got no images")
    labels = torch.cat(labels_seen)
    fake = labels > 0.5

    def mean(values: list[Tensor], select: Tensor | None = None) -> float:
        if not values:
            return math.nan
        x = torch.cat(values).double()
        x = x[select] if select is not None else x
        return float(x.nanmean()) if len(x) else math.nan

    seams = torch.cat(seam_regions) if seam_regions else torch.empty(0, dtype=torch.long)
    sanity = randomisation_check(
        model,
        torch.cat(sanity_inputs)[:sanity_images],
        methods,
        layers,
        sanity_depth,
        explainer=lambda net, images: _maps(
            net, EvalBatch(images, torch.zeros(len(images))), methods, layers, samples
        ),
    )
    return {
        "images": len(labels),
        "fakes": int(fake.sum()),
        "masked_images": masked,
        "layers": list(layers),
        "baseline": baseline,
        "steps": steps,
        "samples": samples,
        "table1": {v: aggregate_table1(table1[v]) for v in variants},
        "deletion": {
            m: {"all": mean(per_image["deletion"][m]), "fake": mean(per_image["deletion"][m], fake)}
            for m in methods
        },
        "insertion": {
            m: {
                "all": mean(per_image["insertion"][m]),
                "fake": mean(per_image["insertion"][m], fake),
            }
            for m in methods
        },
        "pointing_game": {m: mean(per_image["pointing"][m]) for m in methods},
        "mass_inside_mask": {m: mean(per_image["mass"][m]) for m in methods},
        "top_region_is_seam": {m: mean(per_image["region_hit"][m]) for m in methods},
        "chance": {
            "mask_share": mean(mask_share),
            "seam_region": float(seams.bincount().max() / len(seams)) if len(seams) else math.nan,
            "seam_regions": {
                REGIONS[int(r)]: int(n) for r, n in zip(*seams.unique(return_counts=True))
            },
        },
        "seconds_per_image": {
            m: cam_seconds[m] if m in METHODS else seconds[m] / len(labels) for m in methods
        },
        "sanity": sanity,
    }


def _fmt(x: float | None, percent: bool = False) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "\N{EN DASH}"
    return f"{100 * x:.1f}%" if percent else f"{x:.3f}"


def _json_safe(obj):
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj


def write_xai_report(results: dict, out_dir: str | Path) -> tuple[Path, Path]:
    """Write `xai.json` and `xai.md` (Table 1 beside the paper, faithfulness, localisation,
    sanity)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out / "xai.json", out / "xai.md"
    json_path.write_text(json.dumps(_json_safe(results), indent=2))

    lines = [
        f"# Explanation quality ({results['images']} images, {results['fakes']} fake; "
        f"layers N={results['layers'][0]}, N-1={results['layers'][1]})",
        "",
    ]
    table1 = results.get("table1", {})
    if table1:
        head = ["statistic", "paper"] + [
            f"{v} {kind}" for v in table1 for kind in ("pixel-weighted", "per-image")
        ]
        lines += [
            "## Table 1: HiResCAM++ inside HiResCAM's region at N",
            "",
            _row(head),
            _row(["---"] * len(head)),
        ]
        for k in TABLE1_KEYS:
            pct = k in ("outside_share", "coincidence")
            cells = [
                _fmt(t[agg][k], pct)
                for t in table1.values()
                for agg in ("pixel_weighted", "per_image")
            ]
            lines.append(_row([k, _fmt(TABLE1_PAPER[k], pct), *cells]))
        lines += ["", f"Closest to the paper (pixel-weighted): {closest_to_paper(table1)}", ""]
    chance = results.get("chance", {})
    head = [
        "method",
        "deletion AUC ↓",
        "deletion AUC (fakes) ↓",
        "insertion AUC ↑",
        "insertion AUC (fakes) ↑",
        "pointing game ↑",
        "mass inside mask ↑",
        "top region = seam region ↑",
        "s / image",
    ]
    steps = results.get("steps", 20)
    faithfulness = f"{results['baseline']} baseline, {steps} steps" if steps else "not measured"
    lines += [
        f"## Faithfulness ({faithfulness}) and localisation "
        f"({results['masked_images']} masked images)",
        "",
        _row(head),
        _row(["---"] * len(head)),
    ]
    for m in results["deletion"]:
        lines.append(
            _row(
                [
                    m,
                    _fmt(results["deletion"][m]["all"]),
                    _fmt(results["deletion"][m]["fake"]),
                    _fmt(results["insertion"][m]["all"]),
                    _fmt(results["insertion"][m]["fake"]),
                    _fmt(results["pointing_game"][m], True),
                    _fmt(results["mass_inside_mask"][m], True),
                    _fmt(results.get("top_region_is_seam", {}).get(m), True),
                    _fmt(results.get("seconds_per_image", {}).get(m)),
                ]
            )
        )
    if chance:
        lines.append(
            _row(
                [
                    "chance",
                    "",
                    "",
                    "",
                    "",
                    _fmt(chance["mask_share"], True),
                    _fmt(chance["mask_share"], True),
                    _fmt(chance["seam_region"], True),
                    "",
                ]
            )
        )
        lines += [
            "",
            "Chance: a random pixel lands in the mask, and a uniform map puts its mass there, "
            "as often as the mask's share of the crop; no fixed guess of the region holding the "
            "blend seam beats the seam's most common region "
            f"({', '.join(f'{r}: {n}' for r, n in chance['seam_regions'].items())}).",
        ]
    sanity = results["sanity"]
    head = ["method"] + [f"random up to {s}" for s in sanity["stages"]]
    lines += [
        "",
        "## Sanity check: Spearman correlation with the original map after cascading randomisation",
        "",
        _row(head),
        _row(["---"] * len(head)),
    ]
    lines += [_row([m, *(_fmt(c) for c in cs)]) for m, cs in sanity["spearman"].items()]
    md_path.write_text("\n".join(lines) + "\n")
    return json_path, md_path


def _row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _help(default: object, help: str) -> Any:
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class XaiRun:
    """What `xai-eval` measures and how; the command has an option per field."""

    methods: str | None = _help(
        None,
        "comma-separated: CAMs, lime, kernelshap, occlusion, 'centre prior' (default: every CAM)",
    )
    baseline: str = _help("mean", "deletion / insertion baseline: mean (colour), blur or noise")
    steps: int = _help(20, "deletion / insertion steps")
    samples: int = _help(SAMPLES, "perturbed inputs per image for LIME and KernelSHAP")
    sanity_images: int = _help(8, "images in the randomisation check")
    sanity_depth: int = _help(4, "units randomised, from the classifier down")
    # Deletion / insertion cost grows with the steps, the methods and the images.
    localisation_only: bool = _help(False, "self-blended fakes only, no deletion / insertion")

    def __post_init__(self) -> None:
        for name in ("steps", "samples", "sanity_images", "sanity_depth"):
            if getattr(self, name) < 1:
                raise SettingError(f"{name} must be at least 1, got {getattr(self, name)}", name)

    @property
    def chosen(self) -> list[str]:
        """The methods asked for, or every CAM."""
        given = [m.strip() for m in (self.methods or "").split(",") if m.strip()]
        return given or list(METHODS)


def run_xai_eval(
    member: Member,
    faces: Iterable[LabelledFace],
    out_dir: str | Path,
    dataset: str = "",
    run: XaiRun | None = None,
    batch: int = 8,
    seed: int = 0,
) -> tuple[Path, Path]:
    """Explain one ensemble member on labelled face crops.

    Batches hold the real and fake faces (no masks) and, for every real face, a self-blended
    pseudo-fake whose blending mask is the ground truth for localisation, with the face's
    regions laid out from its landmarks.
    """
    run = run or XaiRun()
    localisation_only = run.localisation_only
    policy = member.spec.crop
    device = next(member.model.parameters()).device
    rng = random.Random(seed)
    shape = (policy.size, policy.size)

    def evaluated(chunk: list[LabelledFace]):
        labels = torch.tensor([f.label for f in chunk], dtype=torch.float32)
        boxes = torch.tensor([f.box for f in chunk], dtype=torch.float32)
        if not localisation_only:
            yield EvalBatch(
                to_tensor([f.crop for f in chunk], policy).to(device), labels, boxes=boxes
            )
        reals = [f for f in chunk if f.label == 0]
        if reals:
            uint8 = torch.stack(
                [torch.from_numpy(f.crop).permute(2, 0, 1).contiguous() for f in reals]
            )
            inputs, fake_labels, masks = self_blended(uint8, policy.mean, policy.std, rng)
            regions = torch.stack(
                [torch.from_numpy(region_labels(shape, f.box, f.landmarks)) for f in reals]
            )
            yield EvalBatch(
                inputs.to(device),
                fake_labels,
                masks,
                regions,
                torch.tensor([f.box for f in reals], dtype=torch.float32),
            )

    def batches():
        chunk: list[LabelledFace] = []
        for face in faces:
            chunk.append(face)
            if len(chunk) == batch:
                yield from evaluated(chunk)
                chunk = []
        if chunk:
            yield from evaluated(chunk)

    results = xai_eval(
        member.model,
        batches(),
        run.chosen,
        member.cam_layers,
        run.baseline,
        run.sanity_images,
        run.sanity_depth,
        steps=0 if localisation_only else run.steps,
        samples=run.samples,
    )
    results["model"] = {
        "name": member.spec.name,
        "arch": member.spec.arch,
        "sha256": member.spec.sha256,
    }
    results["dataset"] = dataset
    return write_xai_report(results, out_dir)
