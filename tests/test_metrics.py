"""Metrics against scikit-learn and hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from conceptlens.evaluation import (
    expected_calibration_error,
    per_class_accuracy,
    prune_to_nec,
    top_k_accuracy,
)


def test_top_k_matches_sklearn():
    from sklearn.metrics import top_k_accuracy_score

    rng = np.random.default_rng(0)
    scores = rng.normal(size=(200, 7))
    labels = rng.integers(0, 7, 200)
    for k in (1, 3, 5):
        assert top_k_accuracy(scores, labels, k) == pytest.approx(
            top_k_accuracy_score(labels, scores, k=k, labels=range(7)))


def test_per_class_matches_confusion_matrix():
    from sklearn.metrics import confusion_matrix

    rng = np.random.default_rng(1)
    labels, pred = rng.integers(0, 4, 100), rng.integers(0, 4, 100)
    cm = confusion_matrix(labels, pred, labels=range(4))
    np.testing.assert_allclose(per_class_accuracy(pred, labels, 4), cm.diagonal() / cm.sum(1))
    assert np.isnan(per_class_accuracy(np.array([0]), np.array([0]), 2)[1])


def test_ece_by_hand():
    proba = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.4, 0.6]])
    labels = np.array([0, 1, 1, 1])
    # bins of width 0.25: confidences 0.9, 0.8 fall in (0.75, 1] (accuracy 1/2, mean 0.85)
    # and 0.7, 0.6 in (0.5, 0.75] (accuracy 1, mean 0.65)
    assert expected_calibration_error(proba, labels, bins=4) == pytest.approx(
        0.5 * abs(0.5 - 0.85) + 0.5 * abs(1 - 0.65))
    # one bin of width 0.5 holds all four: accuracy 3/4 equals mean confidence 3/4
    assert expected_calibration_error(proba, labels, bins=2) == pytest.approx(0.0, abs=1e-12)


def test_prune_to_nec_keeps_largest_magnitudes():
    class Model:
        class_weights_ = np.array([[0.1, -0.5, 0.3, 0.0], [1.0, 2.0, -3.0, 0.5]])

    pruned = prune_to_nec(Model(), 2)
    np.testing.assert_array_equal(pruned.class_weights_, [[0, -0.5, 0.3, 0], [0, 2.0, -3.0, 0]])
    np.testing.assert_array_equal(Model.class_weights_[0], [0.1, -0.5, 0.3, 0.0])  # original kept
