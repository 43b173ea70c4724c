"""CAM explanations of fakescope's one-logit classifiers, and how to judge them.

Definitions follow `docs/xai-methods.md`: every map explains the fake logit (also for real
faces) at layer N (the pooled feature map) and N-1 (the last stride-16 feature map). All
methods of one batch come from one forward pass and one `torch.autograd.grad` call (plus one
more for `hirescam++filtered`), through `CamCapture`.

Public method names: gradcam-n, gradcam-n1, hirescam (at N), hirescam-n1, hirescam++
(product), hirescam++gate, hirescam++filtered, and gradcam++, layercam, xgradcam, eigencam at N.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import random
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import matplotlib
import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF
from torch import Tensor, nn

from .models.registry import resolve_cam_layers
from .training.augment import self_blend
from .types import FakescopeError

Box = tuple[float, float, float, float]  # x1, y1, x2, y2


# --- hook machinery -------------------------------------------------------------------------


class CamCapture:
    """Records the outputs of named layers in one forward pass and their gradients.

    Inside the `with` block the model is in eval mode with frozen parameters, and the output
    of the first hooked layer to run is swapped for a leaf that requires grad: the graph
    starts there, so the backward pass stops at it and no parameter gradient is computed.
    The model keeps running on a clone of every hooked output, so in-place operations
    downstream cannot alter a captured activation. Hooks, parameter flags and train/eval
    modes are restored on exit, also after an exception.
    """

    def __init__(self, model: nn.Module, layers: Sequence[str], gradients: bool = True):
        self.model, self.layers, self.needs_grad = model, tuple(dict.fromkeys(layers)), gradients
        self.activations: dict[str, Tensor] = {}
        self._handles: list = []
        self._requires_grad: list[tuple[nn.Parameter, bool]] = []
        self._training: list[tuple[nn.Module, bool]] = []
        self._modes = contextlib.ExitStack()

    def __enter__(self) -> CamCapture:
        modules = dict(self.model.named_modules())
        missing = [name for name in self.layers if name not in modules]
        if missing:
            raise FakescopeError(f"{type(self.model).__name__} has no layer(s) {', '.join(missing)}")
        self._requires_grad = [(p, p.requires_grad) for p in self.model.parameters()]
        self._training = [(m, m.training) for m in self.model.modules()]
        for p, _ in self._requires_grad:
            p.requires_grad_(False)
        self.model.eval()
        self._handles = [modules[name].register_forward_hook(self._hook(name)) for name in self.layers]
        # Also works when the caller runs under torch.inference_mode or no_grad.
        self._modes.enter_context(torch.inference_mode(False))
        self._modes.enter_context(torch.set_grad_enabled(self.needs_grad))
        return self

    def __exit__(self, *exc) -> None:
        self._modes.close()
        for handle in self._handles:
            handle.remove()
        self._handles = []
        for p, flag in self._requires_grad:
            p.requires_grad_(flag)
        for m, flag in self._training:
            m.training = flag
        self._requires_grad, self._training = [], []
        # Detached copies outlive the block without keeping the graph alive.
        self.activations = {name: a.detach() for name, a in self.activations.items()}

    def _hook(self, name: str) -> Callable:
        def hook(module: nn.Module, inputs: tuple, output: Tensor) -> Tensor:
            if not isinstance(output, Tensor):
                raise FakescopeError(f"layer {name!r} does not output a single tensor")
            if name in self.activations:
                raise FakescopeError(f"layer {name!r} ran twice in one forward pass")
            if self.needs_grad and not output.requires_grad:
                output = output.detach().requires_grad_()
            self.activations[name] = output
            return output.clone()

        return hook

    def forward(self, batch: Tensor) -> Tensor:
        """The model's logits (B x 1, with graph when gradients are needed)."""
        self.activations = {}
        logits = self.model(batch.detach())
        missing = [name for name in self.layers if name not in self.activations]
        if missing:
            raise FakescopeError(f"layer(s) {', '.join(missing)} did not run in the forward pass")
        return logits

    def grad(self, target: Tensor, layers: Sequence[str], retain_graph: bool = False) -> dict[str, Tensor]:
        """d target / d activation for the named captured layers, in one autograd.grad call."""
        grads = torch.autograd.grad(
            target, [self.activations[name] for name in layers], retain_graph=retain_graph, allow_unused=True
        )
        unused = [name for name, g in zip(layers, grads) if g is None]
        if unused:
            raise FakescopeError(f"layer(s) {', '.join(unused)} do not influence the logit")
        return dict(zip(layers, grads))


