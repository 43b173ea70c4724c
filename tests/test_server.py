"""The web service over a random-weights model: upload, poll, report; and what it refuses."""

from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient

from fakescope.pipeline import Settings
from fakescope.server.app import create_app

TOKEN = "test-token-0123456789"


@pytest.fixture(scope="module")
def client(random_model, tmp_path_factory):
    web = create_app(
        random_model,
        settings=Settings(frames=4, min_face=24),
        max_upload_mb=1,
        token=TOKEN,
        data_dir=tmp_path_factory.mktemp("server"),
        allowed_hosts=("testserver",),
    )
    with TestClient(web, headers={"Authorization": f"Bearer {TOKEN}"}) as client:
        yield client


def wait(client: TestClient, url: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = client.get(url).json()
        assert 0 <= status["progress"] <= 1
        if status["status"] in ("done", "failed"):
            return status
        time.sleep(0.2)
    raise AssertionError(f"analysis not finished after {timeout} s: {status}")


def test_upload_poll_and_read_the_report(client, small_video):
    with open(small_video, "rb") as handle:
        response = client.post("/api/analyses", files={"file": ("clip.mp4", handle, "video/mp4")})
    assert response.status_code == 202, response.text
    created = response.json()
    assert (
        created["status"] in ("queued", "running")
        and response.headers["location"] == created["status_url"]
    )
    status = wait(client, created["status_url"])
    assert status["status"] == "done", status.get("error")
    report = status["report"]
    assert report["label"] in ("fake", "real") and 0 <= report["fake_probability"] <= 1
    assert report["input"] == "clip.mp4"  # the server's temporary paths stay private
    assert len(report["frames_analysed"]) == 4 and report["explanations"]

    html = client.get(f"{created['status_url']}/report")
    assert html.status_code == 200 and html.headers["content-type"].startswith("text/html")
    assert report["label"].upper() in html.text and "data:image/png;base64," in html.text
    assert (
        client.get(f"{created['status_url']}/files/report.json").json()["fake_probability"]
        == report["fake_probability"]
    )
    image = client.get(f"{created['status_url']}/files/{report['explanations'][0]['comparison']}")
    assert image.status_code == 200 and image.content.startswith(b"\x89PNG")
    # The same writer as the CLI's: the PDF too, listed in the report.
    assert report["files"] == {"html": "report.html", "pdf": "report.pdf"}
    pdf = client.get(f"{created['status_url']}/files/report.pdf")
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF")
    # The upload itself is gone once the analysis ended.
    service = client.app.state.service
    assert created["id"] in [p.name for p in service.root.iterdir()]
    assert not list(service.uploads.iterdir())


def test_oversize_upload_is_refused_while_streaming(client):
    def body():  # no Content-Length: only the streaming count can stop it
        for _ in range(40):
            yield b"\0" * 65536

    boundary = "fakescopeboundary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.mp4"\r\n\r\n'
    ).encode()
    response = client.post(
        "/api/analyses",
        content=(chunk for part in ([head], body()) for chunk in part),
        headers={"content-type": f"multipart/form-data; boundary={boundary}"},
    )
    assert response.status_code == 413 and "1 MB" in response.json()["detail"]
    big = client.post(
        "/api/analyses", files={"file": ("big.mp4", b"\0" * (2 * 2**20), "video/mp4")}
    )
    assert big.status_code == 413


def test_text_named_mp4_is_refused_by_content(client):
    response = client.post(
        "/api/analyses", files={"file": ("notes.mp4", b"just some text\n" * 40, "video/mp4")}
    )
    assert response.status_code == 415
    detail = response.json()["detail"]
    assert "notes.mp4" in detail and "not a readable image or video" in detail
    assert "/tmp" not in detail and "fakescope-server" not in detail


def test_other_bad_requests(client):
    assert (
        client.post(
            "/api/analyses", content=b"x", headers={"content-type": "video/mp4"}
        ).status_code
        == 415
    )
    assert (
        client.post("/api/analyses", files={"other": ("a.mp4", b"x", "video/mp4")}).status_code
        == 422
    )
    garbage = client.post(
        "/api/analyses",
        content=b"--x\r\nnot a header\r\n\r\nstuff",
        headers={"content-type": "multipart/form-data; boundary=x"},
    )
    assert garbage.status_code in (400, 422)


@pytest.mark.parametrize(
    "path",
    ["/api/analyses/{id}", "/api/analyses/{id}/report", "/api/analyses/{id}/files/report.json"],
)
def test_unknown_and_malformed_ids(client, path):
    assert client.get(path.format(id="A" * 22)).status_code == 404
    assert client.get(path.format(id="not-an-id!")).status_code in (404, 422)
    assert client.get(path.format(id="..")).status_code in (404, 422)


def test_file_names_are_strict(client):
    for name in (".env", "..%2Freport.json", "a%00b.png"):
        assert client.get(f"/api/analyses/{'A' * 22}/files/{name}").status_code in (404, 422)


def test_page_health_and_docs(client):
    page = client.get("/")
    assert page.status_code == 200 and "/static/app.js" in page.text
    assert "http://" not in page.text and "https://" not in page.text
    assert (
        client.get("/static/app.js").status_code == 200
        and client.get("/static/style.css").status_code == 200
    )
    assert client.get("/healthz").json()["status"] == "ok"
    assert "/api/analyses" in client.get("/openapi.json").json()["paths"]
