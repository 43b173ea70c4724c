"""`fakescope xai-eval`: every explanation method of one model scored on the same metrics
(faithfulness.py) over labelled face crops, and localisation against the masks of
self-blended pseudo-fakes or of real manipulations (pairs.py); xai.json and xai.md."""

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

from ..blending import MEAN_LANDMARKS
from ..crops import to_tensor
from ..metrics import mean_with_interval
from ..models.ensemble import Member
from ..models.registry import resolve_cam_layers
from ..types import Box, FakescopeError, SettingError
from .agnostic import AGNOSTIC, CENTRE_PRIOR, SAMPLES, agnostic_map, centre_prior
from .cam import HIRESCAM_PP, METHODS, explain, fake_logit, minmax, upsample
from .faithfulness import (
    TABLE1_KEYS,
    TABLE1_PAPER,
    TOP_K,
    aggregate_table1,
    blend_boundary,
    closest_to_paper,
    deletion_insertion,
    mass_inside,
    pointing_game,
    randomisation_check,
    self_blended,
    table1_stats,
    top_k_chance,
    top_k_iou,
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
    # B x H x W bool: the pixels whose region the map's top region should be; default the
    # masks' blend seam (self-blended fakes), the masks themselves for real manipulations
    targets: Tensor | None = None
    groups: Sequence[str] | None = None  # per image: its manipulation, results per group
    sources: Sequence[str] | None = None  # per image: its video, which intervals resample


@dataclass
class LabelledFace:
    """A face crop to explain, with where the face lies in it (crop pixels)."""

    crop: np.ndarray  # size x size RGB uint8
    label: int  # 1 = fake
    box: Box
    landmarks: np.ndarray | None = None  # 5 x 2, as regions.region_labels takes them
    mask: np.ndarray | None = None  # size x size bool: where a real manipulation changed it
    group: str = ""  # the manipulation (or "real")
    source: str = ""  # the video it comes from


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
    region_truth: str = "seam",
) -> dict:
    """Table 1, deletion/insertion AUCs, localisation, seconds per image and the sanity check.

    Batches are `EvalBatch`es or (inputs, labels, masks) tuples; masks, where given and not
    empty, mark the manipulated pixels. Methods: any of EVAL_METHODS. Localisation is given
    beside its chance level: the mask's share of the crop for the pointing game and the
    mass inside, and for the top region the share of the truth's most common region (the
    truth: the `region_truth` of the batches' targets, the blend "seam" or the "mask").
    `localisation` holds each metric with a 95% interval, over all masked images and per
    group, resampling the images' sources.
    """
    unknown = [m for m in methods if m not in EVAL_METHODS]
    if unknown:
        raise FakescopeError(
            f"unknown method(s) {', '.join(unknown)}; known: {', '.join(EVAL_METHODS)}"
        )
    layers = layers or resolve_cam_layers(model)
    variants = [m for m in methods if m in HIRESCAM_PP]
    table1_methods = [*variants, *(["hirescam"] if variants else [])]
    computed = list(dict.fromkeys([*methods, *table1_methods]))
    table1: dict[str, list] = {v: [] for v in variants}
    keys = ("deletion", "insertion", "pointing", "mass", "iou", "region_hit", "region_hit_top")
    per_image: dict[str, dict[str, list]] = {k: {m: [] for m in methods} for k in keys}
    labels_seen: list[Tensor] = []
    sanity_inputs: list[Tensor] = []
    mask_share: list[Tensor] = []
    iou_chance: list[Tensor] = []
    truth_regions: list[Tensor] = []
    mask_regions: list[Tensor] = []  # masked image x region: the mask's share in it
    groups: list[str] = []  # of the masked images
    sources: list[str] = []
    judged_fake: list[bool] = []  # of the masked images: P(fake) >= 0.5
    seconds: dict[str, float] = {}  # the other methods' total time
    cam_seconds: dict[str, float] = {}
    masked = 0
    for item in batches:
        batch = item if isinstance(item, EvalBatch) else EvalBatch(*item)
        inputs, labels, masks = batch.inputs, batch.labels, batch.masks
        has_mask = (
            masks.flatten(1).any(1)
            if masks is not None
            else torch.zeros(len(inputs), dtype=torch.bool)
        )
        if not steps and not has_mask.any():
            if not table1_methods:
                continue
            asked = table1_methods  # localisation only: unmasked images serve Table 1 alone
        else:
            asked = computed
            if not cam_seconds:
                cam_seconds = _cam_seconds(model, batch, methods, layers)
        raw = _maps(model, batch, asked, layers, samples, seconds)
        size = inputs.shape[-2:]
        display = {m: minmax(upsample(raw[m], size).clamp_min(0)) for m in methods if m in raw}
        for v in variants:
            table1[v].append(table1_stats(upsample(raw[v], size), upsample(raw["hirescam"], size)))
        labels_seen.append(labels.float().view(-1))
        masked += int(has_mask.sum())
        if masks is not None and has_mask.any():
            where = masks[has_mask].cpu()
            picked = has_mask.nonzero()[:, 0].tolist()
            groups += [batch.groups[i] if batch.groups else "" for i in picked]
            sources += [
                batch.sources[i] if batch.sources else f"image {len(sources) + n}"
                for n, i in enumerate(picked)
            ]
            mask_share.append(where.flatten(1).float().mean(1))
            iou_chance.append(top_k_chance(where))
            was_training = model.training
            model.eval()
            with torch.no_grad():
                logits = fake_logit(model(inputs[has_mask])).float().view(-1)
            model.train(was_training)
            judged_fake += (logits >= 0).tolist()
            if batch.regions is not None:
                regions = batch.regions[has_mask].cpu()
                truth = (
                    batch.targets[has_mask].cpu()
                    if batch.targets is not None
                    else blend_boundary(where)
                )
                count = len(REGIONS)
                flat = regions.flatten(1).long()
                counts = torch.zeros(len(where), count).scatter_add_(
                    1, flat, truth.flatten(1).float()
                )
                truth_regions.append(counts.argmax(1))
                inside = torch.zeros(len(where), count).scatter_add_(
                    1, flat, where.flatten(1).float()
                )
                mask_regions.append(inside / inside.sum(1, keepdim=True))
        for m in methods:
            if steps:  # 0: localisation only
                deletion, insertion = deletion_insertion(
                    model, inputs, display[m], baseline, steps, batch_size=batch_size
                )
                per_image["deletion"][m].append(deletion)
                per_image["insertion"][m].append(insertion)
            if has_mask.any():
                shown = display[m][has_mask].cpu()
                per_image["pointing"][m].append(pointing_game(shown, where).float())
                per_image["mass"][m].append(mass_inside(shown, where))
                per_image["iou"][m].append(top_k_iou(shown, where))
                if batch.regions is not None:
                    hits = top_region_hits(shown, truth, regions)
                    per_image["region_hit"][m].append(hits.float())
                    hits = top_region_hits(shown, truth, regions, TOP_K)
                    per_image["region_hit_top"][m].append(hits.float())
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

    seams = torch.cat(truth_regions) if truth_regions else torch.empty(0, dtype=torch.long)
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
    localisation = {
        "all": _localisation(per_image, mask_share, iou_chance, seams, mask_regions, sources)
    }
    selections = {group: [g == group for g in groups] for group in sorted(set(groups) - {""})}
    # Whether the map can point at the manipulation when the model does not see it.
    selections["P(fake) >= 0.5"] = judged_fake
    selections["P(fake) < 0.5"] = [not j for j in judged_fake]
    for name, select in selections.items():
        localisation[name] = _localisation(
            per_image, mask_share, iou_chance, seams, mask_regions, sources, select
        )
    return {
        "images": len(labels),
        "fakes": int(fake.sum()),
        "masked_images": masked,
        "layers": list(layers),
        "baseline": baseline,
        "steps": steps,
        "samples": samples,
        "region_truth": region_truth,
        "top_k": TOP_K,
        "table1": {v: aggregate_table1(table1[v]) for v in variants},
        "table1_by_label": {
            v: {
                name: aggregate_table1([_select(table1[v], labels_seen, want)])
                for name, want in (("real", False), ("fake", True))
                if bool((fake == want).any())
            }
            for v in variants
        },
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
        "localisation": localisation,
        "seconds_per_image": {
            m: cam_seconds.get(m, math.nan)
            if m in METHODS
            else seconds.get(m, math.nan) / len(labels)
            for m in methods
        },
        "sanity": sanity,
    }


