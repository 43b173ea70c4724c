"""The settings of an analysis that change its result; the CLI, the web server, the store's
key and the report's reproduce command all take them from here."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import Field, asdict, dataclass, field, fields
from typing import Any

from .provenance import load_trust
from .types import Decision, SettingError
from .verdict import STRATEGIES, Judging


def _result(default: Any, help: str, later: bool = False) -> Any:
    """A field that changes a result: it is part of the scan store's key and of the reproduce
    command (as the `analyze` option of its name). `later`: added after stores existed, it
    joins the key only when set away from its default (see stored_values)."""
    return field(default=default, metadata={"result": True, "help": help, "later": later})


def _how(default: Any, help: str) -> Any:
    """A field that changes how a result is made (speed, memory), not the result."""
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class Settings:
    frames: int = _result(32, "frames sampled evenly per video")
    detector: str = _result("retinaface", "face detector: retinaface or mtcnn")
    strategy: str = _result("confident", f"per-track aggregation: {' or '.join(STRATEGIES)}")
    threshold: float | None = _result(
        None, "P(fake) at or above which a video is fake (default: the model's fitted decision)"
    )
    real_below: float | None = _result(
        None,
        "P(fake) below which it is real; in between: inconclusive (default: the model's, "
        "capped at the threshold)",
    )
    # Frames whose heat maps are shown: not a result, as scores and labels do not depend on it
    # (and no option sets it).
    chosen: int = field(default=4, metadata={"option": False})
    # Batch size and backend change speed, not scores (within float rounding).
    batch_size: int = _how(32, "faces scored together")
    backend: str = _how("auto", "scoring pass: onnx (ONNX Runtime), torch, or auto (onnx on CPU)")
    min_face: float = _result(
        Judging.min_face, "faces with a shorter side under this many px are not judged"
    )
    min_sharpness: float = _result(
        Judging.min_sharpness, "blurrier faces are not judged (Laplacian variance at 112 px)"
    )
    min_track_faces: int = _result(
        Judging.min_track_faces, "judged faces a track needs to decide (capped at frames / 8)"
    )
    max_qp: float = _result(
        Judging.max_qp,
        "a person whose faces H.264 coded more coarsely (median QP) cannot decide; 51: off",
    )
    trust_anchors: str | None = _result(
        None,
        "PEM file of C2PA trust anchors: content credentials whose signer chains to one are "
        "trusted (default: none; signatures are checked offline, signers not trusted)",
        later=True,
    )

    def __post_init__(self) -> None:
        if self.trust_anchors is not None:
            load_trust(self.trust_anchors)  # raises SettingError on a bad file
        if self.strategy not in STRATEGIES:
            raise SettingError(
                f"unknown strategy {self.strategy!r}; known: {', '.join(STRATEGIES)}", "strategy"
            )
        for name in ("frames", "batch_size"):
            if getattr(self, name) < 1:
                raise SettingError(f"{name} must be at least 1", name)
        if self.chosen < 0:
            raise SettingError("chosen (frames with heat maps) must be >= 0")
        for name in ("threshold", "real_below"):
            value = getattr(self, name)
            if value is not None and not 0 < value < 1:
                raise SettingError(f"{name} must be between 0 and 1", name)
        _ = self.judging  # Judging raises on bad rules

    @property
    def judging(self) -> Judging:
        return Judging(self.min_face, self.min_sharpness, self.min_track_faces, self.max_qp)

    def decision(self, fitted: Decision) -> Decision:
        """The video thresholds in force: these settings where given, else the model's fitted
        ones."""
        threshold = fitted.threshold if self.threshold is None else self.threshold
        real_below = (
            min(fitted.real_below, threshold) if self.real_below is None else self.real_below
        )
        return Decision(threshold, real_below)

    def result(self, fitted: Decision) -> dict[str, Any]:
        """The fields that change a result, with the thresholds in force (see decision): what
        the scan store keys its rows by."""
        values = stored_values(self)
        values.update(asdict(self.decision(fitted)))
        return values


def result_fields(group: Any = Settings) -> list[Field]:
    """The fields of a dataclass (Settings, media.Limits) that change a result, in
    declaration order."""
    return [f for f in fields(group) if f.metadata.get("result")]


def stored_values(*records: Any) -> dict[str, Any]:
    """The values of the records' fields that change a result, by field name, as the scan
    store keys rows by: a field marked `later` is left out at its default, so a store made
    before the field existed keeps its rows."""
    return {
        f.name: getattr(r, f.name)
        for r in records
        for f in result_fields(r)
        if not (f.metadata.get("later") and getattr(r, f.name) == f.default)
    }


def option(name: str) -> str:
    """The command-line option of a field."""
    return "--" + name.replace("_", "-")


def command_args(values: Mapping[str, Any]) -> list[str]:
    """The `analyze` options that give back the result fields in `values` (a report's settings)."""
    args = []
    for f in result_fields():
        if values[f.name] is not None:
            args += [option(f.name), str(values[f.name])]
    return args
