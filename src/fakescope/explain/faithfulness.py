"""Faithfulness and localisation metrics of explanations: the paper's Table 1 (HiResCAM++
against HiResCAM), deletion / insertion AUC, localisation on self-blended pseudo-fakes with
exact masks, and the model-randomisation sanity check (definitions in docs/explanations.md)."""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Callable, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF
from torch import Tensor, nn

from ..blending import SelfBlend
from ..models.registry import resolve_cam_layers
from ..types import FakescopeError
from .cam import METHODS, explain, fake_logit, upsample

# --- the paper's Table 1 --------------------------------------------------------------------


def table1_stats(p: Tensor, r: Tensor) -> dict[str, Tensor]:
    """Per-image Table 1 quantities for P = hirescam++ and R = hirescam at N (B x H x W or H x W).

    Both upsampled to the crop size, before min-max; nonzero means > 0. Counts and sums come
    along so that `aggregate_table1` can form pixel-weighted totals. Undefined ratios are NaN.
    """
    p, r = p.reshape(-1, *p.shape[-2:]).double(), r.reshape(-1, *r.shape[-2:]).double()
    pos, rpos = p > 0, r > 0
    outside, inside = pos & ~rpos, pos & rpos
    scaled = p / p.flatten(1).amax(1).clamp_min(1e-300)[:, None, None]
    count = lambda m: m.flatten(1).sum(1).double()  # noqa: E731
    stats = {
        "n_positive": count(pos),
        "n_outside": count(outside),
        "n_inside": count(inside),
        "n_union": count(pos | rpos),
        "sum_outside": (scaled * outside).flatten(1).sum(1),
        "sum_inside": (scaled * inside).flatten(1).sum(1),
    }
    return {**stats, **_table1_ratios(stats)}


def _table1_ratios(s: dict[str, Tensor]) -> dict[str, Tensor]:
    div = lambda a, b: torch.where(b > 0, a / b, math.nan)  # noqa: E731
    return {
        "outside_share": div(s["n_outside"], s["n_positive"]),
        "mean_outside": div(s["sum_outside"], s["n_outside"]),
        "mean_inside": div(s["sum_inside"], s["n_inside"]),
        "coincidence": div(s["n_inside"], s["n_union"]),
    }


TABLE1_KEYS = ("outside_share", "mean_outside", "mean_inside", "coincidence")
TABLE1_PAPER = {
    "outside_share": 0.03,
    "mean_outside": 0.09,
    "mean_inside": 0.71,
    "coincidence": 0.63,
}


def aggregate_table1(batches: Iterable[dict[str, Tensor]]) -> dict:
    """Pixel-weighted totals and per-image means (undefined images skipped) of
    `table1_stats` outputs."""
    batches = list(batches)
    if not batches:
        raise FakescopeError("no Table 1 statistics to aggregate")
    cat = {k: torch.cat([b[k] for b in batches]) for k in batches[0]}
    totals = {k: v.sum() for k, v in cat.items() if k.startswith(("n_", "sum_"))}
    return {
        "images": len(cat["n_positive"]),
        "images_with_nonzero_p": int((cat["n_positive"] > 0).sum()),
        "pixel_weighted": {k: float(v) for k, v in _table1_ratios(totals).items()},
        "per_image": {k: float(cat[k].nanmean()) for k in TABLE1_KEYS},
    }


# --- faithfulness and localisation ----------------------------------------------------------


def _baseline(images: Tensor, kind: str) -> Tensor:
    if kind == "mean":
        return images.mean((2, 3), keepdim=True).expand_as(images)
    if kind == "blur":
        # Strong enough to erase the high-frequency traces that deepfake detectors rely on.
        sigma = max(images.shape[-2:]) / 32
        kernel = 2 * math.ceil(2 * sigma) + 1
        return TF.gaussian_blur(images, [kernel, kernel], [sigma, sigma])
    if kind == "noise":
        # ROAD-style noisy imputation (Rong et al., 2022), simplified: the blurred neighbourhood
        # plus noise, so that neither the mask's shape nor a flat colour gives the pixels away.
        noise = torch.randn(images.shape, generator=torch.Generator().manual_seed(0))
        return _baseline(images, "blur") + 0.2 * images.std() * noise.to(images.device)
    raise FakescopeError(f"baseline must be 'blur', 'mean' or 'noise', not {kind!r}")


