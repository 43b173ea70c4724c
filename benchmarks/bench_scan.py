"""`fakescope scan --crops` (the real path: store, hashing, batching, decode/score overlap)
against a naive loop over the same face crops.

    python benchmarks/bench_scan.py [--count 64] [--model CONFIG.json] [--repeats 3] [--threads N]
                                    [--device cpu|cuda]

Crops come from ../shared/data/dfdc-faces/val when present, else jittered crops of the bundled
astronaut photo. Without --model (or the shipped default), a random-weights EfficientNet-Lite0
is used: speed does not depend on the weights. The naive loop scores one image at a time in eager
PyTorch: read the image; for each member, resize it to the member's crop, to a tensor,
model(x); combine the members as the ensemble does. Both start with the model loaded, both
on --device; each timing is the best of --repeats (a fresh store each time). Scores are
compared where scan gives one (a face too blurred to judge has none). The last line printed
is the speed ratio.
"""

from __future__ import annotations

import argparse
import itertools
import os
import sqlite3
import tempfile
import time
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from rich.console import Console

from fakescope.crops import resize_rgb
from fakescope.engines import scan_batch
from fakescope.models.checkpoints import load_fakescope, save_fakescope, sha256_of
from fakescope.models.ensemble import Ensemble, installed_models
from fakescope.models.registry import ModelSpec, get_arch
from fakescope.pipeline import Analyzer
from fakescope.scan import run_scan

SHARED_VAL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "dfdc-faces" / "val"


def make_crops(folder: Path, count: int) -> str:
    if SHARED_VAL.is_dir():
        sources = sorted((SHARED_VAL / "real").glob("*.jpg"))[: count // 2] + sorted(
            (SHARED_VAL / "fake").glob("*.jpg")
        )
        for i, source in enumerate(sources[:count]):
            (folder / f"{i:04d}.jpg").write_bytes(source.read_bytes())
        return f"{count} DFDC validation crops"
    with resources.files("fakescope").joinpath("assets", "astronaut.jpg").open("rb") as f:
        photo = Image.open(f).convert("RGB")
    rng = np.random.default_rng(0)
    for i in range(count):
        x, y, side = (
            150 + rng.integers(-25, 25),
            40 + rng.integers(-25, 25),
            180 + rng.integers(-30, 30),
        )
        crop = (
            photo.crop((x, y, x + side, y + side))
            .resize((224, 224))
            .rotate(float(rng.uniform(-10, 10)))
        )
        crop.save(folder / f"{i:04d}.jpg", quality=int(rng.integers(70, 95)))
    return f"{count} jittered astronaut crops"


def naive(ensemble: Ensemble, models: list[torch.nn.Module], paths: list[Path], device: str):
    """Each image in turn through each member (eager PyTorch), combined as the ensemble does."""
    scores: dict[str, list[float]] = {m.spec.name: [] for m in ensemble.members}
    norms = [
        (torch.tensor(m.spec.crop.mean).view(3, 1, 1), torch.tensor(m.spec.crop.std).view(3, 1, 1))
        for m in ensemble.members
    ]
    with torch.no_grad():
        for path in paths:
            image = np.array(Image.open(path).convert("RGB"))
            for member, model, (mean, std) in zip(ensemble.members, models, norms, strict=True):
                policy = member.spec.crop
                # The resampler the model was trained with: both paths then score the same crops.
                crop = resize_rgb(image, policy.size, policy.size)
                x = (torch.from_numpy(crop).permute(2, 0, 1).float() / 255 - mean) / std
                logit = model(x[None].to(device)) / member.spec.temperature
                scores[member.spec.name].append(torch.sigmoid(logit).item())
    return ensemble.combine({name: np.array(p) for name, p in scores.items()})


def best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=64)
    parser.add_argument(
        "--model",
        default=None,
        help="model config .json (default: shipped default, else random weights)",
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch and ONNX Runtime threads for both (default: torch's)",
    )
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    args = parser.parse_args()
    if args.threads:  # on a busy machine, more threads than free cores make PyTorch's OpenMP crawl
        torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        os.environ["FAKESCOPE_CACHE"] = str(
            tmp / "cache"
        )  # the ONNX export (untimed) stays out of the user's cache
        model = args.model or ("default" if "default" in installed_models() else None)
        if model is None:
            arch = get_arch("efficientnet-lite0")
            torch.manual_seed(0)
            save_fakescope(
                arch.build().eval(), ModelSpec("random-lite0", arch.name, arch.crop), tmp
            )
            model = tmp / "random-lite0.json"
        crops = tmp / "crops"
        crops.mkdir()
        what = make_crops(crops, args.count)
        paths = sorted(crops.iterdir())
        analyzer = Analyzer(model, device=args.device)
        ensemble = analyzer.ensemble
        # Default memory format, as a user would load it.
        plain = [load_fakescope(m.spec).eval().to(args.device) for m in ensemble.members]
        quiet = Console(file=open(os.devnull, "w"))

        stores = (
            tmp / f"scan{i}.sqlite" for i in itertools.count()
        )  # a fresh store per run: nothing skipped

        def scan() -> None:
            run_scan(analyzer, [crops], next(stores), crops=True, quiet=True, console=quiet)

        naive(ensemble, plain, paths[:4], args.device)  # warm up both
        scan()
        t_naive = best(lambda: naive(ensemble, plain, paths, args.device), args.repeats)
        t_scan = best(scan, args.repeats)

        with sqlite3.connect(tmp / "scan0.sqlite") as con:
            stored = dict(con.execute("SELECT content_hash, fake_probability FROM results"))
        got = np.array([stored[sha256_of(p)] for p in paths], dtype=float)  # None: NaN
        judged = ~np.isnan(got)
        agree = np.abs(got - naive(ensemble, plain, paths, args.device))[judged].max()
        members = ", ".join(
            f"{m['name']} ({m['arch']}, scan scores with {m['backend']})"
            for m in ensemble.describe()["members"]
        )
        print(
            f"{what}, model {ensemble.name}: {members}, "
            f"on {args.device}, {torch.get_num_threads()} torch threads, {os.cpu_count()} cores"
        )
        print(f"naive loop: {args.count / t_naive:7.1f} crops/s ({t_naive:.2f} s)")
        print(
            f"scan:       {args.count / t_scan:7.1f} crops/s ({t_scan:.2f} s, store + batches "
            f"of {scan_batch(analyzer.settings, args.device)}, model calls of "
            f"{analyzer.settings.batch_size})"
        )
        print(
            f"largest score difference: {agree:.2e} over {judged.sum()} judged crops "
            f"(scores {got[judged].min():.4f} to {got[judged].max():.4f})"
        )
        print(f"speedup: {t_naive / t_scan:.1f}x")


if __name__ == "__main__":
    main()
