"""Which faces are coded too coarsely to judge? Per-face AUC by H.264 quantiser, and video
verdicts under several --max-qp, on whole videos re-encoded at several CRFs.

    python benchmarks/bench_compression.py [--model default] [--videos DIR] [--video-limit N]
        [--crf 29 35 41] [--seconds 10] [--max-qp 51 38 36 34 32 30] [--out faces.csv]
    python benchmarks/bench_compression.py --set runs/select/ffpp-dev.safetensors [--model M]

Each video's first --seconds (default ../shared/data/ffpp-dev/{real,fake}) are stream-copied
("as recorded") and re-encoded with libx264 at each --crf. Every variant is analysed once with
the QP limit lifted (--max-qp 51); each face keeps its score, size, sharpness and QP. Then:
- the per-face AUC of the faces that the size and sharpness rules let in, by the face's QP;
- every video decided again (`verdict.decide`, with the model's fitted decision) under each
  --max-qp: per variant, the video AUC over the videos that get a P(fake), false alarms,
  fakes detected, fakes called real, and videos with neither answer.
With --set, the faces that a video set stored are scored instead (no decoding or detection);
its "as recorded" variant is each whole video, as `analyze` sees it.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import tempfile
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from bench_robustness import SHARED, labelled
from fakescope.encode import first_seconds, reencode
from fakescope.pipeline import Analyzer, Settings
from fakescope.selection import load_video_set, rescored
from fakescope.types import Decision, FaceScore
from fakescope.verdict import decide

QP_BUCKETS = [0, 24, 27, 30, 33, 36, 39, 42, 45, 52]


def analysed(analyzer: Analyzer, folder: Path, limit: int | None, crfs: list[int], seconds: float):
    """(file, label, variant, frames analysed, faces) for every video and variant."""
    for path, label in labelled(folder, "*.mp4", limit):
        name = str(path.relative_to(folder))
        with tempfile.TemporaryDirectory() as tmp:
            variants = {"as recorded": first_seconds(path, Path(tmp) / "copy.mp4", seconds)}
            for crf in crfs:
                variants[f"crf{crf}"] = reencode(path, Path(tmp) / f"{crf}.mp4", seconds, crf)
            for variant, video in variants.items():
                report = analyzer.analyze(video)
                faces = [f for t in report.verdict.tracks for f in t.faces]
                print(f"  {name} {variant}: {len(faces)} faces, P(fake) {report.fake_probability}")
                yield name, label, variant, len(report.frames), faces


def auc(labels: list[int], scores: list[float]) -> float:
    return float(roc_auc_score(labels, scores)) if len(set(labels)) == 2 else float("nan")


def face_table(rows: list[tuple], settings: Settings) -> None:
    judging = settings.judging
    faces = [
        (name, label, f)
        for name, label, _, _, found in rows
        for f in found
        if f.size >= judging.min_face and f.sharpness >= judging.min_sharpness and f.qp is not None
    ]
    print(
        "\n| face QP | faces | videos | per-face AUC | mean P(fake) real / fake |"
        "\n|---|---|---|---|---|"
    )
    for low, high in itertools.pairwise(QP_BUCKETS):
        inside = [(n, label, f) for n, label, f in faces if low <= (f.qp or 0) < high]
        if not inside:
            continue
        labels = np.array([label for _, label, _ in inside])
        scores = np.array([f.score for _, _, f in inside])
        means = " / ".join(
            f"{scores[labels == k].mean():.3f}" if (labels == k).any() else "n/a" for k in (0, 1)
        )
        print(
            f"| {low}-{high} | {len(inside)} | {len({n for n, _, _ in inside})} "
            f"| {auc(list(labels), list(scores)):.3f} | {means} |"
        )


def verdict_table(
    rows: list[tuple], settings: Settings, decision: Decision, limits: list[float]
) -> None:
    print(
        "\n| --max-qp | variant | videos with P(fake) | video AUC | false alarms | fakes detected "
        "| fakes called real | neither answer |\n|---|---|---|---|---|---|---|---|"
    )
    variants = list(dict.fromkeys(variant for _, _, variant, _, _ in rows))
    for max_qp in limits:
        judging = replace(settings.judging, max_qp=max_qp)
        for variant in variants:
            labels, probs, answers = [], [], []
            for _, label, name, frames, faces in rows:
                if name != variant:
                    continue
                verdict = decide(faces, settings.strategy, decision, judging, frames)
                labels.append(label)
                probs.append(verdict.probability)
                answers.append(verdict.label)
            labels_a, answers_a = np.array(labels), np.array(answers)
            scored = [(lab, p) for lab, p in zip(labels, probs) if p is not None]
            reals, fakes = answers_a[labels_a == 0], answers_a[labels_a == 1]
            print(
                f"| {max_qp:g} | {variant} | {len(scored)} of {len(labels)} "
                f"| {auc([lab for lab, _ in scored], [p for _, p in scored]):.3f} "
                f"| {(reals == 'fake').sum()} of {len(reals)} | {(fakes == 'fake').sum()} of "
                f"{len(fakes)} | {(fakes == 'real').sum()} "
                f"| {np.isin(answers_a, ['inconclusive', 'no_face']).sum()} |"
            )


def write_faces(path: Path, rows: list[tuple]) -> None:
    fields = ["file", "label", "variant", "frames", *FaceScore.__dataclass_fields__]
    with path.open("w", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=fields)
        writer.writeheader()
        for name, label, variant, frames, faces in rows:
            for f in faces:
                writer.writerow(
                    {
                        "file": name,
                        "label": label,
                        "variant": variant,
                        "frames": frames,
                        **asdict(f),
                    }
                )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default", help='"default" or a model config .json')
    parser.add_argument("--videos", type=Path, default=SHARED / "ffpp-dev")
    parser.add_argument(
        "--video-limit", type=int, default=None, help="videos to use, half real, half fake"
    )
    parser.add_argument("--crf", type=int, nargs="+", default=[29, 35, 41])
    parser.add_argument(
        "--seconds", type=float, default=10.0, help="seconds of each video to re-encode"
    )
    parser.add_argument(
        "--max-qp", type=float, nargs="+", default=[51, 38, 36, 34, 32, 30], dest="limits"
    )
    parser.add_argument("--out", type=Path, default=None, help="write every face as CSV")
    parser.add_argument(
        "--set", type=Path, help="score the faces of a video set (scripts/select_epoch.py) instead"
    )
    args = parser.parse_args()

    # The limit lifted, so every face is scored and kept; each --max-qp then decides again.
    settings = Settings(max_qp=51)
    if args.set:
        video_set = load_video_set(args.set)
        faces, decision = rescored(video_set, args.model)
        print(f"the faces of {args.set} ({len(video_set.videos)} videos and variants):")
        rows = [
            (v.file, v.label, v.variant, v.frames, f)
            for v, f in zip(video_set.videos, faces, strict=True)
        ]
    else:
        analyzer = Analyzer(args.model, settings, "cpu")
        decision = analyzer.decision
        print(f"videos from {args.videos}, first {args.seconds:g} s, crf {args.crf}:")
        rows = list(analysed(analyzer, args.videos, args.video_limit, args.crf, args.seconds))
    face_table(rows, settings)
    verdict_table(rows, settings, decision, args.limits)
    if args.out:
        write_faces(args.out, rows)
        print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
