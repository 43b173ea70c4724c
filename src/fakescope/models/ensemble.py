"""Ensembles of registered models: load them by name or path, score face crops per member.

An ensemble config is a JSON file `{"format": "fakescope-ensemble", "name", "members":
[{"config": "member.json", "weight": 1.0}, ...], "temperature": {...}, "decision": {...}}`;
a single member's fakescope JSON is an ensemble of one. The optional `temperature` block
maps the logit z of the members' weighted mean to z / value + bias, fitted on held-out crops
(`fakescope calibrate scores.npz`): a mean of calibrated members is under-confident wherever
they disagree, and leans to real on identities no member trained on. The
optional `decision` holds the video-level thresholds fitted for this ensemble on held-out
videos (`fakescope calibrate videos.csv`), with a note of the data they were fitted on. The
shipped default lives in `models/weights/default.json`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..crops import CropPolicy
from ..metrics import EPS
from ..types import DEFAULT_MODEL, Decision, FakescopeError, SettingError, WeightsError
from .checkpoints import load_fakescope, read_spec
from .onnx_runtime import onnx_scorer
from .registry import ModelSpec, channels_last, resolve_cam_layers

WEIGHTS_DIR = Path(__file__).parent / "weights"


@dataclass
class Member:
    spec: ModelSpec
    model: nn.Module
    weight: float
    scorer: Callable[[torch.Tensor], torch.Tensor] | None = (
        None  # fast no-gradient path (ONNX Runtime)
    )
    explained: bool = True  # its maps enter the heat maps and region evidence; it always scores

    def logits(self, crops: torch.Tensor) -> torch.Tensor:
        if self.scorer is not None:
            return self.scorer(crops)
        device = next(self.model.parameters()).device
        return self.model(crops.to(device, memory_format=torch.channels_last))

    @property
    def cam_layers(self) -> tuple[str, str]:
        return self.spec.cam_layers or resolve_cam_layers(self.model)

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(logits.float().flatten() / self.spec.temperature)


@dataclass
class Ensemble:
    name: str
    members: list[Member]
    config_path: str
    decision: Decision = field(default_factory=Decision)
    decision_note: str = ""  # what the decision was fitted on
    temperature: float = 1.0  # of the combined probability; 1.0 and bias 0: the mean as is
    bias: float = 0.0  # added to the combined logit after the temperature
    temperature_note: str = ""  # what the temperature and bias were fitted on

    @property
    def explained_members(self) -> list[Member]:
        """The members whose maps make the heat maps (a config can leave out one whose maps
        were measured not to point at manipulations); every member still scores."""
        return [m for m in self.members if m.explained]

    @property
    def crop_policies(self) -> list[CropPolicy]:
        """Distinct crop policies of the members, so each face is cropped once per policy."""
        return list(dict.fromkeys(m.spec.crop for m in self.members))

    def member(self, index: int) -> Member:
        if not 0 <= index < len(self.members):
            raise SettingError(f"member must be between 0 and {len(self.members) - 1}", "member")
        return self.members[index]

    def combine(self, member_probs: dict[str, np.ndarray]) -> np.ndarray:
        """Weighted mean of member probabilities, its logit divided by the ensemble's
        temperature, plus its bias."""
        total = sum(m.weight for m in self.members)
        mean = np.asarray(
            sum(m.weight * member_probs[m.spec.name] for m in self.members) / total, dtype=float
        )
        if self.temperature == 1.0 and self.bias == 0.0:
            return mean
        return rescaled(mean, self.temperature, self.bias)

    @torch.inference_mode()
    def score(
        self, batches: dict[CropPolicy, torch.Tensor], batch_size: int = 32
    ) -> dict[str, np.ndarray]:
        """P(fake) per member for crops already made per crop policy (N x 3 x S x S each)."""
        scores = {}
        for member in self.members:
            logits = [member.logits(chunk) for chunk in batches[member.spec.crop].split(batch_size)]
            probs = member.probabilities(torch.cat(logits)) if logits else torch.empty(0)
            scores[member.spec.name] = probs.cpu().numpy()
        return scores

    def describe(self) -> dict:
        return {
            "name": self.name,
            "config": self.config_path,
            "decision": {
                "threshold": self.decision.threshold,
                "real_below": self.decision.real_below,
                "fitted_on": self.decision_note,
            },
            "temperature": {
                "value": self.temperature,
                "bias": self.bias,
                "fitted_on": self.temperature_note,
            },
            "members": [
                {
                    "name": m.spec.name,
                    "arch": m.spec.arch,
                    "weight": m.weight,
                    "explained": m.explained,
                    "sha256": m.spec.sha256,
                    "temperature": m.spec.temperature,
                    "crop": m.spec.to_dict()["crop"],
                    "backend": "onnxruntime" if m.scorer is not None else "torch",
                }
                for m in self.members
            ],
        }


def rescaled(probs: np.ndarray, temperature: float, bias: float = 0.0) -> np.ndarray:
    """sigmoid(logit(p) / T + b); p is clipped first, so 0 and 1 stay finite."""
    p = np.clip(np.asarray(probs, dtype=float), EPS, 1 - EPS)
    return np.asarray(1 / (1 + np.exp(-(np.log(p / (1 - p)) / temperature + bias))))


def installed_models() -> dict[str, Path]:
    """Ensemble and model configs shipped in the package, by name."""
    return {p.stem: p for p in sorted(WEIGHTS_DIR.glob("*.json"))}


def resolve_config(model: str | Path) -> Path:
    path = Path(model)
    if path.suffix == ".json" and path.is_file():
        return path
    shipped = installed_models()
    if str(model) in shipped:
        return shipped[str(model)]
    if str(model) == DEFAULT_MODEL:
        raise WeightsError(
            "no default weights are installed: train them (`fakescope train`) "
            "or pass --model CONFIG.json"
        )
    raise WeightsError(
        f"unknown model {model!r}: give a config .json or one of: "
        f"{', '.join(shipped) or 'none installed'}"
    )


BACKENDS = ("auto", "onnx", "torch")


def _members(config: Path, data: object) -> tuple[list[dict], str]:
    """The member entries and the name of a config, checked before anything loads: a broken
    config fails here, not as NaN or a division by zero on every input."""
    if not isinstance(data, dict) or data.get("format") not in ("fakescope", "fakescope-ensemble"):
        raise WeightsError(f"{config}: not a fakescope model or ensemble config")
    kind = data["format"]
    name = data.get("name")
    if not isinstance(name, str) or not name:
        raise WeightsError(f"{config}: the config has no name")
    if kind == "fakescope":
        return [{"config": config.name, "weight": 1.0}], name
    entries = data.get("members")
    if not isinstance(entries, list) or not entries:
        raise WeightsError(f"{config}: an ensemble needs at least one member")
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("config"), str):
            raise WeightsError(f'{config}: member {i} needs a "config" path')
        weight = entry.get("weight", 1.0)
        number = isinstance(weight, (int, float)) and not isinstance(weight, bool)
        if not number or not 0 < weight < math.inf:
            raise WeightsError(f"{config}: member {i} weight must be finite, > 0: {weight!r}")
        if not isinstance(entry.get("explain", True), bool):
            raise WeightsError(f'{config}: member {i} "explain" must be true or false')
    if not any(entry.get("explain", True) for entry in entries):
        raise WeightsError(f'{config}: at least one member must have "explain": true')
    return entries, name


def load_ensemble(
    model: str | Path = DEFAULT_MODEL, device: str = "cpu", backend: str = "auto"
) -> Ensemble:
    """Load every member; `backend` picks the scoring path: ONNX Runtime ("auto" on CPU) or
    PyTorch."""
    if backend not in BACKENDS:
        raise WeightsError(f"unknown backend {backend!r}; use one of {', '.join(BACKENDS)}")
    use_onnx = backend == "onnx" or (backend == "auto" and device == "cpu")
    if device == "cuda":
        # cuDNN's default TF32 convolutions move P(fake) by about 1e-3; the GPU must give
        # the CPU's scores (to 1e-4), and a model this small gains little from TF32.
        torch.backends.cudnn.allow_tf32 = False
    config = resolve_config(model)
    try:
        data = json.loads(config.read_text())
    except ValueError as error:
        raise WeightsError(f"{config}: invalid JSON ({error})") from None
    entries, name = _members(config, data)
    members: list[Member] = []
    for i, entry in enumerate(entries):
        spec = read_spec(config.parent / entry["config"])
        # Members' scores are keyed by name: a second member of one name would replace the
        # first and leave a one-member "ensemble".
        if any(m.spec.name == spec.name for m in members):
            raise WeightsError(
                f"{config}: member {i} has the name {spec.name!r} of an earlier member; give "
                'each member its own "name" in its config'
            )
        model_ = channels_last(load_fakescope(spec)).to(device).eval()
        scorer = onnx_scorer(model_, spec.crop.size, spec.sha256) if use_onnx else None
        weight, explained = float(entry.get("weight", 1.0)), entry.get("explain", True)
        members.append(Member(spec, model_, weight, scorer, explained))
    ensemble = Ensemble(name, members, str(config))
    if data.get("format") != "fakescope-ensemble":
        return ensemble
    if (block := data.get("temperature")) is not None:
        block = block if isinstance(block, dict) else {}
        value, bias = (
            float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else math.nan
            for v in (block.get("value"), block.get("bias", 0.0))
        )
        if not (0 < value < math.inf and abs(bias) < math.inf):  # NaN fails too
            raise WeightsError(
                f"{config}: bad temperature block (value must be finite, > 0; bias finite)"
            )
        ensemble.temperature, ensemble.bias = value, bias
        ensemble.temperature_note = str(block.get("fitted_on", ""))
    if (decision := data.get("decision")) is not None:
        try:
            ensemble.decision = Decision(
                float(decision["threshold"]), float(decision["real_below"])
            )
        except (KeyError, TypeError, ValueError, FakescopeError) as error:
            raise WeightsError(f"{config}: bad decision block ({error})") from None
        ensemble.decision_note = str(decision.get("fitted_on", ""))
    return ensemble
