"""CAM explanations of fakescope's one-logit classifiers (judged in faithfulness.py).

Definitions follow `docs/explanations.md`: every map explains the fake logit (also for real
faces) at layer N (the pooled feature map) and N-1 (the last stride-16 feature map). All
methods of one batch come from one forward pass and one `torch.autograd.grad` call (plus one
more for `hirescam++filtered`), through `CamCapture`.

Public method names: gradcam-n, gradcam-n1, hirescam (at N), hirescam-n1, hirescam++
(product), hirescam++gate, hirescam++filtered, and gradcam++, layercam, xgradcam, eigencam at N.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import cv2
import matplotlib
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .models.registry import resolve_cam_layers
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
    out = image.copy()
    rows, cols = np.nonzero(np.any(heatmap > 0, axis=1))[0], np.nonzero(np.any(heatmap > 0, axis=0))[0]
    if not len(rows):
        return out
    # Blend only the box around the map's support: faces cover a small part of a frame.
    window = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    heat = np.clip(heatmap[window], 0, 1)
    lut = (matplotlib.colormaps[cmap](np.linspace(0, 1, 256))[:, :3] * 255).astype(np.float32)
    colour = lut[np.rint(heat * 255).astype(np.uint8)]
    weight = (alpha * (heat > 0))[..., None]
    out[window] = np.rint(image[window].astype(np.float32) * (1 - weight) + colour * weight).astype(np.uint8)
    return out