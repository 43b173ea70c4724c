"""Writing results safely: every output file is written whole or not at all, and no two
inputs of one run share an output folder."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path to write; it replaces `path` only when the block ends without error.

    The temporary file is private to this writer (two writers, or two processes, never
    share it) and lies in the target's folder, so the final os.replace is atomic.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(descriptor)
    try:
        yield Path(name)
        os.replace(name, path)
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise


@contextmanager
def atomic_open(path: str | Path, errors: str = "strict") -> Iterator[IO[str]]:
    """A text handle whose content replaces `path` only when the block ends without error."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", errors=errors) as handle:
        yield handle


def write_atomic(path: str | Path, text: str, errors: str = "strict") -> Path:
    """Write through a temporary file, so an interrupted run never leaves half a file."""
    with atomic_open(path, errors) as handle:
        handle.write(text)
    return Path(path)


def _short_hash(path: Path) -> str:
    return hashlib.sha256(os.fsencode(os.path.abspath(path))).hexdigest()[:8]


def _written_for(folder: Path) -> str | None:
    """The input of the report already in `folder`, as an absolute path, if known."""
    try:
        given = json.loads((folder / "report.json").read_text(encoding="utf-8"))["input"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return os.path.abspath(given) if isinstance(given, str) else None


def output_folders(out_dir: Path, inputs: Sequence[Path]) -> dict[Path, Path]:
    """OUT/<stem> per input, or OUT/<stem>-<8 hex of the absolute path> when another input of
    this run has the same stem, or when OUT/<stem> already holds another input's results
    (or results of unknown origin). Rerunning an input writes to the same folder again."""
    stems: dict[str, int] = {}
    for path in inputs:
        stems[path.stem] = stems.get(path.stem, 0) + 1
    folders = {}
    for path in inputs:
        plain = out_dir / path.stem
        mine = os.path.abspath(path)
        used = plain.exists() and (not plain.is_dir() or any(plain.iterdir()))
        taken = used and _written_for(plain) != mine
        folders[path] = (
            out_dir / f"{path.stem}-{_short_hash(path)}" if stems[path.stem] > 1 or taken else plain
        )
    return folders