def _select(stats: list[dict[str, Tensor]], labels: list[Tensor], fake: bool) -> dict:
    """Table 1 statistics of the real (or fake) images only, as one batch."""
    keep = torch.cat(labels) > 0.5 if fake else torch.cat(labels) <= 0.5
    return {k: torch.cat([b[k] for b in stats])[keep] for k in stats[0]}


def _localisation(
    per_image: dict[str, dict[str, list]],
    mask_share: list[Tensor],
    iou_chance: list[Tensor],
    truth_regions: Tensor,
    mask_regions: list[Tensor],
    sources: list[str],
    select: list[bool] | None = None,
) -> dict:
    """Localisation metrics of the masked images (those in `select`), each a mean with a 95%
    interval that resamples their sources; the chance levels; the mask's share per region."""
    keep = np.ones(len(sources), bool) if select is None else np.asarray(select, bool)
    clusters = np.asarray(sources)[keep]

    def summary(values: list[Tensor]) -> dict[str, float]:
        x = torch.cat(values).double().numpy() if values else np.empty(0)
        if len(x) != len(keep):  # not measured on every masked image (no regions, say)
            return mean_with_interval([])
        return mean_with_interval(x[keep], clusters)

    names = {"pointing_game": "pointing", "mass_inside_mask": "mass", "iou_top_k": "iou"}
    result: dict = {
        "images": int(keep.sum()),
        "sources": len(set(clusters)),
        **{name: {m: summary(v) for m, v in per_image[key].items()} for name, key in names.items()},
        "chance": {"mask_share": summary(mask_share), "iou_top_k": summary(iou_chance)},
    }
    if len(truth_regions):
        truth = truth_regions[torch.from_numpy(keep)]
        counts = truth.bincount(minlength=len(REGIONS))
        result["top_region_hit"] = {m: summary(v) for m, v in per_image["region_hit"].items()}
        # The region named by where the map's top 20% of pixels lie, counted, not weighed:
        # a peaky map's few hot spots then do not decide alone.
        result["top_region_hit_top_k"] = {
            m: summary(v) for m, v in per_image["region_hit_top"].items()
        }
        result["truth_regions"] = {REGIONS[r]: int(n) for r, n in enumerate(counts) if n}
        best = int(counts.argmax())
        result["chance"]["fixed_region"] = {
            "region": REGIONS[best],
            **mean_with_interval((truth == best).double().numpy(), clusters),
        }
        shares = torch.cat(mask_regions)[torch.from_numpy(keep)].double()
        result["mask_regions"] = {
            REGIONS[r]: float(shares[:, r].mean()) for r in range(len(REGIONS))
        }
    return result


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
    truth = "mask" if results.get("region_truth") == "mask" else "seam"
    head = [
        "method",
        "deletion AUC ↓",
        "deletion AUC (fakes) ↓",
        "insertion AUC ↑",
        "insertion AUC (fakes) ↑",
        "pointing game ↑",
        "mass inside mask ↑",
        f"top region = {truth} region ↑",
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
            "as often as the mask's share of the crop; no fixed guess of the region holding "
            f"most of the {'mask' if truth == 'mask' else 'blend seam'} beats its most common "
            "region "
            f"({', '.join(f'{r}: {n}' for r, n in chance['seam_regions'].items())}).",
        ]
    lines += _localisation_lines(results)
    if results.get("skipped"):
        lines += ["", "Left out:", "", *(f"- {reason}" for reason in results["skipped"])]
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


