"""Do the heat maps that `analyze` shows point at what was really manipulated?

`fakescope xai-eval --pairs` judges one member's maps (`--member`). A report shows the
ensemble's: the maps of its explained members averaged with the ensemble's weights
(explain/stage.py). This scores that map, every member's map averaged ("all members"), and
each member's alone, through the same code, on the faces `analyze`
chooses in FaceForensics++ fakes, against the masks of where each fake differs from its
pristine frame (evaluate.paired_faces): the share of the map's mass inside the mask and the
pointing game, with 95% intervals resampling videos.

    python scripts/ensemble_maps.py ../shared/data/ffpp-dev [--model default] [--method hirescam++]
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

from fakescope.evaluate import paired_faces
from fakescope.explain.stage import frame_maps
from fakescope.pipeline import Analyzer
from fakescope.types import Detection, FakescopeError


def scores(maps: list[np.ndarray], masks: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Per face: the share of the map's mass inside the mask; whether its peak lies inside."""
    inside = np.array([m[k].sum() / max(m.sum(), 1e-12) for m, k in zip(maps, masks)])
    peak = np.array([k.flat[int(np.argmax(m))] for m, k in zip(maps, masks)], dtype=float)
    return inside, peak


def interval(values: np.ndarray, groups: np.ndarray, draws: int = 2000) -> tuple[float, float]:
    """95% bootstrap interval of the mean, resampling groups (videos) with replacement."""
    rng = np.random.default_rng(0)
    names = np.unique(groups)
    by_group = [values[groups == g] for g in names]
    means = [
        np.concatenate([by_group[i] for i in rng.integers(0, len(names), len(names))]).mean()
        for _ in range(draws)
    ]
    low, high = np.percentile(means, [2.5, 97.5])
    return float(low), float(high)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", type=Path, help="a folder whose manifest.csv has `pristine`")
    parser.add_argument("--model", default="default")
    parser.add_argument("--method", default="hirescam++")
    args = parser.parse_args()

    analyzer = Analyzer(args.model)
    ensemble = analyzer.ensemble
    policies = ensemble.crop_policies
    if len(policies) != 1:
        raise FakescopeError("the members must share one crop policy (the crop is the input)")
    skipped: list[str] = []
    faces = [
        f
        for f in paired_faces(analyzer, args.dataset, policies[0], skipped=skipped)
        if f.mask is not None
    ]
    sources = np.array([f.source for f in faces])
    groups = sorted({f.group for f in faces})
    variants = {f"{ensemble.name} (what reports show)": ensemble}
    if len(ensemble.members) > 1:
        every = [replace(m, explained=True) for m in ensemble.members]
        variants["all members"] = replace(ensemble, members=every)
        variants |= {
            m.spec.name: replace(ensemble, members=[replace(m, explained=True)])
            for m in ensemble.members
        }
    print(
        f"{len(faces)} faces of {len(set(sources))} fakes ({len(skipped)} left out), "
        f"{args.method}; mass inside the mask / pointing game, 95% intervals over videos"
    )
    print(f"| map | all | {' | '.join(groups)} |")
    print(f"|---|---|{'---|' * len(groups)}")
    chance, _ = scores([np.ones(f.mask.shape) for f in faces], [f.mask for f in faces])
    for name, variant in variants.items():
        # All faces in one explanation pass per member, as a report explains its frames.
        inputs = [
            (f.crop, [Detection((0, 0, f.crop.shape[1], f.crop.shape[0]), 1.0)]) for f in faces
        ]
        maps = [m.maps[args.method] for m in frame_maps(variant, inputs, [args.method], crops=True)]
        inside, peak = scores(maps, [f.mask for f in faces])
        low, high = interval(inside, sources)
        cells = [f"{inside.mean():.1%} [{low:.0%}-{high:.0%}] / {peak.mean():.0%}"]
        for group in groups:
            of = np.array([f.group == group for f in faces])
            cells.append(f"{inside[of].mean():.1%} / {peak[of].mean():.0%}")
        print(f"| {name} | {' | '.join(cells)} |")
    print(f"| chance (the mask's share of the crop) | {chance.mean():.1%} |{' |' * len(groups)}")


if __name__ == "__main__":
    try:
        main()
    except FakescopeError as error:  # a bad folder or model: one line, exit 1
        sys.exit(f"ensemble_maps: {error}")
