"""Uploads: a multipart body streamed to disk under a size limit and deadlines."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path

from fastapi import HTTPException, Request
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import File, FormParser, parse_options_header

MAX_BOUNDARY = 70  # RFC 2046
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


async def receive_upload(
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


def declared_size(request: Request, limit: int) -> int:
    """The body's size as declared (Content-Length), or the limit without one: what to reserve."""
    try:
        declared = int(request.headers.get("content-length") or limit)
    except ValueError:
        raise HTTPException(400, "bad Content-Length") from None
    if declared > limit:
        raise HTTPException(413, f"upload is over the limit of {limit // 2**20} MB")
    return max(declared, 0)