def _interval(x: dict | None) -> str:
    if not x or x["value"] is None or math.isnan(x["value"]):
        return "\N{EN DASH}"
    return f"{100 * x['value']:.1f}% [{100 * x['low']:.0f}, {100 * x['high']:.0f}]"


def _localisation_lines(results: dict) -> list[str]:
    """Localisation per group with 95% intervals, the truth's regions, and Table 1 by label."""
    groups = {g: r for g, r in results.get("localisation", {}).items() if r["images"]}
    if not groups:
        return []
    truth = "the mask" if results.get("region_truth") == "mask" else "the seam"
    k = f"{100 * results.get('top_k', TOP_K):.0f}%"
    lines = [
        "",
        "## Localisation with 95% intervals (resampling videos or images)",
    ]
    for group, r in groups.items():
        head = [
            "method",
            "pointing game ↑",
            "mass inside mask ↑",
            f"IoU of top {k} ↑",
            f"top region = {truth}'s largest ↑",
            f"same, region by its top {k} pixels ↑",
        ]
        lines += [
            "",
            f"### {group}: {r['images']} faces from {r['sources']} sources",
            "",
            _row(head),
            _row(["---"] * len(head)),
        ]
        for m in r["pointing_game"]:
            lines.append(
                _row(
                    [
                        m,
                        _interval(r["pointing_game"][m]),
                        _interval(r["mass_inside_mask"][m]),
                        _interval(r["iou_top_k"][m]),
                        _interval(r.get("top_region_hit", {}).get(m)),
                        _interval(r.get("top_region_hit_top_k", {}).get(m)),
                    ]
                )
            )
        chance = r["chance"]
        fixed = chance.get("fixed_region")
        lines.append(
            _row(
                [
                    "chance",
                    _interval(chance["mask_share"]),
                    _interval(chance["mask_share"]),
                    _interval(chance["iou_top_k"]),
                    f"{_interval(fixed)} (always {fixed['region']})" if fixed else "",
                    "",
                ]
            )
        )
        if "mask_regions" in r:
            shares = sorted(r["mask_regions"].items(), key=lambda kv: -kv[1])
            lines += [
                "",
                "Share of the mask per region: "
                + ", ".join(f"{name} {100 * v:.0f}%" for name, v in shares)
                + f". Region holding most of {truth}: "
                + ", ".join(f"{name} {n}" for name, n in r["truth_regions"].items())
                + ".",
            ]
    by_label = results.get("table1_by_label", {})
    if by_label:
        head = ["statistic", "paper"] + [
            f"{v} {label}" for v, labels in by_label.items() for label in labels
        ]
        lines += [
            "",
            "## Table 1 by label (pixel-weighted)",
            "",
            _row(head),
            _row(["---"] * len(head)),
        ]
        for key in TABLE1_KEYS:
            pct = key in ("outside_share", "coincidence")
            cells = [
                _fmt(t["pixel_weighted"][key], pct)
                for labels in by_label.values()
                for t in labels.values()
            ]
            lines.append(_row([key, _fmt(TABLE1_PAPER[key], pct), *cells]))
    return lines


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


