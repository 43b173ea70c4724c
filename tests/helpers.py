"""Helpers shared by the tests: the shared data folder, the bundled photo, odd media files,
a crop's heat map pasted onto a whole frame, a throwaway certificate chain that signs C2PA
test media."""

from __future__ import annotations

import datetime
import os
import struct
import zlib
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

import av
import c2pa
import numpy as np
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from PIL import Image
from torch import Tensor

from fakescope.explain.render import paste_window
from fakescope.types import Box

SHARED_DATA = (Path(__file__).resolve().parents[1] / ".." / "shared" / "data").resolve()
# Set by .ci/run: where the shared data is, a test that needs it must not skip.
REQUIRE_SHARED = "FAKESCOPE_REQUIRE_SHARED"


def shared_data_dir() -> Path:
    """../shared/data; skips the test where it is missing, unless FAKESCOPE_REQUIRE_SHARED=1."""
    if not SHARED_DATA.is_dir():
        if os.environ.get(REQUIRE_SHARED) == "1":
            pytest.fail(f"shared data not found at {SHARED_DATA} and {REQUIRE_SHARED}=1")
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA


def paste_heatmap(
    frame_shape: Sequence[int],
    source_box: Box,
    heatmap: np.ndarray | Tensor,
    content_box: Box | None = None,
) -> np.ndarray:
    """A frame-sized float32 map (H x W) with a crop's heat map put back where the crop came
    from by the library's windowed paste (`render.paste_window`, its geometry contract),
    zero outside the source box: the whole-frame view that the tests hold against their
    oracles (a float64 bilinear sampling, a full-frame warp) and read geometry from."""
    out = np.zeros((int(frame_shape[0]), int(frame_shape[1])), np.float32)
    pasted = paste_window(frame_shape, source_box, heatmap, content_box)
    if pasted is not None:
        out[pasted.rows, pasted.cols] = pasted.pixels
    return out


def astronaut() -> Image.Image:
    """The public-domain photo that ships in the package."""
    with resources.files("fakescope").joinpath("assets", "astronaut.jpg").open("rb") as f:
        return Image.open(f).convert("RGB")


def copy_first(source: Path, dest: Path, count: int, pattern: str = "*.jpg") -> list[Path]:
    """The first `count` files of a shared folder, copied (never linked) into a temporary one."""
    dest.mkdir(parents=True, exist_ok=True)
    copies = []
    for path in sorted(source.glob(pattern))[:count]:
        copies.append(dest / path.name)
        copies[-1].write_bytes(path.read_bytes())
    return copies


def png_header(width: int, height: int) -> bytes:
    """A valid PNG signature and IHDR that declares a size, with almost no pixel data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def audio_only(path: Path) -> None:
    """An mp4 with half a second of silence and no video stream."""
    with av.open(str(path), "w", format="mp4") as container:
        encoder = "aac" if "aac" in av.codecs_available else "mp2"
        stream = container.add_stream(encoder, rate=44100)
        for i in range(20):
            silence = np.zeros((2, 1024), np.float32)
            frame = av.AudioFrame.from_ndarray(silence, format="fltp", layout="stereo")
            frame.sample_rate, frame.pts = 44100, i * 1024
            container.mux(stream.encode(frame))
        container.mux(stream.encode())


def _name(common: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, common),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Test Generators Ltd"),
        ]
    )


def _usage(sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=sign,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=not sign,
        crl_sign=not sign,
        encipher_only=False,
        decipher_only=False,
    )


def signing_chain() -> tuple[c2pa.Signer, str]:
    """A signer with a throwaway CA -> leaf chain (C2PA's certificate profile: a leaf with
    digitalSignature, an emailProtection EKU, not a CA), and the CA's PEM."""
    now = datetime.datetime.now(datetime.timezone.utc)
    valid = (now - datetime.timedelta(days=1), now + datetime.timedelta(days=30))
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())

    def certificate(subject, issuer, public, ca: bool) -> x509.CertificateBuilder:
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(valid[0])
            .not_valid_after(valid[1])
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
            .add_extension(_usage(sign=not ca), critical=True)
        )

    ca = (
        certificate(_name("Test CA"), _name("Test CA"), ca_key.public_key(), True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    leaf = (
        certificate(_name("Test Generator"), ca.subject, key.public_key(), False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    private = key.private_bytes(
        pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    info = c2pa.C2paSignerInfo(
        c2pa.C2paSigningAlg.ES256, leaf.public_bytes(pem) + ca.public_bytes(pem), private, None
    )
    return c2pa.Signer.from_info(info), ca.public_bytes(pem).decode()
