"""Batch scoring of many files into a SQLite store (store.py), on this machine or on Ray.

Inputs are listed lazily and keyed by their content's sha256 with the model's and the
settings' hashes; inputs already stored are skipped, so a killed scan resumes where it
stopped. A bad input becomes an error row, never a stop; error rows are not retried unless
asked. Files that cannot be read at all are reported on every run but not stored.
"""

from __future__ import annotations

import os
import stat
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass, field
from datetime import timedelta
from functools import partial
from pathlib import Path

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from .engines import LocalEngine, RayEngine, ScanJob, unordered_map
from .media import Limits
from .models.checkpoints import sha256_of
from .pipeline import Analyzer
from .settings import Settings, stored_values
from .store import Row, Store, display
from .types import Decision


def iter_inputs(paths: Iterable[Path]) -> Iterator[Path]:
    """Files given, and files under folders given (sorted; symlinked folders are not followed,
    so loops end)."""
    for path in paths:
        if path.is_dir():
            for root, dirs, files in os.walk(path, followlinks=False):
                dirs.sort()
                for name in sorted(files):
                    if not name.startswith("."):
                        yield Path(root) / name
        else:
            yield path


@dataclass
class ScanSummary:
    db: str
    out: str | None = None
    new: int = 0  # inputs handled by this run: scored, or an error
    stored: int = 0  # inputs skipped: already in the store
    errors: int = 0  # inputs whose row is an error, new or stored
    stored_errors: int = 0
    labels: Counter = field(default_factory=Counter)
    credentials: Counter = field(default_factory=Counter)  # inputs with any, by state

    def add(self, row: Row, new: bool) -> None:
        self.new += new
        self.stored += not new
        self.labels[row.label] += 1
        if row.credentials not in (None, "none"):
            self.credentials[row.credentials] += 1
        if row.label == "error":
            self.errors += 1
            self.stored_errors += not new

    def line(self) -> str:
        labels = "".join(
            f"{self.labels[label]} {label}, "
            for label in ("fake", "real", "inconclusive", "no_face")
        )
        retry = (
            f" ({self.stored_errors} stored earlier: --retry-errors retries them)"
            if self.stored_errors
            else ""
        )
        export = f", exported to {self.out}" if self.out else ""
        credentials = (
            "; content credentials: "
            + ", ".join(f"{n} {state}" for state, n in sorted(self.credentials.items()))
            if self.credentials
            else ""
        )
        return (
            f"scanned {self.new + self.stored} inputs "
            f"({self.new} new, {self.stored} already stored): "
            f"{labels}{self.errors} errors{retry}{credentials} -> {self.db}{export}"
        )


def key_input(store: Store, retry_errors: bool, path: Path) -> ScanJob | Row:
    """The job for an input, or a row when there is nothing to do: its stored row, or an
    error row (not stored) when the file cannot be read."""
    name = os.path.abspath(path)
    try:
        if not stat.S_ISREG(os.stat(name).st_mode):  # a FIFO would block the reader for ever
            return Row(name, None, None, "error", error=f"{name}: not a regular file")
        content = sha256_of(name)
    except OSError as error:
        return Row(
            name, None, None, "error", error=f"{name}: cannot read: {error.strerror or error}"
        )
    key = store.key(content)
    stored = store.lookup(key)
    if stored is not None and not (retry_errors and stored.label == "error"):
        return stored
    return ScanJob(name, content, key)


class _Rate(ProgressColumn):
    def render(self, task) -> Text:
        return Text(f"{task.speed or 0:.1f}/s")


