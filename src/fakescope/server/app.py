"""The web service: upload a video or image, follow its analysis, read the report.

A thin layer over `Analyzer`. Analyses never run in a request handler: a ThreadPoolExecutor
with `workers` threads runs them, and each run borrows one of `workers` Analyzers loaded at
start (an Analyzer is not shared by two threads at once: the heat maps hook its models).
Uploads stream to a private temporary folder, are checked by content, and are deleted when
their analysis ends; the last `max_results` finished analyses (report and images) are kept.
"""

from __future__ import annotations

import logging
import queue
import re
import secrets
import shutil
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from fastapi import FastAPI, HTTPException, Request, Response
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import File, FormParser, parse_options_header
from starlette.concurrency import run_in_threadpool

from .. import __version__
from ..media import Limits, probe
from ..pipeline import Analyzer, Settings
from ..reports.html import write_html
from ..types import FakescopeError

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
ID_PATTERN = r"^[A-Za-z0-9_-]{22}$"  # secrets.token_urlsafe(16)
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$"  # files the analysis wrote: no path, no dot files
EXPLAIN = ["hirescam++"]  # the comparison images show all four maps whatever is asked here
# Where each stage starts, as a share of a typical analysis's time.
STAGE_PROGRESS = {"decode": 0.02, "detect": 0.1, "score": 0.45, "explain": 0.6, "report": 0.9}
# Sent with every response but /docs and /redoc, whose Swagger UI and ReDoc load from a CDN.
CSP = "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'"
JobId = Annotated[str, PathParam(pattern=ID_PATTERN)]
FileName = Annotated[str, PathParam(pattern=NAME_PATTERN)]
UPLOAD_SCHEMA = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["file"], "properties": {"file": {"type": "string", "format": "binary"}}}}}}}


@dataclass
class Job:
    id: str
    name: str  # the uploaded file's name, shown instead of the server's paths
    folder: Path  # the analysis's outputs
    status: str = "queued"  # queued, running, done, failed
    stage: str | None = None
    progress: float = 0.0
    report: dict | None = None
    error: str | None = None
    finished: float = 0.0  # time.monotonic() when done or failed

    def at(self, stage: str) -> None:
        self.stage, self.progress = stage, STAGE_PROGRESS.get(stage, self.progress)

    def public(self, status_url: str) -> dict:
        body = {"id": self.id, "name": self.name, "status": self.status, "stage": self.stage,
                "progress": self.progress, "status_url": status_url}
        if self.status == "done":
            body["report"] = self.report
        if self.status == "failed":
            body["error"] = self.error
        return body


class Service:
    def __init__(self, model: str | Path, device: str, settings: Settings, limits: Limits, workers: int,
                 max_results: int, max_pending: int):
        self.analyzers: queue.Queue[Analyzer] = queue.Queue()
        for _ in range(workers):
            self.analyzers.put(Analyzer(model, settings, device, limits))
        self.model_name = self.analyzers.queue[0].ensemble.name
        self.limits, self.max_results, self.max_pending = limits, max_results, max_pending
        self.root = Path(tempfile.mkdtemp(prefix="fakescope-server-"))  # mode 0700
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="fakescope-analysis")
        self.jobs: dict[str, Job] = {}
        self.lock = threading.Lock()

    def pending(self) -> int:
        with self.lock:
            return sum(job.status in ("queued", "running") for job in self.jobs.values())

    def submit(self, name: str, upload_dir: Path, path: Path) -> Job:
        job_id = secrets.token_urlsafe(16)
        job = Job(job_id, name, self.root / job_id)
        with self.lock:
            self.jobs[job_id] = job
        self.pool.submit(self._run, job, upload_dir, path)
        return job

    def get(self, job_id: str) -> Job:
        with self.lock:
            job = self.jobs.get(job_id)
        if job is None:
            raise HTTPException(404, "no such analysis (unknown id, or expired)")
        return job

    def _run(self, job: Job, upload_dir: Path, path: Path) -> None:
        analyzer = self.analyzers.get()  # never waits: one Analyzer per pool thread
        try:
            job.status = "running"
            report = analyzer.analyze(path, job.folder, EXPLAIN, keep_frames=True, progress=job.at)
            job.at("report")
            report.input = report.media.path = job.name
            report.files["html"] = "report.html"
            report.write_json(job.folder / "report.json")
            write_html(report, job.folder)
            job.report, job.progress, job.status = report.to_dict(), 1.0, "done"
        except Exception as error:  # every failure becomes the job's message
            if not isinstance(error, FakescopeError):
                log.exception("analysis %s failed", job.id)
            message = str(error) if isinstance(error, FakescopeError) else f"unexpected {type(error).__name__}"
            job.error, job.status = message.replace(str(path), job.name), "failed"
        finally:
            self.analyzers.put(analyzer)
            shutil.rmtree(upload_dir, ignore_errors=True)
            job.finished = time.monotonic()
            self._evict()

    def _evict(self) -> None:
        """Forget the oldest finished analyses beyond max_results, with their files."""
        with self.lock:
            finished = sorted((j for j in self.jobs.values() if j.finished), key=lambda j: j.finished)
            expired = finished[: max(0, len(finished) - self.max_results)]
            for job in expired:
                del self.jobs[job.id]
        for job in expired:
            shutil.rmtree(job.folder, ignore_errors=True)

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        shutil.rmtree(self.root, ignore_errors=True)


