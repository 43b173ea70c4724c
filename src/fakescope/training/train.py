"""Train a one-logit deepfake classifier on face crops; resumable, CPU or GPU.

The run directory holds `checkpoint.pt` (weights, optimiser, position; written atomically
every few hundred steps and at each epoch's end), `log.jsonl` (one line per epoch) and,
when done, the calibrated model in fakescope's format.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from torch.utils.data import DataLoader

from ..files import atomic_path
from ..metrics import fit_temperature, point_metrics
from ..models.checkpoints import (
    efficientnet_lite_imagenet,
    load_fakescope,
    read_spec,
    save_fakescope,
)
from ..models.registry import ModelSpec, channels_last, get_arch
from ..types import FakescopeError, SettingError, WeightsError
from .batches import TrainingBatches, eval_batches
from .data import CropDataset, balanced_epoch, held_out, list_samples, split_by_cluster
from .pack import CropSet, is_pack, load_folder, load_pack


def _help(default: Any, help: str) -> Any:
    """A field with the help its `fakescope train` option shows."""
    return field(default=default, metadata={"help": help})


@dataclass
class TrainConfig:
    """One training run; `fakescope train` has an option per field (options.with_fields)."""

    dataset: str = field(
        metadata={
            "argument": True,
            "help": "folder with real/ and fake/ face crops (manifest.csv beside keeps clusters "
            "together), or a pack from `fakescope pack`",
        }
    )
    out: str = field(metadata={"help": "run folder: checkpoints, logs, the exported model"})
    arch: str = _help("efficientnet-lite0", "architecture name (see `fakescope models list`)")
    name: str | None = _help(None, "name of the exported model (default: the architecture)")
    val: str | None = _help(None, "a separate split to report each epoch (never used for choices)")
    epochs: int = _help(4, "passes of epoch_size images")
    epoch_size: int = _help(12000, "images drawn per epoch, half real, half fake")
    batch_size: int = _help(32, "images per optimiser step")
    lr: float = _help(5e-4, "peak learning rate")
    weight_decay: float = _help(1e-2, "AdamW weight decay")
    sbi_share: float = _help(0.25, "share of the fake half that is self-blended from real crops")
    # Reals and fakes alike go through real codecs (batch_augment.JpegRounds, H264Rounds).
    jpeg_share: float = _help(0.7, "share of crops given one or two JPEG rounds (q30-95)")
    h264_share: float = _help(
        0.0, "share of crops coded by x264 (CRF 23-45; some shrunk first, some coded twice)"
    )
    swap_share: float = _help(
        0.0,
        "share of the self-blended fakes whose blended-in face is another real person's "
        "(Face X-ray's blended images: a donor near in landmarks, aligned, colour-matched)",
    )
    defocus_share: float = _help(
        0.0,
        "share of crops, reals and fakes alike, whose background outside the head is "
        "blurred, as a video call or a shallow depth of field leaves it (--input cache)",
    )
    defocus_blur: float = _help(
        0.016,
        "the strongest background blur of --defocus-share, a Gaussian sigma as a share of the "
        "crop (drawn from 0.005 up; a video call's blur reaches 0.05)",
    )
    sbi_sharpen: float = _help(
        0.5,
        "share of self-blended faces sharpened rather than blurred before blending (SBI: "
        "0.5); a sharp face on a softer surround is also what a real head before a blurred "
        "background shows",
    )
    sbi_landmarks: int = _help(
        5,
        "self-blending masks: 5, outlines from the detector's landmarks; 68, SBI's hulls of "
        "dlib's 68 landmarks (a pack made with `fakescope pack --landmarks68`)",
    )
    holdout: float = _help(0.05, "share of clusters held out for model choice and calibration")
    image_size: int | None = _help(
        None, "train (and crop) at this size instead of the architecture's"
    )
    limit_eval: int | None = _help(None, "cap held-out and val images (tests)")
    workers: int = _help(1, "data-loading processes")
    seed: int = _help(0, "seed of the held-out split and the draws")
    device: str = _help("auto", "auto, cpu or cuda")
    save_every: int = _help(100, "steps between checkpoints")
    pretrained: bool = _help(True, "start from ImageNet weights")
    freeze: int = _help(
        3, "EfficientNet: keep the stem and this many first stages frozen (a third less compute)"
    )
    init: str | None = _help(None, "fine-tune from this fakescope model config")
    teacher: str | None = _help(
        None,
        "distil compression: a frozen fakescope model (same architecture) whose pooled "
        "features on each crop before its degradations and codecs the trained model's "
        "features on the degraded crop are pulled toward (--input cache)",
    )
    distill_weight: float = _help(
        1.0, "weight of the teacher's term (1 - cosine of pooled features) beside the BCE"
    )
    input: str = _help(
        "cache",
        "cache: decode once, augment whole batches (on the GPU); stream: per image, for data "
        "larger than memory (a pack is always cached)",
    )

    def __post_init__(self) -> None:
        """Bad settings fail here, before any data is read (exit 2, one line)."""
        whole = {
            "epochs": (self.epochs, 1),
            "batch_size": (self.batch_size, 1),
            "epoch_size": (self.epoch_size, self.batch_size),
            "workers": (self.workers, 0),
            "freeze": (self.freeze, 0),
            "save_every": (self.save_every, 1),
            "image_size": (self.image_size or 32, 32),
            "limit_eval": (self.limit_eval or 1, 1),
        }
        for name, (value, low) in whole.items():
            if value < low:
                raise SettingError(f"{name} must be at least {low}, got {value}", name)
        # Rates and shares lie in (0, 1]; True where 0 is allowed too. NaN fails both tests.
        shares = {
            "lr": (self.lr, False),
            "weight_decay": (self.weight_decay, True),
            "sbi_share": (self.sbi_share, True),
            "jpeg_share": (self.jpeg_share, True),
            "h264_share": (self.h264_share, True),
            "swap_share": (self.swap_share, True),
            "defocus_share": (self.defocus_share, True),
            "sbi_sharpen": (self.sbi_sharpen, True),
            "holdout": (self.holdout, False),
        }
        for name, (number, zero_allowed) in shares.items():
            if not (0 < number <= 1 or (zero_allowed and number == 0)):
                bound = "[0, 1]" if zero_allowed else "(0, 1]"
                raise SettingError(f"{name} must be in {bound}, got {number}", name)
        if self.sbi_landmarks not in (5, 68):
            raise SettingError(
                f"sbi_landmarks must be 5 or 68, got {self.sbi_landmarks}", "sbi_landmarks"
            )
        if self.sbi_landmarks == 68 and not is_pack(self.dataset):
            raise SettingError(
                "sbi_landmarks 68 needs a pack made with `fakescope pack --landmarks68`",
                "sbi_landmarks",
            )
        if self.input not in ("cache", "stream"):
            raise SettingError(f"input must be cache or stream, got {self.input!r}", "input")
        if self.swap_share and self.input != "cache":
            raise SettingError("swapped blends need --input cache (the donors)", "swap_share")
        if not 0.005 < self.defocus_blur <= 0.2:  # NaN fails too
            raise SettingError(
                f"defocus_blur must be in (0.005, 0.2], got {self.defocus_blur}", "defocus_blur"
            )
        if self.defocus_share and self.input != "cache":
            raise SettingError("a defocused surround needs --input cache", "defocus_share")
        if self.teacher and self.input != "cache":
            raise SettingError("a teacher needs --input cache (the clean view)", "teacher")
        if not (self.distill_weight > 0):
            raise SettingError(
                f"distill_weight must be above 0, got {self.distill_weight}", "distill_weight"
            )


def _torch_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _start(config: TrainConfig, option: str, path: str) -> torch.nn.Module:
    """The model of the fakescope config `path`, given as `option`, of the run's arch."""
    try:
        spec = read_spec(path)
        if spec.arch != config.arch:
            raise WeightsError(f"{path} has architecture {spec.arch}, not {config.arch}")
        return load_fakescope(spec)
    except WeightsError as error:
        raise WeightsError(f"--{option} {error}") from None


