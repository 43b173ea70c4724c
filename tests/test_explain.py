"""CAM explanations: checked against pytorch-grad-cam as an independent oracle, plus the helpers."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
from pytorch_grad_cam import EigenCAM, GradCAM, GradCAMPlusPlus, HiResCAM, LayerCAM, XGradCAM
from pytorch_grad_cam.utils.image import scale_cam_image
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection_with_sign_correction

from fakescope.blending import MEAN_LANDMARKS
from fakescope.explain.cam import METHODS, explain, minmax
from fakescope.explain.faithfulness import (
    aggregate_table1,
    closest_to_paper,
    deletion_insertion,
    mass_inside,
    pointing_game,
    randomisation_check,
    self_blended,
    table1_stats,
)
from fakescope.explain.render import overlay
from fakescope.explain.xai_eval import (
    LabelledFace,
    blend_landmarks,
    write_xai_report,
    xai_eval,
)
from fakescope.models.registry import resolve_cam_layers
from fakescope.training.batches import TrainingBatches
from fakescope.training.pack import CropSet
from fakescope.types import FakescopeError
from helpers import paste_heatmap

SIZE = 96


@pytest.fixture(scope="module", autouse=True)
def few_threads():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the machine is shared with training
    yield
    torch.set_num_threads(threads)


def build(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, num_classes=1).eval()
    # Larger classifier weights than timm's init keep the logits (and maps) away from float noise.
    head = model.get_classifier()
    torch.nn.init.normal_(head.weight, std=0.5)
    return model


@pytest.fixture(scope="module")
def b0() -> torch.nn.Module:
    return build("tf_efficientnet_b0")


@pytest.fixture(scope="module")
def resnext() -> torch.nn.Module:
    return build("resnext50_32x4d")


def batch(n: int = 2, size: int = SIZE, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def no_hooks(model: torch.nn.Module) -> bool:
    return all(
        not m._forward_hooks and not m._forward_pre_hooks and not m._backward_hooks
        for m in model.modules()
    )


def pgc(cls, model, layer_name: str, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """pytorch-grad-cam's final output, its activations and its own raw (ReLU'd) cam for one
    layer."""
    layer = model.get_submodule(layer_name)
    targets = [ClassifierOutputTarget(0)] * len(x)
    with cls(model=model, target_layers=[layer]) as cam:
        out = cam(input_tensor=x, targets=targets)
        store = cam.activations_and_grads
        acts = store.activations[0].numpy()
        grads = store.gradients[0].numpy() if store.gradients else None
        raw = cam.get_cam_image(x, layer, targets, acts, grads, False)
    return out, acts, np.maximum(raw, 0)


def pgc_scaling(raw: torch.Tensor, size: int) -> np.ndarray:
    """pytorch-grad-cam's normalisation (per layer, then over the one-layer mean) applied to our
    raw map."""
    per_layer = scale_cam_image(np.maximum(raw.numpy(), 0), (size, size))
    return scale_cam_image(np.maximum(per_layer[:, None], 0).mean(1))


PGC_AT = {  # method -> (pytorch-grad-cam class, layer index in (N, N-1))
    "gradcam-n": (GradCAM, 0),
    "gradcam-n1": (GradCAM, 1),
    "hirescam": (HiResCAM, 0),
    "hirescam-n1": (HiResCAM, 1),
    "gradcam++": (GradCAMPlusPlus, 0),
    "layercam": (LayerCAM, 0),
    "xgradcam": (XGradCAM, 0),
}


@pytest.mark.parametrize("arch", ["b0", "resnext"])
def test_matches_pytorch_grad_cam(arch, request):
    model = request.getfixturevalue(arch)
    x = batch()
    result = explain(model, x, [*PGC_AT, "eigencam"])
    for method, (cls, index) in PGC_AT.items():
        out, _, raw = pgc(cls, model, result.layers[index], x)
        ours = result[method].raw
        assert ours.dtype == torch.float32 and ours.shape == raw.shape
        assert raw.max() > 0, f"{method}: degenerate oracle map"
        scale = float(raw.max())
        np.testing.assert_allclose(ours.numpy() / scale, raw / scale, atol=1e-5, err_msg=method)
        np.testing.assert_allclose(pgc_scaling(ours, SIZE), out, atol=1e-5, err_msg=method)
    # EigenCAM: the sign-corrected first principal component of pytorch-grad-cam's activations.
    _, acts, _ = pgc(EigenCAM, model, result.layers[0], x)
    expected = np.maximum(get_2d_projection_with_sign_correction(acts), 0)
    np.testing.assert_allclose(
        minmax(result["eigencam"].raw).numpy(),
        minmax(torch.from_numpy(expected)).numpy(),
        atol=1e-4,
    )


def test_gradcam_equals_hirescam_at_n_not_at_n1(b0):
    result = explain(b0, batch(), ["gradcam-n", "hirescam", "gradcam-n1", "hirescam-n1"])
    at_n = result["gradcam-n"].raw
    assert at_n.max() > 0
    torch.testing.assert_close(
        at_n, result["hirescam"].raw, rtol=1e-5, atol=1e-6 * float(at_n.max())
    )
    assert not torch.allclose(
        result["gradcam-n1"].display, result["hirescam-n1"].display, atol=1e-2
    )


def test_hirescam_pp_variants(b0):
    result = explain(
        b0,
        batch(),
        ["hirescam", "hirescam-n1", "hirescam++", "hirescam++gate", "hirescam++filtered"],
    )
    h_n, h_n1 = result["hirescam"].raw, result["hirescam-n1"].raw
    up = F.interpolate(h_n[:, None], h_n1.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    torch.testing.assert_close(result["hirescam++"].raw, h_n1 * up)
    gate = F.interpolate(h_n[:, None], h_n1.shape[-2:], mode="nearest-exact")[:, 0] > 0
    assert (~gate).any() and gate.any()
    assert (result["hirescam++gate"].raw[~gate] == 0).all()
    torch.testing.assert_close(result["hirescam++gate"].raw[gate], h_n1[gate])


def test_filtered_matches_full_graph(b0):
    x = batch().requires_grad_()  # an independent route: the whole graph, from the input
    store = {}
    handles = [
        b0.get_submodule(n).register_forward_hook(lambda m, i, o, n=n: store.__setitem__(n, o))
        for n in ("bn2", "blocks.4")
    ]
    try:
        logits = b0(x)
    finally:
        for h in handles:
            h.remove()
    a_n, a_n1 = store["bn2"], store["blocks.4"]
    (g_n,) = torch.autograd.grad(logits.sum(), a_n, retain_graph=True)
    keep = (g_n * a_n).sum(1, keepdim=True) > 0
    (g_f,) = torch.autograd.grad((keep * g_n * a_n).sum(), a_n1)
    expected = F.relu((g_f * a_n1).sum(1)).detach()
    got = explain(b0, x.detach(), ["hirescam++filtered"])["hirescam++filtered"].raw
    assert expected.max() > 0
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5 * float(expected.max()))


def test_hooks_and_state_restored_also_after_errors(b0):
    assert no_hooks(b0)
    explain(b0, batch())
    assert no_hooks(b0)
    assert all(p.requires_grad for p in b0.parameters())

    def boom(module, inputs, output):  # fails after both CAM layers have run
        raise RuntimeError("boom")

    handle = b0.classifier.register_forward_hook(boom)
    b0.train()
    try:
        with pytest.raises(RuntimeError, match="boom"):
            explain(b0, batch())
    finally:
        handle.remove()
    assert no_hooks(b0)
    assert b0.training and all(m.training for m in b0.modules())
    assert all(p.requires_grad for p in b0.parameters())
    b0.eval()
    with pytest.raises(FakescopeError, match="no layer"):
        explain(b0, batch(), layers=("bn2", "nope"))
    with pytest.raises(FakescopeError, match="unknown explanation method"):
        explain(b0, batch(), ["gradcam"])
    assert no_hooks(b0)


def test_logits_unchanged_and_calls_repeatable(b0):
    x = batch()
    b0.zero_grad(set_to_none=True)  # pytorch-grad-cam leaves parameter gradients behind
    before = {k: v.clone() for k, v in b0.state_dict().items()}
    b0.train()  # explaining a model in train mode must neither use nor update batch statistics
    first = explain(b0, x)
    second = explain(b0, x)
    b0.eval()
    with torch.no_grad():
        expected = b0(x)
    torch.testing.assert_close(first.logits, expected, rtol=0, atol=0)
    for method in METHODS:
        assert torch.equal(first[method].raw, second[method].raw), method
    assert all(torch.equal(before[k], v) for k, v in b0.state_dict().items())
    assert all(p.grad is None for p in b0.parameters())


def test_explain_inside_inference_mode(b0):
    with torch.inference_mode():
        result = explain(b0, batch(), ["hirescam++filtered", "gradcam-n"])
    assert result["gradcam-n"].raw.max() > 0


@pytest.mark.parametrize(
    "name, layers",
    [
        ("tf_efficientnet_b0", ("bn2", "blocks.4")),
        ("tf_efficientnet_lite0", ("bn2", "blocks.4")),
        ("resnext50_32x4d", ("layer4", "layer3")),
    ],
)
def test_layer_resolution(name, layers):
    assert resolve_cam_layers(timm.create_model(name, num_classes=1)) == layers


def test_output_shapes_and_ranges(resnext):
    x = batch(3, 64)
    result = explain(resnext, x)
    grids = {"n": (2, 2), "n1": (4, 4)}
    for method in METHODS:
        m = result[method]
        on_n1 = method.endswith("n1") or method.startswith("hirescam++")
        assert m.raw.shape == (3, *grids["n1" if on_n1 else "n"]), method
        assert m.display.shape == (3, 64, 64) and m.display.dtype == torch.float32
        assert m.display.min() >= 0 and m.display.max() <= 1
        for raw, shown in zip(m.raw, m.display):
            assert shown.max() == (1 if raw.max() > 0 else 0)
    assert result.logits.shape == (3, 1)
    assert (minmax(torch.zeros(2, 4, 4)) == 0).all()


def test_eigencam_needs_no_backward(b0):
    result = explain(b0, batch(), ["eigencam"])
    assert result["eigencam"].raw.shape == (2, 3, 3) and no_hooks(b0)


def test_table1_stats_by_hand():
    p = torch.tensor([[[0.0, 2, 4], [1, 0, 0]], [[0, 0, 0], [0, 0, 0]]])
    r = torch.tensor([[[0.0, 0, 1], [1, 1, 0]], [[1, 0, 0], [0, 0, 0]]])
    s = table1_stats(p, r)
    assert s["outside_share"][0] == pytest.approx(1 / 3)
    assert s["mean_outside"][0] == pytest.approx(0.5)
    assert s["mean_inside"][0] == pytest.approx(0.625)
    assert s["coincidence"][0] == pytest.approx(0.5)
    assert math.isnan(s["outside_share"][1]) and s["coincidence"][1] == 0
    assert s["n_union"].tolist() == [4, 1]
    # A second batch: one image, P entirely inside R.
    t = table1_stats(torch.tensor([[1.0, 3]]), torch.tensor([[2.0, 2]]))
    agg = aggregate_table1([s, t])
    assert agg["images"] == 3 and agg["images_with_nonzero_p"] == 2
    pw, im = agg["pixel_weighted"], agg["per_image"]
    assert pw["outside_share"] == pytest.approx(1 / 5)
    assert pw["mean_inside"] == pytest.approx((1 + 0.25 + 1 / 3 + 1) / 4)
    assert pw["coincidence"] == pytest.approx(4 / 7)
    assert im["outside_share"] == pytest.approx(1 / 6)
    assert im["coincidence"] == pytest.approx((0.5 + 0 + 1) / 3)


class MeanOfChannel0(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, 0].flatten(1).mean(1, keepdim=True)


def test_deletion_insertion_known_answer():
    values = torch.randperm(100, generator=torch.Generator().manual_seed(0)).float() / 100
    image = values.view(1, 1, 10, 10).expand(2, 3, 10, 10).clone()
    image[1] = 1 - image[1]
    best = image[:, 0]  # rank pixels by their own value: the ideal order for this model
    deletion, insertion = deletion_insertion(
        MeanOfChannel0(), image, best, "mean", score=lambda y: y
    )
    x = np.linspace(0, 1, 21)
    for i in range(2):
        v = np.sort(image[i, 0].flatten().numpy())[::-1]
        mean = v.mean()
        del_curve = [(v[5 * k :].sum() + 5 * k * mean) / 100 for k in range(21)]
        ins_curve = [(v[: 5 * k].sum() + (100 - 5 * k) * mean) / 100 for k in range(21)]
        assert deletion[i] == pytest.approx(np.trapezoid(del_curve, x), abs=1e-6)
        assert insertion[i] == pytest.approx(np.trapezoid(ins_curve, x), abs=1e-6)
    worst_del, worst_ins = deletion_insertion(
        MeanOfChannel0(), image, -best, "mean", batch_size=3, score=lambda y: y
    )
    assert (deletion < worst_del).all() and (insertion > worst_ins).all()
    blur_del, blur_ins = deletion_insertion(MeanOfChannel0(), image, best, "blur", batch_size=5)
    assert blur_del.shape == blur_ins.shape == (2,)


def test_pointing_game_and_mass_inside():
    maps = torch.tensor([[[0.0, 1], [0.5, 0]], [[1, 0], [0, 0]], [[0, 0], [0, 0]]])
    masks = torch.tensor([[[0, 1], [1, 0]], [[0, 1], [0, 0]], [[1, 1], [1, 1]]]).bool()
    assert pointing_game(maps, masks).tolist() == [True, False, False]
    mass = mass_inside(maps, masks)
    assert mass[0] == pytest.approx(1.0) and mass[1] == 0 and math.isnan(mass[2])


def test_paste_heatmap_geometry():
    heat = np.ones((4, 4), np.float32)
    out = paste_heatmap((10, 10, 3), (2, 3, 6, 7), heat)
    expected = np.zeros((10, 10), np.float32)
    expected[3:7, 2:6] = 1
    np.testing.assert_allclose(out, expected)
    # Upscaling matches bilinear interpolation with half-pixel centres (cv2 keeps 5-bit weights).
    small = np.array([[0.0, 1], [0.5, 0.25]], np.float32)
    up = F.interpolate(
        torch.from_numpy(small)[None, None], (6, 6), mode="bilinear", align_corners=False
    )[0, 0]
    np.testing.assert_allclose(paste_heatmap((6, 6), (0, 0, 6, 6), small), up.numpy(), atol=0.03)
    # Pad geometry: only the content rectangle is pasted, padding never leaks in.
    padded = np.full((8, 8), 9.0, np.float32)
    padded[2:6] = 1
    out = paste_heatmap((30, 30), (10, 10, 26, 18), padded, content_box=(0, 2, 8, 6))
    assert (out[10:18, 10:26] == 1).all() and out.sum() == 16 * 8
    # A box partly outside the frame.
    out = paste_heatmap((10, 10), (-4, -4, 4, 4), np.ones((8, 8), np.float32))
    assert (out[:4, :4] == 1).all() and out.sum() == 16


def test_overlay():
    image = np.full((6, 8, 3), 100, np.uint8)
    heat = np.zeros((6, 8), np.float32)
    heat[2:4, 2:4] = 1
    shown = overlay(image, heat, alpha=0.5)
    assert shown.dtype == np.uint8 and shown.shape == image.shape
    assert (shown[heat == 0] == 100).all() and (shown[heat > 0] != 100).any()


def test_randomisation_check(b0):
    before = {k: v.clone() for k, v in b0.state_dict().items()}
    check = randomisation_check(b0, batch(2, 64), ["gradcam-n", "hirescam++"], depth=2)
    assert check["stages"] == ["classifier", "bn2"]
    assert all(
        len(c) == 2 and all(math.isnan(v) or -1 <= v <= 1 for v in c)
        for c in check["spearman"].values()
    )
    assert all(torch.equal(before[k], v) for k, v in b0.state_dict().items())


def _mean_landmarks(batch: int) -> torch.Tensor:
    return torch.from_numpy(MEAN_LANDMARKS)[None].repeat(batch, 1, 1)


def test_xai_eval_pseudo_fakes_are_blended_as_training_blends():
    """xai-eval's localisation ground truth is the mask that training blends its pseudo-fakes
    through: the same crops, landmarks and seed give training's blend and mask."""
    generator = torch.Generator().manual_seed(1)
    real = torch.randint(0, 256, (3, 3, 64, 64), dtype=torch.uint8, generator=generator)
    landmarks = _mean_landmarks(3) + (torch.rand(3, 5, 2, generator=generator) - 0.5) * 0.06
    inputs, labels, masks = self_blended(real, landmarks, (0.5,) * 3, (0.5,) * 3, seed=7)
    crops = CropSet(real, torch.zeros(3), ["a", "b", "c"], landmarks)
    training = TrainingBatches(crops, (0.5,) * 3, (0.5,) * 3, torch.device("cpu"), seed=0)
    torch.manual_seed(7)
    blended, soft = training.blend(real.float() / 255, landmarks)
    assert torch.equal(masks, soft[:, 0] >= 0.5 * soft.flatten(1).amax(1)[:, None, None])
    torch.testing.assert_close(inputs, ((blended * 255).round() / 255 - 0.5) / 0.5)
    assert labels.tolist() == [1, 1, 1] and 0.1 < masks.float().mean() < 0.9
    # Each mask follows its face's landmarks: the face moved right, the mask moves with it.
    moved = self_blended(real, landmarks + torch.tensor([0.15, 0.0]), (0.5,) * 3, (0.5,) * 3, 7)
    columns = torch.arange(64.0)
    centre = lambda m: (m.float().sum(1) * columns).sum(1) / m.float().sum((1, 2))  # noqa: E731
    assert (centre(moved[2]) - centre(masks) > 0.1 * 64).all()


