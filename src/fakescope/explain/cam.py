"""CAM maths: the hook machinery, the methods as pure functions and the one table of methods.

Definitions follow `docs/explanations.md`: every map explains the fake logit (also for real
faces) at layer N (the pooled feature map) and N-1 (the last stride-16 feature map). All
methods of one batch come from one forward pass and one `torch.autograd.grad` call (plus one
more for `hirescam++filtered`), through `CamCapture`.

A method is one entry of `TABLE`: the layers it reads and a function of what was captured
there. Public names: gradcam-n, gradcam-n1, hirescam (at N), hirescam-n1, hirescam++ (product),
hirescam++gate, hirescam++filtered, and gradcam++, layercam, xgradcam, eigencam at N.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..models.registry import resolve_cam_layers
from ..types import FakescopeError

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
            raise FakescopeError(
                f"{type(self.model).__name__} has no layer(s) {', '.join(missing)}"
            )
        self._requires_grad = [(p, p.requires_grad) for p in self.model.parameters()]
        self._training = [(m, m.training) for m in self.model.modules()]
        for p, _ in self._requires_grad:
            p.requires_grad_(False)
        self.model.eval()
        self._handles = [
            modules[name].register_forward_hook(self._hook(name)) for name in self.layers
        ]
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

    def grad(
        self, target: Tensor, layers: Sequence[str], retain_graph: bool = False
    ) -> dict[str, Tensor]:
        """d target / d activation for the named captured layers, in one autograd.grad call."""
        grads = torch.autograd.grad(
            target,
            [self.activations[name] for name in layers],
            retain_graph=retain_graph,
            allow_unused=True,
        )
        unused = [name for name, g in zip(layers, grads) if g is None]
        if unused:
            raise FakescopeError(f"layer(s) {', '.join(unused)} do not influence the logit")
        return dict(zip(layers, grads))


def fake_logit(logits: Tensor) -> Tensor:
    """The single logit of each image (B), from B x 1 or B outputs."""
    flat = logits.reshape(logits.shape[0], -1)
    if flat.shape[1] != 1:
        raise FakescopeError(
            f"explanations need a one-logit model, this one has {flat.shape[1]} outputs"
        )
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

    The 'filtered' variant needs the graph: it is hirescam(A_{N-1}, G~), see `Captured`.
    """
    if mode == "product":
        return h_n1 * upsample(h_n, h_n1.shape[-2:])
    if mode == "gate":
        return h_n1 * (F.interpolate(h_n[:, None], h_n1.shape[-2:], mode="nearest-exact")[:, 0] > 0)
    raise FakescopeError(f"hirescam++ mode must be 'product' or 'gate', not {mode!r}")


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


# --- the table of methods -------------------------------------------------------------------

N, N1 = "n", "n-1"  # the pooled feature map and the last stride-16 feature map


@dataclass
class Captured:
    """What one pass recorded, per layer (N, N-1): activations, gradients of the fake logit and,
    when asked for, `filtered`: the gradient at N-1 back-propagated from N only through the
    positions that hirescam at N keeps (hirescam++filtered)."""

    acts: dict[str, Tensor]
    grads: dict[str, Tensor]
    filtered: Tensor | None = None

    def __getitem__(self, layer: str) -> tuple[Tensor, Tensor]:
        return self.acts[layer], self.grads[layer]


@dataclass(frozen=True)
class Method:
    layers: tuple[str, ...]  # which of N, N-1 the method reads
    fn: Callable[[Captured], Tensor]  # -> B x h x w raw map on the finer layer's grid
    gradients: bool = True
    filtered: bool = False  # needs Captured.filtered (a second backward pass)


def _filtered(c: Captured) -> Tensor:
    assert c.filtered is not None  # recorded for every method with filtered=True
    return hirescam(c.acts[N1], c.filtered)


def _plus(mode: str) -> Callable[[Captured], Tensor]:
    return lambda c: hirescam_pp(hirescam(*c[N1]), hirescam(*c[N]), mode)


TABLE: dict[str, Method] = {
    "gradcam-n": Method((N,), lambda c: gradcam(*c[N])),
    "hirescam": Method((N,), lambda c: hirescam(*c[N])),
    "gradcam++": Method((N,), lambda c: gradcam_pp(*c[N])),
    "layercam": Method((N,), lambda c: layercam(*c[N])),
    "xgradcam": Method((N,), lambda c: xgradcam(*c[N])),
    "gradcam-n1": Method((N1,), lambda c: gradcam(*c[N1])),
    "hirescam-n1": Method((N1,), lambda c: hirescam(*c[N1])),
    "hirescam++": Method((N, N1), _plus("product")),
    "hirescam++gate": Method((N, N1), _plus("gate")),
    "hirescam++filtered": Method((N, N1), _filtered, filtered=True),
    "eigencam": Method((N,), lambda c: eigencam(c.acts[N]), gradients=False),
}
METHODS: tuple[str, ...] = tuple(TABLE)
HIRESCAM_PP: tuple[str, ...] = tuple(m for m in TABLE if m.startswith("hirescam++"))


def check_methods(methods: Sequence[str]) -> list[str]:
    unknown = [m for m in methods if m not in TABLE]
    if unknown:
        raise FakescopeError(
            f"unknown explanation method(s) {', '.join(unknown)}; known: {', '.join(METHODS)}"
        )
    return list(methods)


def explain(
    model: nn.Module,
    batch: Tensor,
    methods: Sequence[str] = METHODS,
    layers: tuple[str, str] | None = None,
) -> ExplainResult:
    """Every requested method for a batch (B x 3 x H x W) from one forward and one backward pass.

    `layers` is (N, N-1); by default resolved from the model's structure. Only the layers the
    methods need are hooked, so e.g. methods at N alone back-propagate through the head only.
    """
    chosen = {m: TABLE[m] for m in check_methods(methods)}
    n, n1 = layers or resolve_cam_layers(model)
    names = {N: n, N1: n1}
    used = {layer for method in chosen.values() for layer in method.layers}
    hooked = [names[layer] for layer in (N, N1) if layer in used]
    needs_grad = any(method.gradients for method in chosen.values())
    filtered = any(method.filtered for method in chosen.values())
    g_filtered = None
    with CamCapture(model, hooked, gradients=needs_grad) as cap:
        logits = cap.forward(batch)
        grads = (
            cap.grad(fake_logit(logits).sum(), hooked, retain_graph=filtered) if needs_grad else {}
        )
        if filtered:
            a_n, g_n = cap.activations[n], grads[n]
            keep = (hirescam(a_n.detach(), g_n) > 0).unsqueeze(1)
            g_filtered = cap.grad((keep * g_n * a_n).sum(), [n1])[n1].float()
    by_layer = {layer: name for layer, name in names.items() if name in hooked}
    captured = Captured(
        {layer: cap.activations[name].float() for layer, name in by_layer.items()},
        {layer: grads[name].float() for layer, name in by_layer.items() if name in grads},
        g_filtered,
    )
    size = batch.shape[-2:]
    maps = {}
    for m, method in chosen.items():
        raw = method.fn(captured)
        maps[m] = Explanation(raw, minmax(upsample(raw, size)))
    return ExplainResult(logits.detach(), maps, (n, n1))
