"""`fakescope xai-eval`: every explanation method of one model scored on the same metrics
(faithfulness.py) over labelled face crops and self-blended pseudo-fakes; xai.json and xai.md."""

from __future__ import annotations

import json
import math
import random
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from ..faces import to_tensor
from ..models.ensemble import Member
from ..models.registry import resolve_cam_layers
from ..types import FakescopeError
from .cam import HIRESCAM_PP, METHODS, explain, upsample
from .faithfulness import (
    TABLE1_KEYS,
    TABLE1_PAPER,
    aggregate_table1,
    closest_to_paper,
    deletion_insertion,
    mass_inside,
    pointing_game,
    randomisation_check,
    self_blended,
    table1_stats,
)


def xai_eval(
    model: nn.Module,
    batches: Iterable[tuple[Tensor, Tensor, Tensor | None]],
    methods: Sequence[str] = METHODS,
    layers: tuple[str, str] | None = None,
    baseline: str = "blur",
    sanity_images: int = 8,
    sanity_depth: int = 4,
    batch_size: int = 64,
) -> dict:
    """Table 1, deletion/insertion AUCs, localisation and the sanity check over batches.

    Each batch is (inputs B x 3 x H x W normalised, labels B with 1 = fake, masks B x H x W
    bool or None); masks, where given and not empty, mark the manipulated pixels.
    """
    layers = layers or resolve_cam_layers(model)
    computed = list(dict.fromkeys([*methods, "hirescam"]))
    variants = [m for m in methods if m in HIRESCAM_PP]
    table1: dict[str, list] = {v: [] for v in variants}
    per_image: dict[str, dict[str, list]] = {
        k: {m: [] for m in methods} for k in ("deletion", "insertion", "pointing", "mass")
    }
    labels_seen: list[Tensor] = []
    sanity_inputs: list[Tensor] = []
    masked = 0
    for inputs, labels, masks in batches:
        result = explain(model, inputs, computed, layers)
        size = inputs.shape[-2:]
        reference = upsample(result["hirescam"].raw, size)
        for v in variants:
            table1[v].append(table1_stats(upsample(result[v].raw, size), reference))
        labels_seen.append(labels.float().view(-1))
        has_mask = (
            masks.flatten(1).any(1)
            if masks is not None
            else torch.zeros(len(inputs), dtype=torch.bool)
        )
        masked += int(has_mask.sum())
        for m in methods:
            deletion, insertion = deletion_insertion(
                model, inputs, result[m].display, baseline, batch_size=batch_size
            )
            per_image["deletion"][m].append(deletion)
            per_image["insertion"][m].append(insertion)
            if has_mask.any():
                shown, where = result[m].display[has_mask], masks[has_mask]
                per_image["pointing"][m].append(pointing_game(shown, where).float())
                per_image["mass"][m].append(mass_inside(shown, where))
        if sum(len(x) for x in sanity_inputs) < sanity_images:
            sanity_inputs.append(inputs)
    if not labels_seen:
        raise FakescopeError("xai_eval got no images")
    labels = torch.cat(labels_seen)
    fake = labels > 0.5

    def mean(values: list[Tensor], select: Tensor | None = None) -> float:
        if not values:
            return math.nan
        x = torch.cat(values).double()
        x = x[select] if select is not None else x
        return float(x.nanmean()) if len(x) else math.nan

    sanity = randomisation_check(
        model, torch.cat(sanity_inputs)[:sanity_images], methods, layers, sanity_depth
    )
    return {
        "images": len(labels),
        "fakes": int(fake.sum()),
        "masked_images": masked,
        "layers": list(layers),
        "baseline": baseline,
        "table1": {v: aggregate_table1(table1[v]) for v in variants},
        "deletion": {
            m: {"all": mean(per_image["deletion"][m]), "fake": mean(per_image["deletion"][m], fake)}
            for m in methods
        },
        "insertion": {
            m: {
                "all": mean(per_image["insertion"][m]),
                "fake": mean(per_image["insertion"][m], fake),
            }
            for m in methods
        },
        "pointing_game": {m: mean(per_image["pointing"][m]) for m in methods},
        "mass_inside_mask": {m: mean(per_image["mass"][m]) for m in methods},
        "sanity": sanity,
    }


def _fmt(x: float | None, percent: bool = False) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return f"{100 * x:.1f}%" if percent else f"{x:.3f}"


