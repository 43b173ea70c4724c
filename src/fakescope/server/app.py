"""The web service: upload a video or image, follow its analysis, read the report.

A thin layer over `Analyzer`. Analyses never run in a request handler: a ThreadPoolExecutor
with `workers` threads runs them, and each run borrows one of `workers` Analyzers loaded at
start (an Analyzer is not shared by two threads at once: the heat maps hook its models).

It is a local service that other web pages and other users must not drive (docs/security.md):
the API needs a token (a cookie set by the link printed at start, or a Bearer header); the
Host and Origin headers must name this server; an upload first reserves one of
`max_pending` places and its size on a disk budget, so nothing is read that cannot be kept;
a body that stalls or takes too long is cut off. Uploads stream into DATA/uploads, are checked
by content and deleted when their analysis ends (and the folder is emptied at start and
exit). Analyses and their results live in DATA/analyses.sqlite and DATA/analyses/<id>, the
last `max_results` finished ones kept, so a restart lists them again.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import queue
import re
import secrets
import shutil
import sqlite3
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

from fastapi import FastAPI, HTTPException, Request, Response
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import File, FormParser, parse_options_header
from starlette.concurrency import run_in_threadpool

from ..explain import DEFAULT
from ..media import Limits, probe
from ..pipeline import Analyzer, Settings
from ..reports.html import write_html
from ..types import FakescopeError
from ..version import __version__

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
ID_PATTERN = r"^[A-Za-z0-9_-]{22}$"  # secrets.token_urlsafe(16)
NAME_PATTERN = (
    r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$"  # files the analysis wrote: no path, no dot files
)
EXPLAIN = [DEFAULT]  # the comparison images show all four maps whatever is asked here
# Where each stage starts, as a share of a typical analysis's time.
STAGE_PROGRESS = {"decode": 0.02, "detect": 0.1, "score": 0.45, "explain": 0.6, "report": 0.9}
CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
    "frame-ancestors 'none'"
)
JobId = Annotated[str, PathParam(pattern=ID_PATTERN)]
FileName = Annotated[str, PathParam(pattern=NAME_PATTERN)]
UPLOAD_SCHEMA = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {"file": {"type": "string", "format": "binary"}},
                }
            }
        },
    }
}
COOKIE = "fakescope_token"
LOOPBACK = ("127.0.0.1", "localhost", "::1")
MAX_BOUNDARY = 70  # RFC 2046
NO_TOKEN = (
    "the API needs the access token: open the link `fakescope serve` printed, "
    "or send 'Authorization: Bearer TOKEN'"
)
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


def default_data_dir() -> Path:
    """Where the server keeps analyses: $XDG_DATA_HOME/fakescope/server (~/.local/share/...)."""
    return (
        Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
        / "fakescope"
        / "server"
    )


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
        workers: int,
        max_results: int,
        max_pending: int,
        data_dir: Path,
        max_disk: int,
    ):
        self.analyzers: queue.Queue[Analyzer] = queue.Queue()
        for _ in range(workers):
            self.analyzers.put(Analyzer(model, settings, device, limits))
        self.model_name = self.analyzers.queue[0].ensemble.name
        self.limits, self.max_results, self.max_pending, self.max_disk = (
            limits,
            max_results,
            max_pending,
            max_disk,
        )
        self.root = data_dir / "analyses"
        self.uploads = data_dir / "uploads"
        for folder in (data_dir, self.root):
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        shutil.rmtree(self.uploads, ignore_errors=True)  # left by a killed server
        self.uploads.mkdir(mode=0o700)
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="fakescope-analysis")
        self.lock = threading.Lock()
        self.places = 0  # uploads being received + analyses queued or running
        self.disk = 0  # bytes reserved by uploads being received or waiting for analysis
        self.db = sqlite3.connect(data_dir / "analyses.sqlite", check_same_thread=False)
        with self.db:
            self.db.executescript(SCHEMA)
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
                job_id,
                name,
                self.root / job_id,
                status,
                None,
                1.0 if status == "done" else 0.0,
                json.loads(report) if report else None,
                error,
                created,
                finished or 0.0,
            )
        self._evict()

    def pending(self) -> int:
        with self.lock:
            return sum(job.status in ("queued", "running") for job in self.jobs.values())

    def reserve(self, size: int) -> None:
        """Hold one place and `size` bytes of disk for an upload, or refuse it (before its
        body is read)."""
        with self.lock:
            if self.places >= self.max_pending:
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
            report = replace(  # no server paths to clients
                report,
                input=job.name,
                media=replace(report.media, path=job.name),
                model={**report.model, "config": Path(report.model["config"]).name},
                files={**report.files, "html": "report.html"},
            )
            report.write_json(job.folder / "report.json")
            write_html(report, job.folder)
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
            expired = finished[: max(0, len(finished) - self.max_results)]
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


async def _chunks(request: Request, idle: float, total: float):
    """The body's chunks; 408 when one takes over `idle` seconds or all over `total`."""
    deadline = time.monotonic() + total
    stream = request.stream().__aiter__()
    while True:
        wait = min(idle, deadline - time.monotonic())
        try:
            yield await asyncio.wait_for(stream.__anext__(), max(wait, 0.001))
        except StopAsyncIteration:
            return
        except asyncio.TimeoutError:
            raise HTTPException(408, "the upload stalled or took too long; send it again") from None


