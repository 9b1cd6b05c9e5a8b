"""Accuracy (top-k, per class), calibration, NEC, and accuracy at a fixed NEC."""

from __future__ import annotations

import copy

import numpy as np


def top_k_accuracy(scores: np.ndarray, labels: np.ndarray, k: int = 1) -> float:
    """Fraction of rows whose label is among the k highest scores (ties count as hits
    only when the label's score is strictly above the (k+1)-th, so ties never help)."""
    labels = np.asarray(labels)
    k = min(k, scores.shape[1])
    own = scores[np.arange(len(labels)), labels]
    higher = (scores > own[:, None]).sum(1)
    return float((higher < k).mean()) if len(labels) else float("nan")


def per_class_accuracy(pred: np.ndarray, labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Accuracy within each class (NaN for classes with no example)."""
    labels = np.asarray(labels)
    hits = np.bincount(labels, weights=(pred == labels).astype(float), minlength=n_classes)
    counts = np.bincount(labels, minlength=n_classes)
    with np.errstate(invalid="ignore", divide="ignore"):
        return hits / counts


def expected_calibration_error(proba: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    """ECE with equal-width confidence bins (Guo et al., 2017)."""
    conf = proba.max(1)
    correct = (proba.argmax(1) == np.asarray(labels)).astype(float)
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        mask = which == b
        if mask.any():
            ece += mask.mean() * abs(correct[mask].mean() - conf[mask].mean())
    return float(ece)


def evaluate(model, bundle) -> dict:
    """The metrics every comparison table reports."""
    scores = model.decision_function(bundle)
    proba = model.predict_proba(bundle)
    labels = np.asarray(bundle.labels)
    pred = scores.argmax(1)
    per_class = per_class_accuracy(pred, labels, len(model.classes_))
    return {
        "top1": top_k_accuracy(scores, labels, 1),
        "top5": top_k_accuracy(scores, labels, 5),
        "mean_per_class": float(np.nanmean(per_class)),
        "ece": expected_calibration_error(proba, labels),
        "nec": model.nec_,
        "n": len(labels),
    }


def prune_to_nec(model, nec: int):
    """A copy keeping each class's `nec` largest-magnitude concept weights (others zero).

    For methods whose weights are dense by design (LaBo's softmax, Sparse-CBM), this is how
    the VLG-CBM protocol compares them at NEC = 5; sparse methods are refitted instead.
    """
    pruned = copy.deepcopy(model)
    W = np.array(model.class_weights_, copy=True)
    if nec < W.shape[1]:
        cut = np.argsort(-np.abs(W), axis=1)[:, nec:]
        np.put_along_axis(W, cut, 0.0, axis=1)
    pruned.class_weights_ = W
    return pruned
