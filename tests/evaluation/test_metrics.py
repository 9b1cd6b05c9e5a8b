"""Metrics against scikit-learn and hand-computed cases."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from conceptlens.errors import ConfigError, DataError
from conceptlens.evaluation import (
    evaluate,
    expected_calibration_error,
    per_class_accuracy,
    prune_to_nec,
    top_k_accuracy,
)
from conceptlens.evaluation.metrics import predict_from_scores, ranked_classes


def _sklearn_top_k(labels, scores, k):
    from sklearn.exceptions import UndefinedMetricWarning
    from sklearn.metrics import top_k_accuracy_score

    with warnings.catch_warnings():  # k >= n_classes: sklearn warns that the score is perfect
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        return top_k_accuracy_score(labels, scores, k=k, labels=range(scores.shape[1]))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_top_k_matches_sklearn_with_ties(seed):
    rng = np.random.default_rng(seed)
    # integer scores from a small range: most rows have ties, some at the label's score
    scores = rng.integers(0, 3, size=(300, 7)).astype(float)
    scores[:20] = 1.0  # constant rows: every class tied
    labels = rng.integers(0, 7, 300)
    for k in range(1, 8):
        assert top_k_accuracy(scores, labels, k) == pytest.approx(_sklearn_top_k(labels, scores, k))


def test_top_k_matches_sklearn_without_ties():
    rng = np.random.default_rng(3)
    scores = rng.normal(size=(200, 7))
    labels = rng.integers(0, 7, 200)
    for k in (1, 3, 5):
        assert top_k_accuracy(scores, labels, k) == pytest.approx(_sklearn_top_k(labels, scores, k))


def test_constant_predictor_is_not_perfect():
    labels = np.repeat(np.arange(4), 5)
    scores = np.zeros((20, 4))
    # the tie goes to the highest class index, so only class 3's images are hits
    assert top_k_accuracy(scores, labels, 1) == pytest.approx(0.25)
    assert top_k_accuracy(scores, labels, 2) == pytest.approx(0.5)
    assert top_k_accuracy(scores, labels, 1) == pytest.approx(_sklearn_top_k(labels, scores, 1))


def test_prediction_rule_is_sklearns_ranking():
    scores = np.array([[1.0, 3.0, 3.0, 0.0], [2.0, 2.0, 2.0, 2.0], [0.5, 0.1, 0.2, 0.3]])
    np.testing.assert_array_equal(predict_from_scores(scores), [2, 3, 0])
    np.testing.assert_array_equal(ranked_classes(scores, 2), [[2, 1], [3, 2], [0, 3]])


def test_bad_inputs_are_reported():
    with pytest.raises(ConfigError, match="positive integer"):
        top_k_accuracy(np.zeros((2, 3)), np.array([0, 1]), 0)
    with pytest.raises(DataError, match="NaN"):
        top_k_accuracy(np.array([[0.0, np.nan]]), np.array([0]), 1)
    assert np.isnan(top_k_accuracy(np.zeros((0, 3)), np.array([], dtype=int), 1))


class _Scored:
    """A fitted-model stand-in returning fixed scores."""

    def __init__(self, scores):
        self.scores = np.asarray(scores, dtype=float)
        self.classes_ = tuple(f"c{i}" for i in range(self.scores.shape[1]))
        self.nec_ = 0.0

    def decision_function(self, bundle):
        return self.scores

    def predict_proba(self, bundle):
        e = np.exp(self.scores - self.scores.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)


class _Bundle:
    def __init__(self, labels):
        self.labels = np.asarray(labels)


def test_evaluate_uses_one_prediction_rule_on_ties():
    rng = np.random.default_rng(4)
    m = 6
    labels = np.repeat(np.arange(m), 8)  # balanced: top1 must equal mean per-class accuracy
    scores = rng.integers(0, 2, size=(len(labels), m)).astype(float)
    scores[:10] = 0.0  # fully tied rows, as a training-free method can produce
    out = evaluate(_Scored(scores), _Bundle(labels))
    pred = predict_from_scores(scores)
    assert out["top1"] == pytest.approx(np.mean(pred == labels))
    assert out["top1"] == pytest.approx(_sklearn_top_k(labels, scores, 1))
    assert out["top5"] == pytest.approx(_sklearn_top_k(labels, scores, 5))
    per_class = per_class_accuracy(pred, labels, m)
    assert out["mean_per_class"] == pytest.approx(np.nanmean(per_class))
    assert out["top1"] == pytest.approx(out["mean_per_class"])


def test_top_k_only_below_the_number_of_classes():
    """Top-5 of 3 (or 5) classes is 100% by definition: evaluate leaves it out, and the tables show
    no top-5 column; with 6 classes it is there."""
    from conceptlens.evaluation.metrics import reported_top_k
    from conceptlens.runs.tables import results_table

    assert reported_top_k(3) == () and reported_top_k(5) == () and reported_top_k(6) == (5,)
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 4)
    three = evaluate(_Scored(rng.normal(size=(12, 3))), _Bundle(labels))
    assert "top5" not in three and "top1" in three
    table = results_table({"m": three}, nec=0)
    assert "top-5" not in table.splitlines()[0] and len(table.splitlines()[2].split("|")) == 7
    six = evaluate(_Scored(rng.normal(size=(12, 6))), _Bundle(np.arange(12) % 6))
    assert "top5" in six and "top-5" in results_table({"m": six}, nec=0)


def test_evaluate_constant_predictor():
    labels = np.repeat(np.arange(4), 3)
    out = evaluate(_Scored(np.zeros((12, 4))), _Bundle(labels))
    assert out["top1"] == pytest.approx(0.25) and out["mean_per_class"] == pytest.approx(0.25)
    # confidence 1/4 everywhere, accuracy 1/4: perfectly calibrated under the same prediction
    assert out["ece"] == pytest.approx(0.0, abs=1e-12)


def test_per_class_matches_confusion_matrix():
    from sklearn.metrics import confusion_matrix

    rng = np.random.default_rng(1)
    labels, pred = rng.integers(0, 4, 100), rng.integers(0, 4, 100)
    cm = confusion_matrix(labels, pred, labels=range(4))
    np.testing.assert_allclose(per_class_accuracy(pred, labels, 4), cm.diagonal() / cm.sum(1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
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
