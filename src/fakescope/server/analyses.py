"""The server's analyses: each upload's job, the worker pool that runs them, and the SQLite
file that keeps them (DATA/analyses.sqlite, results in DATA/analyses/<id>), the last
`max_results` finished ones kept, so a restart lists them again.

Analyses never run in a request handler: a ThreadPoolExecutor with `workers` threads runs
them, and each run borrows one of `workers` Analyzers loaded at start (an Analyzer is not
shared by two threads at once: the heat maps hook its models).
"""

from __future__ import annotations

import json
import logging
import queue
import secrets
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import HTTPException

from ..explain import DEFAULT
from ..media import Limits
from ..pipeline import Analyzer, Settings
from ..store import open_database
from ..types import FakescopeError
from .config import ServerConfig

log = logging.getLogger(__name__)

EXPLAIN = [DEFAULT]  # the comparison images show all four maps whatever is asked here
# Where each stage starts, as a share of a typical analysis's time.
STAGE_PROGRESS = {"decode": 0.02, "detect": 0.1, "score": 0.45, "explain": 0.6, "report": 0.9}
DB_VERSION = 1
SCHEMA = """
CREATE TABLE IF NOT EXISTS analyses (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,      -- the uploaded file's name, shown instead of the server's paths
    status TEXT NOT NULL,    -- queued, running, done, failed
    report TEXT,             -- JSON, when done
    error TEXT,              -- one line, when failed
    created REAL NOT NULL,   -- seconds since the epoch
    finished REAL            -- seconds since the epoch, when done or failed
);
"""


@dataclass
class Analysis:
    """One upload's analysis as the server tracks it (a scan's unit of work is engines.ScanJob)."""

    id: str
    name: str  # the uploaded file's name, shown instead of the server's paths
    folder: Path  # the analysis's outputs
    status: str = "queued"  # queued, running, done, failed
    stage: str | None = None
    progress: float = 0.0
    report: dict | None = None
    error: str | None = None
    created: float = 0.0  # time.time()
    finished: float = 0.0  # time.time() when done or failed; 0 while pending

    def at(self, stage: str) -> None:
        self.stage, self.progress = stage, STAGE_PROGRESS.get(stage, self.progress)

    def public(self, status_url: str) -> dict:
        body: dict[str, Any] = {
            "id": self.id,
            "name": self.name,
            "status": self.status,
            "stage": self.stage,
            "progress": self.progress,
            "status_url": status_url,
        }
        if self.status == "done":
            body["report"] = self.report
        if self.status == "failed":
            body["error"] = self.error
        return body