def fake_logit(logits: Tensor) -> Tensor:
    """The single logit of each image (B), from B x 1 or B outputs."""
    flat = logits.reshape(logits.shape[0], -1)
    if flat.shape[1] != 1:
        raise FakescopeError(f"explanations need a one-logit model, this one has {flat.shape[1]} outputs")
    return flat[:, 0]


# --- CAM methods: pure functions of activations A and gradients G (B x K x h x w) -----------


def gradcam(a: Tensor, g: Tensor) -> Tensor:
    return F.relu((g.mean((2, 3), keepdim=True) * a).sum(1))


def hirescam(a: Tensor, g: Tensor) -> Tensor:
    return F.relu((g * a).sum(1))


def gradcam_pp(a: Tensor, g: Tensor) -> Tensor:
    g2 = g * g
    alpha = g2 / (2 * g2 + a.sum((2, 3), keepdim=True) * g2 * g + 1e-6)
    alpha = torch.where(g != 0, alpha, 0.0)
    weights = (F.relu(g) * alpha).sum((2, 3), keepdim=True)
    return F.relu((weights * a).sum(1))


def layercam(a: Tensor, g: Tensor) -> Tensor:
    return F.relu((F.relu(g) * a).sum(1))


def xgradcam(a: Tensor, g: Tensor) -> Tensor:
    weights = (g * a / (a.sum((2, 3), keepdim=True) + 1e-7)).sum((2, 3), keepdim=True)
    return F.relu((weights * a).sum(1))


def eigencam(a: Tensor) -> Tensor:
    """Projection on the first principal component of the pixels' channel vectors.

    SVD leaves the sign arbitrary: flip so that the larger extreme is positive, as
    pytorch-grad-cam's sign-corrected projection does.
    """
    b, _, h, w = a.shape
    x = a.flatten(2).transpose(1, 2)
    x = x - x.mean(1, keepdim=True)
    v = torch.linalg.svd(x, full_matrices=False).Vh[:, 0]
    p = (x @ v.unsqueeze(-1)).squeeze(-1)
    p = torch.where((p.amin(1).abs() > p.amax(1).abs())[:, None], -p, p)
    return F.relu(p).view(b, h, w)


def hirescam_pp(h_n1: Tensor, h_n: Tensor, mode: str = "product") -> Tensor:
    """HiResCAM++ from the hirescam maps at N-1 and N ('product' or 'gate').

    The 'filtered' variant needs the graph: it is hirescam(A_{N-1}, G~), see `explain`.
    """
    if mode == "product":
        return h_n1 * upsample(h_n, h_n1.shape[-2:])
    if mode == "gate":
        return h_n1 * (F.interpolate(h_n[:, None], h_n1.shape[-2:], mode="nearest-exact")[:, 0] > 0)
    raise FakescopeError(f"hirescam++ mode must be 'product' or 'gate', not {mode!r}")


_AT_N: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "gradcam-n": gradcam, "hirescam": hirescam, "gradcam++": gradcam_pp, "layercam": layercam, "xgradcam": xgradcam,
}
_AT_N1: dict[str, Callable[[Tensor, Tensor], Tensor]] = {"gradcam-n1": gradcam, "hirescam-n1": hirescam}
_PLUS = {"hirescam++": "product", "hirescam++gate": "gate", "hirescam++filtered": "filtered"}
METHODS: tuple[str, ...] = (*_AT_N, *_AT_N1, *_PLUS, "eigencam")
HIRESCAM_PP: tuple[str, ...] = tuple(_PLUS)


# --- maps -----------------------------------------------------------------------------------


def upsample(maps: Tensor, size: int | Sequence[int]) -> Tensor:
    """B x h x w maps resized bilinearly (align_corners=False) to size."""
    size = (size, size) if isinstance(size, int) else tuple(size)
    if tuple(maps.shape[-2:]) == size:
        return maps
    return F.interpolate(maps[:, None], size, mode="bilinear", align_corners=False)[:, 0]


