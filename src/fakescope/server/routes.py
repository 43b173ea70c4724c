"""The API's routes (/api/analyses...): every one needs the access token (`require_token`)."""

from __future__ import annotations

import secrets
import shutil
import tempfile
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, RedirectResponse
from starlette.concurrency import run_in_threadpool

from ..media import probe
from ..types import FakescopeError
from .analyses import Analysis, Service
from .uploads import UPLOAD_SCHEMA, declared_size, receive_upload

ID_PATTERN = r"^[A-Za-z0-9_-]{22}$"  # secrets.token_urlsafe(16)
NAME_PATTERN = (
    r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$"  # files the analysis wrote: no path, no dot files
)
JobId = Annotated[str, PathParam(pattern=ID_PATTERN)]
FileName = Annotated[str, PathParam(pattern=NAME_PATTERN)]
COOKIE = "fakescope_token"
NO_TOKEN = (
    "the API needs the access token: open the link `fakescope serve` printed, "
    "or send 'Authorization: Bearer TOKEN'"
)


def given_token(request: Request, token: str) -> bool:
    """Whether the request carries `token`: a Bearer header, else the cookie."""
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    given = given if scheme.lower() == "bearer" else request.cookies.get(COOKIE, "")
    return secrets.compare_digest(given.encode(), token.encode())


def require_token(request: Request) -> None:
    token = request.app.state.token
    if token is not None and not given_token(request, token):
        raise HTTPException(401, NO_TOKEN, {"WWW-Authenticate": "Bearer"})


def service(request: Request) -> Service:
    return request.app.state.service


Served = Annotated[Service, Depends(service)]
router = APIRouter(prefix="/api", dependencies=[Depends(require_token)])


def status_url(request: Request, job: Analysis) -> str:
    return str(request.url_for("analysis_status", analysis_id=job.id))


@router.post("/analyses", status_code=202, openapi_extra=UPLOAD_SCHEMA)
async def create_analysis(request: Request, response: Response, jobs: Served) -> dict:
    """Upload a video or image (multipart field "file"); the analysis is queued."""
    config = jobs.config
    limit = config.max_upload_mb * 2**20
    size = declared_size(request, limit)
    jobs.reserve(size)  # before a byte of the body is read
    upload_dir = Path(tempfile.mkdtemp(prefix="upload-", dir=jobs.uploads))
    try:
        path, name = await receive_upload(
            request, upload_dir, limit, config.upload_idle_s, config.upload_timeout
        )
        try:  # by content, whatever the name says
            await run_in_threadpool(probe, path, jobs.limits)
        except FakescopeError as error:
            raise HTTPException(
                415, f"unsupported file: {str(error).replace(str(path), name)}"
            ) from None
    except BaseException:
        shutil.rmtree(upload_dir, ignore_errors=True)
        jobs.release(size)
        raise
    job = jobs.submit(name, upload_dir, path, size)
    response.headers["Location"] = status_url(request, job)
    return job.public(response.headers["Location"])


@router.get("/analyses")
def list_analyses(request: Request, jobs: Served) -> list[dict]:
    """Every kept analysis, newest first, without the reports."""
    return [
        {k: v for k, v in job.public(status_url(request, job)).items() if k != "report"}
        for job in jobs.listing()
    ]


@router.get("/analyses/{analysis_id}", name="analysis_status")
def analysis_status(analysis_id: JobId, request: Request, jobs: Served) -> dict:
    """Status (queued, running, done, failed), progress 0..1, the report when done, the
    error when failed."""
    job = jobs.get(analysis_id)
    return job.public(status_url(request, job))


@router.get("/analyses/{analysis_id}/report", response_class=RedirectResponse, status_code=307)
def analysis_report(analysis_id: JobId, request: Request, jobs: Served) -> RedirectResponse:
    """The HTML report (a redirect to files/report.html, so that its relative links work)."""
    job = jobs.get(analysis_id)
    if job.status != "done":
        raise HTTPException(409, f"the analysis is {job.status}, so there is no report")
    return RedirectResponse(
        request.url_for("analysis_file", analysis_id=job.id, name="report.html"), 307
    )


@router.get("/analyses/{analysis_id}/files/{name}", name="analysis_file")
def analysis_file(analysis_id: JobId, name: FileName, jobs: Served) -> FileResponse:
    """One file the analysis wrote: report.html, report.json, report.pdf, heat-map PNGs."""
    path = jobs.get(analysis_id).folder / name
    if not path.is_file():
        raise HTTPException(404, "no such file")
    return FileResponse(path)