class Service:
    def __init__(
        self,
        model: str | Path,
        device: str,
        settings: Settings,
        limits: Limits,
        config: ServerConfig,
    ):
        self.analyzers: queue.Queue[Analyzer] = queue.Queue()
        for _ in range(config.workers):
            self.analyzers.put(Analyzer(model, settings, device, limits))
        self.model_name = self.analyzers.queue[0].ensemble.name
        self.limits, self.config = limits, config
        self.max_disk = config.max_disk_mb * 2**20
        data_dir = config.folder
        self.root = data_dir / "analyses"
        self.uploads = data_dir / "uploads"
        for folder in (data_dir, self.root):
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        shutil.rmtree(self.uploads, ignore_errors=True)  # left by a killed server
        self.uploads.mkdir(mode=0o700)
        self.pool = ThreadPoolExecutor(config.workers, thread_name_prefix="fakescope-analysis")
        self.lock = threading.Lock()
        self.places = 0  # uploads being received + analyses queued or running
        self.disk = 0  # bytes reserved by uploads being received or waiting for analysis
        self.db = open_database(data_dir / "analyses.sqlite", SCHEMA, DB_VERSION)
        with self.db:
            # Analyses a stopped server left unfinished lost their uploads: they failed.
            self.db.execute(
                "UPDATE analyses SET status = 'failed', "
                "error = 'the server stopped before the analysis "
                "ended; upload the file again', finished = ? WHERE status IN ('queued', 'running')",
                (time.time(),),
            )
        self.jobs: dict[str, Analysis] = {}
        for row in self.db.execute(
            "SELECT id, name, status, report, error, created, finished FROM analyses"
        ):
            job_id, name, status, report, error, created, finished = row
            self.jobs[job_id] = Analysis(
                id=job_id,
                name=name,
                folder=self.root / job_id,
                status=status,
                progress=1.0 if status == "done" else 0.0,
                report=json.loads(report) if report else None,
                error=error,
                created=created,
                finished=finished or 0.0,
            )
        self._evict()

    def pending(self) -> int:
        with self.lock:
            return sum(job.status in ("queued", "running") for job in self.jobs.values())

    def reserve(self, size: int) -> None:
        """Hold one place and `size` bytes of disk for an upload, or refuse it (before its
        body is read)."""
        with self.lock:
            if self.places >= self.config.max_pending:
                raise HTTPException(
                    503, "too many analyses waiting; try again later", {"Retry-After": "30"}
                )
            if self.disk + size > self.max_disk:
                raise HTTPException(
                    503, "not enough upload space right now; try again later", {"Retry-After": "30"}
                )
            self.places += 1
            self.disk += size

    def release(self, size: int) -> None:
        with self.lock:
            self.places -= 1
            self.disk -= size

    def _save(self, job: Analysis) -> None:
        with self.lock, self.db:
            self.db.execute(
                "INSERT OR REPLACE INTO analyses VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    job.id,
                    job.name,
                    job.status,
                    json.dumps(job.report) if job.report else None,
                    job.error,
                    job.created,
                    job.finished or None,
                ),
            )

    def submit(self, name: str, upload_dir: Path, path: Path, reserved: int) -> Analysis:
        job_id = secrets.token_urlsafe(16)
        job = Analysis(job_id, name, self.root / job_id, created=time.time())
        self._save(job)
        with self.lock:
            self.jobs[job_id] = job
        self.pool.submit(self._run, job, upload_dir, path, reserved)
        return job

    def get(self, job_id: str) -> Analysis:
        with self.lock:
            job = self.jobs.get(job_id)
        if job is None:
            raise HTTPException(404, "no such analysis (unknown id, or expired)")
        return job

    def listing(self) -> list[Analysis]:
        with self.lock:
            return sorted(self.jobs.values(), key=lambda j: j.created, reverse=True)

    def _run(self, job: Analysis, upload_dir: Path, path: Path, reserved: int) -> None:
        analyzer = self.analyzers.get()  # never waits: one Analyzer per pool thread
        outcome = "failed"
        try:
            job.status = "running"
            self._save(job)
            report = analyzer.analyze(path, job.folder, EXPLAIN, keep_frames=True, progress=job.at)
            job.at("report")
            report = report.named(job.name).save(job.folder)  # no server paths to clients
            job.report, job.progress, outcome = report.to_dict(), 1.0, "done"
        except Exception as error:  # every failure becomes the job's message
            if not isinstance(error, FakescopeError):
                log.exception("analysis %s failed", job.id)
            message = (
                str(error)
                if isinstance(error, FakescopeError)
                else f"unexpected {type(error).__name__}"
            )
            job.error = message.replace(str(path), job.name)
        finally:
            self.analyzers.put(analyzer)
            shutil.rmtree(upload_dir, ignore_errors=True)
            self.release(reserved)
            # Finished only once its place is free: a client told "done" may upload again.
            job.status, job.finished = outcome, time.time()
            self._save(job)
            self._evict()

    def _evict(self) -> None:
        """Forget the oldest finished analyses beyond max_results, with their files."""
        with self.lock:
            finished = sorted(
                (j for j in self.jobs.values() if j.finished), key=lambda j: j.finished
            )
            expired = finished[: max(0, len(finished) - self.config.max_results)]
            for job in expired:
                del self.jobs[job.id]
            with self.db:
                self.db.executemany(
                    "DELETE FROM analyses WHERE id = ?", [(job.id,) for job in expired]
                )
        for job in expired:
            shutil.rmtree(job.folder, ignore_errors=True)

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        shutil.rmtree(self.uploads, ignore_errors=True)
        with self.lock:
            self.db.close()
