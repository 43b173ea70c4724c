"""What a file says about its own origin: C2PA content credentials, read and validated
offline with the Content Authenticity Initiative's own library (c2pa-python), and plain
facts from the container (encoder, writing application, times, EXIF camera and software).

Facts only: the model's verdict stays the model's. What the credentials can and cannot
prove is in docs/provenance.md.
"""

from __future__ import annotations

import json
import re
import ssl
import struct
from pathlib import Path
from typing import Any, BinaryIO

import av
import c2pa
from PIL import ExifTags, Image

from .types import CREDENTIALS, Limits, MediaInfo, Provenance, SettingError

# IPTC digital source types (cv.iptc.org/newscodes/digitalsourcetype) that declare what made
# the content; the URI's last part is the term.
GENERATIVE = {"trainedAlgorithmicMedia", "compositeWithTrainedAlgorithmicMedia"}
CAPTURE = {"digitalCapture", "computationalCapture"}
# Offline: no remote manifest, no OCSP query; trust only in the anchors given.
_OFFLINE = {"verify": {"remote_manifest_fetch": False, "ocsp_fetch": False}}
# ISO BMFF's C2PA box: a `uuid` box with this user type (C2PA 2.x, section A.5).
_C2PA_UUID = bytes.fromhex("d8fec3d61b0e483c92975828877ec481")
_SOFTWARE_ENCODERS = (
    (rb"x264 - core (\d+)", "x264"),
    (rb"x265 \(build (\d+)\)", "x265"),
)


def load_trust(path: str | Path) -> str:
    """The PEM certificates of a trust-anchor file, checked to hold at least one."""
    try:
        text = Path(path).read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as error:
        raise SettingError(f"cannot read trust_anchors {path}: {error}", "trust_anchors") from None
    if "-----BEGIN CERTIFICATE-----" not in text:
        raise SettingError(f"trust_anchors {path} holds no PEM certificate", "trust_anchors")
    try:  # OpenSSL parses each one: the validator would skip a broken one silently
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cadata=text)
    except (ssl.SSLError, ValueError) as error:
        raise SettingError(
            f"trust_anchors {path}: not a valid certificate ({error})", "trust_anchors"
        ) from None
    return text


def read_provenance(
    path: str | Path, media: MediaInfo, limits: Limits = Limits(), trust: str | None = None
) -> Provenance:
    """The provenance of a file that `media.probe` has read. `trust`: PEM trust anchors;
    without them a valid signature is reported as "signer not on a trust list". Never
    raises for the file's content: what cannot be read becomes a `warning`."""
    path = Path(path)
    container = _container_facts(path, media)
    size = manifest_bytes(path)
    if size is not None and size > limits.max_manifest:
        return Provenance(
            "not_read",
            container=container,
            warning=f"content credentials not read: the manifest is {size:,} bytes, over the "
            f"{limits.max_manifest:,}-byte limit (max_manifest)",
        )
    settings: dict[str, Any] = dict(_OFFLINE)
    if trust:
        settings = {**settings, "trust": {"trust_anchors": trust}}
    try:
        context = c2pa.Context(c2pa.Settings.from_dict(settings))
        reader = c2pa.Reader.try_create(str(path), context=context)
        if reader is None:
            return Provenance("none", container=container)
        with reader:
            store, state = json.loads(reader.json()), reader.get_validation_state()
    except Exception as error:  # a corrupt manifest: c2pa's message, on one line
        message = " ".join(str(error).split())[:300]
        remote = re.match(r"Remote: .*? from url (\S+)$", message)
        if remote:  # never fetched: fakescope works offline
            return Provenance("remote", container=container, remote_url=remote.group(1))
        if message.startswith("NotSupported"):  # BMP, Matroska, ...: a fact, not a fault
            return Provenance("unsupported", container=container)
        return Provenance(
            "unreadable",
            container=container,
            warning=f"content credentials present but unreadable: {message}",
        )
    return _from_store(store, state, container)


def _from_store(store: dict, state: str, container: dict[str, str]) -> Provenance:
    manifests = store.get("manifests") or {}
    active = manifests.get(store.get("active_manifest") or "", {})
    codes = [s.get("code", "") for s in store.get("validation_status") or []]
    # The validator's state decides; its codes only tell a tampered file from other failures
    # (a Valid store may still list e.g. an untrusted time stamp).
    if state == "Trusted":
        credentials = "trusted"
    elif state == "Valid":
        credentials = "untrusted"
    elif any("mismatch" in c for c in codes):
        credentials = "tampered"
    else:
        credentials = "invalid"
    signature = active.get("signature_info") or {}
    actions = _actions(active)
    origin, source, where = _origin(active, manifests)
    return Provenance(
        credentials,
        codes=codes,
        claim_generator=_generator(active),
        signer=signature.get("common_name"),
        issuer=signature.get("issuer"),
        signed_at=signature.get("time"),
        actions=actions,
        ingredients=[
            {
                "title": str(i.get("title", "")),
                "relationship": str(i.get("relationship", "")),
                "origin": _origin(manifests.get(i.get("active_manifest") or "", {}), {})[0] or "",
            }
            for i in active.get("ingredients") or []
        ],
        origin=origin,
        origin_source=source,
        origin_in=where,
        container=container,
    )


