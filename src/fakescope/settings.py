"""The settings of an analysis that change its result; the CLI, the web server, the store's
key and the report's reproduce command all take them from here."""

from __future__ import annotations

from dataclasses import dataclass

from .types import Decision, FakescopeError
from .verdict import STRATEGIES, Judging


@dataclass(frozen=True)
class Settings:
    frames: int = 32
    detector: str = "retinaface"
    strategy: str = "confident"
    threshold: float | None = (
        None  # P(fake) at or above which a video is fake; None: the model's fitted one
    )
    real_below: float | None = (
        None  # below which it is real; None: the model's, capped at threshold
    )
    chosen: int = 4  # frames whose heat maps are shown
    batch_size: int = 32
    backend: str = (
        "auto"  # scoring pass: "onnx" (ONNX Runtime, the CPU default), "torch", or "auto"
    )
    min_face: float = Judging.min_face
    min_sharpness: float = Judging.min_sharpness
    min_track_faces: int = Judging.min_track_faces

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
                raise FakescopeError(f"--{name.replace('_', '-')} must be between 0 and 1")
        Judging(self.min_face, self.min_sharpness, self.min_track_faces)  # raises on bad rules

    @property
    def judging(self) -> Judging:
        return Judging(self.min_face, self.min_sharpness, self.min_track_faces)

    def decision(self, fitted: Decision) -> Decision:
        """The video thresholds in force: these settings where given, else the model's fitted
        ones."""
        threshold = fitted.threshold if self.threshold is None else self.threshold
        real_below = (
            min(fitted.real_below, threshold) if self.real_below is None else self.real_below
        )
        return Decision(threshold, real_below)
