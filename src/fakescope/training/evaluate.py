"""Measure a model on a labelled folder (`real/`, `fake/`): metrics with 95% bootstrap
intervals, a ROC curve and a reliability diagram, as the paper and the DFDC challenge did."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.calibration import calibration_curve  # noqa: E402
from sklearn.metrics import roc_curve  # noqa: E402

from ..media import read_image  # noqa: E402
from ..types import FakescopeError  # noqa: E402
from .metrics import metrics_with_intervals  # noqa: E402

SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".mp4", ".mov", ".mkv", ".webm", ".avi"}


def labelled_files(dataset: Path, limit: int | None = None) -> list[tuple[Path, int]]:
    """(path, label) for files under real/ (0) and fake/ (1); `limit` takes an even share of each, spread out."""
    files = []
    for label, folder in ((0, "real"), (1, "fake")):
        found = sorted(p for p in (dataset / folder).rglob("*") if p.suffix.lower() in SUFFIXES)
        if limit:
            found = found[:: max(1, len(found) // (limit // 2))][: limit // 2]
        files += [(p, label) for p in found]
    if not files:
        raise FakescopeError(f"{dataset}: no media under real/ or fake/")
    return files


def score_files(analyzer, files: list[tuple[Path, int]], crops: bool) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """P(fake) per file; files that fail (or show no face) are skipped and listed."""
    probs, labels, skipped = [], [], []
    if crops:
        size = analyzer.settings.batch_size
        for start in range(0, len(files), size):
            chunk = files[start:start + size]
            _, scores = analyzer.score_crops([read_image(p, analyzer.limits) for p, _ in chunk])
            probs += list(scores)
            labels += [label for _, label in chunk]
    else:
        for path, label in files:
            try:
                report = analyzer.analyze(path)
            except FakescopeError as error:
                skipped.append(f"{path}: {error}")
                continue
            if report.fake_probability is None:
                skipped.append(f"{path}: no face found")
                continue
            probs.append(report.fake_probability)
            labels.append(label)
    return np.array(probs, dtype=float), np.array(labels, dtype=int), skipped


def plot_roc(labels: np.ndarray, probs: np.ndarray, auc: float, path: Path) -> None:
    fpr, tpr, _ = roc_curve(labels, probs)
    fig, ax = plt.subplots(figsize=(4.5, 4.5), dpi=110)
    ax.plot(fpr, tpr, lw=2, label=f"AUC {auc:.3f}")
    ax.plot([0, 1], [0, 1], "--", color="grey", lw=1)
    ax.set(xlabel="false positive rate (real called fake)", ylabel="true positive rate", title="ROC")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_reliability(labels: np.ndarray, probs: np.ndarray, path: Path, bins: int = 10) -> None:
    observed, predicted = calibration_curve(labels, probs, n_bins=bins, strategy="uniform")
    fig, ax = plt.subplots(figsize=(4.5, 4.5), dpi=110)
    ax.plot([0, 1], [0, 1], "--", color="grey", lw=1, label="perfect calibration")
    ax.plot(predicted, observed, "o-", lw=2, label="model")
    ax.hist(probs, bins=bins, range=(0, 1), weights=np.full(len(probs), 1 / len(probs)), alpha=0.25, label="share of images")
    ax.set(xlabel="predicted P(fake)", ylabel="observed share of fakes", title="Reliability", xlim=(0, 1), ylim=(0, 1))
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def evaluate(analyzer, dataset: str | Path, out_dir: str | Path, crops: bool = False, limit: int | None = None) -> dict:
    dataset, out_dir = Path(dataset), Path(out_dir)
    files = labelled_files(dataset, limit)
    probs, labels, skipped = score_files(analyzer, files, crops)
    if len(np.unique(labels)) < 2:
        raise FakescopeError(f"{dataset}: need scored real and fake examples, got {len(labels)} scores")
    metrics = metrics_with_intervals(labels, probs)
    out_dir.mkdir(parents=True, exist_ok=True)
    plot_roc(labels, probs, metrics["auc"]["value"], out_dir / "roc.png")
    plot_reliability(labels, probs, out_dir / "reliability.png")
    result = {
        "dataset": str(dataset), "crops": crops, "model": analyzer.ensemble.describe(),
        "count": {"real": int((labels == 0).sum()), "fake": int((labels == 1).sum()), "skipped": len(skipped)},
        "metrics": metrics, "skipped": skipped,
    }
    (out_dir / "metrics.json").write_text(json.dumps(result, indent=2))
    np.savez_compressed(out_dir / "scores.npz", probs=probs, labels=labels)
    return result


def metrics_line(result: dict) -> str:
    m = result["metrics"]
    parts = [f"{name} {v['value']:.3f} [{v['low']:.3f}, {v['high']:.3f}]" for name, v in m.items()]
    return f"{result['count']['real']} real, {result['count']['fake']} fake: " + "; ".join(parts)