def _generator(manifest: dict) -> str | None:
    infos = manifest.get("claim_generator_info") or []
    if infos:
        first = infos[0]
        return " ".join(str(first[k]) for k in ("name", "version") if first.get(k))
    return manifest.get("claim_generator")


def _actions(manifest: dict) -> list[dict[str, str]]:
    found = []
    for assertion in manifest.get("assertions") or []:
        if not str(assertion.get("label", "")).startswith("c2pa.actions"):
            continue
        for action in (assertion.get("data") or {}).get("actions") or []:
            agent = action.get("softwareAgent")
            if isinstance(agent, dict):
                agent = agent.get("name")
            row = {
                "action": str(action.get("action", "")),
                "digital_source_type": _term(action.get("digitalSourceType")),
                "software_agent": str(agent or ""),
            }
            found.append({k: v for k, v in row.items() if v})
    return found


def _term(uri: Any) -> str:
    return str(uri).rstrip("/").rsplit("/", 1)[-1] if uri else ""


def _origin(manifest: dict, manifests: dict) -> tuple[str | None, str | None, str | None]:
    """What made the content, as declared: in this manifest's actions, else in an
    ingredient's own credentials (an edit of a generated image is still generated)."""
    sources = [a.get("digital_source_type", "") for a in _actions(manifest)]
    for term in sources:
        if term in GENERATIVE:
            return "generative AI", term, "the active manifest"
    for ingredient in manifest.get("ingredients") or []:
        own = manifests.get(ingredient.get("active_manifest") or "")
        if own:
            origin, source, _ = _origin(own, manifests)
            if origin == "generative AI":
                return origin, source, f"ingredient {ingredient.get('title', '?')!r}"
    for term in sources:
        if term in CAPTURE:
            return "camera capture", term, "the active manifest"
    return None, None, None


def summary(provenance: Provenance) -> str:
    """One line for every output: what the credentials say, or that there are none."""
    state = provenance.credentials
    if state in ("none", "unsupported", "unreadable", "not_read"):
        return CREDENTIALS[state]
    if state == "remote":
        return (
            f"content credentials stored online at {provenance.remote_url}, not fetched (offline)"
        )
    who = provenance.signer or "an unnamed signer"
    if provenance.issuer and provenance.issuer != provenance.signer:
        who += f" ({provenance.issuer})"
    line = f"content credentials signed by {who}: {CREDENTIALS[state]}"
    if state in ("tampered", "invalid"):
        failures = [c for c in provenance.codes if c != "signingCredential.untrusted"]
        line += f" ({', '.join(failures)})"
    if provenance.origin:
        line += (
            f"; they declare {provenance.origin} ({provenance.origin_source}, in "
            f"{provenance.origin_in})"
        )
    edits = [a["action"] for a in provenance.actions if a["action"] != "c2pa.created"]
    if edits:
        line += f"; actions: {', '.join(dict.fromkeys(edits))}"
    return line


def manifest_bytes(path: Path) -> int | None:
    """The size of the C2PA manifest store embedded in a JPEG, PNG, WebP or ISO BMFF file
    (MP4, MOV, HEIF), from the container's structure alone; None for other formats or when
    there is none. It bounds what the validator is given to hold in memory."""
    try:
        with path.open("rb") as f:
            head = f.read(12)
            f.seek(0)
            if head[:2] == b"\xff\xd8":
                return _jpeg_app11(f)
            if head[:8] == b"\x89PNG\r\n\x1a\n":
                return _chunks(f, 8, b"caBX", ">I", length_first=True)
            if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
                return _chunks(f, 12, b"C2PA", "<I", length_first=False)
            if head[4:8] in (b"ftyp", b"moov", b"mdat", b"free", b"uuid"):
                return _bmff_uuid(f)
    except OSError:
        return None
    return None


def _jpeg_app11(f: BinaryIO) -> int | None:
    total, position = 0, 2
    f.seek(position)
    while True:
        marker = f.read(4)
        if len(marker) < 4 or marker[0] != 0xFF or marker[1] in (0xD9, 0xDA):
            break  # end, or the scan: no metadata segment follows
        length = struct.unpack(">H", marker[2:])[0]
        if marker[1] == 0xEB:  # APP11: JUMBF, where C2PA lives
            total += length
        position += 2 + length
        f.seek(position)
    return total or None