def minmax(maps: Tensor) -> Tensor:
    """Per-image min-max scaling to [0, 1]; a constant map (all zero included) becomes zero."""
    flat = maps.flatten(1)
    low, high = flat.amin(1)[:, None, None], flat.amax(1)[:, None, None]
    span = high - low
    return torch.where(span > 0, (maps - low) / span.clamp_min(torch.finfo(maps.dtype).tiny), 0.0)


@dataclass
class Explanation:
    raw: Tensor  # B x h x w on the layer's grid, float32, unnormalised
    display: Tensor  # B x H x W at the input size, min-max scaled to [0, 1] per image


@dataclass
class ExplainResult:
    logits: Tensor  # B x 1, from the forward pass that produced the maps
    maps: dict[str, Explanation]
    layers: tuple[str, str]  # (N, N-1)

    def __getitem__(self, method: str) -> Explanation:
        return self.maps[method]


def explain(
    model: nn.Module, batch: Tensor, methods: Sequence[str] = METHODS, layers: tuple[str, str] | None = None
) -> ExplainResult:
    """Every requested method for a batch (B x 3 x H x W) from one forward and one backward pass.

    `layers` is (N, N-1); by default resolved from the model's structure. Only the layers the
    methods need are hooked, so e.g. methods at N alone back-propagate through the head only.
    """
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise FakescopeError(f"unknown explanation method(s) {', '.join(unknown)}; known: {', '.join(METHODS)}")
    n, n1 = layers or resolve_cam_layers(model)
    needs_n = any(m not in _AT_N1 for m in methods)
    needs_n1 = any(m in _AT_N1 or m in _PLUS for m in methods)
    hooked = [name for name, needed in ((n, needs_n), (n1, needs_n1)) if needed]
    needs_grad = any(m != "eigencam" for m in methods)
    filtered = "hirescam++filtered" in methods
    with CamCapture(model, hooked, gradients=needs_grad) as cap:
        logits = cap.forward(batch)
        grads = cap.grad(fake_logit(logits).sum(), hooked, retain_graph=filtered) if needs_grad else {}
        if filtered:
            # Back-propagate from N only through the positions that hirescam at N keeps.
            a_n, g_n = cap.activations[n], grads[n]
            keep = (hirescam(a_n.detach(), g_n) > 0).unsqueeze(1)
            g_filtered = cap.grad((keep * g_n * a_n).sum(), [n1])[n1].float()
    acts = {name: a.float() for name, a in cap.activations.items()}
    grads = {name: g.float() for name, g in grads.items()}
    raw: dict[str, Tensor] = {}
    for m in methods:
        if m in _AT_N:
            raw[m] = _AT_N[m](acts[n], grads[n])
        elif m in _AT_N1:
            raw[m] = _AT_N1[m](acts[n1], grads[n1])
        elif m == "eigencam":
            raw[m] = eigencam(acts[n])
        elif m == "hirescam++filtered":
            raw[m] = hirescam(acts[n1], g_filtered)
        else:
            raw[m] = hirescam_pp(hirescam(acts[n1], grads[n1]), hirescam(acts[n], grads[n]), _PLUS[m])
    size = batch.shape[-2:]
    maps = {m: Explanation(r, minmax(upsample(r, size))) for m, r in raw.items()}
    return ExplainResult(logits.detach(), maps, (n, n1))


def ensemble_maps(member_maps: Sequence[Tensor], weights: Sequence[float], size: int | Sequence[int] | None = None) -> Tensor:
    """Weighted mean of the members' B x H x W display maps, weights normalised like the scores.

    Maps are resized bilinearly to `size` (default: the largest member's). Members must share
    the crop geometry; otherwise paste each map back onto the frame first and combine those.
    The result stays in [0, 1] when the members' maps are.
    """
    if len(member_maps) != len(weights) or not member_maps:
        raise FakescopeError("ensemble_maps needs one weight per member map")
    size = size or max((tuple(m.shape[-2:]) for m in member_maps), key=lambda s: s[0] * s[1])
    w = torch.tensor(weights, dtype=torch.float32)
    if (w < 0).any() or w.sum() <= 0:
        raise FakescopeError("ensemble weights must be non-negative with a positive sum")
    w = w / w.sum()
    return sum(wi * upsample(m.float(), size) for wi, m in zip(w, member_maps))


# --- back onto the frame --------------------------------------------------------------------


