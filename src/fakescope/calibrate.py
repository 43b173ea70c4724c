"""Fit what an ensemble config holds beside its members, on held-out data: the temperature
and bias of its combined probability (from crops) and its video decision (from videos)."""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .evaluate import read_rows
from .files import write_atomic
from .metrics import EPS, balanced_log_loss, fit_platt
from .models.ensemble import load_ensemble, rescaled, resolve_config
from .types import DEFAULT_MODEL, Decision, FakescopeError, SettingError
from .verdict import fit_decision


@dataclass(frozen=True)
class Calibration:
    """What a fit is for; `fakescope calibrate` has an option per field."""

    model: str = field(
        default=DEFAULT_MODEL,
        metadata={"help": "the model that scored them (its members are referenced)"},
    )
    max_false_alarm: float = field(
        default=0.15, metadata={"help": "share of reals that may be called fake (videos)"}
    )
    max_miss: float = field(
        default=0.1, metadata={"help": "share of fakes that may be called real (videos)"}
    )
    note: str = field(
        default="",
        metadata={"help": "what the crops or videos are, kept in the config as `fitted_on`"},
    )

    def __post_init__(self) -> None:
        for name in ("max_false_alarm", "max_miss"):
            if not 0 <= getattr(self, name) < 1:  # NaN fails too
                raise SettingError(f"{name} must be in [0, 1)", name)


@dataclass(frozen=True)
class Tempered:
    """A fitted ensemble temperature and bias, and what they did on the crops they were
    fitted on (log loss with both classes weighted equally)."""

    temperature: float
    bias: float
    crops: int
    log_loss_before: float
    log_loss_after: float
    dropped_decision: bool  # the config had a decision, fitted on the old probabilities


def _ensemble_data(model: str, out: Path) -> dict:
    """The model's config as an ensemble whose member paths are relative to `out`."""
    if out.suffix != ".json":
        raise FakescopeError(f"--out {out}: an ensemble config must end in .json")
    config = resolve_config(model)
    data = json.loads(config.read_text())
    if data.get("format") == "fakescope":
        data = {
            "format": "fakescope-ensemble",
            "name": data["name"],
            "members": [{"config": config.name, "weight": 1.0}],
        }
    out.parent.mkdir(parents=True, exist_ok=True)
    members = [
        {
            **m,
            "config": os.path.relpath(
                (config.parent / m["config"]).resolve(), out.parent.resolve()
            ),
        }
        for m in data["members"]
    ]
    return {**data, "members": members}


def write_calibrated(scores: Path, out: Path, fit: Calibration | None = None) -> Decision:
    """Fit the decision on the judged rows of an evaluation's videos.csv; `out` lists the
    model's members (paths relative to it) with the decision. `out` may be the model's own
    config."""
    fit = fit or Calibration()
    rows = [r for r in read_rows(scores) if r["probability"] is not None]
    decision = fit_decision(
        np.array([r["label"] for r in rows]),
        np.array([r["probability"] for r in rows]),
        fit.max_false_alarm,
        fit.max_miss,
    )
    data = _ensemble_data(fit.model, out)
    # Rounded outward, so the rounded thresholds still meet both targets on these videos.
    threshold = math.ceil(decision.threshold * 1e4) / 1e4
    real_below = math.floor(decision.real_below * 1e4) / 1e4
    fitted = {
        "threshold": threshold,
        "real_below": real_below,
        "max_false_alarm": fit.max_false_alarm,
        "max_miss": fit.max_miss,
        "videos": len(rows),
        "fitted_on": fit.note or str(scores),
    }
    write_atomic(out, json.dumps({**data, "decision": fitted}, indent=2) + "\n")
    return Decision(threshold, real_below)


def _scoring(described: dict) -> tuple:
    """What fixes a model's probabilities, from `Ensemble.describe()`."""
    members = [
        (m.get("sha256"), m.get("weight"), m.get("temperature"))
        for m in described.get("members", [])
    ]
    block = described.get("temperature", {})
    return members, block.get("value", 1.0), block.get("bias", 0.0)


def write_temperature(scores: Path, out: Path, fit: Calibration | None = None) -> Tempered:
    """Fit the ensemble's temperature and bias on the crops of an evaluation's scores.npz
    (`fakescope evaluate DIR --crops --model M`, on crops of identities no member trained on;
    `metrics.fit_platt`).

    The fit composes with the temperature and bias M already has. A decision in M is
    dropped: it was fitted on video probabilities that the new fit changes."""
    fit = fit or Calibration()
    try:
        with np.load(scores) as saved:
            probs, labels = saved["probs"].astype(float), saved["labels"].astype(float)
    except (OSError, ValueError, KeyError) as error:
        what = "not the scores.npz of `fakescope evaluate --crops`"
        raise FakescopeError(f"{scores}: {what} ({error})") from None
    if len(np.unique(labels)) < 2 or not np.isin(labels, (0, 1)).all():
        raise FakescopeError(f"{scores}: needs real and fake crops, labelled 0 and 1")
    beside = scores.parent / "metrics.json"
    if beside.is_file():  # an evaluation records its model: refuse another model's scores
        scored_by = json.loads(beside.read_text()).get("model", {})
        if _scoring(scored_by) != _scoring(load_ensemble(fit.model, backend="torch").describe()):
            raise FakescopeError(
                f"{scores} was scored by {scored_by.get('config')}, not by --model {fit.model}"
            )
    data = _ensemble_data(fit.model, out)
    p = np.clip(probs, EPS, 1 - EPS)
    factor, shift = fit_platt(np.log(p / (1 - p)), labels)
    # M maps z to z / T0 + b0 and the fit maps that to it / factor + shift.
    old = data.get("temperature") or {}
    t0, b0 = float(old.get("value", 1.0)), float(old.get("bias", 0.0))
    temperature, bias = round(t0 * factor, 6), round(b0 / factor + shift, 6)
    block = {
        "value": temperature,
        "bias": bias,
        "crops": len(labels),
        "fitted_on": fit.note or str(scores),
    }
    dropped = data.pop("decision", None) is not None
    write_atomic(out, json.dumps({**data, "temperature": block}, indent=2) + "\n")
    before = balanced_log_loss(labels, p)
    after = balanced_log_loss(labels, rescaled(p, factor, shift))
    return Tempered(temperature, bias, len(labels), before, after, dropped)
