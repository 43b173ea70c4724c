"""What real codecs cost the training input: H.264 (x264 through PyAV) against JPEG rounds.

    python benchmarks/bench_codecs.py [--size 192] [--batch-size 32] [--h264-share 0.35]
                                      [--jpeg-share 0.5] [--repeats 5]

Batches of DFDC training crops (../shared/data/dfdc-faces/train) go through
`BatchAugment.forward` as `fakescope train` makes them, with and without the H.264 share,
interleaved, best of --repeats each; also the time of one H.264 round trip of one crop. The
last line is the ratio of the two input rates: how much slower the loader becomes.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from fakescope.training.batch_augment import BatchAugment, h264_roundtrip
from fakescope.training.data import list_samples
from fakescope.training.pack import load_folder

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=192)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--h264-share", type=float, default=0.35)
    parser.add_argument("--jpeg-share", type=float, default=0.5)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    torch.set_num_threads(1)  # as in a loader process
    samples = list_samples(SHARED / "dfdc-faces" / "train")[: args.batch_size * 4]
    crops = load_folder(samples, args.size).images
    batches = [crops[i : i + args.batch_size] for i in range(0, len(crops), args.batch_size)]
    paths = {
        "jpeg only": BatchAugment(args.size, jpeg=args.jpeg_share, h264=0.0),
        "jpeg + h264": BatchAugment(args.size, jpeg=args.jpeg_share, h264=args.h264_share),
    }
    best = {name: float("inf") for name in paths}
    for repeat in range(args.repeats):
        for name, augment in paths.items():
            torch.manual_seed(repeat)
            start = time.perf_counter()
            for batch in batches:
                augment(batch.float().div(255))
            best[name] = min(best[name], (time.perf_counter() - start) / len(crops))
    for name, seconds in best.items():
        print(f"{name}: {1 / seconds:.0f} img/s ({seconds * 1000:.2f} ms an image)")
    pixels = np.ascontiguousarray(crops[0].permute(1, 2, 0).numpy())
    times = []
    for crf in range(23, 46, 2):
        start = time.perf_counter()
        h264_roundtrip(pixels, crf, (2, -1))
        times.append(time.perf_counter() - start)
    print(f"one H.264 round trip of a {args.size} px crop: {np.median(times) * 1000:.1f} ms")
    print(f"input rate with / without H.264: {best['jpeg only'] / best['jpeg + h264']:.2f}")


if __name__ == "__main__":
    main()