def paste_heatmap(
    frame_shape: Sequence[int], source_box: Box, heatmap: np.ndarray | Tensor, content_box: Box | None = None
) -> np.ndarray:
    """A frame-sized float32 map (H x W) with a crop's heat map put back where the crop came from.

    Crop geometry contract: `content_box` (x1, y1, x2, y2 in crop pixels; default the whole
    crop) is the part of the crop that shows the frame's `source_box` (x1, y1, x2, y2 in frame
    pixels; the expanded face box, possibly partly outside the frame). 'stretch' crops use the
    default; 'pad' crops pass the rectangle the resized face occupies inside the padding.
    Frame pixels outside the source box are zero; combine several faces with np.maximum.
    """
    heat = heatmap.detach().cpu().float().numpy() if isinstance(heatmap, Tensor) else np.asarray(heatmap, np.float32)
    height, width = int(frame_shape[0]), int(frame_shape[1])
    x1, y1, x2, y2 = source_box
    cx1, cy1, cx2, cy2 = content_box or (0.0, 0.0, float(heat.shape[1]), float(heat.shape[0]))
    if x2 <= x1 or y2 <= y1 or cx2 <= cx1 or cy2 <= cy1:
        raise FakescopeError(f"empty crop geometry: source {source_box}, content {content_box}")
    # Cut the content out first so that padding cannot bleed in at its edges.
    left, top = math.floor(cx1), math.floor(cy1)
    heat = np.ascontiguousarray(heat[top : math.ceil(cy2), left : math.ceil(cx2)])
    cx1, cx2, cy1, cy2 = cx1 - left, cx2 - left, cy1 - top, cy2 - top
    sx, sy = (cx2 - cx1) / (x2 - x1), (cy2 - cy1) / (y2 - y1)
    # Frame pixel index -> crop pixel index, both with pixel centres at index + 0.5.
    to_crop = np.array([[sx, 0, cx1 + (0.5 - x1) * sx - 0.5], [0, sy, cy1 + (0.5 - y1) * sy - 0.5]])
    out = cv2.warpAffine(
        heat, to_crop, (width, height), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE
    )
    xs, ys = np.arange(width) + 0.5, np.arange(height) + 0.5
    inside = ((ys >= y1) & (ys <= y2))[:, None] & ((xs >= x1) & (xs <= x2))[None, :]
    return np.where(inside, out, 0.0).astype(np.float32)


def overlay(image: np.ndarray, heatmap: np.ndarray, alpha: float = 0.5, cmap: str = "turbo") -> np.ndarray:
    """RGB uint8 image with the [0, 1] heat map blended in; pixels where the map is 0 stay as they are."""
    if image.shape[:2] != heatmap.shape:
        raise FakescopeError(f"heat map {heatmap.shape} does not match image {image.shape[:2]}")
    lut = (matplotlib.colormaps[cmap](np.linspace(0, 1, 256))[:, :3] * 255).astype(np.float32)
    heat = np.clip(heatmap, 0, 1)
    colour = lut[np.rint(heat * 255).astype(np.uint8)]
    weight = (alpha * (heat > 0))[..., None]
    return np.rint(image.astype(np.float32) * (1 - weight) + colour * weight).astype(np.uint8)


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
TABLE1_PAPER = {"outside_share": 0.03, "mean_outside": 0.09, "mean_inside": 0.71, "coincidence": 0.63}


def aggregate_table1(batches: Iterable[dict[str, Tensor]]) -> dict:
    """Pixel-weighted totals and per-image means (undefined images skipped) of `table1_stats` outputs."""
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
    raise FakescopeError(f"baseline must be 'blur' or 'mean', not {kind!r}")


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
    """Per-image deletion and insertion AUCs (B each) of P(fake) over the fraction of pixels changed.

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
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(h * w).expand(b, -1)).view(b, 1, h, w)
    counts = [round(k * h * w / steps) for k in range(steps + 1)]
    per_chunk = max(1, batch_size // b)
    was_training = model.training
    model.eval()
    curves = []
    for first, second in ((base, images), (images, base)):  # deletion: ranked pixels -> baseline
        scores = []
        for start in range(0, steps + 1, per_chunk):
            mixed = torch.cat([torch.where(rank < c, first, second) for c in counts[start : start + per_chunk]])
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


def _top_down_units(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Parameterised top-level modules from the output backwards, block containers opened one level."""
    units = []
    for name, child in reversed(list(model.named_children())):
        if isinstance(child, (nn.Sequential, nn.ModuleList)):
            units += [(f"{name}.{n}", c) for n, c in reversed(list(child.named_children()))]
        else:
            units.append((name, child))
    return [(name, unit) for name, unit in units if any(True for _ in unit.parameters())]


