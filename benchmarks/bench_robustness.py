"""How much do AUC and log loss drop when the input is re-compressed, downscaled or blurred?

    python benchmarks/bench_robustness.py [--model default] [--crops DIR] [--limit N] [--videos DIR]
        [--video-limit N] [--crf 35] [--seconds 10] [--no-videos] [--only TEXT] [--out results.json]

Crops (default ../shared/data/dfdc-faces/val/{real,fake}): each decoded crop is perturbed in
memory (JPEG q30/50/70, WebP q75, x0.5 down and back up, Gaussian blur sigma 1.5, JPEG q90
then q60; x264 at CRF 35 and 41, and at CRF 35 on the face shrunk x0.5, each coded as a
predicted frame as training codes it; a sharp head before a soft background, and skin
smoothed inside the face outline as a beauty filter leaves it, both placed by the face's
landmarks found in the crop) and scored with `Analyzer.score_crops`; AUC has a 95%
bootstrap interval, and "reals >= 0.5" is the share of real crops scored at least 0.5.
Videos (default ../shared/data/ffpp-dev/{real,fake}): video-level AUC of `analyze` on the
file as is, then on its first --seconds: stream-copied ("clean, first N s"), re-encoded with
libx264 at --crf, and downscaled x0.5 + re-encoded. The re-encoded rows' AUC change is
against "clean, first N s", so it measures the encoding, not the shorter clip. Videos whose
report has no P(fake) (no usable face) are left out of that row and counted, so such a row
covers fewer videos. --limit / --video-limit take an even share of real and fake, spread
over the sorted file list.
"""

from __future__ import annotations

import argparse
import io
import json
import tempfile
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image, ImageFilter

from fakescope import encode
from fakescope.blending import defocus_surround, head_masks
from fakescope.crops import resize_rgb
from fakescope.media import read_image
from fakescope.metrics import metrics_with_intervals
from fakescope.pipeline import Analyzer, Settings
from fakescope.training.batch_augment import h264_roundtrip
from fakescope.training.pack import crop_landmarks

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
CHUNK = 64


def encoded(image: np.ndarray, fmt: str, quality: int) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, fmt, quality=quality)
    return np.asarray(Image.open(buffer).convert("RGB"))


