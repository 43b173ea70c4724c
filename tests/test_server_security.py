"""The web service as a local service that other pages and other users cannot drive or fill:
token, Host and Origin checks, bounded places and disk before a body is read, upload
timeouts, analyses kept across restarts, no server paths and no CDN in what clients get."""

from __future__ import annotations

import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from fakescope.cli import app as cli
from fakescope.encode import make_example_video
from fakescope.pipeline import Settings
from fakescope.server.app import create_app

TOKEN = "security-test-token-0123"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    return make_example_video(
        tmp_path_factory.mktemp("media") / "clip.mp4", seconds=1, size=(320, 240)
    )


def make_app(model: Path, data_dir: Path, **options):
    return create_app(
        model,
        settings=Settings(frames=2, min_face=24),
        max_upload_mb=2,
        token=TOKEN,
        data_dir=data_dir,
        allowed_hosts=("testserver", "127.0.0.1"),
        **options,
    )


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="module")
def client(random_model, data_dir):
    with TestClient(make_app(random_model, data_dir)) as client:
        yield client


def upload(client, video: Path, **kwargs) -> httpx.Response:
    with open(video, "rb") as handle:
        return client.post(
            "/api/analyses", files={"file": ("clip.mp4", handle, "video/mp4")}, **kwargs
        )