def test_blend_landmarks_are_the_detectors_or_the_mean_crops_in_the_box():
    crop = np.zeros((64, 64, 3), np.uint8)
    points = np.array([[20, 24], [44, 24], [32, 34], [22, 46], [42, 46]], np.float64)
    found = LabelledFace(crop, 0, (8.0, 8.0, 56.0, 60.0), points)
    np.testing.assert_allclose(blend_landmarks(found).numpy(), points / 64, rtol=1e-6)
    # No landmarks: the mean crop's, laid out in the box (here the padded image's place).
    none = LabelledFace(crop, 0, (0.0, 16.0, 64.0, 48.0))
    expected = (np.array([0.0, 16.0]) + MEAN_LANDMARKS * [64.0, 32.0]) / 64
    np.testing.assert_allclose(blend_landmarks(none).numpy(), expected, rtol=1e-6)


def test_xai_eval_and_report(tmp_path):
    model = build("tf_efficientnet_lite0")
    real = torch.randint(
        0, 256, (2, 3, 64, 64), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )
    fakes = self_blended(real, _mean_landmarks(2), (0.5,) * 3, (0.5,) * 3, seed=0)
    assert fakes[2].any() and fakes[0].shape == (2, 3, 64, 64)
    batches = [fakes, ((real.float() / 255 - 0.5) / 0.5, torch.zeros(2), None)]
    methods = ["hirescam", "gradcam-n1", "hirescam++", "hirescam++gate"]
    results = xai_eval(model, batches, methods, baseline="mean", sanity_images=2, sanity_depth=2)
    assert results["images"] == 4 and results["fakes"] == 2 and results["masked_images"] == 2
    assert set(results["table1"]) == {"hirescam++", "hirescam++gate"}
    assert results["table1"]["hirescam++gate"]["pixel_weighted"]["outside_share"] == 0
    assert all(0 <= results["deletion"][m]["all"] <= 1 for m in methods)
    json_path, md_path = write_xai_report(results, tmp_path)
    assert json.loads(json_path.read_text()) == json.loads(
        json.dumps(results).replace("NaN", "null")
    )
    # The report shows what was computed, row by row (the paper's column is printed whatever).
    tables = markdown_tables(md_path.read_text())
    table1 = tables["Table 1: HiResCAM++ inside HiResCAM's region at N"]
    for k in ("outside_share", "mean_outside", "mean_inside", "coincidence"):
        pct = k in ("outside_share", "coincidence")
        computed = [
            shown(results["table1"][v][agg][k], pct)
            for v in ("hirescam++", "hirescam++gate")
            for agg in ("pixel_weighted", "per_image")
        ]
        assert table1[k][1:] == computed
    faithfulness = next(rows for title, rows in tables.items() if title.startswith("Faithfulness"))
    assert set(faithfulness) == {"method", "chance", *methods}
    for m in methods:
        assert faithfulness[m][:7] == [
            shown(results["deletion"][m]["all"]),
            shown(results["deletion"][m]["fake"]),
            shown(results["insertion"][m]["all"]),
            shown(results["insertion"][m]["fake"]),
            shown(results["pointing_game"][m], True),
            shown(results["mass_inside_mask"][m], True),
            shown(results["top_region_is_seam"][m], True),
        ]
    chance = results["chance"]
    assert faithfulness["chance"][4:7] == [
        shown(chance["mask_share"], True),
        shown(chance["mask_share"], True),
        shown(chance["seam_region"], True),
    ]
    sanity = next(rows for title, rows in tables.items() if title.startswith("Sanity check"))
    assert sanity["method"] == ["random up to classifier", "random up to bn2"]
    assert {m: row for m, row in sanity.items() if m != "method"} == {
        m: [shown(c) for c in cs] for m, cs in results["sanity"]["spearman"].items()
    }