def _json_safe(obj):
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj


def write_xai_report(results: dict, out_dir: str | Path) -> tuple[Path, Path]:
    """Write `xai.json` and `xai.md` (Table 1 beside the paper, faithfulness, localisation,
    sanity)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out / "xai.json", out / "xai.md"
    json_path.write_text(json.dumps(_json_safe(results), indent=2))

    lines = [
        f"# Explanation quality ({results['images']} images, {results['fakes']} fake; "
        f"layers N={results['layers'][0]}, N-1={results['layers'][1]})",
        "",
    ]
    table1 = results.get("table1", {})
    if table1:
        head = ["statistic", "paper"] + [
            f"{v} {kind}" for v in table1 for kind in ("pixel-weighted", "per-image")
        ]
        lines += [
            "## Table 1: HiResCAM++ inside HiResCAM's region at N",
            "",
            _row(head),
            _row(["---"] * len(head)),
        ]
        for k in TABLE1_KEYS:
            pct = k in ("outside_share", "coincidence")
            cells = [
                _fmt(t[agg][k], pct)
                for t in table1.values()
                for agg in ("pixel_weighted", "per_image")
            ]
            lines.append(_row([k, _fmt(TABLE1_PAPER[k], pct), *cells]))
        lines += ["", f"Closest to the paper (pixel-weighted): {closest_to_paper(table1)}", ""]
    head = [
        "method",
        "deletion AUC ↓",
        "deletion AUC (fakes) ↓",
        "insertion AUC ↑",
        "insertion AUC (fakes) ↑",
        "pointing game ↑",
        "mass inside mask ↑",
    ]
    lines += [
        f"## Faithfulness ({results['baseline']} baseline) and localisation "
        f"({results['masked_images']} masked images)",
        "",
        _row(head),
        _row(["---"] * len(head)),
    ]
    for m in results["deletion"]:
        lines.append(
            _row(
                [
                    m,
                    _fmt(results["deletion"][m]["all"]),
                    _fmt(results["deletion"][m]["fake"]),
                    _fmt(results["insertion"][m]["all"]),
                    _fmt(results["insertion"][m]["fake"]),
                    _fmt(results["pointing_game"][m], True),
                    _fmt(results["mass_inside_mask"][m], True),
                ]
            )
        )
    sanity = results["sanity"]
    head = ["method"] + [f"random up to {s}" for s in sanity["stages"]]
    lines += [
        "",
        "## Sanity check: Spearman correlation with the original map after cascading randomisation",
        "",
        _row(head),
        _row(["---"] * len(head)),
    ]
    lines += [_row([m, *(_fmt(c) for c in cs)]) for m, cs in sanity["spearman"].items()]
    md_path.write_text("\n".join(lines) + "\n")
    return json_path, md_path


def _row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def run_xai_eval(
    member: Member,
    faces: Iterable[tuple[np.ndarray, int]],
    out_dir: str | Path,
    dataset: str = "",
    batch: int = 8,
    seed: int = 0,
) -> tuple[Path, Path]:
    """Explain one ensemble member on labelled face crops (size x size RGB uint8, label 1 = fake).

    Batches hold the real and fake faces (no masks) and, for every real face, a self-blended
    pseudo-fake whose blending mask is the ground truth for localisation.
    """
    policy = member.spec.crop
    device = next(member.model.parameters()).device
    rng = random.Random(seed)

    def batches():
        chunk: list[tuple[np.ndarray, int]] = []
        for face in [*faces, None]:
            if face is not None:
                chunk.append(face)
            if chunk and (face is None or len(chunk) == batch):
                images = [c for c, _ in chunk]
                labels = torch.tensor([label for _, label in chunk], dtype=torch.float32)
                yield to_tensor(images, policy).to(device), labels, None
                reals = [
                    torch.from_numpy(c).permute(2, 0, 1).contiguous()
                    for c, label in chunk
                    if label == 0
                ]
                if reals:
                    inputs, fake_labels, masks = self_blended(
                        torch.stack(reals), policy.mean, policy.std, rng
                    )
                    yield inputs.to(device), fake_labels, masks
                chunk = []

    results = xai_eval(member.model, batches(), METHODS, member.cam_layers)
    results["model"] = {
        "name": member.spec.name,
        "arch": member.spec.arch,
        "sha256": member.spec.sha256,
    }
    results["dataset"] = dataset
    return write_xai_report(results, out_dir)
