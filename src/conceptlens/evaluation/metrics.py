"""Accuracy (top-k, per class), calibration, NEC, and accuracy at a fixed NEC.

Every metric in `evaluate` comes from ONE prediction rule, scikit-learn's
(`sklearn.metrics.top_k_accuracy_score`, multiclass branch): classes are ranked by a stable
ascending sort of the scores, reversed, so exact ties go to the HIGHER class index, and a tie
is never counted as a hit for several classes at once (a constant predictor scores 1/m on a
balanced set, not 100%). For two classes scikit-learn refuses 2-D scores; we apply the same
multiclass rule there too.
"""

from __future__ import annotations

import copy

import numpy as np

from ..errors import ConfigError, DataError
from ..ranking import predict_from_scores, ranked_classes


def top_k_accuracy(scores: np.ndarray, labels: np.ndarray, k: int = 1) -> float:
    """Fraction of rows whose label is among the k top-ranked classes (scikit-learn's rule:
    equals `top_k_accuracy_score(labels, scores, k=k, labels=range(m))`, ties included)."""
    if int(k) != k or k < 1:
        raise ConfigError(f"top_k_accuracy: k must be a positive integer; got {k!r}.")
    labels = np.asarray(labels)
    scores = np.asarray(scores)
    if not len(labels):
        return float("nan")
    if len(scores) != len(labels):
        raise DataError(f"top_k_accuracy: {len(scores)} score rows but {len(labels)} labels.")
    top = predict_from_scores(scores)[:, None] if k == 1 else ranked_classes(scores, int(k))
    return float((top == labels[:, None]).any(1).mean())


def per_class_accuracy(pred: np.ndarray, labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Accuracy within each class (NaN for classes with no example)."""
    labels = np.asarray(labels)
    hits = np.bincount(labels, weights=(pred == labels).astype(float), minlength=n_classes)
    counts = np.bincount(labels, minlength=n_classes)
    with np.errstate(invalid="ignore", divide="ignore"):
        return hits / counts


def expected_calibration_error(proba: np.ndarray, labels: np.ndarray, bins: int = 15,
                               pred: np.ndarray | None = None) -> float:
    """ECE with equal-width confidence bins (Guo et al., 2017). `pred` defaults to the same
    tie rule as `top_k_accuracy`; `evaluate` passes the predictions it scores everything with."""
    proba = np.asarray(proba)
    conf = proba.max(1)
    pred = predict_from_scores(proba) if pred is None else np.asarray(pred)
    correct = (pred == np.asarray(labels)).astype(float)
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        mask = which == b
        if mask.any():
            ece += mask.mean() * abs(correct[mask].mean() - conf[mask].mean())
    return float(ece)


TOP_K = (5,)  # the top-k accuracies beyond top-1 that `evaluate` reports, where k < classes


def reported_top_k(n_classes: int, ks=TOP_K) -> tuple[int, ...]:
    """The k of `ks` below the number of classes: top-k with k >= m is 100% by definition
    (every class is among the top m), so it is not reported."""
    return tuple(k for k in ks if k < n_classes)


def evaluate(model, bundle) -> dict:
    """The metrics every comparison table reports, all from one prediction per image:
    `predict_from_scores(decision_function)` (so top1 == mean(pred == y), and on a balanced
    set top1 == mean per-class accuracy). "top5" is there only with more than 5 classes
    (`reported_top_k`)."""
    scores = np.asarray(model.decision_function(bundle))
    proba = model.predict_proba(bundle)
    labels = np.asarray(bundle.labels)
    pred = predict_from_scores(scores)
    per_class = per_class_accuracy(pred, labels, len(model.classes_))
    top_k = {f"top{k}": top_k_accuracy(scores, labels, k) for k in reported_top_k(len(model.classes_))}
    return {
        "top1": float((pred == labels).mean()) if len(labels) else float("nan"),
        **top_k,
        "mean_per_class": float(np.nanmean(per_class)),
        "ece": expected_calibration_error(proba, labels, pred=pred),
        "nec": model.nec_,
        "n": len(labels),
    }


def prune_to_nec(model, nec: int):
    """A copy keeping each class's `nec` largest-magnitude concept weights (others zero;
    ties broken toward the lower concept index), intercept unchanged, no retraining.

    This is the "prune" protocol of `evaluation.nec.accuracy_at_nec` (and the fallback of
    its "refit" protocol for methods without a refittable sparse layer); the VLG-CBM
    protocol is `accuracy_at_nec(..., protocol="vlg")`.
    """
    pruned = copy.deepcopy(model)
    W = np.array(model.class_weights_, copy=True)
    if nec < W.shape[1]:
        cut = np.argsort(-np.abs(W), axis=1, kind="stable")[:, nec:]
        np.put_along_axis(W, cut, 0.0, axis=1)
    pruned.class_weights_ = W
    return pruned