def _randomise(unit: nn.Module) -> None:
    for module in unit.modules():
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()
        else:
            for p in module.parameters(recurse=False):
                nn.init.normal_(p, std=0.02)


def _spearman(a: Tensor, b: Tensor) -> list[float]:
    from scipy.stats import spearmanr  # slow to import, needed by xai-eval only

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a constant map has no rank correlation: NaN
        return [float(spearmanr(x, y).statistic) for x, y in zip(a.flatten(1).numpy(), b.flatten(1).numpy())]


def randomisation_check(
    model: nn.Module,
    batch: Tensor,
    methods: Sequence[str] = METHODS,
    layers: tuple[str, str] | None = None,
    depth: int = 4,
    seed: int = 0,
) -> dict:
    """Cascading model-randomisation sanity check (Adebayo et al., 2018) on a deep copy.

    The top `depth` units (classifier first, then the last blocks) are re-initialised one
    after another; after each, the Spearman rank correlation of every method's raw map with
    the original one (mean over images). A faithful map decorrelates.
    """
    layers = layers or resolve_cam_layers(model)
    original = explain(model, batch, methods, layers)
    copied = copy.deepcopy(model)
    stages, spearman = [], {m: [] for m in methods}
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        for name, unit in _top_down_units(copied)[:depth]:
            _randomise(unit)
            result = explain(copied, batch, methods, layers)
            stages.append(name)
            for m in methods:
                spearman[m].append(float(np.nanmean(_spearman(original[m].raw, result[m].raw))))
    return {"stages": stages, "spearman": spearman}


def self_blended(
    images: Tensor, mean: Sequence[float], std: Sequence[float], rng: random.Random, threshold: float = 0.5
) -> tuple[Tensor, Tensor, Tensor]:
    """Pseudo-fakes with exact masks from real uint8 B x 3 x S x S crops: (inputs, labels, masks).

    Inputs are normalised with the model's mean/std; the mask marks where the blended face
    weighs at least `threshold` of its maximum.
    """
    blended, soft = zip(*(self_blend(image, rng) for image in images))
    soft = torch.stack(soft)
    masks = soft >= threshold * soft.flatten(1).amax(1).clamp_min(1e-6)[:, None, None]
    m, s = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
    inputs = (torch.stack(blended).float() / 255 - m) / s
    return inputs, torch.ones(len(images)), masks


def xai_eval(
    model: nn.Module,
    batches: Iterable[tuple[Tensor, Tensor, Tensor | None]],
    methods: Sequence[str] = METHODS,
    layers: tuple[str, str] | None = None,
    baseline: str = "blur",
    sanity_images: int = 8,
    sanity_depth: int = 4,
    batch_size: int = 64,
) -> dict:
    """Table 1, deletion/insertion AUCs, localisation and the sanity check over batches.

    Each batch is (inputs B x 3 x H x W normalised, labels B with 1 = fake, masks B x H x W
    bool or None); masks, where given and not empty, mark the manipulated pixels.
    """
    layers = layers or resolve_cam_layers(model)
    computed = list(dict.fromkeys([*methods, "hirescam"]))
    variants = [m for m in methods if m in HIRESCAM_PP]
    table1: dict[str, list] = {v: [] for v in variants}
    per_image: dict[str, dict[str, list]] = {k: {m: [] for m in methods} for k in ("deletion", "insertion", "pointing", "mass")}
    labels_seen: list[Tensor] = []
    sanity_inputs: list[Tensor] = []
    masked = 0
    for inputs, labels, masks in batches:
        result = explain(model, inputs, computed, layers)
        size = inputs.shape[-2:]
        reference = upsample(result["hirescam"].raw, size)
        for v in variants:
            table1[v].append(table1_stats(upsample(result[v].raw, size), reference))
        labels_seen.append(labels.float().view(-1))
        has_mask = masks.flatten(1).any(1) if masks is not None else torch.zeros(len(inputs), dtype=torch.bool)
        masked += int(has_mask.sum())
        for m in methods:
            deletion, insertion = deletion_insertion(model, inputs, result[m].display, baseline, batch_size=batch_size)
            per_image["deletion"][m].append(deletion)
            per_image["insertion"][m].append(insertion)
            if has_mask.any():
                shown, where = result[m].display[has_mask], masks[has_mask]
                per_image["pointing"][m].append(pointing_game(shown, where).float())
                per_image["mass"][m].append(mass_inside(shown, where))
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

    sanity = randomisation_check(model, torch.cat(sanity_inputs)[:sanity_images], methods, layers, sanity_depth)
    return {
        "images": len(labels),
        "fakes": int(fake.sum()),
        "masked_images": masked,
        "layers": list(layers),
        "baseline": baseline,
        "table1": {v: aggregate_table1(table1[v]) for v in variants},
        "deletion": {m: {"all": mean(per_image["deletion"][m]), "fake": mean(per_image["deletion"][m], fake)} for m in methods},
        "insertion": {m: {"all": mean(per_image["insertion"][m]), "fake": mean(per_image["insertion"][m], fake)} for m in methods},
        "pointing_game": {m: mean(per_image["pointing"][m]) for m in methods},
        "mass_inside_mask": {m: mean(per_image["mass"][m]) for m in methods},
        "sanity": sanity,
    }


