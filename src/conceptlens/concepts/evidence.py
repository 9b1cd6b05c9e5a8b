"""Evidence for a concept without annotations: does its activation pick out its classes?

A concept source links each concept to the classes it was written for ("laces" for Sneaker and
Ankle boot). If the concept means what it says on these images, its activation should be higher
on images of those classes than on the others. `concept_evidence` measures that as a ROC AUC per
concept on held-out images: positives are the images whose class the concept is linked to,
negatives all the rest. 0.5 is chance; a concept below a floor (EVIDENCE_FLOOR by default) is
not evidence of its classes on this backbone and is kept out of class-consistent explanations
(methods/class_consistent.py), and listed with its figure.

This is weaker than annotations (a concept can separate its classes for the wrong reason, e.g.
"laces" lighting up on every shoe), so reports show it beside the annotated measures, never
instead of them. It needs links: a concept linked to no class, or to every class, has no AUC
(NaN).
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score

from ..errors import DataError

EVIDENCE_FLOOR = 0.6


def concept_evidence(activations, labels, links) -> np.ndarray:
    """(k,) AUROC of each concept's activation (n, k) for "the image's class is linked to the
    concept" (links: (m, k) 0/1, labels: (n,) class indices); NaN where it is undefined (the
    concept is linked to no class or to all of them, or the images hold only one side)."""
    a = np.asarray(activations, dtype=np.float64)
    L = np.asarray(links, dtype=bool)
    y = np.asarray(labels, dtype=np.int64)
    if a.ndim != 2 or L.ndim != 2 or a.shape[1] != L.shape[1]:
        raise DataError(f"activations {a.shape} and links {L.shape} must be (images, k) and (classes, k).")
    if len(y) != len(a):
        raise DataError(f"{len(a)} activation rows but {len(y)} labels.")
    if len(y) and (y.min() < 0 or y.max() >= L.shape[0]):
        raise DataError(f"labels must lie in [0, {L.shape[0]}); got {y.min()}..{y.max()}.")
    if not np.isfinite(a).all():
        raise DataError("activations contain NaN or infinite values.")
    out = np.full(a.shape[1], np.nan)
    for j in range(a.shape[1]):
        positive = L[y, j]
        if positive.any() and not positive.all():
            out[j] = roc_auc_score(positive, a[:, j])
    return out