async def _receive_upload(
    request: Request, folder: Path, limit: int, idle: float, total: float
) -> tuple[Path, str]:
    """Stream the multipart field "file" into `folder`; 413 as soon as the body passes `limit`."""
    content_type, options = parse_options_header(request.headers.get("content-type", ""))
    if content_type != b"multipart/form-data" or not options.get(b"boundary"):
        raise HTTPException(
            415, "send the video or image as multipart/form-data, in the field 'file'"
        )
    if len(options[b"boundary"]) > MAX_BOUNDARY:
        raise HTTPException(
            400, f"malformed multipart body: boundary over {MAX_BOUNDARY} characters"
        )
    files: list[File] = []
    config = {"UPLOAD_DIR": str(folder), "MAX_MEMORY_FILE_SIZE": 0, "UPLOAD_DELETE_TMP": False}
    received = 0
    try:
        parser = FormParser(
            "multipart/form-data", None, files.append, boundary=options[b"boundary"], config=config
        )
        async for chunk in _chunks(request, idle, total):
            received += len(chunk)
            if received > limit:
                raise HTTPException(413, f"upload is over the limit of {limit // 2**20} MB")
            parser.write(chunk)
        parser.finalize()
    except (FormParserError, ValueError) as error:
        raise HTTPException(400, f"malformed multipart body: {str(error)[:200]}") from None
    finally:
        for f in files:
            f.close()
    upload = next((f for f in files if f.field_name == b"file" and f.actual_file_name), None)
    if upload is None or not upload.actual_file_name:
        raise HTTPException(422, "no file in the multipart field 'file' (or it is empty)")
    raw = (upload.file_name or b"upload").decode("utf-8", "replace")
    name = re.sub(r"[^\w. -]", "_", Path(raw.replace("\\", "/")).name)[:120] or "upload"
    return Path(upload.actual_file_name.decode()), name


def _hostname(host: str) -> str | None:
    """The name in a Host header ("[::1]:8000" -> "::1"), or None when it is malformed."""
    try:
        return urlsplit(f"//{host}").hostname
    except ValueError:
        return None


def _declared_size(request: Request, limit: int) -> int:
    """The body's size as declared (Content-Length), or the limit without one: what to reserve."""
    try:
        declared = int(request.headers.get("content-length") or limit)
    except ValueError:
        raise HTTPException(400, "bad Content-Length") from None
    if declared > limit:
        raise HTTPException(413, f"upload is over the limit of {limit // 2**20} MB")
    return max(declared, 0)


