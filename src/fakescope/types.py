"""Typed records passed between the pipeline stages.

media -> Frame; faces -> Detection / Track; models -> FaceScore;
verdict -> TrackVerdict / Verdict; reports -> Report.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

DEFAULT_MODEL = "default"  # the shipped model's name, where a model name or config is asked for
Box = tuple[float, float, float, float]  # x1, y1, x2, y2 in pixels
PixelBox = tuple[int, int, int, int]  # the same, in whole pixels


class FakescopeError(Exception):
    """An input or setting problem reported to the user as one line, without a traceback."""

    exit_code = 2


class SettingError(FakescopeError):
    """A setting's value is not allowed. `settings` are the field names the message uses, so
    that an interface shows them as its own names (the CLI: as its options)."""

    def __init__(self, message: str, *settings: str):
        super().__init__(message)
        self.settings = settings


class MediaError(FakescopeError):
    """The input cannot be decoded (unreadable, truncated, not media, no video stream, too big)."""

    exit_code = 3


class NoFaceError(FakescopeError):
    """The media decoded but no face was found in it."""

    exit_code = 4


class WeightsError(FakescopeError):
    """A model's weights are missing or do not match its declared architecture."""

    exit_code = 5


@dataclass
class Frame:
    """One decoded RGB frame (H x W x 3, uint8) and where it sits in the input."""

    index: int  # position among the frames of the input (0 for an image)
    timestamp: float  # seconds from the start of the input
    image: np.ndarray
    # H.264's quantiser (QP, 0-51, higher is coarser) over the upright frame, one value per
    # media.QP_CELL x QP_CELL source pixels; None for images and other codecs.
    qp: np.ndarray | None = None


@dataclass
class MediaInfo:
    path: str
    kind: str  # "video" or "image"
    width: int
    height: int
    duration: float  # seconds; 0 for an image
    fps: float  # 0 for an image
    frame_count: int  # estimated for videos
    codec: str
    rotation: int = 0  # degrees already applied to the decoded frames
    scale: float = 1.0  # decoded frames' size / the source's: < 1 over Limits.decode_pixels


# The states of a file's C2PA content credentials (provenance.read_provenance).
CREDENTIALS = {
    "none": "no content credentials",
    "trusted": "signature valid, signer on the trust list",
    "untrusted": "signature valid, signer not on a trust list",
    "tampered": "the file or its manifest changed after signing",
    "invalid": "the credentials do not validate",
    "remote": "the file points to credentials stored online, not fetched (offline)",
    "unsupported": "not checked: the C2PA validator does not read this format",
    "unreadable": "a manifest is there but cannot be read",
    "not_read": "the manifest is larger than the limit and was not read",
}


@dataclass(frozen=True)
class Provenance:
    """What a file declares about its own origin: its C2PA content credentials (the active
    manifest) and plain facts from its container. Facts only: never a verdict."""

    credentials: str  # a key of CREDENTIALS
    codes: list[str] = field(default_factory=list)  # the validator's failure codes
    claim_generator: str | None = None  # the software that made the claim
    signer: str | None = None  # the signing certificate's common name
    issuer: str | None = None  # its organisation
    signed_at: str | None = None  # a trusted time stamp, when there is one
    # The active manifest's actions: action, digital_source_type (IPTC term), software_agent.
    actions: list[dict[str, str]] = field(default_factory=list)
    # Ingredients: title, relationship, and their own credentials' declared origin.
    ingredients: list[dict[str, str]] = field(default_factory=list)
    # What the credentials declare: "generative AI" or "camera capture", with the IPTC term
    # and where it is declared ("the active manifest", "ingredient NAME").
    origin: str | None = None
    origin_source: str | None = None
    origin_in: str | None = None
    # Container and EXIF facts by name (encoder, created, software, make, model, ...).
    container: dict[str, str] = field(default_factory=dict)
    remote_url: str | None = None  # where credentials stored online are ("remote")
    warning: str | None = None  # one line, when the credentials could not be read

    @property
    def has_credentials(self) -> bool:
        """Whether there is anything to show beyond one line: credentials, valid or not."""
        return self.credentials not in ("none", "unsupported")

    @property
    def declares_ai(self) -> bool:
        """Validly signed credentials that declare generative AI (the report says so)."""
        return self.origin == "generative AI" and self.credentials in ("trusted", "untrusted")


@dataclass
class Detection:
    """One face found in one frame, in that frame's pixel coordinates."""

    box: Box
    score: float
    landmarks: np.ndarray | None = None  # 5 x 2: eyes, nose, mouth corners


@dataclass
class TrackedFace:
    """A detection placed on a track, with its frame."""

    frame_index: int
    timestamp: float
    detection: Detection


@dataclass
class Track:
    """All detections of one person across the frames."""

    track_id: int
    faces: list[TrackedFace] = field(default_factory=list)


