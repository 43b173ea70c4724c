"""Fit a model's video decision on held-out videos and write it into an ensemble config."""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .evaluate import read_rows
from .files import write_atomic
from .models.ensemble import resolve_config
from .types import DEFAULT_MODEL, Decision, FakescopeError, SettingError
from .verdict import fit_decision


@dataclass(frozen=True)
class Calibration:
    """What a decision is fitted for; `fakescope calibrate` has an option per field."""

    model: str = field(
        default=DEFAULT_MODEL,
        metadata={"help": "the model that scored them (its members are referenced)"},
    )
    max_false_alarm: float = field(
        default=0.15, metadata={"help": "share of reals that may be called fake"}
    )
    max_miss: float = field(
        default=0.1, metadata={"help": "share of fakes that may be called real"}
    )
    note: str = field(
        default="", metadata={"help": "what the videos are, kept in the config as `fitted_on`"}
    )

    def __post_init__(self) -> None:
        for name in ("max_false_alarm", "max_miss"):
            if not 0 <= getattr(self, name) < 1:  # NaN fails too
                raise SettingError(f"{name} must be in [0, 1)", name)


def write_calibrated(scores: Path, out: Path, fit: Calibration | None = None) -> Decision:
    """Fit on the judged rows of an evaluation's videos.csv; `out` lists the model's members
    (paths relative to it) with the decision. `out` may be the model's own config."""
    fit = fit or Calibration()
    if out.suffix != ".json":
        raise FakescopeError(f"--out {out}: an ensemble config must end in .json")
    rows = [r for r in read_rows(scores) if r["probability"] is not None]
    decision = fit_decision(
        np.array([r["label"] for r in rows]),
        np.array([r["probability"] for r in rows]),
        fit.max_false_alarm,
        fit.max_miss,
    )
    config = resolve_config(fit.model)
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
    write_atomic(out, json.dumps({**data, "members": members, "decision": fitted}, indent=2) + "\n")
    return Decision(threshold, real_below)
