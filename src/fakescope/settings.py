"""The settings of an analysis that change its result; the CLI, the web server, the store's
key and the report's reproduce command all take them from here."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import Field, asdict, dataclass, field, fields
from typing import Any

from .types import Decision, FakescopeError
from .verdict import STRATEGIES, Judging


def _result(default: Any) -> Any:
    """A field that changes a result: it is part of the scan store's key and of the reproduce
    command (as the `analyze` option of its name)."""
    return field(default=default, metadata={"result": True})


@dataclass(frozen=True)
class Settings:
    frames: int = _result(32)
    detector: str = _result("retinaface")
    strategy: str = _result("confident")
    # P(fake) at or above which a video is fake; None: the model's fitted one
    threshold: float | None = _result(None)
    real_below: float | None = _result(None)  # below which it is real; None: the model's, capped
    # Frames whose heat maps are shown: not a result, as scores and labels do not depend on it
    # (and no option sets it).
    chosen: int = 4
    # How, not what: batch size and backend change speed, not scores (within float rounding).
    batch_size: int = 32
    backend: str = "auto"  # scoring pass: "onnx" (ONNX Runtime, the CPU default), "torch", "auto"
    min_face: float = _result(Judging.min_face)
    min_sharpness: float = _result(Judging.min_sharpness)
    min_track_faces: int = _result(Judging.min_track_faces)
    max_qp: float = _result(Judging.max_qp)

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise FakescopeError(
                f"unknown strategy {self.strategy!r}; known: {', '.join(STRATEGIES)}"
            )
        if self.frames < 1:
            raise FakescopeError("--frames must be at least 1")
        if self.batch_size < 1:
            raise FakescopeError("--batch-size must be at least 1")
        if self.chosen < 0:
            raise FakescopeError("chosen (frames with heat maps) must be >= 0")
        for name in ("threshold", "real_below"):
            value = getattr(self, name)
            if value is not None and not 0 < value < 1:
                raise FakescopeError(f"{option(name)} must be between 0 and 1")
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
        values = {f.name: getattr(self, f.name) for f in result_fields(self)}
        values.update(asdict(self.decision(fitted)))
        return values


def result_fields(settings: Settings | type[Settings] = Settings) -> list[Field]:
    """The fields of Settings that change a result, in declaration order."""
    return [f for f in fields(settings) if f.metadata.get("result")]


def option(name: str) -> str:
    """The command-line option of a Settings field."""
    return "--" + name.replace("_", "-")


def command_args(values: Mapping[str, Any]) -> list[str]:
    """The `analyze` options that give back the result fields in `values` (a report's settings)."""
    args = []
    for f in result_fields():
        if values[f.name] is not None:
            args += [option(f.name), str(values[f.name])]
    return args