class ScanProgress:
    """A progress bar on a terminal; elsewhere, or quiet, a plain line every `every` seconds.

    The total comes from a second, cheap listing in a thread, so the scan starts at once.
    """

    def __init__(self, console: Console, paths: list[Path], quiet: bool, every: float = 10.0):
        self.console, self.paths, self.every = console, paths, every
        self.total: int | None = None
        self.done = self.errors = 0
        self.start = self.last = time.monotonic()
        self.bar = (
            None
            if quiet or not console.is_terminal
            else Progress(
                TextColumn("scan"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[errors]} errors"),
                _Rate(),
                TimeRemainingColumn(),
                console=console,
            )
        )
        self.task = self.bar.add_task("scan", total=None, errors=0) if self.bar else None

    def __enter__(self) -> ScanProgress:
        threading.Thread(target=self._count, daemon=True).start()
        if self.bar:
            self.bar.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.bar:
            self.bar.stop()

    def _count(self) -> None:
        self.total = sum(1 for _ in iter_inputs(self.paths))
        if self.bar and self.task is not None:
            self.bar.update(self.task, total=self.total)

    def advance(self, row: Row, new: bool) -> None:
        self.done += 1
        if row.label == "error":
            self.errors += 1
            if new:
                message, path = display(row.error or ""), display(row.path)
                self.console.print(
                    f"error: {message if message.startswith(path) else f'{path}: {message}'}",
                    markup=False,
                )
        if self.bar and self.task is not None:
            self.bar.update(self.task, advance=1, errors=self.errors)
        elif time.monotonic() - self.last >= self.every:
            self.last = time.monotonic()
            self.console.print(self.status(), markup=False)

    def status(self) -> str:
        rate = self.done / max(time.monotonic() - self.start, 1e-9)
        total = "?" if self.total is None else self.total
        eta = (
            f", ETA {timedelta(seconds=round((self.total - self.done) / rate))}"
            if self.total is not None and rate > 0
            else ""
        )
        return f"scan: {self.done}/{total} inputs, {self.errors} errors, {rate:.1f}/s{eta}"


def store_settings(settings: Settings, fitted: Decision, limits: Limits, crops: bool) -> dict:
    """What the store keys rows by, besides the file and the model: the settings that change a
    result (Settings marks them; fitted: the model's thresholds), the media limits, and whether
    inputs are crops."""
    return {**settings.result(fitted), "crops": crops, **stored_values(limits)}


def run_scan(
    analyzer: Analyzer,
    paths: Iterable[Path],
    db: Path,
    out: Path | None = None,
    *,
    crops: bool = False,
    engine: str = "local",
    ray_address: str | None = None,
    workers: int | None = None,
    retry_errors: bool = False,
    quiet: bool = False,
    console: Console | None = None,
    export_all: bool = False,
) -> ScanSummary:
    """Score every input into the store at `db`; optionally export the rows of these inputs (or,
    export_all, every row of this model and settings) to JSON lines at `out`."""
    paths = list(paths)
    workers = workers or os.cpu_count() or 1
    console = console or Console(stderr=True, highlight=False, soft_wrap=True)
    summary = ScanSummary(str(db), str(out) if out else None)
    model: object = analyzer.ensemble.describe()["members"]
    calibration = [analyzer.ensemble.temperature, analyzer.ensemble.bias]
    if calibration != [1.0, 0.0]:  # it changes every probability; uncalibrated stores keep rows
        model = {"members": model, "temperature": calibration}
    settings = store_settings(analyzer.settings, analyzer.ensemble.decision, analyzer.limits, crops)
    with (
        closing(Store(db, model, settings)) as store,
        ThreadPoolExecutor(workers, thread_name_prefix="fakescope-hash") as pool,
    ):
        runner = (
            RayEngine(analyzer, crops, ray_address)
            if engine == "ray"
            else LocalEngine(analyzer, crops, workers)
        )
        with ScanProgress(console, paths, quiet) as progress:

            def record(row: Row, new: bool) -> None:
                summary.add(row, new)
                progress.advance(row, new)

            def fresh_jobs() -> Iterator[ScanJob]:
                keyed = unordered_map(
                    pool, partial(key_input, store, retry_errors), iter_inputs(paths), 4 * workers
                )
                for item in keyed:
                    if isinstance(item, ScanJob):
                        yield item
                    else:  # stored already, or unreadable (no key: reported, not stored)
                        if item.key is not None:
                            store.note([item.key])
                        record(item, new=item.key is None)

            for rows in runner.run(fresh_jobs()):
                store.put(rows)  # one transaction per batch: a kill loses at most this batch's work
                store.note([row.key for row in rows if row.key is not None])
                for row in rows:
                    record(row, new=True)
        if not progress.bar:
            console.print(progress.status(), markup=False)
        if out:
            store.export_jsonl(out, noted_only=not export_all)
    return summary