def wait(client, url: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = client.get(url, headers=AUTH).json()
        if status["status"] in ("done", "failed"):
            return status
        time.sleep(0.2)
    raise AssertionError(f"not finished after {timeout} s: {status}")


def test_the_api_needs_the_token(client, video):
    assert upload(client, video).status_code == 401
    assert (
        upload(
            client, video, headers={"Authorization": "Bearer wrong-token-0123456789"}
        ).status_code
        == 401
    )
    assert client.get("/api/analyses").status_code == 401
    assert client.get("/api/analyses", headers=AUTH).status_code == 200
    assert (
        client.get("/healthz").status_code == 200 and client.get("/").status_code == 200
    )  # the page itself is public


def test_the_printed_link_sets_a_strict_cookie(random_model, tmp_path, video):
    with TestClient(make_app(random_model, tmp_path)) as browser:
        assert browser.get("/?token=not-the-token").status_code == 401
        landing = browser.get(f"/?token={TOKEN}", follow_redirects=False)
        assert landing.status_code == 303 and landing.headers["location"] == "/"
        cookie = landing.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie
        assert browser.get("/api/analyses").status_code == 200  # the cookie is the token now


def test_cross_origin_requests_are_refused(client, video):
    refused = upload(client, video, headers={**AUTH, "Origin": "https://evil.example"})
    assert refused.status_code == 403
    assert upload(client, video, headers={**AUTH, "Origin": "null"}).status_code == 403
    same = upload(client, video, headers={**AUTH, "Origin": "http://testserver"})
    assert same.status_code == 202, same.text
    wait(client, same.json()["status_url"])


def test_unknown_host_is_refused_and_not_echoed(client):
    response = client.get("/healthz", headers={"Host": "evil.example"})
    assert response.status_code == 400 and "evil.example" not in response.text
    assert client.get("/healthz", headers={"Host": "[::1"}).status_code == 400


def test_head_answers_and_no_docs_from_a_cdn(client):
    assert client.head("/").status_code == 200 and client.head("/healthz").status_code == 200
    assert client.get("/docs").status_code == 404 and client.get("/redoc").status_code == 404
    assert "Content-Security-Policy" in client.get("/openapi.json").headers


def test_huge_multipart_boundary_is_a_bad_request(client):
    boundary = "b" * 70_000
    head = 'Content-Disposition: form-data; name="file"; filename="a.mp4"'
    body = f"--{boundary}\r\n{head}\r\n\r\nx\r\n--{boundary}--\r\n"
    response = client.post(
        "/api/analyses",
        content=body.encode(),
        headers={**AUTH, "content-type": f"multipart/form-data; boundary={boundary}"},
    )
    assert response.status_code == 400


def test_no_server_paths_reach_clients(client, data_dir, video, random_model):
    created = upload(client, video, headers=AUTH)
    status = wait(client, created.json()["status_url"])
    assert status["status"] == "done", status
    texts = [
        json.dumps(status),
        client.get(f"{created.json()['status_url']}/files/report.json", headers=AUTH).text,
        client.get(f"{created.json()['status_url']}/files/report.html", headers=AUTH).text,
        json.dumps(client.get("/api/analyses", headers=AUTH).json()),
        client.get("/healthz").text,
    ]
    for text in texts:
        for secret in (str(data_dir), str(random_model.parent), "/tmp/"):
            assert secret not in text
    assert status["report"]["model"]["config"] == random_model.name


def test_analyses_survive_a_restart_and_leftovers_are_removed(random_model, tmp_path, video):
    with TestClient(make_app(random_model, tmp_path)) as first:
        created = upload(first, video, headers=AUTH).json()
        done = wait(first, created["status_url"])
    assert not (tmp_path / "uploads").exists()  # removed on exit
    (tmp_path / "uploads" / "upload-x").mkdir(parents=True)  # as a killed server leaves them
    (tmp_path / "uploads" / "upload-x" / "half.mp4").write_bytes(b"\0" * 100)
    with TestClient(make_app(random_model, tmp_path)) as second:
        assert not list((tmp_path / "uploads").iterdir())  # removed at start
        listed = second.get("/api/analyses", headers=AUTH).json()
        assert [(a["id"], a["status"]) for a in listed] == [(created["id"], "done")]
        again = second.get(created["status_url"], headers=AUTH).json()
        assert again["report"] == done["report"]
        assert second.get(f"{created['status_url']}/report", headers=AUTH).status_code == 200


def test_an_analysis_cut_by_a_restart_is_failed_not_lost(random_model, tmp_path):
    import sqlite3

    with TestClient(make_app(random_model, tmp_path)):
        pass
    with sqlite3.connect(tmp_path / "analyses.sqlite") as db:
        db.execute(
            f"INSERT INTO analyses VALUES ('{'A' * 22}', 'x.mp4', 'running', NULL, NULL, 1, NULL)"
        )
    with TestClient(make_app(random_model, tmp_path)) as client:
        [job] = client.get("/api/analyses", headers=AUTH).json()
        assert job["status"] == "failed" and "server stopped" in job["error"]


@pytest.fixture(scope="module")
def live(random_model, tmp_path_factory):
    """A real server on a socket: concurrency and timeouts need real connections."""
    web = make_app(random_model, tmp_path_factory.mktemp("live"), max_pending=4, upload_idle_s=1.0)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(web, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started
    yield web, sock.getsockname()[1]
    server.should_exit = True
    thread.join(10)
    sock.close()


def test_40_concurrent_uploads_leave_at_most_max_pending(live, video):
    web, port = live
    service = web.state.service
    held = service.analyzers.get()  # the one worker is busy: accepted analyses stay pending
    try:

        def post(_):
            with httpx.Client(
                base_url=f"http://127.0.0.1:{port}", headers=AUTH, timeout=60
            ) as http:
                return upload(http, video)

        with ThreadPoolExecutor(40) as pool:
            codes = [r.status_code for r in pool.map(post, range(40))]
        assert codes.count(202) == 4 and codes.count(503) == 36, (
            codes
        )  # refused before their bodies were read
        assert service.pending() <= 4
    finally:
        service.analyzers.put(held)
    deadline = time.monotonic() + 120
    while service.pending() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert (
        service.pending() == 0 and service.places == 0 and service.disk == 0
    )  # every place given back


def test_disk_is_reserved_before_the_body_is_read(live):
    web, _ = live
    service = web.state.service
    with pytest.raises(Exception) as refused:
        service.reserve(service.max_disk + 1)
    assert getattr(refused.value, "status_code", None) == 503 and service.places == 0


def test_a_stalled_upload_is_cut_off(live):
    _, port = live
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(
            b"POST /api/analyses HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer "
            + TOKEN.encode()
            + b"\r\nContent-Type: multipart/form-data; boundary=xx"
            + b"\r\nContent-Length: 100000\r\n\r\n--xx\r\n"
        )
        start = time.monotonic()
        answer = conn.recv(4096)
    assert answer.startswith(b"HTTP/1.1 408") and time.monotonic() - start < 8


@pytest.mark.parametrize(
    "options",
    [
        ["--host", "0.0.0.0", "--no-token"],
        ["--token", "short"],
        ["--max-pending", "0"],
        ["--max-disk-mb", "0"],
        ["--upload-timeout", "0"],
    ],
)
def test_unsafe_or_bad_serve_options_are_refused(options, tmp_path):
    result = CliRunner().invoke(cli, ["serve", "--model", str(tmp_path / "missing.json"), *options])
    assert result.exit_code == 2 and result.stderr.startswith("error:"), result.output