def create_app(
    model: str | Path = "default",
    device: str = "cpu",
    max_upload_mb: int = 200,
    workers: int = 1,
    settings: Settings | None = None,
    limits: Limits | None = None,
    max_results: int = 50,
    max_pending: int = 16,
    *,
    token: str | None = None,
    data_dir: Path | None = None,
    allowed_hosts: tuple[str, ...] = LOOPBACK,
    max_disk_mb: int = 1024,
    upload_idle_s: float = 30.0,
    upload_total_s: float = 600.0,
) -> FastAPI:
    """The app, with its Analyzers loaded (a missing or broken model fails here, not per upload).

    token: what the API asks for; None opens it to anyone who reaches the server (the CLI allows
    that on loopback only). allowed_hosts: the names a request's Host header may give ("*": any).
    """
    limit = max_upload_mb * 2**20
    service = Service(
        model,
        device,
        settings or Settings(),
        limits or Limits(),
        workers,
        max_results,
        max_pending,
        Path(data_dir) if data_dir else default_data_dir(),
        max_disk_mb * 2**20,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        service.close()

    # No /docs or /redoc: their pages load scripts from a CDN. /openapi.json describes the API.
    app = FastAPI(
        title="fakescope",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        description="Upload a video or image; get P(fake), a verdict and HiResCAM++ heat maps.",
    )
    app.state.service = service
    app.state.token = token
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    def authorised(request: Request) -> bool:
        if token is None:
            return True
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        given = given if scheme.lower() == "bearer" else request.cookies.get(COOKIE, "")
        return secrets.compare_digest(given.encode(), token.encode())

    @app.middleware("http")
    async def guard(request: Request, call_next):
        # A page on another site may send requests here, and read nothing back; it must not
        # drive the API. Nor may a name that an attacker resolves here (DNS rebinding).
        if (
            "*" not in allowed_hosts
            and _hostname(request.headers.get("host", "")) not in allowed_hosts
        ):
            return JSONResponse(
                {"detail": "unknown Host header: start the server with --allowed-host NAME"}, 400
            )
        origin = request.headers.get("origin")
        if origin is not None and urlsplit(origin).netloc != request.headers.get("host"):
            return JSONResponse({"detail": "cross-origin requests are refused"}, 403)
        if request.url.path.startswith("/api/") and not authorised(request):
            return JSONResponse({"detail": NO_TOKEN}, 401, {"WWW-Authenticate": "Bearer"})
        response = await call_next(request)
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Content-Security-Policy"] = CSP
        response.headers["Referrer-Policy"] = "no-referrer"
        return response

    def status_url(request: Request, job: Analysis) -> str:
        return str(request.url_for("analysis_status", analysis_id=job.id))

    @app.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
    def index(request: Request) -> Response:
        given = request.query_params.get("token")
        if token is not None and given is not None:
            # The printed link: keep the token in a cookie other sites cannot send, and drop
            # it from the address bar.
            if not secrets.compare_digest(given.encode(), token.encode()):
                raise HTTPException(401, "wrong access token")
            response = RedirectResponse("/", 303)
            response.set_cookie(COOKIE, token, httponly=True, samesite="strict")
            return response
        return FileResponse(STATIC / "index.html")

    @app.get("/healthz")
    def healthz() -> dict:
        return {
            "status": "ok",
            "model": service.model_name,
            "workers": workers,
            "pending": service.pending(),
            "max_upload_mb": max_upload_mb,
        }

    app.add_api_route("/healthz", healthz, methods=["HEAD"], include_in_schema=False)

    @app.post("/api/analyses", status_code=202, openapi_extra=UPLOAD_SCHEMA)
    async def create_analysis(request: Request, response: Response) -> dict:
        """Upload a video or image (multipart field "file"); the analysis is queued."""
        size = _declared_size(request, limit)
        service.reserve(size)  # before a byte of the body is read
        upload_dir = Path(tempfile.mkdtemp(prefix="upload-", dir=service.uploads))
        try:
            path, name = await _receive_upload(
                request, upload_dir, limit, upload_idle_s, upload_total_s
            )
            try:
                await run_in_threadpool(
                    probe, path, service.limits
                )  # by content, whatever the name says
            except FakescopeError as error:
                raise HTTPException(
                    415, f"unsupported file: {str(error).replace(str(path), name)}"
                ) from None
        except BaseException:
            shutil.rmtree(upload_dir, ignore_errors=True)
            service.release(size)
            raise
        job = service.submit(name, upload_dir, path, size)
        response.headers["Location"] = status_url(request, job)
        return job.public(response.headers["Location"])

    @app.get("/api/analyses")
    def list_analyses(request: Request) -> list[dict]:
        """Every kept analysis, newest first, without the reports."""
        return [
            {k: v for k, v in job.public(status_url(request, job)).items() if k != "report"}
            for job in service.listing()
        ]

    @app.get("/api/analyses/{analysis_id}", name="analysis_status")
    def analysis_status(analysis_id: JobId, request: Request) -> dict:
        """Status (queued, running, done, failed), progress 0..1, the report when done, the
        error when failed."""
        job = service.get(analysis_id)
        return job.public(status_url(request, job))

    @app.get("/api/analyses/{analysis_id}/report", response_class=RedirectResponse, status_code=307)
    def analysis_report(analysis_id: JobId, request: Request) -> RedirectResponse:
        """The HTML report (a redirect to files/report.html, so that its relative links work)."""
        job = service.get(analysis_id)
        if job.status != "done":
            raise HTTPException(409, f"the analysis is {job.status}, so there is no report")
        return RedirectResponse(
            request.url_for("analysis_file", analysis_id=job.id, name="report.html"), 307
        )

    @app.get("/api/analyses/{analysis_id}/files/{name}", name="analysis_file")
    def analysis_file(analysis_id: JobId, name: FileName) -> FileResponse:
        """One file the analysis wrote: report.html, report.json, heat-map PNGs."""
        path = service.get(analysis_id).folder / name
        if not path.is_file():
            raise HTTPException(404, "no such file")
        return FileResponse(path)

    return app