def _build(config: TrainConfig) -> torch.nn.Module:
    arch = get_arch(config.arch)
    model: Any = arch.build(drop_rate=0.2)  # a timm model: its parts are found by name
    if config.init:
        model.load_state_dict(_start(config, "init", config.init).state_dict())
    else:
        if config.pretrained and arch.timm_name.startswith("tf_efficientnet_lite"):
            model = efficientnet_lite_imagenet(model, int(arch.timm_name[-1]))
        # timm's fan-out init gives a 1-output head weights in [-1, 1] and huge first logits.
        torch.nn.init.normal_(model.get_classifier().weight, std=0.01)
        torch.nn.init.zeros_(model.get_classifier().bias)
    if config.freeze and hasattr(model, "blocks"):
        for module in (model.conv_stem, model.bn1, *model.blocks[: config.freeze]):
            module.requires_grad_(False)
    return model


@torch.inference_mode()
def predict_logits(model, loader, device) -> tuple[np.ndarray, np.ndarray]:
    model.eval()
    logits, labels = [], []
    for images, targets in loader:
        images = images.to(device, memory_format=torch.channels_last)
        logits.append(model(images).float().flatten().cpu())
        labels.append(targets)
    return torch.cat(logits).numpy(), torch.cat(labels).numpy().astype(int)