@dataclass
class FaceScore:
    """Scores of one face crop: each ensemble member's P(fake) and the ensemble's."""

    track_id: int
    frame_index: int
    timestamp: float
    box: Box
    detector_score: float
    member_scores: dict[str, float]
    score: float
    size: float  # the box's shorter side in source pixels: how much detail the model can see
    sharpness: float  # variance of the Laplacian of the box at 112 px grey (see crops.sharpness)
    qp: float | None = None  # mean H.264 quantiser under the box (crops.face_qp); None: not H.264
    unjudged: str | None = (
        None  # why this face cannot be judged (too small, blurred or compressed); None if it can
    )
    landmarks: np.ndarray | None = (
        None  # 5 x 2 frame pixels from the detector (Detection.landmarks)
    )


@dataclass(frozen=True)
class Decision:
    """Video-level thresholds: P(fake) at or above `threshold` is fake, below `real_below`
    real, in between inconclusive. A model's config carries the ones fitted for it."""

    threshold: float = 0.5
    real_below: float = 0.5

    def __post_init__(self) -> None:
        if not 0 < self.real_below <= self.threshold < 1:
            raise SettingError(
                "need 0 < real_below <= threshold < 1, "
                f"got real_below {self.real_below} and threshold {self.threshold}",
                "real_below",
                "threshold",
            )

    def label(self, probability: float) -> str:
        if probability >= self.threshold:
            return "fake"
        return "real" if probability < self.real_below else "inconclusive"


@dataclass
class TrackVerdict:
    track_id: int
    probability: float | None  # aggregated over the judged faces; None when none can be judged
    faces: list[FaceScore]
    unjudged: str | None = None  # why this track cannot decide the verdict; None if it can


@dataclass
class Verdict:
    probability: (
        float | None
    )  # of the deciding track; None when no face was found or none can be judged
    label: str  # "fake", "real", "inconclusive" or "no_face"
    threshold: float  # P(fake) at or above which the label is fake
    real_below: float  # P(fake) below which the label is real; in between it is inconclusive
    strategy: str
    tracks: list[TrackVerdict]
    chosen_frames: list[int]  # frame indices whose heat maps are shown
    reason: str  # one sentence: why this label
    deciding_track: int | None = None

    def faces_by_frame(self) -> dict[int, list[FaceScore]]:
        """Every track's faces, by frame index, in track order within a frame."""
        by_frame: dict[int, list[FaceScore]] = {}
        for track in self.tracks:
            for face in track.faces:
                by_frame.setdefault(face.frame_index, []).append(face)
        return by_frame


@dataclass(frozen=True)
class Limits:
    """What fakescope is willing to decode from one input."""

    # A result's: each field changes which pixels are analysed.
    max_pixels: int = field(
        default=36_000_000,  # per image or frame, from the header: 8K UHD passes, bombs do not
        metadata={"result": True, "help": "largest image or video frame"},
    )
    max_duration: float = field(
        default=3600.0,  # later frames are ignored
        metadata={"result": True, "help": "seconds of each video read"},
    )
    max_frames: int = field(default=1024, metadata={"result": True, "option": False})  # per video
    # Larger frames are downscaled while decoding (1080p is not): memory then follows the
    # frames analysed, not the input's resolution (docs/security.md has the measurements).
    decode_pixels: int = field(
        default=2_100_000,
        metadata={"result": True, "help": "larger frames are downscaled while decoding"},
    )

    # Larger C2PA manifests are not given to the validator, which holds them in memory; the
    # largest real ones (many ingredients with thumbnails) are a few MB.
    max_manifest: int = field(
        default=64 * 2**20,
        metadata={"result": True, "later": True, "help": "largest C2PA manifest read, in bytes"},
    )

    def __post_init__(self) -> None:
        # A setting's fault, not the input's: FakescopeError (exit 2), not MediaError.
        if not (isinstance(self.max_pixels, int) and self.max_pixels >= 1):
            raise SettingError(
                f"max_pixels must be a whole number >= 1, got {self.max_pixels}", "max_pixels"
            )
        if not (math.isfinite(self.max_duration) and self.max_duration > 0):
            raise SettingError(
                f"max_duration must be seconds > 0, got {self.max_duration}", "max_duration"
            )
        if not (isinstance(self.max_frames, int) and self.max_frames >= 1):
            raise SettingError(
                f"max_frames must be a whole number >= 1, got {self.max_frames}", "max_frames"
            )
        if not (isinstance(self.max_manifest, int) and self.max_manifest >= 0):
            raise SettingError(
                f"max_manifest must be a whole number of bytes >= 0, got {self.max_manifest}",
                "max_manifest",
            )
        if not (isinstance(self.decode_pixels, int) and self.decode_pixels >= 4096):
            raise SettingError(
                f"decode_pixels must be >= 4096, got {self.decode_pixels}", "decode_pixels"
            )

    def scale(self, width: int, height: int) -> float:
        """The factor frames of this size are decoded at: 1, or less to fit decode_pixels."""
        return min(1.0, math.sqrt(self.decode_pixels / max(1, width * height)))
