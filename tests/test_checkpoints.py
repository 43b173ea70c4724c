"""Each checkpoint format round-trips a randomly initialised model, loaded strictly."""

import json

import pytest
import timm
import torch
from torch import nn

from fakescope.models.checkpoints import (
    import_checkpoint,
    load_dfdc_b7,
    load_fakescope,
    load_resnext50,
    read_spec,
    save_fakescope,
)
from fakescope.models.ensemble import load_ensemble
from fakescope.models.registry import ModelSpec, get_arch, resolve_cam_layers
from fakescope.types import WeightsError


class DeepFakeClassifier(nn.Module):
    """The DFDC 1st-place module layout: encoder -> avg pool -> dropout -> fc."""

    def __init__(self, encoder: str):
        super().__init__()
        self.encoder = timm.create_model(encoder, pretrained=False)
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(0.0)
        self.fc = nn.Linear(self.encoder.num_features, 1)

    def forward(self, x):
        return self.fc(self.dropout(self.avg_pool(self.encoder.forward_features(x)).flatten(1)))


@pytest.fixture(scope="module")
def b7_checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    model = DeepFakeClassifier("tf_efficientnet_b7").eval()
    path = tmp_path_factory.mktemp("b7") / "final_999_DeepFakeClassifier_tf_efficientnet_b7_ns_0_23"
    state = {f"module.{k}": v for k, v in model.state_dict().items()}  # saved from DataParallel
    torch.save({"state_dict": state, "epoch": 10}, path)
    return model, path


def test_dfdc_b7_loads_strictly_and_gives_the_same_logits(b7_checkpoint):
    reference, path = b7_checkpoint
    model = load_dfdc_b7(path)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(model(x), reference(x), atol=1e-5)
    assert resolve_cam_layers(model) == ("bn2", "blocks.4")


def test_resnext50_plain_state_dict(tmp_path):
    import torchvision

    reference = torchvision.models.resnext50_32x4d(num_classes=1).eval()
    path = tmp_path / "resnext.pth"
    torch.save(reference.state_dict(), path)
    model = load_resnext50(path)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(model(x), reference(x), atol=1e-5)
    assert resolve_cam_layers(model) == ("layer4", "layer3")


def test_missing_or_extra_keys_are_refused(tmp_path):
    path = tmp_path / "bad.pth"
    torch.save({"fc.weight": torch.zeros(1, 2048)}, path)
    with pytest.raises(WeightsError, match="do not match"):
        load_resnext50(path)


def test_pickled_code_is_never_loaded(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {"x": torch.zeros(1)}, "obj": nn.ReLU()}, path)
    with pytest.raises(WeightsError, match="weights-only"):
        load_resnext50(path)


def test_fakescope_format_round_trip_and_import(tmp_path, b7_checkpoint):
    arch = get_arch("efficientnet-lite0")
    model = arch.build().eval()
    spec = save_fakescope(model, ModelSpec("tiny", arch.name, arch.crop, temperature=1.5), tmp_path)
    loaded_spec = read_spec(tmp_path / "tiny.json")
    assert loaded_spec.sha256 == spec.sha256 and loaded_spec.temperature == 1.5
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(load_fakescope(loaded_spec)(x), model(x), atol=1e-6)

    imported = import_checkpoint(b7_checkpoint[1], "dfdc-b7", tmp_path / "imported", name="b7")
    config = json.loads((tmp_path / "imported" / "b7.json").read_text())
    assert config["arch"] == "dfdc-efficientnet-b7" and config["sha256"] == imported.sha256
    ensemble = load_ensemble(tmp_path / "imported" / "b7.json")
    with torch.no_grad():
        assert torch.allclose(ensemble.members[0].model(x), b7_checkpoint[0](x), atol=1e-5)


def test_tampered_weights_fail_the_hash_check(tmp_path):
    arch = get_arch("efficientnet-lite0")
    save_fakescope(arch.build(), ModelSpec("m", arch.name, arch.crop), tmp_path)
    with open(tmp_path / "m.safetensors", "r+b") as handle:
        handle.seek(-4, 2)
        handle.write(b"\x00\x01\x02\x03")
    with pytest.raises(WeightsError, match="sha256"):
        load_fakescope(read_spec(tmp_path / "m.json"))


def test_ensemble_weighted_mean(tmp_path):
    arch = get_arch("efficientnet-lite0")
    for name in ("a", "b"):
        save_fakescope(arch.build(), ModelSpec(name, arch.name, arch.crop), tmp_path)
    (tmp_path / "pair.json").write_text(
        json.dumps(
            {
                "format": "fakescope-ensemble",
                "name": "pair",
                "members": [{"config": "a.json", "weight": 3}, {"config": "b.json", "weight": 1}],
            }
        )
    )
    ensemble = load_ensemble(tmp_path / "pair.json")
    import numpy as np

    combined = ensemble.combine({"a": np.array([1.0]), "b": np.array([0.0])})
    assert combined[0] == pytest.approx(0.75)


def test_unknown_default_model_says_no_weights(monkeypatch, tmp_path):
    import fakescope.models.ensemble as ensemble

    monkeypatch.setattr(ensemble, "WEIGHTS_DIR", tmp_path)
    with pytest.raises(WeightsError, match="no default weights are installed"):
        ensemble.load_ensemble("default")


def test_reimport_in_fp16_keeps_policy_and_temperature(tmp_path):
    from dataclasses import replace

    torch.manual_seed(0)
    arch = get_arch("efficientnet-lite0")
    model = arch.build().eval()
    spec = ModelSpec("m", arch.name, replace(arch.crop, size=160), temperature=1.7)
    save_fakescope(model, spec, tmp_path / "fp32")
    half = import_checkpoint(
        tmp_path / "fp32" / "m.json", "fakescope", tmp_path / "fp16", half=True
    )
    assert half.crop.size == 160 and half.temperature == 1.7
    assert (tmp_path / "fp16" / "m.safetensors").stat().st_size < 0.6 * (
        tmp_path / "fp32" / "m.safetensors"
    ).stat().st_size
    x = torch.randn(1, 3, 160, 160)
    with torch.no_grad():
        assert torch.allclose(
            load_fakescope(read_spec(tmp_path / "fp16" / "m.json"))(x),
            model(x),
            rtol=2e-2,
            atol=2e-2,
        )
