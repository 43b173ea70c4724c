"""Which part of a soft background turns a real video fake: its coding, the blur's size, or
how close to the face the blur starts? Each named video's first `--seconds` is coded as it is
and with `selection.soft_background` at each setting, then analysed whole (detection
included); the table gives the model's video P(fake) and its faces' mean.

    python scripts/soft_probe.py ../shared/data/ffpp-dev/real/ffpp_yt_c23_878.mp4 \\
        --crf 23 10 --blur 0.02 0.04 0.08 --scale 1.1 1.3 1.6

Every row changes one setting from the first of each list (CRF, blur, scale), so a rise
can be put down to one of them. The numbers of stretch 16 are in docs/model-card.md.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from fakescope.encode import reencode
from fakescope.media import probe
from fakescope.pipeline import Analyzer
from fakescope.selection import soft_background
from fakescope.types import FakescopeError


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("videos", nargs="+", type=Path)
    parser.add_argument("--model", default="default")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument(
        "--crf", type=int, nargs="+", default=[23, 10], choices=range(52), metavar="CRF"
    )
    parser.add_argument("--blur", type=float, nargs="+", default=[0.04, 0.02, 0.08])
    parser.add_argument("--scale", type=float, nargs="+", default=[1.3, 1.1, 1.6])
    args = parser.parse_args()
    if missing := [str(v) for v in args.videos if not v.is_file()]:
        parser.error(f"no such video: {', '.join(missing)}")
    if not all(v > 0 for v in [*args.blur, *args.scale, args.seconds]):  # NaN fails too
        parser.error("--blur, --scale and --seconds must be above 0")
    for video in args.videos:  # before minutes are spent on the ones before it
        if probe(video).kind != "video":
            raise FakescopeError(f"{video}: an image, not a video")
    crf, blur, scale = args.crf[0], args.blur[0], args.scale[0]
    # (name, CRF, soft_background's blur and scale or None for the frames as they are)
    settings: list[tuple[str, int, tuple[float, float] | None]] = [
        *((f"as it is, CRF {c}", c, None) for c in args.crf),
        *((f"soft, CRF {c}", c, (blur, scale)) for c in args.crf),
        *((f"soft, blur {b}", crf, (b, scale)) for b in args.blur[1:]),
        *((f"soft, outline x{s}", crf, (blur, s)) for s in args.scale[1:]),
    ]
    analyzer = Analyzer(args.model)
    table = Table(title=f"{args.model}: video P(fake) / mean face P(fake), first {args.seconds} s")
    table.add_column("setting")
    for video in args.videos:
        table.add_column(video.stem)
    cells: dict[str, list[str]] = {name: [] for name, _, _ in settings}
    for video in args.videos:
        for name, coded_at, soft in settings:
            transform = None if soft is None else soft_background(analyzer.detector, *soft)
            with tempfile.TemporaryDirectory() as tmp:
                path = reencode(
                    video, Path(tmp) / "v.mp4", args.seconds, coded_at, transform=transform
                )
                (report,) = analyzer.score([analyzer.prepare(path)])
            scores = [f.score for t in report.verdict.tracks for f in t.faces]
            probability = report.verdict.probability
            shown = "-" if probability is None else f"{probability:.3f}"
            mean = f"{np.mean(scores):.3f}" if scores else "no face"
            cells[name].append(f"{shown} / {mean}")
            print(f"{video.name} {name}: {cells[name][-1]}", flush=True)
    for name, row in cells.items():
        table.add_row(name, *row)
    Console(width=200).print(table)


if __name__ == "__main__":
    try:
        main()
    except FakescopeError as error:  # a video that does not decode, a bad model: one line
        sys.exit(f"soft_probe: {error}")
