"""fakescope's one-pass CAMs against pytorch-grad-cam computing the same four maps.

    python benchmarks/bench_explain.py --arch tf_efficientnet_b0
    python benchmarks/bench_explain.py --arch resnext50_32x4d

Maps: GradCAM at N, GradCAM at N-1, HiResCAM at N and HiResCAM++ (product). pytorch-grad-cam
needs one forward and one full backward per layer and method, and its HiResCAM++ is the
product of its own HiResCAM maps at N and N-1. The last line printed is the speed ratio.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import timm
import torch
from pytorch_grad_cam import GradCAM, HiResCAM
from pytorch_grad_cam.utils.image import scale_cam_image
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from fakescope.explain.cam import explain
from fakescope.models.registry import resolve_cam_layers

METHODS = ["gradcam-n", "gradcam-n1", "hirescam", "hirescam++"]


def with_pgc(model: torch.nn.Module, x: torch.Tensor, n: str, n1: str) -> dict[str, np.ndarray]:
    targets = [ClassifierOutputTarget(0)] * len(x)

    def run(cls, layer: str) -> np.ndarray:
        with cls(model=model, target_layers=[model.get_submodule(layer)]) as cam:
            return cam(input_tensor=x, targets=targets)

    maps = {
        "gradcam-n": run(GradCAM, n),
        "gradcam-n1": run(GradCAM, n1),
        "hirescam": run(HiResCAM, n),
    }
    maps["hirescam++"] = scale_cam_image(maps["hirescam"] * run(HiResCAM, n1))
    return maps


def pgc_scaling(raw: torch.Tensor, size: int) -> np.ndarray:
    """pytorch-grad-cam's normalisation of one layer's cam, applied to a fakescope raw map."""
    per_layer = scale_cam_image(np.maximum(raw.numpy(), 0), (size, size))
    return scale_cam_image(np.maximum(per_layer, 0))


def timed(fn, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--arch",
        default="tf_efficientnet_b0",
        help="timm model name (one-logit head, random weights)",
    )
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    torch.manual_seed(0)
    model = timm.create_model(args.arch, pretrained=False, num_classes=1).eval()
    torch.nn.init.normal_(model.get_classifier().weight, std=0.5)  # away from timm's near-zero head
    x = torch.randn(args.batch, 3, args.size, args.size)
    n, n1 = resolve_cam_layers(model)

    ours = explain(model, x, METHODS)
    theirs = with_pgc(model, x, n, n1)
    # Like with like: fakescope's raw maps through pytorch-grad-cam's own scaling.
    check = explain(model, x, ["gradcam-n", "gradcam-n1", "hirescam", "hirescam-n1"])
    same_scaling = {m: pgc_scaling(check[m].raw, args.size) for m in check.maps}
    same_scaling["hirescam++"] = scale_cam_image(
        same_scaling["hirescam"] * same_scaling["hirescam-n1"]
    )
    diffs = {m: float(np.abs(same_scaling[m] - theirs[m]).max()) for m in METHODS}
    gap = float(np.abs(ours["hirescam++"].display.numpy() - theirs["hirescam++"]).mean())

    fakescope_times, pgc_times = [], []
    for _ in range(args.repeats):  # interleaved, so that background load hits both alike
        fakescope_times += timed(lambda: explain(model, x, METHODS), 1)
        pgc_times += timed(lambda: with_pgc(model, x, n, n1), 1)
    ours_s, theirs_s = statistics.median(fakescope_times), statistics.median(pgc_times)

    print(
        f"arch: {args.arch}  layers: N={n}, N-1={n1}  "
        f"batch: {args.batch} x 3 x {args.size} x {args.size}  "
        f"threads: {torch.get_num_threads()}"
    )
    print(
        "max |difference| after the same scaling: "
        + ", ".join(f"{m} {d:.1e}" for m, d in diffs.items())
    )
    print(
        "hirescam++ on the N-1 grid vs product of pytorch-grad-cam's 224 px maps: "
        f"mean |difference| {gap:.3f}"
    )
    print(
        f"fakescope, one pass, 4 maps: median {ours_s:.3f} s  "
        f"({', '.join(f'{t:.3f}' for t in fakescope_times)})"
    )
    print(
        f"pytorch-grad-cam, 4 maps:    median {theirs_s:.3f} s  "
        f"({', '.join(f'{t:.3f}' for t in pgc_times)})"
    )
    if max(diffs.values()) > 1e-4:
        raise SystemExit(f"maps disagree: {diffs}")
    print(f"speedup: {theirs_s / ours_s:.1f}x")


if __name__ == "__main__":
    main()
