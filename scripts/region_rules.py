"""How often would other ways of naming a face's region name the one a real manipulation
changed most? On the faces `xai-eval --pairs` uses (the faces `analyze` shows, with their
masks from the pristine video), each rule picks a region; the table gives how often it is
the mask's largest, per manipulation, beside the best fixed guess.

    python scripts/region_rules.py ../shared/data/ffpp-dev

Rules: a map's positive mass per region (the report's rule), its top k share of pixels
counted, the mass of its square root, the mass of the map blurred, the mass over the region's
area, and the model itself: the region whose filling with the crop's mean colour lowers the
fake logit most.

Two further columns ask the same of other truths: whether the named region was changed
(at least half of its pixels in the mask), and whether it is the region with the largest
share of its own pixels changed. FF++ masks cover most of the inner face, so the mask's
largest region by pixels is mostly a matter of the regions' areas; the table of each
region's changed share, printed first, shows it. The numbers are in docs/explanations.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from fakescope.blending import gaussian_blur
from fakescope.crops import to_tensor
from fakescope.evaluate import paired_faces
from fakescope.explain.cam import explain, fake_logit, minmax, upsample
from fakescope.explain.faithfulness import top_k_pixels
from fakescope.explain.regions import REGIONS, region_labels
from fakescope.pipeline import Analyzer
from fakescope.types import FakescopeError

METHODS = ("hirescam++", "gradcam-n", "gradcam++")
MANIPULATIONS = ("Deepfakes", "Face2Face", "FaceSwap")


def per_region(weights: Tensor, labels: Tensor) -> Tensor:
    """B x len(REGIONS): the sum of each image's weights in each region."""
    flat = weights.flatten(1).float()
    return torch.zeros(len(flat), len(REGIONS)).scatter_add_(1, labels.flatten(1), flat)


def occlusion_drops(model: torch.nn.Module, inputs: Tensor, labels: Tensor) -> Tensor:
    """B x len(REGIONS): how much filling each region with the crop's mean colour lowers the
    fake logit."""
    drops = []
    with torch.no_grad():
        for x, lab in zip(inputs, labels):
            base = fake_logit(model(x[None])).item()
            fill = x.mean((1, 2), keepdim=True)
            regions = torch.stack([(lab == r)[None].float() for r in range(len(REGIONS))])
            filled = x[None] * (1 - regions) + fill[None] * regions
            drops.append(base - fake_logit(model(filled)).view(-1))
    return torch.stack(drops)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("dataset", type=Path, help="a folder whose manifest.csv has `pristine`")
    parser.add_argument("--model", default="default")
    args = parser.parse_args()

    analyzer = Analyzer(args.model)
    member = analyzer.ensemble.member(0)
    policy, model = member.spec.crop, member.model.eval()
    faces = [
        f for f in paired_faces(analyzer, args.dataset, policy, skipped=[]) if f.mask is not None
    ]
    shape = (policy.size, policy.size)
    inputs = to_tensor([f.crop for f in faces], policy)
    labels = torch.stack(
        [torch.from_numpy(region_labels(shape, f.box, f.landmarks)) for f in faces]
    )
    labels = labels.long()
    masks = torch.stack([torch.from_numpy(f.mask.astype(bool)) for f in faces])
    groups = np.array([f.group for f in faces])
    changed = per_region(masks, labels)
    area = per_region(torch.ones_like(masks, dtype=torch.float), labels)
    truth = changed.argmax(1)
    covered = changed / area.clamp_min(1)  # the share of each region's pixels changed
    most_covered = covered.argmax(1)
    maps = {}
    for start in range(0, len(faces), 8):
        batch = explain(model, inputs[start : start + 8], list(METHODS), member.cam_layers)
        for m in METHODS:
            shown = minmax(upsample(batch[m].raw, shape).clamp_min(0)).cpu()
            maps.setdefault(m, []).append(shown)

    def percents(values: np.ndarray) -> list[str]:
        """The mean over all faces, then over each manipulation's."""
        parts = [values, *(values[groups == g] for g in MANIPULATIONS)]
        return [f"{100 * part.mean():.0f}%" for part in parts]

    def row(name: str, scores: Tensor) -> None:
        named = scores.argmax(1)
        was_changed = covered.gather(1, named[:, None])[:, 0] >= 0.5
        cells = percents((named == truth).numpy()) + percents(was_changed.numpy())
        cells += [f"{100 * (named == most_covered).float().mean():.0f}%"]
        print(f"| {name} | " + " | ".join(cells) + " |")

    print(f"{len(faces)} faces; the share of each region's pixels changed (mean over faces)\n")
    print("| region | all | " + " | ".join(MANIPULATIONS) + " |")
    print("|---|---|" + "---|" * len(MANIPULATIONS))
    for r, region in enumerate(REGIONS):
        print(f"| {region} | " + " | ".join(percents(covered[:, r].numpy())) + " |")
    print(
        "\nHow often each rule's region is the mask's largest (pixels); was changed (at least"
        " half of its pixels), per manipulation; is the region most changed (share of its"
        " pixels)\n"
    )
    print(
        "| rule | largest: all | "
        + " | ".join(MANIPULATIONS)
        + " | changed: all | "
        + " | ".join(MANIPULATIONS)
        + " | most changed |"
    )
    print("|---|---|" + "---|" * (2 * len(MANIPULATIONS) + 2))
    for best in sorted({int(truth.mode().values), int(most_covered.mode().values)}):
        fixed = torch.nn.functional.one_hot(torch.full_like(truth, best), len(REGIONS))
        row(f"always {REGIONS[best]}", fixed)
    for m in METHODS:
        for name, scores in rules(torch.cat(maps[m]), labels, area).items():
            row(f"{m}: {name}", scores)
    outside = REGIONS.index("outside the face")
    drops = occlusion_drops(model, inputs, labels)
    drops[:, outside] = -torch.inf
    row("the model: the region whose mean-colour fill lowers the fake logit most", drops)


def rules(heat: Tensor, labels: Tensor, area: Tensor) -> dict[str, Tensor]:
    """Each map-based rule's score per image and region (the highest is named)."""
    scores = {"mass (the report's rule)": per_region(heat, labels)}
    for k in (0.1, 0.2, 0.3, 0.4, 0.5):
        top = top_k_pixels(heat, k).view_as(heat)
        scores[f"top {round(100 * k)}% of pixels, counted"] = per_region(top, labels)
    scores["mass of the square root"] = per_region(heat.sqrt(), labels)
    for share in (0.04, 0.08):
        scores[f"mass blurred by {round(100 * share)}% of the crop"] = per_region(
            _blurred(heat, share), labels
        )
    scores["mass over the region's area"] = per_region(heat, labels) / area.clamp_min(1)
    return scores


def _blurred(heat: Tensor, share: float) -> Tensor:
    size = heat.shape[-1]
    sigma = torch.full((len(heat),), share * size)
    return gaussian_blur(heat[:, None], int(6 * share * size) | 1, sigma)[:, 0]


if __name__ == "__main__":
    try:
        main()
    except FakescopeError as error:  # a folder without pairs: one line, exit 2
        sys.exit(f"region_rules: {error}")