def shown(value: float, percent: bool = False) -> str:
    """How the xai report writes a number (a dash for a missing one)."""
    if value is None or math.isnan(value):
        return "\N{EN DASH}"
    return f"{100 * value:.1f}%" if percent else f"{value:.3f}"


def markdown_tables(text: str) -> dict[str, dict[str, list[str]]]:
    """Each `## title` section's table as {first cell: the other cells}, header row included."""
    tables: dict[str, dict[str, list[str]]] = {}
    title = ""
    for line in text.splitlines():
        if line.startswith("## "):
            title = line[3:]
        elif line.startswith("| ") and not line.startswith("| ---"):
            cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
            tables.setdefault(title, {})[cells[0]] = cells[1:]
    return tables


def test_closest_to_paper():
    def t1(share, outside, inside, coincidence):
        values = dict(
            zip(
                ("outside_share", "mean_outside", "mean_inside", "coincidence"),
                (share, outside, inside, coincidence),
            )
        )
        return {"pixel_weighted": values}

    table = {"hirescam++": t1(0.05, 0.1, 0.5, 0.6), "hirescam++gate": t1(0.0, math.nan, 0.7, 0.63)}
    assert closest_to_paper(table) == "hirescam++gate"


def test_cli_explain_and_xai_eval(random_model, shared_data, tmp_path):
    from typer.testing import CliRunner

    from fakescope.cli import app

    folder = tmp_path / "faces"
    for label in ("real", "fake"):
        (folder / label).mkdir(parents=True)
        for source in sorted((shared_data / "dfdc-faces" / "val" / label).iterdir())[:1]:
            shutil.copy(source, folder / label / source.name)
    crop = next((folder / "real").iterdir())
    runner = CliRunner()
    result = runner.invoke(
        app,
        [
            "explain",
            str(crop),
            "--crops",
            "--model",
            str(random_model),
            "--methods",
            "hirescam++",
            "--out",
            str(tmp_path / "explained"),
        ],
    )
    assert result.exit_code == 0, result.output
    written = {p.name for p in (tmp_path / "explained" / crop.stem).iterdir()}
    assert written == {"hirescampp.png", "comparison.png"}
    assert "face 1: " in result.output and "evidence" in result.output
    methods = ["hirescam++", "lime", "centre prior"]  # the others: test_model_agnostic_baselines
    result = runner.invoke(
        app,
        [
            "xai-eval",
            str(folder),
            "--limit",
            "2",
            "--model",
            str(random_model),
            "--out",
            str(tmp_path / "xai"),
            "--methods",
            ",".join(methods),
            "--steps",
            "4",
            "--samples",
            "8",
            "--baseline",
            "noise",
        ],
    )
    assert result.exit_code == 0, result.output
    results = json.loads((tmp_path / "xai" / "xai.json").read_text())
    assert (results["images"], results["fakes"], results["masked_images"]) == (3, 2, 1)
    assert list(results["deletion"]) == methods and set(results["seconds_per_image"]) == set(
        methods
    )
    assert sum(results["chance"]["seam_regions"].values()) == 1
    text = (tmp_path / "xai" / "xai.md").read_text()
    assert all(f"| {m} |" in text for m in methods) and "| chance |" in text
    assert all(f"| {m} |" in result.output for m in methods)  # printed too
    result = runner.invoke(
        app, ["xai-eval", str(folder), "--member", "3", "--model", str(random_model)]
    )
    assert result.exit_code == 2 and "--member must be between 0 and 0" in result.output


