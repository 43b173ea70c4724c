"""The web page in a real browser (Debian's Chromium driven by Playwright; no browser download):
upload a clip through the file input, wait for the result, check what is shown, offline."""

from __future__ import annotations

import io
import os
import socket
import threading
import time
from pathlib import Path

import pytest
import uvicorn
from PIL import Image

from fakescope.encode import make_example_video
from fakescope.pipeline import Analyzer, Settings
from fakescope.server.app import create_app
from helpers import astronaut, signing_chain
from test_provenance import IPTC, sign

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists():
    pytest.skip("no /usr/bin/chromium (apt-get install chromium)", allow_module_level=True)
sync_api = pytest.importorskip(
    "playwright.sync_api", reason="playwright is not installed (pip install playwright)"
)

ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# The README's picture is refreshed only on request: a test run leaves the checkout as it was.
README_PICTURE = Path(__file__).parents[1] / "docs" / "images" / "web-page.png"
PANEL_PICTURE = README_PICTURE.with_name("provenance.png")
MAX_PNG = 300_000  # bytes: the screenshot is committed


@pytest.fixture(scope="module")
def server(random_model, tmp_path_factory):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))  # a free port, held until uvicorn takes the socket over
    # The 360p clip's face is about 40 px: judged only below the default 48 px floor.
    app = create_app(
        random_model,
        settings=Settings(frames=6, min_face=24),
        token="browser-test-token-0123",
        data_dir=tmp_path_factory.mktemp("server"),
    )
    web = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=web.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not web.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert web.started, "uvicorn did not start"
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    web.should_exit = True
    thread.join(10)
    sock.close()


@pytest.fixture(scope="module")
def page(server):
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=ARGS
        )
        page = browser.new_page(viewport={"width": 1100, "height": 1000})
        outside: list[str] = []

        def offline(route):  # the page must work with no internet
            if route.request.url.startswith(server):
                route.continue_()
            else:
                outside.append(route.request.url)
                route.abort()

        page.route("**/*", offline)
        errors: list[str] = []
        page.on("console", lambda message: message.type == "error" and errors.append(message.text))
        page.on("pageerror", lambda error: errors.append(str(error)))
        yield page
        assert not outside, f"requests outside the server: {outside}"
        assert not errors, f"browser errors: {errors}"
        browser.close()


def all_loaded(selector: str) -> str:
    return (
        f"() => {{ const i = [...document.querySelectorAll('{selector}')]; "
        "return i.length > 0 && i.every(img => img.complete && img.naturalWidth > 0); }"
    )


def test_upload_in_the_page_shows_verdict_timeline_and_heat_maps(server, page, tmp_path):
    video = make_example_video(tmp_path / "astronaut.mp4", seconds=2, size=(640, 360))
    page.goto(f"{server}/?token=browser-test-token-0123")  # the link `fakescope serve` prints
    page.wait_for_function("() => document.getElementById('limit').textContent !== ''")
    page.set_input_files("#file", str(video))
    page.wait_for_function(
        "() => !document.getElementById('result').hidden"
        " || !document.getElementById('error').hidden",
        timeout=90_000,
    )
    assert page.is_hidden("#error"), page.text_content("#error")
    assert page.text_content("#verdict .label") in ("FAKE", "REAL")
    assert "Why: " in page.text_content("#verdict .reason")  # the verdict's reason, in words
    assert page.text_content("#provenance") == "Provenance: no content credentials."
    assert (
        page.locator("#timelines svg circle").count() == 6
    )  # one point per analysed frame with a face
    page.wait_for_function(all_loaded("#heatmaps img"), timeout=10_000)
    assert page.locator("#heatmaps img").count() == 4
    assert page.locator("#heatmaps .evidence").count() == 4  # evidence per face region, in words
    assert "evidence" in page.text_content("#heatmaps .evidence")

    png = page.screenshot(full_page=True)
    image = Image.open(io.BytesIO(png))
    image = image.resize(
        (image.width * 3 // 4, image.height * 3 // 4), Image.LANCZOS
    )  # a README-sized picture
    buffer = io.BytesIO()
    image.quantize(256, method=Image.Quantize.MEDIANCUT).save(buffer, "PNG", optimize=True)
    assert len(buffer.getvalue()) < MAX_PNG
    target = (
        README_PICTURE
        if os.environ.get("FAKESCOPE_UPDATE_SCREENSHOTS")
        else tmp_path / "web-page.png"
    )
    target.write_bytes(buffer.getvalue())

    # The full report renders in the browser too, with every inline image decodable.
    page.goto(page.get_attribute("#report-link", "href"))
    assert page.text_content("#verdict") in ("FAKE", "REAL")
    page.wait_for_function(all_loaded("img"), timeout=10_000)


def test_the_report_shows_content_credentials_that_declare_generative_ai(page, tmp_path):
    """The README's provenance panel: the shipped model's report of the bundled photo, signed
    here as made by generative AI with a throwaway certificate."""
    plain = tmp_path / "plain.jpg"
    astronaut().save(plain, quality=92)
    created = {"action": "c2pa.created", "digitalSourceType": IPTC + "trainedAlgorithmicMedia"}
    manifest = {
        "claim_generator_info": [{"name": "Example Image Generator", "version": "2.0"}],
        "title": "portrait.jpg",
        "assertions": [{"label": "c2pa.actions", "data": {"actions": [created]}}],
    }
    signed = sign(signing_chain()[0], plain, tmp_path / "portrait.jpg", manifest)
    report = Analyzer().analyze(signed, keep_frames=True).save(tmp_path / "out", ["html"])
    assert report.provenance.declares_ai
    # A page of its own in the module's browser: the server page's routes stay on the server.
    report_page = page.context.browser.new_page(viewport={"width": 1000, "height": 800})
    report_page.goto((tmp_path / "out" / "report.html").as_uri())
    panel = report_page.locator("#provenance")
    assert panel.is_visible()
    assert "Content credentials declare generative AI" in panel.text_content()
    assert "trainedAlgorithmicMedia" in panel.text_content()
    assert "generative AI" in report_page.text_content("#reason")
    # The verdict, its reason and the panel: from the top of the page to the panel's end.
    box = panel.bounding_box()
    assert box is not None
    png = report_page.screenshot(
        clip={"x": 0, "y": 0, "width": 1000, "height": box["y"] + box["height"] + 12}
    )
    report_page.close()
    buffer = io.BytesIO()
    Image.open(io.BytesIO(png)).quantize(256, method=Image.Quantize.MEDIANCUT).save(
        buffer, "PNG", optimize=True
    )
    assert len(buffer.getvalue()) < MAX_PNG
    target = PANEL_PICTURE if os.environ.get("FAKESCOPE_UPDATE_SCREENSHOTS") else tmp_path / "p.png"
    target.write_bytes(buffer.getvalue())