def _chunks(f: BinaryIO, start: int, kind: bytes, fmt: str, length_first: bool) -> int | None:
    total, position = 0, start
    while True:
        f.seek(position)
        header = f.read(8)
        if len(header) < 8:
            break
        if length_first:  # PNG: length, type, data, CRC
            (length,), name, extra = struct.unpack(fmt, header[:4]), header[4:], 12
        else:  # RIFF: type, length, data, a pad byte to even
            name, (length,) = header[:4], struct.unpack(fmt, header[4:])
            extra = 8 + (length & 1)
        if name == kind:
            total += length
        position += length + extra
    return total or None


def _bmff_uuid(f: BinaryIO) -> int | None:
    total, position = 0, 0
    while True:
        f.seek(position)
        header = f.read(24)
        if len(header) < 8:
            break
        size, kind = struct.unpack(">I4s", header[:8])
        if size == 1 and len(header) >= 16:  # a 64-bit size follows
            size = struct.unpack(">Q", header[8:16])[0]
            user_type = header[16:24] + f.read(8)
        else:
            user_type = header[8:24]
        if size == 0:  # to the end of the file
            size = f.seek(0, 2) - position
        if size < 8:
            break
        if kind == b"uuid" and user_type == _C2PA_UUID:
            total += size
        position += size
    return total or None


def _container_facts(path: Path, media: MediaInfo) -> dict[str, str]:
    """Plain facts the container states about how it was written; {} when unreadable."""
    try:
        return _image_facts(path) if media.kind == "image" else _video_facts(path)
    except Exception:  # facts are a bonus: a file probe could read still gets analysed
        return {}


_EXIF = {
    ExifTags.Base.Make: "make",
    ExifTags.Base.Model: "model",
    ExifTags.Base.Software: "software",
    ExifTags.Base.DateTime: "modified",
}


def _image_facts(path: Path) -> dict[str, str]:
    with Image.open(path) as im:
        facts = {"format": str(im.format)}
        exif = im.getexif()
        facts.update({name: str(exif[tag]) for tag, name in _EXIF.items() if exif.get(tag)})
        original = exif.get_ifd(ExifTags.IFD.Exif).get(ExifTags.Base.DateTimeOriginal)
        if original:
            facts["created"] = str(original)
        if "software" not in facts and isinstance(im.info.get("Software"), str):
            facts["software"] = im.info["Software"]  # PNG's text chunk
    return {k: " ".join(v.replace("\x00", " ").split()) for k, v in facts.items() if v.strip()}


_VIDEO_TAGS = {
    "encoder": "writing_application",
    "creation_time": "created",
    "com.apple.quicktime.make": "make",
    "com.apple.quicktime.model": "model",
    "com.apple.quicktime.software": "software",
    "com.android.manufacturer": "make",
    "com.android.model": "model",
    "major_brand": "brand",
}


def _video_facts(path: Path) -> dict[str, str]:
    with av.open(str(path)) as container:
        facts = {"format": container.format.long_name or container.format.name}
        stream = container.streams.video[0]
        tags = {**container.metadata, **{f"stream {k}": v for k, v in stream.metadata.items()}}
        for tag, name in _VIDEO_TAGS.items():
            if tags.get(tag):
                facts[name] = str(tags[tag])
        if tags.get("stream encoder"):
            facts["stream_encoder"] = str(tags["stream encoder"])
        # x264 and x265 sign the first frame they code (an SEI message with their settings):
        # a stream coded by software, not as a camera or phone writes it.
        first = next(container.demux(stream), None)
        payload = bytes(first) if first is not None else b""
        for pattern, name in _SOFTWARE_ENCODERS:
            found = re.search(pattern, payload)
            if found:
                facts["video_encoder"] = f"{name} (core {found.group(1).decode()})"
                rate = re.search(rb"\bcrf=([\d.]+)", payload[found.start() : found.start() + 4096])
                if rate:
                    facts["video_encoder"] += f", crf={rate.group(1).decode()}"
    return facts


def container_lines(provenance: Provenance) -> list[str]:
    """The container facts as short lines for the reports, in a fixed order."""
    names = {
        "format": "format",
        "brand": "brand",
        "writing_application": "written by",
        "stream_encoder": "stream encoder tag",
        "video_encoder": "video coded by",
        "software": "software",
        "make": "camera make",
        "model": "camera model",
        "created": "created",
        "modified": "modified",
    }
    facts = provenance.container
    return [f"{label}: {facts[key]}" for key, label in names.items() if key in facts]
