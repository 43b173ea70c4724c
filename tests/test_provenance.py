"""C2PA content credentials and container facts: media signed inside the tests with a
throwaway ES256 chain, read back through every output (report.json, HTML, PDF, scan rows)."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
from pathlib import Path

import c2pa
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from typer.testing import CliRunner

from fakescope.cli import app
from fakescope.encode import make_example_video
from fakescope.media import probe
from fakescope.pipeline import Analyzer, Settings
from fakescope.provenance import manifest_bytes, read_provenance, summary
from fakescope.report import SCHEMA_VERSION
from fakescope.types import Limits, SettingError
from helpers import astronaut, signing_chain

runner = CliRunner()
IPTC = "http://cv.iptc.org/newscodes/digitalsourcetype/"


@pytest.fixture(scope="module")
def chain() -> tuple[c2pa.Signer, str]:
    return signing_chain()


def _manifest(title: str, actions: list[dict]) -> dict:
    return {
        "claim_generator_info": [{"name": "TestGen", "version": "1.0"}],
        "title": title,
        "assertions": [{"label": "c2pa.actions", "data": {"actions": actions}}],
    }


def sign(
    signer: c2pa.Signer,
    source: Path,
    target: Path,
    manifest: dict,
    mime: str = "image/jpeg",
    parent: Path | None = None,
) -> Path:
    builder = c2pa.Builder(json.dumps(manifest))
    if parent is not None:
        ingredient = {"title": parent.name, "relationship": "parentOf", "label": "parent"}
        with parent.open("rb") as stream:
            builder.add_ingredient(json.dumps(ingredient), mime, stream)
    with source.open("rb") as src, target.open("wb") as dst:
        builder.sign(signer, mime, src, dst)
    return target


@pytest.fixture(scope="module")
def media(chain, tmp_path_factory) -> dict[str, Path]:
    """Signed and unsigned test files: an AI-generated face, an edit of it, a camera capture,
    a tampered copy, a signed video, a generated image without a face, a corrupt manifest."""
    signer, _ = chain
    folder = tmp_path_factory.mktemp("signed")
    plain = folder / "plain.jpg"
    astronaut().save(plain, quality=92)
    created = {"action": "c2pa.created", "digitalSourceType": IPTC + "trainedAlgorithmicMedia"}
    files = {"plain": plain}
    files["ai"] = sign(signer, plain, folder / "ai.jpg", _manifest("ai.jpg", [created]))
    edits = [
        {"action": "c2pa.opened", "parameters": {"ingredientIds": ["parent"]}},
        {"action": "c2pa.color_adjustments"},
    ]
    files["edited"] = sign(
        signer,
        files["ai"],
        folder / "edited.jpg",
        _manifest("edited.jpg", edits),
        parent=files["ai"],
    )
    capture = {"action": "c2pa.created", "digitalSourceType": IPTC + "digitalCapture"}
    files["capture"] = sign(signer, plain, folder / "capture.jpg", _manifest("c.jpg", [capture]))
    data = bytearray(files["ai"].read_bytes())
    data[-300:-200] = bytes(100)  # image data changed after signing
    files["tampered"] = folder / "tampered.jpg"
    files["tampered"].write_bytes(bytes(data))
    video = make_example_video(folder / "clip-plain.mp4", seconds=1, size=(320, 240))
    composite = {
        "action": "c2pa.created",
        "digitalSourceType": IPTC + "compositeWithTrainedAlgorithmicMedia",
    }
    files["video"] = sign(
        signer, video, folder / "clip.mp4", _manifest("clip.mp4", [composite]), "video/mp4"
    )
    noise = folder / "noise.jpg"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (96, 128, 3), dtype=np.uint8)).save(noise)
    files["landscape"] = sign(signer, noise, folder / "landscape.jpg", _manifest("l", [created]))
    data = bytearray(files["ai"].read_bytes())
    start = data.find(b"jumb")
    data[start + 40 : start + 200] = bytes(160)  # the manifest store's boxes broken
    files["corrupt"] = folder / "corrupt.jpg"
    files["corrupt"].write_bytes(bytes(data))
    return files


def read(path: Path, **options):
    return read_provenance(path, probe(path), **options)


def test_each_signed_file_says_what_its_credentials_declare(media, chain):
    _, anchors = chain
    plain = read(media["plain"])
    assert plain.credentials == "none" and summary(plain) == "no content credentials"
    assert not plain.declares_ai and plain.warning is None

    ai = read(media["ai"])
    assert ai.credentials == "untrusted"  # offline, no trust list: checked, signer unknown
    assert ai.codes == ["signingCredential.untrusted"]
    assert (ai.signer, ai.issuer) == ("Test Generator", "Test Generators Ltd")
    assert ai.claim_generator == "TestGen 1.0"
    assert ai.origin == "generative AI" and ai.origin_source == "trainedAlgorithmicMedia"
    assert ai.origin_in == "the active manifest" and ai.declares_ai
    assert ai.actions == [
        {"action": "c2pa.created", "digital_source_type": "trainedAlgorithmicMedia"}
    ]
    assert "signer not on a trust list" in summary(ai)

    trusted = read(media["ai"], trust=anchors)
    assert trusted.credentials == "trusted" and trusted.codes == []

    edited = read(media["edited"])
    assert edited.credentials == "untrusted"
    assert [a["action"] for a in edited.actions] == ["c2pa.opened", "c2pa.color_adjustments"]
    assert edited.ingredients == [
        {"title": "ai.jpg", "relationship": "parentOf", "origin": "generative AI"}
    ]
    # An edit of a generated image is still generated: its parent's credentials say so.
    assert edited.origin == "generative AI" and edited.origin_in == "ingredient 'ai.jpg'"
    assert "actions: c2pa.opened, c2pa.color_adjustments" in summary(edited)

    capture = read(media["capture"])
    assert capture.origin == "camera capture" and not capture.declares_ai

    tampered = read(media["tampered"])
    assert tampered.credentials == "tampered" and not tampered.declares_ai
    assert "assertion.dataHash.mismatch" in tampered.codes
    assert "changed after signing (assertion.dataHash.mismatch)" in summary(tampered)

    video = read(media["video"])
    assert video.credentials == "untrusted" and video.declares_ai
    assert video.origin_source == "compositeWithTrainedAlgorithmicMedia"
    assert video.container["video_encoder"].startswith("x264 (core ")


@pytest.mark.parametrize("kind", ["png", "webp"])
def test_the_manifest_is_measured_in_other_containers(chain, tmp_path, kind):
    plain = tmp_path / f"plain.{kind}"
    astronaut().save(plain)
    manifest = _manifest(
        "x", [{"action": "c2pa.created", "digitalSourceType": IPTC + "digitalCapture"}]
    )
    signed = sign(chain[0], plain, tmp_path / f"signed.{kind}", manifest, f"image/{kind}")
    assert manifest_bytes(plain) is None
    assert manifest_bytes(signed) > 1000
    assert read(signed).credentials == "untrusted"


def test_credentials_stored_online_are_named_not_fetched(chain, tmp_path):
    plain = tmp_path / "plain.jpg"
    astronaut().save(plain)
    created = {"action": "c2pa.created", "digitalSourceType": IPTC + "digitalCapture"}
    builder = c2pa.Builder(json.dumps(_manifest("x", [created])))
    builder.set_no_embed()
    builder.set_remote_url("https://credentials.example/abc.c2pa")
    with plain.open("rb") as src, (tmp_path / "remote.jpg").open("wb") as dst:
        builder.sign(chain[0], "image/jpeg", src, dst)
    remote = read(tmp_path / "remote.jpg")
    assert remote.credentials == "remote" and remote.warning is None
    assert remote.remote_url == "https://credentials.example/abc.c2pa"
    assert "not fetched (offline)" in summary(remote)


def test_a_corrupt_or_huge_manifest_is_a_warning_not_a_failure(media):
    corrupt = read(media["corrupt"])
    assert corrupt.credentials == "unreadable" and corrupt.warning
    assert "\n" not in corrupt.warning and len(corrupt.warning) < 400
    size = manifest_bytes(media["ai"])
    assert size and size > 1000  # the APP11 segments of the signed JPEG
    assert manifest_bytes(media["plain"]) is None
    assert manifest_bytes(media["video"]) > 1000  # its C2PA uuid box
    huge = read(media["ai"], limits=Limits(max_manifest=size - 1))
    assert huge.credentials == "not_read" and f"{size:,} bytes" in huge.warning


def test_formats_the_validator_does_not_read_are_said_so_without_a_warning(tmp_path):
    photo = tmp_path / "photo.bmp"
    astronaut().save(photo)
    unsupported = read(photo)
    assert unsupported.credentials == "unsupported" and unsupported.warning is None
    assert summary(unsupported) == "not checked: the C2PA validator does not read this format"


def test_container_facts_are_plain_facts(tmp_path):
    photo = tmp_path / "camera.jpg"
    exif = Image.Exif()
    exif[0x010F], exif[0x0110], exif[0x0131] = "Canon", "EOS R5", "Editor 2.1"
    astronaut().save(photo, exif=exif)
    facts = read(photo).container
    assert facts["make"] == "Canon" and facts["model"] == "EOS R5"
    assert facts["software"] == "Editor 2.1" and facts["format"] == "JPEG"


def test_trust_anchors_must_be_a_pem_file(tmp_path):
    bad = tmp_path / "anchors.pem"
    bad.write_text("not a certificate")
    with pytest.raises(SettingError, match="no PEM certificate"):
        Settings(trust_anchors=str(bad))
    bad.write_text("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    with pytest.raises(SettingError, match="not a valid certificate"):
        Settings(trust_anchors=str(bad))
    with pytest.raises(SettingError, match="cannot read trust_anchors"):
        Settings(trust_anchors=str(tmp_path / "missing.pem"))


@pytest.fixture(scope="module")
def analyzer(random_model) -> Analyzer:
    return Analyzer(random_model, Settings(frames=2, batch_size=4))


def test_every_report_form_carries_the_credentials(analyzer, media, tmp_path):
    report = analyzer.analyze(media["ai"], keep_frames=True)
    assert report.label != "no_face"
    reason = report.verdict.reason
    assert "declare it made by generative AI (trainedAlgorithmicMedia" in reason
    assert "validly signed by Test Generator (not on a trust list)" in reason
    report.save(tmp_path / "ai")
    block = json.loads((tmp_path / "ai" / "report.json").read_text())["provenance"]
    assert SCHEMA_VERSION == "1.7"
    assert block["credentials"] == "untrusted" and block["origin"] == "generative AI"
    assert block["summary"] == summary(report.provenance)
    assert block["declares_ai"] and block["has_credentials"]
    html = (tmp_path / "ai" / "report.html").read_text()
    assert 'class="provenance ai"' in html and "Content credentials declare generative AI" in html
    assert "Test Generator" in html
    assert _pdf_text(tmp_path / "ai" / "report.pdf").count("Content credentials declare") == 1

    tampered = analyzer.analyze(media["tampered"], keep_frames=True).save(tmp_path / "t")
    block = json.loads((tmp_path / "t" / "report.json").read_text())["provenance"]
    assert block["credentials"] == "tampered"
    assert "declare it made" not in tampered.verdict.reason  # a broken signature proves nothing
    assert "changed after signing" in (tmp_path / "t" / "report.html").read_text()

    plain = analyzer.analyze(media["plain"], keep_frames=True).save(tmp_path / "plain")
    html = (tmp_path / "plain" / "report.html").read_text()
    assert "<b>Provenance:</b> no content credentials." in html
    assert 'class="provenance' not in html
    assert "Provenance: no content credentials." in _pdf_text(tmp_path / "plain" / "report.pdf")
    assert "content credentials" not in plain.verdict.reason


def _pdf_text(path: Path) -> str:
    """The PDF's text, by poppler's pdftotext (CI installs poppler-utils)."""
    if shutil.which("pdftotext") is None:
        pytest.skip("pdftotext (poppler-utils) is not installed")
    done = subprocess.run(["pdftotext", str(path), "-"], capture_output=True, check=True)
    return " ".join(done.stdout.decode("utf-8", "replace").split())


def test_no_face_reports_keep_the_credentials(random_model, media, tmp_path):
    out = tmp_path / "out"
    result = runner.invoke(
        app,
        ["analyze", str(media["landscape"]), "--model", str(random_model), "--out", str(out)],
    )
    assert result.exit_code == 4, result.output  # no face
    assert "provenance: content credentials signed by Test Generator" in result.stdout
    [report] = out.glob("*/report.json")
    data = json.loads(report.read_text())
    assert data["label"] == "no_face" and data["provenance"]["origin"] == "generative AI"
    assert "declare it made by generative AI" in data["reason"]


def test_a_corrupt_manifest_warns_and_the_analysis_goes_on(random_model, media, tmp_path):
    result = runner.invoke(
        app,
        ["analyze", str(media["corrupt"]), "--model", str(random_model), "--out", str(tmp_path)],
    )
    assert result.exit_code == 0, result.output
    assert "warning:" in result.stderr and "content credentials present but unreadable" in (
        result.stderr
    )
    assert "Traceback" not in result.output
    [report] = tmp_path.glob("*/report.json")
    assert json.loads(report.read_text())["provenance"]["credentials"] == "unreadable"


def test_scan_rows_carry_the_credentials(random_model, media, chain, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("ai", "tampered", "plain", "video"):
        target = folder / media[name].name
        target.write_bytes(media[name].read_bytes())
    anchors = tmp_path / "anchors.pem"
    anchors.write_text(chain[1])
    db = tmp_path / "results.sqlite"
    args = ["scan", str(folder), "--db", str(db), "--model", str(random_model), "--quiet"]
    result = runner.invoke(app, [*args, "--frames", "2", "--trust-anchors", str(anchors)])
    assert result.exit_code == 0, result.output
    assert "content credentials: 1 tampered, 2 trusted ->" in result.stdout
    with sqlite3.connect(db) as con:
        rows = {
            Path(p.decode()).name: (c, o, s)
            for p, c, o, s in con.execute(
                "SELECT path, credentials, credentials_origin, credentials_signer FROM results"
            )
        }
    assert rows == {
        "ai.jpg": ("trusted", "generative AI", "Test Generator"),
        "tampered.jpg": ("tampered", "generative AI", "Test Generator"),
        "clip.mp4": ("trusted", "generative AI", "Test Generator"),
        "plain.jpg": ("none", None, None),
    }


def test_an_older_store_gains_the_credential_columns(tmp_path):
    from fakescope.store import Store

    db = tmp_path / "old.sqlite"
    with sqlite3.connect(db) as con:
        con.executescript(
            "CREATE TABLE results (key TEXT PRIMARY KEY, path BLOB NOT NULL, content_hash TEXT "
            "NOT NULL, model_hash TEXT NOT NULL, settings_hash TEXT NOT NULL, fake_probability "
            "REAL, label TEXT NOT NULL, faces INTEGER NOT NULL, error TEXT, timings TEXT NOT NULL,"
            " created TEXT NOT NULL, reason TEXT); PRAGMA user_version=2;"
        )
        con.execute(
            "INSERT INTO results VALUES ('k', x'2f61', 'c', 'm', 's', 0.5, 'real', 1, NULL, "
            "'{}', 'now', 'why')"
        )
    store = Store(db, {}, {})
    [row] = [store.lookup("k")]
    assert row is not None and row.reason == "why" and row.credentials is None
    store.close()


def test_evaluation_rows_name_the_credentials(analyzer, media, tmp_path):
    from fakescope.evaluate import LabelledFile, analyse_files, read_rows, write_rows

    files = [LabelledFile(media["ai"], 1, {}), LabelledFile(media["plain"], 0, {})]
    rows = analyse_files(analyzer, files, None)
    assert [r["credentials"] for r in rows] == ["untrusted, generative AI", "none"]
    write_rows(rows, tmp_path / "videos.csv")
    assert [r["credentials"] for r in read_rows(tmp_path / "videos.csv")] == [
        "untrusted, generative AI",
        "none",
    ]


MAGICS = [b"\xff\xd8", b"\x89PNG\r\n\x1a\n", b"RIFF\x00\x00\x00\x00WEBP", b"\x00\x00\x00\x18ftyp"]


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(magic=st.sampled_from(MAGICS), body=st.binary(max_size=512))
def test_measuring_a_manifest_never_fails_on_garbage(tmp_path, magic, body):
    path = tmp_path / "garbage"
    path.write_bytes(magic + body)
    size = manifest_bytes(path)
    assert size is None or 0 < size


def test_crop_workers_check_signers_against_the_trust_anchors(random_model, media, chain):
    """A crop scan on a GPU prepares crops in worker processes: they get the anchors too."""
    from fakescope.engines import ScanJob, prepare_crop_jobs

    policies = tuple(Analyzer(random_model).ensemble.crop_policies)
    job = ScanJob(str(media["ai"]), "hash", "key")
    [(_, prepared)] = prepare_crop_jobs(policies, Limits(), chain[1], [job])
    assert prepared.provenance.credentials == "trusted"
