"""What every command shares: the typer apps, the consoles, the options of most commands,
and the one-line error that each failed input becomes.

Every user-facing failure is a FakescopeError, printed as one line; its exit_code says which
kind (2 usage/setting, 3 unreadable media, 4 no face, 5 weights). Set FAKESCOPE_DEBUG=1 for
tracebacks. Options that set a field of Settings, Limits, TrainConfig or Common come from
that field (options.with_fields): its type, default and help are declared there only.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import typer
from rich.console import Console

from ..options import flagged, pick
from ..settings import Settings
from ..types import DEFAULT_MODEL, FakescopeError, Limits, SettingError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False)
models_app = typer.Typer(
    no_args_is_help=True, help="List shipped models; import published checkpoints."
)
app.add_typer(models_app, name="models")
err = Console(stderr=True, highlight=False, soft_wrap=True)
out = Console(highlight=False, soft_wrap=True)


@dataclass(frozen=True)
class Common:
    """Options most commands share."""

    model: str = field(
        default=DEFAULT_MODEL, metadata={"help": "shipped model name or a config .json"}
    )
    device: str = field(default="cpu", metadata={"help": "cpu or cuda"})


def fail_line(source: str, error: BaseException) -> int:
    """Print one line for a failed input and return its exit code."""
    if os.environ.get("FAKESCOPE_DEBUG"):
        err.print_exception()
    if isinstance(error, FakescopeError):
        message = flagged(error) if isinstance(error, SettingError) else str(error)
        err.print(
            f"error: {message if source in message else f'{source}: {message}'}", markup=False
        )
        return error.exit_code
    err.print(f"error: {source}: unexpected {type(error).__name__}: {error}", markup=False)
    return 1


def guarded(source: str, action):
    """Run an action for one input; a failure becomes one line and an exit code."""
    try:
        return action(), 0
    except Exception as error:
        return None, fail_line(source, error)


def at_least(option: str, value: int | None, low: int, high: int | None = None) -> None:
    """A whole-number option outside [low, high] is a bad setting (exit 2); None means unset."""
    if value is not None and not (low <= value and (high is None or value <= high)):
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise FakescopeError(f"{option} must be {bound}, got {value}")


def method_list(value: str | None) -> list[str] | None:
    """Comma-separated method names; "none" (or nothing): None."""
    if not value or value.strip().lower() == "none":
        return None
    return [m.strip() for m in value.split(",") if m.strip()]


def configured(given: dict[str, Any]) -> tuple[Settings, Limits]:
    return Settings(**pick(Settings, given)), Limits(**pick(Limits, given))


def exit_on_failure(source: str, action):
    result, code = guarded(source, action)
    if result is None:
        raise typer.Exit(code)
    return result


@app.callback()
def main() -> None:
    """Detect synthesized faces in videos and images, and show where the evidence is."""
