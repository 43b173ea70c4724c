"""Broken model and ensemble configs fail at load, as WeightsError (exit 5, one line)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from fakescope.cli import app
from fakescope.models.ensemble import load_ensemble
from fakescope.types import WeightsError


@pytest.fixture
def model_dir(random_model, tmp_path) -> Path:
    """A private copy of the random model's config and weights, free to break."""
    folder = tmp_path / "models"
    folder.mkdir()
    for path in random_model.parent.iterdir():
        shutil.copy(path, folder / path.name)
    return folder


def ensemble(folder: Path, members: object) -> Path:
    path = folder / "ensemble.json"
    path.write_text(json.dumps({"format": "fakescope-ensemble", "name": "e", "members": members}))
    return path


def member_config(folder: Path, **changes) -> Path:
    path = folder / "random-lite0.json"
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))
    return path


BROKEN = {
    "weight 0": lambda f: ensemble(f, [{"config": "random-lite0.json", "weight": 0}]),
    "weight NaN": lambda f: ensemble(f, [{"config": "random-lite0.json", "weight": float("nan")}]),
    "weight negative": lambda f: ensemble(f, [{"config": "random-lite0.json", "weight": -1}]),
    "weight text": lambda f: ensemble(f, [{"config": "random-lite0.json", "weight": "1"}]),
    "no members": lambda f: ensemble(f, []),
    "two members of one name": lambda f: ensemble(
        f, [{"config": "random-lite0.json"}, {"config": "random-lite0.json"}]
    ),
    "members not a list": lambda f: ensemble(f, {"config": "random-lite0.json"}),
    "explain text": lambda f: ensemble(f, [{"config": "random-lite0.json", "explain": "no"}]),
    "no member explained": lambda f: ensemble(
        f, [{"config": "random-lite0.json", "explain": False}]
    ),
    "member without config": lambda f: ensemble(f, [{"weight": 1}]),
    "sha256 null": lambda f: member_config(f, sha256=None),
    "sha256 short": lambda f: member_config(f, sha256="abc"),
    "weights outside": lambda f: member_config(f, weights="../../etc/passwd"),
    "weights absolute": lambda f: member_config(f, weights="/etc/passwd"),
    "weights missing": lambda f: member_config(f, weights=None),
    "temperature NaN": lambda f: member_config(f, temperature=float("nan")),
    "unknown field": lambda f: member_config(f, colour="blue"),
    "no crop": lambda f: member_config(f, crop=None),
    "no name": lambda f: (
        (f / "x.json").write_text('{"format": "fakescope-ensemble", "members": []}')
        and f / "x.json"
    ),
    "not an object": lambda f: (f / "x.json").write_text("[1, 2]") and f / "x.json",
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_broken_config_fails_at_load(case, model_dir):
    with pytest.raises(WeightsError):
        load_ensemble(BROKEN[case](model_dir), backend="torch")


def test_weights_that_are_not_safetensors_are_a_weights_error(model_dir):
    weights = model_dir / "random-lite0.safetensors"
    weights.write_bytes(b"root:x:0:0:root:/root:/bin/bash\n")
    import hashlib

    config = member_config(model_dir, sha256=hashlib.sha256(weights.read_bytes()).hexdigest())
    with pytest.raises(WeightsError, match="not a safetensors file"):
        load_ensemble(config, backend="torch")


@pytest.mark.parametrize("case", ["weight 0", "no members", "weights outside", "sha256 null"])
def test_cli_exit_5_with_one_line(case, model_dir, example_video, tmp_path):
    result = CliRunner().invoke(
        app,
        [
            "analyze",
            str(example_video),
            "--model",
            str(BROKEN[case](model_dir)),
            "--out",
            str(tmp_path / "out"),
        ],
    )
    assert result.exit_code == 5, result.output
    assert len(result.stderr.strip().splitlines()) == 1 and "unexpected" not in result.stderr


def test_a_valid_ensemble_still_loads(model_dir):
    loaded = load_ensemble(
        ensemble(model_dir, [{"config": "random-lite0.json", "weight": 2.5}]), backend="torch"
    )
    assert [m.weight for m in loaded.members] == [2.5]


def test_the_shipped_trio_loads_with_its_fits_and_the_campaign_starts_load():
    """The shipped model is a trio with its own temperature and decision; the committed
    campaign members (`--init campaign/...` in scripts/train-campaign.sh) and the best
    candidates not shipped load too."""
    shipped = load_ensemble("default", backend="torch")
    names = ["efficientnet-lite0", "sbi5-h264x-03", "lite1-sbi5-scratch-08"]
    assert [m.spec.name for m in shipped.members] == names
    assert shipped.members[2].spec.arch == "efficientnet-lite1"
    # Its heat maps are the first member's: the others' miss FF++ masks (the model card).
    assert [m.explained for m in shipped.members] == [True, False, False]
    assert shipped.temperature != 1.0 and shipped.temperature_note
    assert shipped.decision.real_below <= shipped.decision.threshold and shipped.decision_note
    probs = dict(zip(names, (np.array([0.2, 0.9]), np.array([0.4, 0.7]), np.array([0.3, 0.8]))))
    logit = np.log(np.array([0.3, 0.8]) / np.array([0.7, 0.2])) / shipped.temperature
    logit += shipped.bias
    assert np.allclose(shipped.combine(probs), 1 / (1 + np.exp(-logit)))
    campaign = Path(__file__).parents[1] / "campaign"
    for name in (
        "sbi5-scratch-05",
        "sbi5-scratch-ft-03",
        "sbi5-h264xx-01",
        "sbi5-swap-02",
        "sbi5-swap-scratch-09",
        "sbi5-swap-scratch-ft-02",
        "lite1-sbi5-swap-scratch-07",
        "lite1-sbi5-swap-scratch-ft-02",
    ):
        (member,) = load_ensemble(campaign / f"{name}.json", backend="torch").members
        assert member.spec.name == name
    candidate = load_ensemble(campaign / "lite0+sbi5-h264xx-01.json", backend="torch")
    assert [m.spec.name for m in candidate.members] == ["efficientnet-lite0", "sbi5-h264xx-01"]
    assert candidate.temperature != 1.0
    for second in ("sbi5-swap-02", "sbi5-swap-scratch-ft-02"):
        swapped = load_ensemble(campaign / f"lite0+{second}.json", backend="torch")
        assert [m.spec.name for m in swapped.members] == ["efficientnet-lite0", second]
        assert swapped.temperature != 1.0


def test_a_member_left_out_of_the_maps_still_scores(model_dir):
    """ "explain": false keeps a member's score in the ensemble and its maps out of the heat
    maps: the pair's maps are then the explained member's alone."""
    from fakescope.explain.stage import frame_maps
    from fakescope.models.checkpoints import save_fakescope
    from fakescope.models.registry import ModelSpec, get_arch
    from fakescope.types import Detection

    torch.manual_seed(1)
    arch = get_arch("efficientnet-lite0")
    save_fakescope(arch.build().eval(), ModelSpec("other-lite0", arch.name, arch.crop), model_dir)
    pair = ensemble(
        model_dir,
        [{"config": "random-lite0.json"}, {"config": "other-lite0.json", "explain": False}],
    )
    loaded = load_ensemble(pair, backend="torch")
    assert [m.explained for m in loaded.members] == [True, False]
    assert [m["explained"] for m in loaded.describe()["members"]] == [True, False]
    alone = load_ensemble(model_dir / "random-lite0.json", backend="torch")
    every = load_ensemble(
        ensemble(model_dir, [{"config": "random-lite0.json"}, {"config": "other-lite0.json"}]),
        backend="torch",
    )
    image = np.random.default_rng(0).integers(0, 255, (96, 96, 3), dtype=np.uint8)
    faces = [Detection((0.0, 0.0, 96.0, 96.0), 1.0)]

    def hirescampp(of) -> np.ndarray:
        return frame_maps(of, [(image, faces)], ["hirescam++"], crops=True)[0].maps["hirescam++"]

    np.testing.assert_allclose(hirescampp(loaded), hirescampp(alone), atol=1e-6)
    assert np.abs(hirescampp(every) - hirescampp(alone)).max() > 1e-3  # the other member differs
    crops = {p: torch.rand(2, 3, p.size, p.size) for p in loaded.crop_policies}
    assert set(loaded.score(crops)) == {"random-lite0", "other-lite0"}
