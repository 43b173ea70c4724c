"""What the web service takes beside the model and the analysis settings: one declaration
for `create_app` and the options of `fakescope serve`."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from ..types import SettingError

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def _help(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class ServerConfig:
    max_upload_mb: int = _help(200, "larger uploads are refused (HTTP 413)")
    workers: int = _help(1, "analyses run at once, each with its own copy of the model")
    max_pending: int = _help(16, "uploads and analyses in progress at once; more get 503")
    max_disk_mb: int = _help(1024, "disk held by uploads waiting for analysis; more get 503")
    upload_timeout: float = _help(600.0, "seconds an upload may take (and 30 s without data)")
    upload_idle_s: float = field(default=30.0, metadata={"option": False})
    max_results: int = _help(50, "finished analyses kept, with their reports")
    data_dir: Path | None = field(
        default=None,
        metadata={"help": "analyses and uploads (default ~/.local/share/fakescope/server)"},
    )

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, int | float) and not value >= 1:  # NaN fails too
                raise SettingError(f"{f.name} must be at least 1, got {value}", f.name)

    @property
    def folder(self) -> Path:
        """Where analyses are kept: data_dir, or $XDG_DATA_HOME/fakescope/server."""
        if self.data_dir is not None:
            return Path(self.data_dir)
        data_home = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
        return Path(data_home) / "fakescope" / "server"