def blend_landmarks(face: LabelledFace) -> Tensor:
    """The 5 landmarks that shape a real face's self-blending mask, as fractions of its crop
    (`blending.SelfBlend` takes them so): the detector's, or where it placed none, the mean
    DFDC crop's (as training blends a folder's crops) laid out in the face's box, which for
    such a face is the image's place in the crop."""
    height, width = face.crop.shape[:2]
    if face.landmarks is None:
        x1, y1, x2, y2 = face.box
        points = np.array([x1, y1]) + MEAN_LANDMARKS * np.array([x2 - x1, y2 - y1])
    else:
        points = np.asarray(face.landmarks, np.float64)
    return torch.from_numpy((points / np.array([width, height])).astype(np.float32))


def run_xai_eval(
    member: Member,
    faces: Iterable[LabelledFace],
    out_dir: str | Path,
    dataset: str = "",
    run: XaiRun | None = None,
    batch: int = 8,
    seed: int = 0,
    pairs: bool = False,
    skipped: list[str] | None = None,
) -> tuple[Path, Path]:
    """Explain one ensemble member on labelled face crops.

    Batches hold the real and fake faces (no masks) and, for every real face, a self-blended
    pseudo-fake whose blending mask, shaped by the face's landmarks as training shapes it
    (`blend_landmarks`), is the ground truth for localisation, with the face's regions laid
    out from its landmarks. `pairs`: the fakes' own masks (`LabelledFace.mask`,
    real manipulations) are the ground truth instead, and nothing is blended.
    `localisation_only`: no deletion / insertion (their cost grows with the steps, the
    methods and the images); unmasked faces then serve Table 1 alone. `skipped`: inputs left
    out (one line each, filled while `faces` is read), listed in the report.
    """
    run = run or XaiRun()
    localisation_only = run.localisation_only
    policy = member.spec.crop
    device = next(member.model.parameters()).device
    rng = random.Random(seed)
    shape = (policy.size, policy.size)

    def regions_of(chunk: list[LabelledFace]) -> Tensor:
        return torch.stack(
            [torch.from_numpy(region_labels(shape, f.box, f.landmarks)) for f in chunk]
        )

    def evaluated(chunk: list[LabelledFace]):
        labels = torch.tensor([f.label for f in chunk], dtype=torch.float32)
        boxes = torch.tensor([f.box for f in chunk], dtype=torch.float32)
        if pairs:
            masks = torch.stack(
                [
                    torch.zeros(shape, dtype=torch.bool)
                    if f.mask is None
                    else torch.from_numpy(f.mask.astype(bool))
                    for f in chunk
                ]
            )
            yield EvalBatch(
                to_tensor([f.crop for f in chunk], policy).to(device),
                labels,
                masks,
                regions_of(chunk),
                boxes,
                targets=masks,
                groups=[f.group for f in chunk],
                sources=[f.source for f in chunk],
            )
            return
        if not localisation_only:
            yield EvalBatch(
                to_tensor([f.crop for f in chunk], policy).to(device), labels, boxes=boxes
            )
        reals = [f for f in chunk if f.label == 0]
        if reals:
            uint8 = torch.stack(
                [torch.from_numpy(f.crop).permute(2, 0, 1).contiguous() for f in reals]
            )
            landmarks = torch.stack([blend_landmarks(f) for f in reals])
            inputs, fake_labels, masks = self_blended(
                uint8, landmarks, policy.mean, policy.std, rng.getrandbits(63)
            )
            yield EvalBatch(
                inputs.to(device),
                fake_labels,
                masks,
                regions_of(reals),
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
        region_truth="mask" if pairs else "seam",
    )
    results["model"] = {
        "name": member.spec.name,
        "arch": member.spec.arch,
        "sha256": member.spec.sha256,
    }
    results["dataset"] = dataset
    results["skipped"] = list(skipped or [])
    return write_xai_report(results, out_dir)