def closest_to_paper(table1: dict) -> str | None:
    """The hirescam++ variant whose pixel-weighted Table 1 is nearest the paper's (sum of absolute gaps).

    A variant with no pixels outside R (always so for 'gate') counts their mean value as 0.
    """
    def gap(t: dict, k: str) -> float:
        value = t["pixel_weighted"][k]
        return abs((0.0 if k == "mean_outside" and t["pixel_weighted"]["outside_share"] == 0 else value) - TABLE1_PAPER[k])

    gaps = {v: sum(gap(t, k) for k in TABLE1_KEYS) for v, t in table1.items()}
    gaps = {v: g for v, g in gaps.items() if not math.isnan(g)}
    return min(gaps, key=gaps.get) if gaps else None


def _fmt(x: float | None, percent: bool = False) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
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
    """Write `xai.json` and `xai.md` (Table 1 beside the paper, faithfulness, localisation, sanity)."""
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
        head = ["statistic", "paper"] + [f"{v} {kind}" for v in table1 for kind in ("pixel-weighted", "per-image")]
        lines += ["## Table 1: HiResCAM++ inside HiResCAM's region at N", "", _row(head), _row(["---"] * len(head))]
        for k in TABLE1_KEYS:
            pct = k in ("outside_share", "coincidence")
            cells = [_fmt(t[agg][k], pct) for t in table1.values() for agg in ("pixel_weighted", "per_image")]
            lines.append(_row([k, _fmt(TABLE1_PAPER[k], pct), *cells]))
        lines += ["", f"Closest to the paper (pixel-weighted): {closest_to_paper(table1)}", ""]
    head = ["method", "deletion AUC ↓", "deletion AUC (fakes) ↓", "insertion AUC ↑", "insertion AUC (fakes) ↑",
            "pointing game ↑", "mass inside mask ↑"]
    lines += [f"## Faithfulness ({results['baseline']} baseline) and localisation ({results['masked_images']} masked images)",
              "", _row(head), _row(["---"] * len(head))]
    for m in results["deletion"]:
        lines.append(_row([
            m, _fmt(results["deletion"][m]["all"]), _fmt(results["deletion"][m]["fake"]),
            _fmt(results["insertion"][m]["all"]), _fmt(results["insertion"][m]["fake"]),
            _fmt(results["pointing_game"][m], True), _fmt(results["mass_inside_mask"][m], True),
        ]))
    sanity = results["sanity"]
    head = ["method"] + [f"random up to {s}" for s in sanity["stages"]]
    lines += ["", "## Sanity check: Spearman correlation with the original map after cascading randomisation", "",
              _row(head), _row(["---"] * len(head))]
    lines += [_row([m, *(_fmt(c) for c in cs)]) for m, cs in sanity["spearman"].items()]
    md_path.write_text("\n".join(lines) + "\n")
    return json_path, md_path


def _row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"