def half_and_back(image: np.ndarray, between: Callable[[np.ndarray], np.ndarray] = np.asarray):
    h, w = image.shape[:2]
    return resize_rgb(between(resize_rgb(image, w // 2, h // 2)), w, h)


def h264(image: np.ndarray, crf: int) -> np.ndarray:
    """The crop as the second frame of a two-frame x264 clip (4:2:0 needs even sides)."""
    h, w = image.shape[:2]
    even = np.ascontiguousarray(image[: h // 2 * 2, : w // 2 * 2])
    return h264_roundtrip(even, crf, (2, 2))


PERTURBATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "clean": lambda im: im,
    "jpeg q30": lambda im: encoded(im, "JPEG", 30),
    "jpeg q50": lambda im: encoded(im, "JPEG", 50),
    "jpeg q70": lambda im: encoded(im, "JPEG", 70),
    "webp q75": lambda im: encoded(im, "WEBP", 75),
    "x0.5 and back": half_and_back,
    "blur sigma 1.5": lambda im: np.asarray(
        Image.fromarray(im).filter(ImageFilter.GaussianBlur(1.5))
    ),
    "jpeg-double q90 q60": lambda im: encoded(encoded(im, "JPEG", 90), "JPEG", 60),
    "h264 crf35": lambda im: h264(im, 35),
    "h264 crf41": lambda im: h264(im, 41),
    "x0.5 + h264 crf35 and back": lambda im: half_and_back(im, lambda small: h264(small, 35)),
}


def defocused(image: np.ndarray, landmarks: np.ndarray, sigma: float, scale: float) -> np.ndarray:
    """A sharp head before a soft background (a shallow depth of field, a video call's
    background blur): the blur's sigma as a share of the crop's width, the face outline grown
    `scale` times about the nose before the background starts (1: at the outline)."""
    pixels = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
    out = defocus_surround(
        pixels,
        torch.from_numpy(landmarks)[None],
        torch.tensor([sigma * image.shape[1]]),
        torch.tensor([scale]),
    )
    return out[0].permute(1, 2, 0).mul(255).round().clamp(0, 255).byte().numpy()


def smoothed(image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """Skin smoothed inside the face outline, edges kept, as a phone's or a video app's beauty
    filter leaves a real face: one bilateral pass (space sigma 2% of the crop, colour 40)."""
    height, width = image.shape[:2]
    mask = head_masks(torch.from_numpy(landmarks)[None].float(), (height, width), torch.ones(1))
    keep = mask[0, 0].numpy()[..., None]
    soft = cv2.bilateralFilter(np.ascontiguousarray(image), 0, 40, 0.02 * width)
    return (keep * soft + (1 - keep) * image).round().astype(np.uint8)


# Perturbations placed by the face's landmarks in the crop.
PLACED: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "soft background, sigma 1%, outline x1.15": lambda im, lm: defocused(im, lm, 0.01, 1.15),
    "soft background at the outline, sigma 1.5%": lambda im, lm: defocused(im, lm, 0.015, 1.0),
    "skin smoothed inside the face outline (a beauty filter)": smoothed,
}


def labelled(folder: Path, pattern: str, limit: int | None) -> list[tuple[Path, int]]:
    """(path, label) from real/ (0) and fake/ (1); with a limit, half from each, evenly spaced."""
    out = []
    for label, name in enumerate(("real", "fake")):
        paths = sorted((folder / name).glob(pattern))
        if limit:
            paths = [
                paths[i]
                for i in np.unique(np.linspace(0, len(paths) - 1, limit // 2).round().astype(int))
            ]
        out += [(p, label) for p in paths]
    return out


def row(name: str, labels: list[int], probs: list[float], skipped: int = 0) -> dict:
    if (
        len(set(labels)) < 2
    ):  # no AUC (nor bootstrap) from one class, e.g. no fake had a face to judge
        return {
            "name": name,
            "n": len(labels),
            "skipped": skipped,
            "auc": None,
            "low": None,
            "high": None,
            "log_loss": None,
            "reals_at_least_half": None,
        }
    m = metrics_with_intervals(labels, probs)
    reals = [p for p, label in zip(probs, labels, strict=True) if label == 0]
    return {
        "name": name,
        "n": len(labels),
        "skipped": skipped,
        "auc": m["auc"]["value"],
        "low": m["auc"]["low"],
        "high": m["auc"]["high"],
        "log_loss": m["log_loss"]["value"],
        "reals_at_least_half": float(np.mean(np.asarray(reals) >= 0.5)),
    }


def bench_crops(
    analyzer: Analyzer, folder: Path, limit: int | None, only: str | None = None
) -> list[dict]:
    files = labelled(folder, "*.jpg", limit)
    images = [read_image(p, analyzer.limits) for p, _ in files]
    labels = [label for _, label in files]
    names = [n for n in [*PERTURBATIONS, *PLACED] if not only or n == "clean" or only in n]
    # The placed rows find the face's landmarks once in each crop.
    landmarks = crop_landmarks(analyzer.detector, images)[0] if set(names) & set(PLACED) else None

    def perturbed(name: str, index: int) -> np.ndarray:
        if landmarks is not None and name in PLACED:
            return PLACED[name](images[index], landmarks[index])
        return PERTURBATIONS[name](images[index])

    rows = []
    for name in names:
        probs = []
        for start in range(0, len(images), CHUNK):
            chunk = [perturbed(name, i) for i in range(start, min(start + CHUNK, len(images)))]
            probs += analyzer.score_crops(chunk)[1].tolist()
        rows.append(row(name, labels, probs))
    return rows


def bench_videos(
    analyzer: Analyzer, folder: Path, limit: int | None, seconds: float, crf: int
) -> tuple[list, list]:
    variants: dict[str, Callable[[Path, Path], Path]] = {
        "clean": lambda src, tmp: src,
        f"clean, first {seconds:g} s": lambda src, tmp: encode.first_seconds(
            src, tmp / "trim.mp4", seconds
        ),
        f"h264 crf{crf}": lambda src, tmp: encode.reencode(src, tmp / "crf.mp4", seconds, crf),
        f"x0.5 + h264 crf{crf}": lambda src, tmp: encode.reencode(
            src, tmp / "half.mp4", seconds, crf, 0.5
        ),
    }
    per_video = []
    for path, label in labelled(folder, "*.mp4", limit):
        entry: dict = {"file": str(path.relative_to(folder)), "label": label}
        with tempfile.TemporaryDirectory() as tmp:
            for name, make in variants.items():
                # None: no face found, or none large and sharp enough to judge.
                entry[name] = analyzer.analyze(make(path, Path(tmp))).fake_probability
        print(
            f"  {entry['file']}: "
            + ", ".join(
                f"{k} {v:.3f}" if v is not None else f"{k} no verdict"
                for k, v in entry.items()
                if k in variants
            )
        )
        per_video.append(entry)
    rows = []
    for name in variants:
        scored = [e for e in per_video if e[name] is not None]
        rows.append(
            row(
                name,
                [e["label"] for e in scored],
                [e[name] for e in scored],
                len(per_video) - len(scored),
            )
        )
    return rows, per_video


def print_table(title: str, rows: list[dict], baseline: Callable[[str], dict]) -> None:
    """Also stores each row's "auc_change" (None for a baseline or a row without AUC)."""
    print(
        f"\n{title}\n| perturbation | AUC [95% CI] | log loss | AUC change | reals >= 0.5 |"
        "\n|---|---|---|---|---|"
    )
    for r in rows:
        base = baseline(r["name"])
        has_change = base is not r and None not in (r["auc"], base["auc"])
        r["auc_change"] = r["auc"] - base["auc"] if has_change else None
        if r["auc"] is None:
            print(f"| {r['name']} | n/a (one class) | n/a | | |")
            continue
        change = f"{r['auc_change']:+.3f} vs {base['name']}" if has_change else ""
        print(
            f"| {r['name']} | {r['auc']:.3f} [{r['low']:.3f}, {r['high']:.3f}] "
            f"| {r['log_loss']:.3f} | {change} | {r['reals_at_least_half']:.2f} |"
        )
    skipped = [f"{r['name']} {r['skipped']}" for r in rows if r["skipped"]]
    if skipped:
        print("skipped (no face that can be judged): " + ", ".join(skipped))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default", help='"default" or a model config .json')
    parser.add_argument("--crops", type=Path, default=SHARED / "dfdc-faces" / "val")
    parser.add_argument(
        "--limit", type=int, default=None, help="crops to use, half real, half fake"
    )
    parser.add_argument("--videos", type=Path, default=SHARED / "ffpp-dev")
    parser.add_argument("--no-videos", action="store_true")
    parser.add_argument(
        "--video-limit", type=int, default=None, help="videos to use, half real, half fake"
    )
    parser.add_argument("--crf", type=int, default=35)
    parser.add_argument(
        "--seconds", type=float, default=10.0, help="seconds of each video to re-encode"
    )
    parser.add_argument(
        "--only", default=None, help="crop rows whose name holds this text (and clean)"
    )
    parser.add_argument("--out", type=Path, default=None, help="write all results as JSON")
    args = parser.parse_args()

    analyzer = Analyzer(args.model, Settings(), "cpu")
    results: dict = {
        "model": analyzer.ensemble.describe()["name"],
        "args": {k: str(v) for k, v in vars(args).items()},
    }
    crop_rows = bench_crops(analyzer, args.crops, args.limit, args.only)
    results["crops"] = crop_rows
    print_table(
        f"crops: {crop_rows[0]['n']} from {args.crops}, model {results['model']}",
        crop_rows,
        lambda name: crop_rows[0],
    )
    if not args.no_videos:
        print(f"\nvideos from {args.videos} (P(fake) per variant):")
        video_rows, per_video = bench_videos(
            analyzer, args.videos, args.video_limit, args.seconds, args.crf
        )
        results["videos"], results["per_video"] = video_rows, per_video
        # re-encodes cover only the first --seconds: compare them with the clean clip of that length
        print_table(
            f"videos: {len(per_video)}, {Settings().frames} frames each",
            video_rows,
            lambda name: video_rows[0] if name.startswith("clean") else video_rows[1],
        )
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))
        print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
