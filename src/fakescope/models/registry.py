"""One registry of architectures: every model fakescope runs is built here, through timm.

An architecture entry declares what a checkpoint alone cannot tell: the timm model, the
crop policy the model was trained on, and how to find its two CAM layers (N, N-1).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import timm
import torch
from torch import nn

from ..crops import IMAGENET_MEAN, IMAGENET_STD, TF_MEAN, TF_STD, CropPolicy
from ..types import FakescopeError


@dataclass(frozen=True)
class ArchSpec:
    name: str
    timm_name: str
    crop: CropPolicy
    description: str = ""

    def build(self, **overrides) -> nn.Module:
        """A one-logit classifier with random weights (checkpoints are loaded by the caller)."""
        kwargs = {"pretrained": False, "num_classes": 1, **overrides}
        return timm.create_model(self.timm_name, **kwargs)


ARCHITECTURES: dict[str, ArchSpec] = {}


def register(spec: ArchSpec) -> ArchSpec:
    ARCHITECTURES[spec.name] = spec
    return spec


def get_arch(name: str) -> ArchSpec:
    try:
        return ARCHITECTURES[name]
    except KeyError:
        known = ", ".join(sorted(ARCHITECTURES))
        raise FakescopeError(f"unknown architecture {name!r}; known: {known}") from None


register(
    ArchSpec(
        "efficientnet-lite0",
        "tf_efficientnet_lite0",
        CropPolicy(224, 0.0, "stretch", TF_MEAN, TF_STD),
        "fakescope's default EfficientNet member: tight face box stretched to 224 px",
    )
)
register(
    ArchSpec(
        # A capacity step within the family (4.2 M parameters): the same crop and statistics,
        # so it can sit beside Lite0 in an ensemble and share its crops.
        "efficientnet-lite1",
        "tf_efficientnet_lite1",
        CropPolicy(240, 0.0, "stretch", TF_MEAN, TF_STD),
        "a larger EfficientNet-Lite member: tight face box stretched to 240 px",
    )
)
register(
    ArchSpec(
        # The next step (4.9 M parameters), for the same reason: Lite0's crop and statistics.
        "efficientnet-lite2",
        "tf_efficientnet_lite2",
        CropPolicy(260, 0.0, "stretch", TF_MEAN, TF_STD),
        "the largest EfficientNet-Lite member tried: tight face box stretched to 260 px",
    )
)
register(
    ArchSpec(
        "efficientnet-b0",
        "tf_efficientnet_b0",
        CropPolicy(224, 0.0, "stretch", IMAGENET_MEAN, IMAGENET_STD),
        "small EfficientNet for experiments",
    )
)
register(
    ArchSpec(
        # DFDC 1st place (selimsef): faces with a third of the box added on each side,
        # isotropically resized to 380 px and padded, ImageNet normalisation.
        "dfdc-efficientnet-b7",
        "tf_efficientnet_b7",
        CropPolicy(380, 1 / 3, "pad", IMAGENET_MEAN, IMAGENET_STD),
        "DFDC 1st-place DeepFakeClassifier (EfficientNet-B7 NS encoder)",
    )
)
register(
    ArchSpec(
        # Public DFDC ResNeXt kernel: BlazeFace boxes, isotropic resize to 224 + pad,
        # ImageNet stats.
        "dfdc-resnext50",
        "resnext50_32x4d",
        CropPolicy(224, 0.2, "pad", IMAGENET_MEAN, IMAGENET_STD),
        "torchvision-style ResNeXt-50 32x4d with fc = Linear(2048, 1), "
        "as in the public DFDC kernel",
    )
)
register(
    ArchSpec(
        "resnext-small",
        "resnext26ts",
        CropPolicy(224, 0.0, "stretch", TF_MEAN, TF_STD),
        "small timm ResNeXt for fakescope's own ensemble member",
    )
)


def resolve_cam_layers(model: nn.Module) -> tuple[str, str]:
    """(N, N-1) module names from the model's structure, per `docs/explanations.md`.

    N is the feature map that feeds global pooling (stride 32); N-1 the last feature map
    at stride 16. timm's feature_info records the stride of every stage.
    """
    info = getattr(model, "feature_info", None)
    if not info:
        raise FakescopeError(f"{type(model).__name__} has no feature_info: declare its CAM layers")
    stages = list(info)
    final = stages[-1]["reduction"]
    previous = [s for s in stages if s["reduction"] == final // 2]
    if not previous:
        raise FakescopeError("cannot find a stride-16 stage for layer N-1: declare its CAM layers")
    # EfficientNet's last stage is followed by conv_head + bn2, whose output is pooled.
    last = "bn2" if hasattr(model, "conv_head") and hasattr(model, "bn2") else stages[-1]["module"]
    return last, previous[-1]["module"]


@dataclass(frozen=True)
class ModelSpec:
    """A concrete model: an architecture, its crop policy and calibration, and where its weights
    are."""

    name: str
    arch: str
    crop: CropPolicy
    temperature: float = 1.0  # calibrated probability = sigmoid(logit / temperature)
    cam_layers: tuple[str, str] | None = None  # None: resolved from the structure
    weights: str | None = None  # path to a .safetensors file
    sha256: str | None = None

    def to_dict(self) -> dict:
        data = asdict(self)
        data["crop"] = asdict(self.crop)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> ModelSpec:
        data = dict(data)
        data["crop"] = CropPolicy.from_dict(data["crop"])
        if data.get("cam_layers"):
            data["cam_layers"] = tuple(data["cam_layers"])
        return cls(**data)

    def with_(self, **changes) -> ModelSpec:
        return replace(self, **changes)


def channels_last(model: nn.Module) -> nn.Module:
    """Convolutions run about twice as fast on CPU in channels_last memory format."""
    return model.to(memory_format=torch.channels_last)