def test_model_agnostic_baselines_and_region_hits(tmp_path):
    """LIME, KernelSHAP and occlusion (Captum) find the one patch a model looks at; xai_eval
    scores them beside the CAMs with localisation chance levels and seam-region hits."""
    from fakescope.explain.agnostic import agnostic_map, centre_prior
    from fakescope.explain.faithfulness import blend_boundary, top_region_hits
    from fakescope.explain.xai_eval import EvalBatch

    class Corner(torch.nn.Module):  # logit = mean of channel 0 in the top-left 16 x 16 patch
        def __init__(self):
            super().__init__()
            self.scale = torch.nn.Parameter(torch.ones(1))

        def forward(self, x):
            return self.scale * x[:, :1, :16, :16].mean((2, 3))

    images = torch.rand(2, 3, 64, 64) + 0.5
    for method in ("lime", "kernelshap", "occlusion"):
        maps = agnostic_map(Corner(), images, method, samples=24, patch=16)
        assert maps.shape == (2, 64, 64)
        inside, outside = maps[:, :16, :16].mean(), maps[:, 16:, 16:].abs().mean()
        assert inside > 5 * outside, method
    prior = centre_prior(images)
    assert prior[0, 32, 32] == prior.max() and prior[0, 0, 0] < 0.03

    masks = torch.zeros(2, 64, 64, dtype=torch.bool)
    masks[:, 16:48, 16:48] = True
    seam = blend_boundary(masks, 5)
    assert seam[0, 16, 30] and seam[0, 15, 30] and not seam[0, 30, 30] and not seam[0, 2, 2]
    regions = torch.zeros(2, 64, 64, dtype=torch.long)
    regions[:, 30:, :] = 1  # region 1 holds the bottom half of the seam and its sides' lower parts
    heat = torch.zeros(2, 64, 64)
    heat[0, 40:, :] = 1  # in region 1
    heat[1, :10, :] = 1  # in region 0
    assert top_region_hits(heat, seam, regions).tolist() == [True, False]
    # A peaky map: one very hot pixel in region 0, a broad warm area in region 1. By mass
    # region 0 wins; by where its top 20% of pixels lie, region 1 does.
    peaky = torch.zeros(2, 64, 64)
    peaky[:, 5, 5] = 10_000.0
    peaky[:, 34:, :] = 1.0
    assert top_region_hits(peaky, seam, regions).tolist() == [False, False]
    assert top_region_hits(peaky, seam, regions, 0.2).tolist() == [True, True]
    assert top_region_hits(torch.zeros(2, 64, 64), seam, regions, 0.2).tolist() == [False] * 2

    model = build("tf_efficientnet_lite0")
    real = torch.randint(
        0, 256, (2, 3, 64, 64), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )
    inputs, labels, masks = self_blended(real, _mean_landmarks(2), (0.5,) * 3, (0.5,) * 3, 0)
    methods = ["hirescam++", "lime", "kernelshap", "occlusion", "centre prior"]
    batch = EvalBatch(inputs, labels, masks, regions)
    results = xai_eval(
        model,
        [batch],
        methods,
        baseline="mean",
        sanity_images=2,
        sanity_depth=1,
        steps=4,
        samples=8,
    )
    assert 0 < results["chance"]["mask_share"] < 1 and results["chance"]["seam_region"] in (
        0.5,
        1.0,
    )
    assert all(0 <= results["top_region_is_seam"][m] <= 1 for m in methods)
    assert results["sanity"]["spearman"]["centre prior"] == [pytest.approx(1.0)]  # knows no model
    _, md_path = write_xai_report(results, tmp_path)
    assert "| occlusion |" in md_path.read_text()
    located = xai_eval(model, [batch], ["hirescam++"], sanity_images=2, sanity_depth=1, steps=0)
    assert math.isnan(located["deletion"]["hirescam++"]["all"]) and located["masked_images"] == 2


