"""How close is `analyze` to the cost of decoding the video?

Generates a 10 s, 1280x720, 30 fps H.264 video of the bundled astronaut photo, then times in
one run: decoding every frame with PyAV alone, and `analyze` with the default ensemble,
32 frames and HiResCAM++ for the chosen frames (the default), and `analyze` without heat maps
(`--explain none`): what explaining by default costs. Prints the stage breakdown, what
reading a file's provenance costs when it has no content credentials (goal: under 50 ms a
file) and, last, the ratio analyze / decode (goal: at most 3).

    python benchmarks/bench_pipeline.py [--model default] [--repeats 3] [--device cpu]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import av

from fakescope.encode import make_example_video
from fakescope.media import probe
from fakescope.pipeline import Analyzer, Settings
from fakescope.provenance import read_provenance
from fakescope.types import MediaInfo


def decode_all(path: Path) -> int:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        return sum(
            1 for frame in container.decode(stream) if frame.to_ndarray(format="rgb24") is not None
        )


def provenance_ms(path: Path, info: MediaInfo, calls: int = 50) -> float:
    """Median milliseconds of reading a file's provenance (credentials and container facts)."""
    read_provenance(path, info)  # warm: the file in the page cache
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        read_provenance(path, info)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--frames", type=int, default=32)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        video = make_example_video(Path(tmp) / "bench.mp4", seconds=10, size=(1280, 720), fps=30)
        analyzer = Analyzer(args.model, Settings(frames=args.frames), args.device)
        analyzer.analyze(video)  # warm up: detector session, first-call allocations
        decode_times, analyze_times, fast_times, stages = [], [], [], []
        for i in range(args.repeats):  # interleaved, so machine noise hits both alike
            start = time.perf_counter()
            frames = decode_all(video)
            decode_times.append(time.perf_counter() - start)
            start = time.perf_counter()
            report = analyzer.analyze(video, Path(tmp) / f"out{i}", ["hirescam++"])
            analyze_times.append(time.perf_counter() - start)
            stages.append(report.timings)
            start = time.perf_counter()
            analyzer.analyze(video, Path(tmp) / f"fast{i}", [])
            fast_times.append(time.perf_counter() - start)
        photo = Path(tmp) / "photo.jpg"
        with av.open(str(video)) as container:
            next(container.decode(video=0)).to_image().save(photo)
        credentials = {p.suffix: provenance_ms(p, probe(p)) for p in (video, photo)}

    decode, analyze = statistics.median(decode_times), statistics.median(analyze_times)
    fast = statistics.median(fast_times)
    print(
        f"video: 10 s 1280x720 30 fps H.264, {frames} frames; model {args.model}, "
        f"{args.frames} frames analysed, device {args.device}"
    )
    print(
        f"decode every frame with PyAV: median {decode:.2f} s  "
        f"{[round(t, 2) for t in decode_times]}"
    )
    print(
        f"analyze (+ hirescam++ on {len(report.verdict.chosen_frames)} chosen frames): "
        f"median {analyze:.2f} s  {[round(t, 2) for t in analyze_times]}"
    )
    print(
        f"analyze --explain none: median {fast:.2f} s  {[round(t, 2) for t in fast_times]}; "
        f"explaining by default adds {analyze - fast:.2f} s ({100 * (analyze / fast - 1):.0f}%)"
    )
    for stage in stages[0]:
        print(f"  {stage:8s} {statistics.median(s[stage] for s in stages):6.2f} s")
    print(
        f"provenance of a file without content credentials: video {credentials['.mp4']:.2f} "
        f"ms, JPEG {credentials['.jpg']:.2f} ms (goal: under 50 ms)"
    )
    print(f"analyze frames per second: {args.frames / analyze:.1f}")
    print(f"ratio analyze / decode: {analyze / decode:.2f}")


if __name__ == "__main__":
    main()