def _save_atomic(state: dict, path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


Batches = Iterable[tuple[torch.Tensor, ...]]


@dataclass
class Inputs:
    """Where a run's images come from: the training crops' labels, each epoch's batches, and
    the held-out (model choice, calibration) and val images."""

    labels: list[int]
    epoch: Callable[[int, list[tuple[int, bool]], int], Batches]  # (epoch, items, first step)
    held: Callable[[], Batches]
    val: Callable[[], Batches] | None


def _limited(crops: CropSet, limit: int | None, rng: random.Random) -> CropSet:
    if not limit or limit >= len(crops):
        return crops
    return crops.subset(sorted(rng.sample(range(len(crops)), limit)))


def cached_inputs(config: TrainConfig, size: int, device: torch.device) -> Inputs:
    """Crops decoded once; batches self-blended and augmented as wholes."""
    crop, rng = get_arch(config.arch).crop, random.Random(config.seed)
    if is_pack(config.dataset):
        crops = load_pack(config.dataset, size, config.sbi_landmarks)
    else:
        crops = load_folder(list_samples(config.dataset), size)
    held = [held_out(c, config.holdout, config.seed) for c in crops.clusters]
    train_crops = crops.subset([i for i, h in enumerate(held) if not h])
    held_crops = _limited(
        crops.subset([i for i, h in enumerate(held) if h]), config.limit_eval, rng
    )
    val_crops = None
    if config.val:
        val_crops = _limited(load_folder(list_samples(config.val), size), config.limit_eval, rng)
    batch = config.batch_size

    def epoch(number: int, items: list[tuple[int, bool]], first_step: int) -> Batches:
        source = TrainingBatches(
            train_crops,
            crop.mean,
            crop.std,
            device,
            config.seed * 1000 + number,
            jpeg=config.jpeg_share,
            h264=config.h264_share,
            clean=config.teacher is not None,
            swap=config.swap_share,
            defocus=config.defocus_share,
            defocus_blur=config.defocus_blur,
            sharpen=config.sbi_sharpen,
        )
        return source.epoch(items, batch, first_step, workers=config.workers)

    def scored(crops: CropSet) -> Callable[[], Batches]:
        return lambda: eval_batches(crops, batch * 2, crop.mean, crop.std, device)

    return Inputs(
        [int(v) for v in train_crops.labels.tolist()],
        epoch,
        scored(held_crops),
        scored(val_crops) if val_crops is not None else None,
    )


def streamed_inputs(config: TrainConfig, size: int) -> Inputs:
    """Crops read, decoded and augmented one by one in loader processes."""
    if is_pack(config.dataset):
        raise FakescopeError(f"{config.dataset}: a pack is decoded into memory; use --input cache")
    crop, rng = get_arch(config.arch).crop, random.Random(config.seed)
    train_samples, held_samples = split_by_cluster(
        list_samples(config.dataset), config.holdout, config.seed
    )

    def epoch(number: int, items: list[tuple[int, bool]], first_step: int) -> Batches:
        rest = items[first_step * config.batch_size :]
        data = CropDataset(
            train_samples,
            rest,
            size,
            crop.mean,
            crop.std,
            train=True,
            seed=config.seed * 1000 + number,
            codecs=(config.jpeg_share, config.h264_share),
            sharpen=config.sbi_sharpen,
        )
        return DataLoader(
            data,
            batch_size=config.batch_size,
            shuffle=False,
            num_workers=config.workers,
            drop_last=True,
        )

    def scored(pool: list) -> Callable[[], Batches]:
        items = [(i, False) for i in range(len(pool))]
        if config.limit_eval:
            items = rng.sample(items, min(config.limit_eval, len(items)))
        data = CropDataset(pool, items, size, crop.mean, crop.std, train=False)
        return lambda: DataLoader(
            data, batch_size=config.batch_size * 2, num_workers=config.workers
        )

    val = scored(list_samples(config.val)) if config.val else None
    return Inputs([s.label for s in train_samples], epoch, scored(held_samples), val)


@dataclass
class Run:
    """What a run carries from step to step; `checkpoint.pt` holds all of it."""

    config: TrainConfig
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    state: dict = field(
        default_factory=lambda: {"epoch": 0, "step_in_epoch": 0, "best": None, "history": []}
    )
    best_model: dict | None = None  # the weights of the epoch with the lowest held-out log loss
    teacher: torch.nn.Module | None = None  # frozen, in eval mode: not part of the checkpoint

    @property
    def steps_per_epoch(self) -> int:
        return self.config.epoch_size // self.config.batch_size


def build_run(config: TrainConfig, device: torch.device) -> Run:
    """The model, an AdamW over its trainable weights and a warm-up + cosine schedule."""
    model = channels_last(_build(config)).to(device)
    trainable = [p for p in model.parameters() if p.requires_grad]
    # The fused kernel is about twice as fast as the default per-tensor loop on CPU.
    optimizer = torch.optim.AdamW(
        trainable, lr=config.lr, weight_decay=config.weight_decay, fused=True
    )
    total = config.epoch_size // config.batch_size * config.epochs
    warmup = min(200, total // 10)

    def lr_at(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_at)
    scaler = torch.amp.GradScaler(enabled=device.type == "cuda")
    teacher = None
    if config.teacher:
        teacher = channels_last(_start(config, "teacher", config.teacher)).to(device).eval()
        teacher.requires_grad_(False)
    return Run(config, model, optimizer, scheduler, scaler, teacher=teacher)


def pooled_features(model: Any, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A timm model's last feature map averaged over space, as its head pools it (timm's
    pre-logits would also take the head's dropout), and its logits."""
    maps = model.forward_features(images)
    return maps.mean(dim=(2, 3)), model.forward_head(maps)


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """1 - cosine similarity of pooled features, averaged over the batch: the direction of the
    features carries the class evidence, their scale differs between coded and clean crops."""
    return 1 - torch.nn.functional.cosine_similarity(student, teacher.detach(), dim=1).mean()


def save_checkpoint(run: Run, path: Path) -> None:
    _save_atomic(
        {
            "model": run.model.state_dict(),
            "optimizer": run.optimizer.state_dict(),
            "scheduler": run.scheduler.state_dict(),
            "state": run.state,
            "config": asdict(run.config),
            "best_model": run.best_model,
        },
        path,
    )


def resume(run: Run, path: Path) -> bool:
    """Continue from `path` if it exists: weights, optimiser, schedule and position."""
    if not path.exists():
        return False
    saved = torch.load(path, map_location="cpu", weights_only=True)
    run.model.load_state_dict(saved["model"])
    run.optimizer.load_state_dict(saved["optimizer"])
    run.scheduler.load_state_dict(saved["scheduler"])
    run.state, run.best_model = saved["state"], saved["best_model"]
    print(f"resumed from epoch {run.state['epoch']} step {run.state['step_in_epoch']}", flush=True)
    return True


def train_epoch(
    run: Run, inputs: Inputs, device: torch.device, checkpoint: Path, bar: Progress, progress: bool
) -> float | None:
    """The rest of the current epoch from its saved step; returns the smoothed training loss."""
    config, state = run.config, run.state
    epoch, steps = state["epoch"], run.steps_per_epoch
    items = balanced_epoch(
        inputs.labels, steps * config.batch_size, config.sbi_share, epoch, config.seed
    )
    batches = inputs.epoch(epoch, items, state["step_in_epoch"])
    task = bar.add_task(
        f"epoch {epoch + 1}/{config.epochs}", total=steps, completed=state["step_in_epoch"], info=""
    )
    model = run.model
    model.train()
    for module in model.modules():  # frozen batch norms keep their ImageNet statistics
        batch_norm = isinstance(module, torch.nn.modules.batchnorm._BatchNorm)
        if batch_norm and not module.weight.requires_grad:
            module.eval()
    loss_fn = torch.nn.BCEWithLogitsLoss()
    running, started = None, time.time()
    for images, targets, *clean in batches:
        images = images.to(device, memory_format=torch.channels_last, non_blocking=True)
        targets = targets.to(device)
        with torch.autocast(device.type, enabled=device.type == "cuda"):
            if run.teacher is None:
                loss = loss_fn(model(images).flatten().float(), targets)
            else:
                features, logits = pooled_features(model, images)
                with torch.no_grad():
                    taught, _ = pooled_features(run.teacher, clean[0].to(device))
                loss = loss_fn(logits.flatten().float(), targets)
                loss = loss + config.distill_weight * distillation_loss(
                    features.float(), taught.float()
                )
        run.optimizer.zero_grad(set_to_none=True)
        run.scaler.scale(loss).backward()
        run.scaler.step(run.optimizer)
        run.scaler.update()
        run.scheduler.step()
        running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
        state["step_in_epoch"] += 1
        bar.update(task, advance=1, info=f"loss {running:.4f}")
        if state["step_in_epoch"] % config.save_every == 0:
            save_checkpoint(run, checkpoint)
            if not progress:
                rate = config.batch_size * config.save_every / (time.time() - started)
                print(
                    f"epoch {epoch + 1} step {state['step_in_epoch']}/{steps} "
                    f"loss {running:.4f} {rate:.1f} img/s",
                    flush=True,
                )
                started = time.time()
    bar.remove_task(task)
    return running


def save_calibrated(
    run: Run, logits: np.ndarray, labels: np.ndarray, size: int, directory: Path
) -> ModelSpec:
    """The run's model as it is now, its temperature fitted on the held-out `logits`."""
    config = run.config
    crop = replace(get_arch(config.arch).crop, size=size)
    spec = ModelSpec(
        name=config.name or config.arch,
        arch=config.arch,
        crop=crop,
        temperature=fit_temperature(logits, labels),
    )
    return save_fakescope(run.model, spec, directory)


def evaluate_epoch(
    run: Run, train_loss: float | None, inputs: Inputs, device: torch.device, size: int, out: Path
) -> dict:
    """Score the held-out (and val) images, log the epoch, keep the best weights, move on.
    Every epoch's calibrated model stays in `out/epochs/NN/`, so that an epoch can also be
    chosen by a measure training does not see (full-frame videos: `fakescope.selection`)."""
    state = run.state
    logits, labels = predict_logits(run.model, inputs.held(), device)
    snapshot = save_calibrated(
        run, logits, labels, size, out / "epochs" / f"{state['epoch'] + 1:02d}"
    )
    record = {
        "epoch": state["epoch"] + 1,
        "train_loss": train_loss,
        "temperature": snapshot.temperature,
        "holdout": point_metrics(labels, 1 / (1 + np.exp(-logits))),
    }
    if inputs.val is not None:
        val_logits, val_labels = predict_logits(run.model, inputs.val(), device)
        record["val"] = point_metrics(val_labels, 1 / (1 + np.exp(-val_logits)))
    with open(out / "log.jsonl", "a") as log:
        log.write(json.dumps(record) + "\n")
    print(json.dumps(record), flush=True)
    best = state["best"]
    improved = best is None or record["holdout"]["log_loss"] < best["holdout"]["log_loss"]
    state["history"].append(record)
    state["epoch"], state["step_in_epoch"] = state["epoch"] + 1, 0
    if improved:
        state["best"] = record
        run.best_model = {k: v.detach().cpu().clone() for k, v in run.model.state_dict().items()}
    return record


def export(run: Run, inputs: Inputs, size: int, device: torch.device, out: Path) -> ModelSpec:
    """Calibrate the best epoch's model on the held-out clusters and save it with a summary."""
    assert run.best_model is not None  # set by the first evaluated epoch
    run.model.load_state_dict(run.best_model)
    logits, labels = predict_logits(run.model, inputs.held(), device)
    spec = save_calibrated(run, logits, labels, size, out)
    best_epoch = run.state["best"]["epoch"]
    summary = {"model": spec.to_dict(), "best_epoch": best_epoch, "temperature": spec.temperature}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(
        f"saved {out / (spec.name + '.json')} (best epoch {best_epoch}, "
        f"temperature {spec.temperature:.3f})",
        flush=True,
    )
    return spec


def train(config: TrainConfig, progress: bool = True) -> ModelSpec:
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    _seed_everything(config.seed)
    device = _torch_device(config.device)
    arch = get_arch(config.arch)
    size = config.image_size or arch.crop.size

    # The models first: a bad --init or --teacher fails before minutes of decoding. Loading
    # the inputs draws from no global generator, so the order changes no draw.
    run = build_run(config, device)
    if config.input == "cache":
        inputs = cached_inputs(config, size, device)
    else:
        inputs = streamed_inputs(config, size)

    checkpoint = out / "checkpoint.pt"
    resume(run, checkpoint)
    columns = [
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeRemainingColumn(),
    ]
    with Progress(*columns, disable=not progress) as bar:
        while run.state["epoch"] < config.epochs:
            loss = train_epoch(run, inputs, device, checkpoint, bar, progress)
            evaluate_epoch(run, loss, inputs, device, size, out)
            save_checkpoint(run, checkpoint)
    return export(run, inputs, size, device, out)