@torch.inference_mode()
def deletion_insertion(
    model: nn.Module,
    images: Tensor,
    maps: Tensor,
    baseline: str = "blur",
    steps: int = 20,
    batch_size: int = 64,
    score: Callable[[Tensor], Tensor] = torch.sigmoid,
) -> tuple[Tensor, Tensor]:
    """Per-image deletion and insertion AUCs (B each) of P(fake) over the share of pixels changed.

    Pixels are taken in descending order of the map (ties in a fixed random order), 1/steps of
    them per step; deletion replaces them by the baseline, insertion reveals them on it.
    All steps of all images run through the model in batches of about `batch_size`.
    """
    b, _, h, w = images.shape
    if maps.shape != (b, h, w):
        maps = upsample(maps, (h, w))
    base = _baseline(images, baseline)
    ties = torch.randperm(h * w, generator=torch.Generator().manual_seed(0))
    order = ties[maps.flatten(1)[:, ties].argsort(dim=1, descending=True, stable=True)]
    rank = (
        torch.empty_like(order)
        .scatter_(1, order, torch.arange(h * w).expand(b, -1))
        .view(b, 1, h, w)
    )
    counts = [round(k * h * w / steps) for k in range(steps + 1)]
    per_chunk = max(1, batch_size // b)
    was_training = model.training
    model.eval()
    curves = []
    for first, second in ((base, images), (images, base)):  # deletion: ranked pixels -> baseline
        scores = []
        for start in range(0, steps + 1, per_chunk):
            mixed = torch.cat(
                [torch.where(rank < c, first, second) for c in counts[start : start + per_chunk]]
            )
            scores.append(score(fake_logit(model(mixed)).float()).view(-1, b))
        curves.append(torch.cat(scores))  # (steps + 1) x B
    model.train(was_training)
    x = torch.linspace(0, 1, steps + 1)
    deletion, insertion = (torch.trapezoid(c, x, dim=0) for c in curves)
    return deletion, insertion


def pointing_game(maps: Tensor, masks: Tensor) -> Tensor:
    """Per image: is the map's maximum inside the mask (False for an all-zero map)?"""
    flat = maps.flatten(1)
    hit = masks.flatten(1).bool().gather(1, flat.argmax(1, keepdim=True))[:, 0]
    return hit & (flat.amax(1) > 0)


def mass_inside(maps: Tensor, masks: Tensor) -> Tensor:
    """Per image: share of the map's mass inside the mask (NaN for an all-zero map)."""
    total = maps.flatten(1).sum(1)
    inside = (maps * masks.bool()).flatten(1).sum(1)
    return torch.where(total > 0, inside / total, math.nan)


TOP_K = 0.2  # share of a crop's pixels, the map's highest, compared with the mask (IoU)


def top_k_pixels(maps: Tensor, k: float = TOP_K) -> Tensor:
    """B x (H * W) bool: each map's top k share of pixels, ties in a fixed random order."""
    flat = maps.flatten(1).float()
    count = max(1, round(k * flat.shape[1]))
    ties = torch.randperm(flat.shape[1], generator=torch.Generator().manual_seed(0))
    top = ties[flat[:, ties].argsort(dim=1, descending=True, stable=True)[:, :count]]
    return torch.zeros(flat.shape, dtype=torch.bool).scatter_(1, top, True)


def top_k_iou(maps: Tensor, masks: Tensor, k: float = TOP_K) -> Tensor:
    """Per image: IoU of the map's top k share of pixels with the mask (NaN for an all-zero
    map)."""
    chosen, truth = top_k_pixels(maps, k), masks.flatten(1).bool()
    iou = (chosen & truth).sum(1) / (chosen | truth).sum(1).clamp_min(1)
    return torch.where(maps.flatten(1).amax(1) > 0, iou.double(), math.nan)


def top_k_chance(masks: Tensor, k: float = TOP_K) -> Tensor:
    """Per image: the expected IoU of k's share of pixels drawn at random with the mask."""
    m = masks.flatten(1).double().mean(1)
    return k * m / (k + m - k * m).clamp_min(1e-12)


def blend_boundary(masks: Tensor, width: int | None = None) -> Tensor:
    """B x H x W bool: pixels within about width / 2 of a binary mask's edge (default width:
    a sixteenth of the crop), where a blend's seam lies."""
    width = width or max(3, masks.shape[-1] // 16) | 1
    m = masks.float()[:, None]
    grown = F.max_pool2d(m, width, 1, width // 2)
    shrunk = -F.max_pool2d(-m, width, 1, width // 2)
    return (grown > shrunk)[:, 0]


def top_region_hits(
    maps: Tensor, boundaries: Tensor, labels: Tensor, k: float | None = None
) -> Tensor:
    """Per image: does the region with the largest share of the map's positive mass (`k`:
    of the map's top k share of pixels, counted) also hold most of the truth (the blend
    boundary, or a manipulation's mask)? (labels: B x H x W region indices; False for an
    empty map)."""
    count = int(labels.max()) + 1
    flat = labels.flatten(1).long()
    weight = maps.flatten(1).clamp_min(0).float()
    if k is not None:
        weight = top_k_pixels(maps, k).float() * (weight.amax(1, keepdim=True) > 0)
    mass = torch.zeros(len(maps), count).scatter_add_(1, flat, weight)
    seam = torch.zeros(len(maps), count).scatter_add_(1, flat, boundaries.flatten(1).float())
    return (mass.argmax(1) == seam.argmax(1)) & (mass.sum(1) > 0)


def _top_down_units(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Parameterised top-level modules from the output backwards, block containers opened
    one level."""
    units = []
    for name, child in reversed(list(model.named_children())):
        if isinstance(child, (nn.Sequential, nn.ModuleList)):
            units += [(f"{name}.{n}", c) for n, c in reversed(list(child.named_children()))]
        else:
            units.append((name, child))
    return [(name, unit) for name, unit in units if any(True for _ in unit.parameters())]


def _randomise(unit: nn.Module) -> None:
    for module in unit.modules():
        reset = getattr(module, "reset_parameters", None)
        if reset is not None:
            reset()
        else:
            for p in module.parameters(recurse=False):
                nn.init.normal_(p, std=0.02)


def _spearman(a: Tensor, b: Tensor) -> list[float]:
    from scipy.stats import spearmanr  # slow to import, needed by xai-eval only

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a constant map has no rank correlation: NaN
        return [
            float(spearmanr(x, y).statistic)
            for x, y in zip(a.flatten(1).numpy(), b.flatten(1).numpy())
        ]


def randomisation_check(
    model: nn.Module,
    batch: Tensor,
    methods: Sequence[str] = METHODS,
    layers: tuple[str, str] | None = None,
    depth: int = 4,
    seed: int = 0,
    explainer: Callable[[nn.Module, Tensor], dict[str, Tensor]] | None = None,
) -> dict:
    """Cascading model-randomisation sanity check (Adebayo et al., 2018) on a deep copy.

    The top `depth` units (classifier first, then the last blocks) are re-initialised one
    after another; after each, the Spearman rank correlation of every method's raw map with
    the original one (mean over images). A faithful map decorrelates. `explainer` gives raw
    maps by method for (model, batch); by default the CAMs' (`cam.explain`).
    """
    if explainer is None:
        layers = layers or resolve_cam_layers(model)

        def explainer(net: nn.Module, images: Tensor) -> dict[str, Tensor]:
            result = explain(net, images, methods, layers)
            return {m: result[m].raw for m in methods}

    original = explainer(model, batch)
    copied = copy.deepcopy(model)
    stages: list[str] = []
    spearman: dict[str, list[float]] = {m: [] for m in methods}
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        for name, unit in _top_down_units(copied)[:depth]:
            _randomise(unit)
            result = explainer(copied, batch)
            stages.append(name)
            for m in methods:
                values = [v for v in _spearman(original[m], result[m]) if not math.isnan(v)]
                spearman[m].append(float(np.mean(values)) if values else math.nan)
    return {"stages": stages, "spearman": spearman}


def self_blended(
    images: Tensor,
    landmarks: Tensor,
    mean: Sequence[float],
    std: Sequence[float],
    seed: int,
    threshold: float = 0.5,
) -> tuple[Tensor, Tensor, Tensor]:
    """Pseudo-fakes with exact masks from real uint8 B x 3 x S x S crops: (inputs, labels, masks).

    Blended as training blends them (`blending.SelfBlend`: masks shaped by each face's
    landmarks, B x 5 x 2 or B x 68 x 2 fractions of the crop), its draws seeded by `seed`
    and torch's generator left where it was; rounded to whole levels, as a stored image is.
    Inputs are normalised with the model's mean/std; the mask marks where the blended face
    weighs at least `threshold` of its maximum.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        blended, soft = SelfBlend()(images.float() / 255, landmarks.float())
    soft = soft[:, 0]
    masks = soft >= threshold * soft.flatten(1).amax(1).clamp_min(1e-6)[:, None, None]
    m, s = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
    inputs = ((blended * 255).round() / 255 - m) / s
    return inputs, torch.ones(len(images)), masks


def closest_to_paper(table1: dict) -> str | None:
    """The hirescam++ variant whose pixel-weighted Table 1 is nearest the paper's (sum of
    absolute gaps).

    A variant with no pixels outside R (always so for 'gate') counts their mean value as 0.
    """

    def gap(t: dict, k: str) -> float:
        value = t["pixel_weighted"][k]
        return abs(
            (0.0 if k == "mean_outside" and t["pixel_weighted"]["outside_share"] == 0 else value)
            - TABLE1_PAPER[k]
        )

    gaps = {v: sum(gap(t, k) for k in TABLE1_KEYS) for v, t in table1.items()}
    gaps = {v: g for v, g in gaps.items() if not math.isnan(g)}
    return min(gaps, key=gaps.__getitem__) if gaps else None
