"""Model-agnostic baselines for `xai-eval`, through Captum: LIME, KernelSHAP and occlusion, and
a centre prior that knows nothing of the model (a Gaussian at the face's centre).

All explain the fake logit. LIME and KernelSHAP perturb square patches of the crop (replaced
by the mean colour, 0 after normalisation); occlusion covers the same patches one at a time.
Maps are the attribution summed over colour channels, at the input's size.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from ..crops import whole_image_box
from ..types import FakescopeError
from .cam import fake_logit

PATCH = 32  # px: LIME / KernelSHAP features and the occlusion window, at 224 px a 7 x 7 grid
SAMPLES = 64  # perturbed inputs per image for LIME and KernelSHAP
CENTRE_PRIOR = "centre prior"


def _patches(height: int, width: int, patch: int) -> Tensor:
    rows = torch.arange(height) // patch
    cols = torch.arange(width) // patch
    return (rows[:, None] * (cols.max() + 1) + cols[None, :])[None, None]  # 1 x 1 x H x W


def _captum(name: str, forward: Callable[[Tensor], Tensor]):
    from captum.attr import KernelShap, Lime, Occlusion  # slow to import, needed by xai-eval only

    return {"lime": Lime, "kernelshap": KernelShap, "occlusion": Occlusion}[name](forward)


@torch.no_grad()
def agnostic_map(
    model: nn.Module,
    batch: Tensor,
    method: str,
    samples: int = SAMPLES,
    patch: int = PATCH,
    seed: int = 0,
) -> Tensor:
    """B x H x W attributions of the fake logit for a normalised batch, one image at a time."""
    if method not in AGNOSTIC:
        raise FakescopeError(
            f"unknown model-agnostic method {method!r}; known: {', '.join(AGNOSTIC)}"
        )
    was_training = model.training
    model.eval()
    attributor = _captum(method, lambda x: fake_logit(model(x)))
    _, _, height, width = batch.shape
    mask = _patches(height, width, patch).to(batch.device)
    maps = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for image in batch.split(1):
            if method == "occlusion":
                attr = attributor.attribute(
                    image,
                    sliding_window_shapes=(3, patch, patch),
                    strides=(3, patch, patch),
                    baselines=0.0,
                    perturbations_per_eval=16,
                )
            else:
                attr = attributor.attribute(
                    image,
                    baselines=0.0,
                    feature_mask=mask,
                    n_samples=samples,
                    perturbations_per_eval=16,
                )
            maps.append(attr.sum(1))
    model.train(was_training)
    return torch.cat(maps).float()


def centre_prior(batch: Tensor, boxes: Tensor | None = None) -> Tensor:
    """B x H x W Gaussians at each face box's centre (B x 4 crop pixels; default the crop's
    centre), with a standard deviation of a quarter of the box's size."""
    b, _, height, width = batch.shape
    if boxes is None:
        boxes = torch.tensor([whole_image_box(batch.shape[-2:])]).expand(b, 4)
    boxes = boxes.float()
    ys = torch.arange(height).float()[None, :, None] + 0.5
    xs = torch.arange(width).float()[None, None, :] + 0.5
    cx, cy = (
        ((boxes[:, 0] + boxes[:, 2]) / 2)[:, None, None],
        ((boxes[:, 1] + boxes[:, 3]) / 2)[:, None, None],
    )
    sx, sy = (
        ((boxes[:, 2] - boxes[:, 0]) / 4)[:, None, None],
        ((boxes[:, 3] - boxes[:, 1]) / 4)[:, None, None],
    )
    return torch.exp(-(((xs - cx) / sx) ** 2) / 2 - ((ys - cy) / sy) ** 2 / 2)


AGNOSTIC: tuple[str, ...] = ("lime", "kernelshap", "occlusion")