async def _receive_upload(request: Request, folder: Path, limit: int) -> tuple[Path, str]:
    """Stream the multipart field "file" into `folder`; 413 as soon as the body passes `limit`."""
    content_type, options = parse_options_header(request.headers.get("content-type", ""))
    if content_type != b"multipart/form-data" or not options.get(b"boundary"):
        raise HTTPException(415, "send the video or image as multipart/form-data, in the field 'file'")
    if int(request.headers.get("content-length") or 0) > limit:
        raise HTTPException(413, f"upload is over the limit of {limit // 2**20} MB")
    files: list[File] = []
    config = {"UPLOAD_DIR": str(folder), "MAX_MEMORY_FILE_SIZE": 0, "UPLOAD_DELETE_TMP": False}
    parser = FormParser("multipart/form-data", None, files.append, boundary=options[b"boundary"], config=config)
    received = 0
    try:
        async for chunk in request.stream():
            received += len(chunk)
            if received > limit:
                raise HTTPException(413, f"upload is over the limit of {limit // 2**20} MB")
            parser.write(chunk)
        parser.finalize()
    except FormParserError as error:
        raise HTTPException(400, f"malformed multipart body: {error}") from None
    finally:
        for f in files:
            f.close()
    upload = next((f for f in files if f.field_name == b"file" and f.actual_file_name), None)
    if upload is None:
        raise HTTPException(422, "no file in the multipart field 'file' (or it is empty)")
    raw = (upload.file_name or b"upload").decode("utf-8", "replace")
    name = re.sub(r"[^\w. -]", "_", Path(raw.replace("\\", "/")).name)[:120] or "upload"
    return Path(upload.actual_file_name.decode()), name


def create_app(model: str | Path = "default", device: str = "cpu", max_upload_mb: int = 200, workers: int = 1,
               settings: Settings | None = None, limits: Limits | None = None, max_results: int = 50,
               max_pending: int = 16) -> FastAPI:
    """The app, with its Analyzers loaded (a missing or broken model fails here, not per upload)."""
    service = Service(model, device, settings or Settings(), limits or Limits(), workers, max_results, max_pending)
    limit = max_upload_mb * 2**20

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        service.close()

    app = FastAPI(title="fakescope", version=__version__, lifespan=lifespan,
                  description="Upload a video or image; get P(fake), a verdict and HiResCAM++ heat maps.")
    app.state.service = service
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.middleware("http")
    async def headers(request: Request, call_next):
        response = await call_next(request)
        response.headers["X-Content-Type-Options"] = "nosniff"
        if not request.url.path.startswith(("/docs", "/redoc")):
            response.headers["Content-Security-Policy"] = CSP
        return response

    def status_url(request: Request, job: Job) -> str:
        return str(request.url_for("analysis_status", analysis_id=job.id))

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/healthz")
    def healthz() -> dict:
        return {"status": "ok", "model": service.model_name, "workers": workers, "pending": service.pending(),
                "max_upload_mb": max_upload_mb}

    @app.post("/api/analyses", status_code=202, openapi_extra=UPLOAD_SCHEMA)
    async def create_analysis(request: Request, response: Response) -> dict:
        """Upload a video or image (multipart field "file"); the analysis is queued."""
        if service.pending() >= max_pending:
            raise HTTPException(503, "too many analyses waiting; try again later")
        upload_dir = Path(tempfile.mkdtemp(prefix="upload-", dir=service.root))
        try:
            path, name = await _receive_upload(request, upload_dir, limit)
            try:
                await run_in_threadpool(probe, path, service.limits)  # by content, whatever the name says
            except FakescopeError as error:
                raise HTTPException(415, f"unsupported file: {str(error).replace(str(path), name)}") from None
        except BaseException:
            shutil.rmtree(upload_dir, ignore_errors=True)
            raise
        job = service.submit(name, upload_dir, path)
        response.headers["Location"] = status_url(request, job)
        return job.public(response.headers["Location"])

    @app.get("/api/analyses/{analysis_id}", name="analysis_status")
    def analysis_status(analysis_id: JobId, request: Request) -> dict:
        """Status (queued, running, done, failed), progress 0..1, the report when done, the error when failed."""
        job = service.get(analysis_id)
        return job.public(status_url(request, job))

    @app.get("/api/analyses/{analysis_id}/report", response_class=RedirectResponse, status_code=307)
    def analysis_report(analysis_id: JobId, request: Request) -> RedirectResponse:
        """The HTML report (a redirect to files/report.html, so that its relative links work)."""
        job = service.get(analysis_id)
        if job.status != "done":
            raise HTTPException(409, f"the analysis is {job.status}, so there is no report")
        return RedirectResponse(request.url_for("analysis_file", analysis_id=job.id, name="report.html"), 307)

    @app.get("/api/analyses/{analysis_id}/files/{name}", name="analysis_file")
    def analysis_file(analysis_id: JobId, name: FileName) -> FileResponse:
        """One file the analysis wrote: report.html, report.json, heat-map PNGs."""
        path = service.get(analysis_id).folder / name
        if not path.is_file():
            raise HTTPException(404, "no such file")
        return FileResponse(path)

    return app
