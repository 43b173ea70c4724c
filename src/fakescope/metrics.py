"""Classification metrics with bootstrap intervals, and calibration fits (temperature; Platt
scaling with classes weighted equally)."""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.stats import rankdata
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss, roc_auc_score, roc_curve

from .types import FakescopeError

EPS = 1e-6


def equal_error_rate(labels: np.ndarray, probs: np.ndarray) -> float:
    fpr, tpr, _ = roc_curve(labels, probs)
    fnr = 1 - tpr
    i = int(np.nanargmin(np.abs(fnr - fpr)))
    return float((fpr[i] + fnr[i]) / 2)


def point_metrics(labels: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    labels = np.asarray(labels, dtype=int)
    probs = np.clip(np.asarray(probs, dtype=float), EPS, 1 - EPS)
    predicted = probs >= 0.5
    tpr = predicted[labels == 1].mean() if (labels == 1).any() else np.nan
    tnr = (~predicted[labels == 0]).mean() if (labels == 0).any() else np.nan
    two_classes = len(np.unique(labels)) == 2
    return {
        "auc": float(roc_auc_score(labels, probs)) if two_classes else float("nan"),
        "log_loss": float(log_loss(labels, probs, labels=[0, 1])),
        "accuracy": float((predicted == labels).mean()),
        "balanced_accuracy": float(np.nanmean([tpr, tnr])),
        "eer": equal_error_rate(labels, probs) if two_classes else float("nan"),
    }


def metrics_with_intervals(
    labels, probs, rounds: int = 1000, seed: int = 0, metrics=point_metrics
) -> dict[str, dict[str, float]]:
    """Each metric with a 95% percentile bootstrap interval (resampling images); `metrics`
    maps (labels, probs) to named values (default: all of point_metrics)."""
    labels, probs = np.asarray(labels, dtype=int), np.asarray(probs, dtype=float)
    point = metrics(labels, probs)
    rng = np.random.default_rng(seed)
    samples: dict[str, list[float]] = {name: [] for name in point}
    for _ in range(rounds):
        idx = rng.integers(0, len(labels), len(labels))
        if len(np.unique(labels[idx])) < 2:
            continue
        for name, value in metrics(labels[idx], probs[idx]).items():
            samples[name].append(value)
    return {
        name: {
            "value": point[name],
            "low": float(np.percentile(s, 2.5)),
            "high": float(np.percentile(s, 97.5)),
        }
        for name, s in samples.items()
    }


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The T minimising the log loss of sigmoid(logit / T) (Guo et al., 2017)."""
    logits, labels = np.asarray(logits, dtype=float), np.asarray(labels, dtype=float)

    def nll(log_t: float) -> float:
        z = logits / np.exp(log_t)
        return float(np.mean(np.logaddexp(0, z) - labels * z))

    return float(np.exp(minimize_scalar(nll, bounds=(-3, 3), method="bounded").x))


def fit_platt(logits: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """(T, b) minimising the log loss of sigmoid(logit / T + b) with both classes weighted
    equally (Platt, 1999). The weighting makes P(fake) read at even odds whatever share of
    fakes the held-out crops have (DFDC's training set: two fakes per real); the bias then
    corrects a model that leans to one class, which a temperature alone cannot."""
    logits, labels = np.asarray(logits, dtype=float), np.asarray(labels, dtype=int)
    # C=inf: no penalty (sklearn 1.8 deprecated penalty=None for it).
    fitted = LogisticRegression(C=np.inf, class_weight="balanced").fit(logits[:, None], labels)
    slope, bias = float(fitted.coef_[0, 0]), float(fitted.intercept_[0])
    if not slope > 0:  # NaN fails too
        raise FakescopeError("these scores do not rank fakes above reals: nothing to calibrate")
    return 1 / slope, bias


def balanced_log_loss(labels: np.ndarray, probs: np.ndarray) -> float:
    """The log loss with both classes weighted equally, as `fit_platt` minimises it."""
    labels = np.asarray(labels, dtype=int)
    weights = np.where(labels == 1, 0.5 / labels.mean(), 0.5 / (1 - labels.mean()))
    return float(log_loss(labels, np.clip(probs, EPS, 1 - EPS), sample_weight=weights))


def _auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC as the Mann-Whitney U (ties count half): roc_auc_score's value, without its
    input checks, which dominate the time of a bootstrap's thousands of calls."""
    ranks = rankdata(scores)
    positives = int(labels.sum())
    negatives = len(labels) - positives
    return float(
        (ranks[labels == 1].sum() - positives * (positives + 1) / 2) / (positives * negatives)
    )


def auc_difference(
    labels, first, second, clusters=None, rounds: int = 1000, seed: int = 0
) -> dict[str, float]:
    """AUC(second) - AUC(first) on the same items, with a 95% percentile bootstrap interval
    that resamples clusters (for videos: scenes, since a real and the fakes made from it
    rise and fall together; default: each item its own). Both models see every draw, so
    the interval is of the difference itself, far narrower than two separate intervals."""
    labels = np.asarray(labels, dtype=int)
    first, second = np.asarray(first, dtype=float), np.asarray(second, dtype=float)
    clusters = np.arange(len(labels)) if clusters is None else np.asarray(clusters)
    if len(np.unique(labels)) < 2:
        raise FakescopeError("an AUC needs reals and fakes")
    names, index = np.unique(clusters, return_inverse=True)
    members = [np.flatnonzero(index == i) for i in range(len(names))]
    rng = np.random.default_rng(seed)
    samples = []
    for _ in range(rounds):
        idx = np.concatenate([members[i] for i in rng.integers(0, len(names), len(names))])
        if len(np.unique(labels[idx])) < 2:
            continue
        samples.append(_auc(labels[idx], second[idx]) - _auc(labels[idx], first[idx]))
    return {
        "value": _auc(labels, second) - _auc(labels, first),
        "low": float(np.percentile(samples, 2.5)),
        "high": float(np.percentile(samples, 97.5)),
    }


def mean_with_interval(
    values, clusters=None, rounds: int = 1000, seed: int = 0
) -> dict[str, float]:
    """The mean of per-image values (NaNs skipped) with a 95% percentile bootstrap interval
    that resamples clusters (the videos the images come from, whose frames are alike; default:
    each image its own); NaN for no values."""
    values = np.asarray(values, dtype=float)
    clusters = np.arange(len(values)) if clusters is None else np.asarray(clusters)
    kept = ~np.isnan(values)
    values, clusters = values[kept], clusters[kept]
    if not len(values):
        return {"value": float("nan"), "low": float("nan"), "high": float("nan")}
    names, index = np.unique(clusters, return_inverse=True)
    sums = np.bincount(index, values, len(names))
    counts = np.bincount(index, minlength=len(names)).astype(float)
    rng = np.random.default_rng(seed)
    drawn = rng.integers(0, len(names), (rounds, len(names)))
    means = sums[drawn].sum(1) / counts[drawn].sum(1)
    return {
        "value": float(values.mean()),
        "low": float(np.percentile(means, 2.5)),
        "high": float(np.percentile(means, 97.5)),
    }
