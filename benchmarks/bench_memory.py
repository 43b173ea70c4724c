"""Peak memory of analysing a 10-minute 1280x720 video with the default settings.

    python benchmarks/bench_memory.py [--model CONFIG.json] [--video PATH] [--limit-mb 2048]

The video (30 fps, 18,000 frames) is made once and kept in the temp folder: the astronaut
photo at 12 positions, each held for a second, so x264 (ultrafast) encodes it in seconds.
`fakescope analyze` and `fakescope scan` then run in child processes and their peak RSS is
read from the kernel (wait4). Without --model (or the shipped default), a random-weights
EfficientNet-Lite0 is used: memory does not depend on the weights. Exits 1 over the limit.
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import tempfile
import time
from importlib import resources
from pathlib import Path

import av
import cv2
import numpy as np
import torch
from PIL import Image

from fakescope.models.checkpoints import save_fakescope
from fakescope.models.ensemble import installed_models
from fakescope.models.registry import ModelSpec, get_arch

WIDTH, HEIGHT, FPS, SECONDS = 1280, 720, 30, 600


def make_video(path: Path) -> None:
    with resources.files("fakescope").joinpath("assets", "astronaut.jpg").open("rb") as f:
        photo = cv2.resize(
            np.asarray(Image.open(f).convert("RGB")), (400, 400), interpolation=cv2.INTER_AREA
        )
    tmp = path.with_name(path.stem + ".part.mp4")
    with av.open(str(tmp), "w") as container:
        stream = container.add_stream("libx264", rate=FPS, options={"preset": "ultrafast"})
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        shots = []
        for i in range(12):  # converted to YUV once, then repeated
            canvas = np.full((HEIGHT, WIDTH, 3), 70, np.uint8)
            x = int(440 + 300 * math.sin(i)) // 2 * 2
            y = int(160 + 100 * math.cos(i)) // 2 * 2
            canvas[y : y + 400, x : x + 400] = photo
            shots.append(
                av.VideoFrame.from_ndarray(canvas, format="rgb24").reformat(format="yuv420p")
            )
        for n in range(SECONDS * FPS):
            frame = shots[n // FPS % len(shots)]
            frame.pts = n
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    tmp.rename(path)


def peak_rss_mb(command: list[str], log: Path) -> tuple[float, float]:
    """Peak resident memory (MB) of a child process, and its wall time."""
    start = time.perf_counter()
    with open(log, "wb") as stderr:
        child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr)
        _, status, usage = os.wait4(child.pid, 0)
    if os.waitstatus_to_exitcode(status):
        sys.exit(f"{' '.join(command)} failed: {log.read_text()[-2000:]}")
    return usage.ru_maxrss / 1024, time.perf_counter() - start  # ru_maxrss is in KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model",
        default=None,
        help="model config .json (default: shipped default, else random weights)",
    )
    parser.add_argument(
        "--video",
        type=Path,
        default=Path(tempfile.gettempdir()) / "fakescope-bench" / "ten-minutes-720p.mp4",
    )
    parser.add_argument("--limit-mb", type=float, default=2048)
    args = parser.parse_args()

    if not args.video.exists():
        args.video.parent.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        make_video(args.video)
        print(f"made {args.video} in {time.perf_counter() - start:.0f} s")
    # The ONNX export of the model is cached beside the video: the first run pays for exporting.
    os.environ.setdefault("FAKESCOPE_CACHE", str(args.video.parent / "cache"))
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or ("default" if "default" in installed_models() else None)
        if model is None:
            arch = get_arch("efficientnet-lite0")
            torch.manual_seed(0)  # the same weights every run, so the cached export is found
            save_fakescope(
                arch.build().eval(), ModelSpec("random-lite0", arch.name, arch.crop), tmp
            )
            model = str(Path(tmp) / "random-lite0.json")
        cli = [sys.executable, "-m", "fakescope.cli"]
        runs = {
            "analyze": [
                *cli,
                "analyze",
                str(args.video),
                "--model",
                model,
                "--out",
                str(Path(tmp) / "out"),
            ],
            "scan": [
                *cli,
                "scan",
                str(args.video),
                "--model",
                model,
                "--db",
                str(Path(tmp) / "r.sqlite"),
                "--quiet",
            ],
        }
        with av.open(str(args.video)) as container:
            stream = container.streams.video[0]
            print(
                f"video: {stream.width}x{stream.height}, "
                f"{float(stream.duration * stream.time_base):.0f} s at "
                f"{float(stream.average_rate):.0f} fps, {args.video.stat().st_size / 1e6:.1f} MB; "
                f"torch threads {torch.get_num_threads()}"
            )
        worst = 0.0
        for name, command in runs.items():
            peak, seconds = peak_rss_mb(command, Path(tmp) / f"{name}.log")
            worst = max(worst, peak)
            print(
                f"{name}: peak RSS {peak:.0f} MB "
                f"({seconds:.0f} s, default settings: 32 frames, retinaface)"
            )
        print(
            f"peak RSS: {worst:.0f} MB (limit {args.limit_mb:.0f} MB): "
            f"{'ok' if worst < args.limit_mb else 'OVER'}"
        )
        sys.exit(0 if worst < args.limit_mb else 1)


if __name__ == "__main__":
    main()
