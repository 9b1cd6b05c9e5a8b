"""The one prediction rule, scikit-learn's (`sklearn.metrics.top_k_accuracy_score`): classes
ranked by a stable ascending sort of the scores, reversed, so exact ties go to the HIGHER class
index. In the bottom layer so that a model's `predict` (methods) and every metric
(evaluation.metrics, which explains the rule) share it.
"""

from __future__ import annotations

import numpy as np

from .errors import DataError


def _checked(scores: np.ndarray) -> np.ndarray:
    scores = np.asarray(scores)
    if scores.ndim != 2:
        raise DataError(f"scores must be (n_images, n_classes); got shape {scores.shape}.")
    if np.issubdtype(scores.dtype, np.floating) and np.isnan(scores).any():
        raise DataError(f"{int(np.isnan(scores).any(1).sum())} image(s) have NaN class scores; "
                        "a prediction needs finite scores (check the model's weights and features).")
    return scores


def ranked_classes(scores: np.ndarray, k: int | None = None) -> np.ndarray:
    """(n, k) class indices by decreasing score; ties go to the higher class index
    (scikit-learn's `np.argsort(scores, kind="mergesort")[:, ::-1]`)."""
    scores = _checked(scores)
    return np.argsort(scores, axis=1, kind="mergesort")[:, ::-1][:, :k]


def predict_from_scores(scores: np.ndarray) -> np.ndarray:
    """The top-ranked class of each row under `ranked_classes`' rule (the last maximum)."""
    scores = _checked(scores)
    # the last index of the row maximum, i.e. ranked_classes(scores, 1)[:, 0], without a full sort
    return scores.shape[1] - 1 - np.argmax(scores[:, ::-1], axis=1)
