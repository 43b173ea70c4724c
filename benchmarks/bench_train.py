"""Training throughput: the per-image loader (decode + augment + self-blend in worker
processes) against the decoded cache augmented and self-blended in batches on the device.

    python benchmarks/bench_train.py [--device cpu|cuda] [--workers 2] [--count 2000]
                                     [--batch-size 32] [--steps 40] [--model-steps 6] [--repeats 3]
                                     [--pack PACK.safetensors]

Crops come from ../shared/data/dfdc-faces/train, or from a pack (`fakescope pack`; its crops
are written out as files for the per-image loader), the first --count of each class. Two
measures, each as images per second for both paths:
- input: the batches alone, as the training loop receives them (normalised, on the device),
  both with --workers loader processes on a CPU (the batched path uses none on a GPU);
- train: full Lite0 training steps (forward, backward, optimiser) fed by each path, with the
  layers that `fakescope train` trains (the stem and first three stages frozen).
The cache's one-off decode time is printed beside. The last line is new/old for both.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from fakescope.models.registry import channels_last, get_arch
from fakescope.training.batches import TrainingBatches
from fakescope.training.data import CropDataset, balanced_epoch, list_samples
from fakescope.training.pack import load_folder, unpack

SHARED_TRAIN = (
    Path(__file__).resolve().parents[1].parent / "shared" / "data" / "dfdc-faces" / "train"
)


def _loader_batches(samples, items, size, crop, batch_size, workers, device):
    data = CropDataset(samples, items, size, crop.mean, crop.std, train=True, seed=0)
    loader = DataLoader(
        data, batch_size=batch_size, num_workers=workers, drop_last=True, persistent_workers=False
    )
    for images, targets in loader:
        yield images.to(device, memory_format=torch.channels_last), targets.to(device)


def _rate(batches, steps: int, batch_size: int, step=None) -> float:
    """Images per second over `steps` batches, after one warm-up batch."""
    iterator = iter(batches)
    images, targets = next(iterator)
    if step is not None:
        step(images, targets)
    started = time.perf_counter()
    for _ in range(steps):
        images, targets = next(iterator)
        if step is not None:
            step(images, targets)
    if images.is_cuda:
        torch.cuda.synchronize()
    rate = steps * batch_size / (time.perf_counter() - started)
    iterator.close()  # stops the loader processes before the next measure starts
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--model-steps", type=int, default=6)
    parser.add_argument(
        "--repeats", type=int, default=3, help="interleaved; the best of each is kept"
    )
    parser.add_argument("--pack", type=Path, help="read the crops from this pack")
    args = parser.parse_args()
    device = torch.device(args.device)
    arch = get_arch("efficientnet-lite0")
    size, crop = arch.crop.size, arch.crop
    scratch = tempfile.TemporaryDirectory()
    if args.pack:
        root = unpack(args.pack, Path(scratch.name))
    elif SHARED_TRAIN.is_dir():
        root = SHARED_TRAIN
    else:
        raise SystemExit(f"error: no --pack, and the DFDC training crops are not at {SHARED_TRAIN}")
    all_samples = list_samples(root)
    samples = [s for s in all_samples if s.label == 0][: args.count]
    samples += [s for s in all_samples if s.label == 1][: args.count]
    needed = args.batch_size * (args.steps + args.model_steps + 2)
    items = balanced_epoch([s.label for s in samples], needed, 0.25, epoch=0, seed=0)

    started = time.perf_counter()
    crops = load_folder(samples, size)
    decode = time.perf_counter() - started
    cached = TrainingBatches(crops, crop.mean, crop.std, device, seed=0)

    def old():
        return _loader_batches(samples, items, size, crop, args.batch_size, args.workers, device)

    def new():
        return cached.epoch(items, args.batch_size, workers=args.workers)

    # Interleaved and repeated, best of each: a load that comes and goes hits both alike.
    input_old = input_new = train_old = train_new = 0.0
    for _ in range(args.repeats):
        input_old = max(input_old, _rate(old(), args.steps, args.batch_size))
        input_new = max(input_new, _rate(new(), args.steps, args.batch_size))

    model = channels_last(arch.build()).to(device)
    for module in (model.conv_stem, model.bn1, *model.blocks[:3]):
        module.requires_grad_(False)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    loss_fn = torch.nn.BCEWithLogitsLoss()

    def step(images, targets):
        with torch.autocast(device.type, enabled=device.type == "cuda"):
            loss = loss_fn(model(images).flatten().float(), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(args.repeats):
        train_old = max(train_old, _rate(old(), args.model_steps, args.batch_size, step))
        train_new = max(train_new, _rate(new(), args.model_steps, args.batch_size, step))
    print(
        f"device {device}, {args.workers} loader workers, {torch.get_num_threads()} torch threads, "
        f"batch {args.batch_size}, {len(samples)} crops"
    )
    print(
        f"cache: {len(samples)} crops decoded in {decode:.1f} s "
        f"({len(samples) / decode:.0f} crops/s), "
        f"{crops.images.numel() / 2**20:.0f} MiB"
    )
    print(f"input  img/s: per-image loader {input_old:8.1f}   batched cache {input_new:8.1f}")
    print(f"train  img/s: per-image loader {train_old:8.1f}   batched cache {train_new:8.1f}")
    print(f"new/old img/s: input {input_new / input_old:.2f}, train {train_new / train_old:.2f}")


if __name__ == "__main__":
    main()
