"""Fit a model's video decision on held-out videos and write it into an ensemble config."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np

from .evaluate import read_rows
from .files import write_atomic
from .models.ensemble import resolve_config
from .types import Decision, FakescopeError
from .verdict import fit_decision


def write_calibrated(
    scores: Path,
    model: str,
    out: Path,
    max_false_alarm: float = 0.1,
    max_miss: float = 0.1,
    note: str = "",
) -> Decision:
    """Fit on the judged rows of an evaluation's videos.csv; `out` lists the model's members
    (paths relative to it) with the decision. `out` may be the model's own config."""
    for name, value in (("--max-false-alarm", max_false_alarm), ("--max-miss", max_miss)):
        if not 0 <= value < 1:
            raise FakescopeError(f"{name} must be in [0, 1)")
    if out.suffix != ".json":
        raise FakescopeError(f"--out {out}: an ensemble config must end in .json")
    rows = [r for r in read_rows(scores) if r["probability"] is not None]
    decision = fit_decision(
        np.array([r["label"] for r in rows]),
        np.array([r["probability"] for r in rows]),
        max_false_alarm,
        max_miss,
    )
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
    # Rounded outward, so the rounded thresholds still meet both targets on these videos.
    threshold = math.ceil(decision.threshold * 1e4) / 1e4
    real_below = math.floor(decision.real_below * 1e4) / 1e4
    fitted = {
        "threshold": threshold,
        "real_below": real_below,
        "max_false_alarm": max_false_alarm,
        "max_miss": max_miss,
        "videos": len(rows),
        "fitted_on": note or str(scores),
    }
    write_atomic(out, json.dumps({**data, "members": members, "decision": fitted}, indent=2) + "\n")
    return Decision(threshold, real_below)