def test_localisation_metrics_match_quantus():
    """Pointing game and mass inside the mask against Quantus, an independent implementation."""
    quantus = pytest.importorskip("quantus")

    generator = torch.Generator().manual_seed(0)
    maps = torch.rand(6, 32, 32, generator=generator) ** 4
    masks = torch.zeros(6, 32, 32, dtype=torch.bool)
    for i in range(6):
        masks[i, 4 * i : 4 * i + 12, 2 + 3 * i : 14 + 3 * i] = True
    maps[0, 5, 5] = 10.0  # the maximum inside the first mask...
    maps[1, 0, 31] = 10.0  # ...and outside the second
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 2))
    x, y = np.random.default_rng(0).random((6, 3, 32, 32), np.float32), np.zeros(6, int)
    a, s = maps[:, None].numpy(), masks[:, None].numpy().astype(np.float32)
    kwargs = {"disable_warnings": True, "display_progressbar": False}
    theirs_mass = quantus.RelevanceMassAccuracy(abs=False, normalise=False, **kwargs)(
        model=model, x_batch=x, y_batch=y, a_batch=a, s_batch=s, channel_first=True, device="cpu"
    )
    theirs_pointing = quantus.PointingGame(abs=False, normalise=False, **kwargs)(
        model=model, x_batch=x, y_batch=y, a_batch=a, s_batch=s, channel_first=True, device="cpu"
    )
    assert mass_inside(maps, masks).tolist() == pytest.approx(theirs_mass, abs=1e-6)
    assert pointing_game(maps, masks).tolist() == [bool(v) for v in theirs_pointing]
    assert pointing_game(maps, masks)[:2].tolist() == [True, False]
