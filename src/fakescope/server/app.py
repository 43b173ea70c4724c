"""The web service: upload a video or image, follow its analysis, read the report.

A thin layer over `Analyzer`, in parts: `config` (what it takes), `analyses` (the jobs, the
pool that runs them, the SQLite file that keeps them), `uploads` (streamed bodies), `routes`
(the API, behind the access token) and this module, which puts them together.

It is a local service that other web pages and other users must not drive (docs/security.md):
the API needs a token (a cookie set by the link printed at start, or a Bearer header); the
Host and Origin headers must name this server; an upload first reserves one of
`max_pending` places and its size on a disk budget, so nothing is read that cannot be kept;
a body that stalls or takes too long is cut off. Uploads stream into DATA/uploads, are checked
by content and deleted when their analysis ends (and the folder is emptied at start and
exit).
"""

from __future__ import annotations

import secrets
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

from ..media import Limits
from ..pipeline import Settings
from ..types import DEFAULT_MODEL
from ..version import __version__
from .analyses import Service
from .config import LOOPBACK, ServerConfig
from .routes import COOKIE, router

STATIC = Path(__file__).parent / "static"
CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
    "frame-ancestors 'none'"
)


def _hostname(host: str) -> str | None:
    """The name in a Host header ("[::1]:8000" -> "::1"), or None when it is malformed."""
    try:
        return urlsplit(f"//{host}").hostname
    except ValueError:
        return None


def create_app(
    model: str | Path = DEFAULT_MODEL,
    device: str = "cpu",
    settings: Settings | None = None,
    limits: Limits | None = None,
    *,
    token: str | None = None,
    allowed_hosts: tuple[str, ...] = LOOPBACK,
    **config: Any,
) -> FastAPI:
    """The app, with its Analyzers loaded (a missing or broken model fails here, not per upload).

    token: what the API asks for; None opens it to anyone who reaches the server (the CLI allows
    that on loopback only). allowed_hosts: the names a request's Host header may give ("*": any).
    config: ServerConfig's fields.
    """
    server = ServerConfig(**config)
    service = Service(model, device, settings or Settings(), limits or Limits(), server)

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
    app.include_router(router)

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
        response = await call_next(request)
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Content-Security-Policy"] = CSP
        response.headers["Referrer-Policy"] = "no-referrer"
        return response

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
            "workers": server.workers,
            "pending": service.pending(),
            "max_upload_mb": server.max_upload_mb,
        }

    app.add_api_route("/healthz", healthz, methods=["HEAD"], include_in_schema=False)
    return app
