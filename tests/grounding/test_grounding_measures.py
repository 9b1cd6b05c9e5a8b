"""Grounding measures against independent references and hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from conceptlens.errors import DataError
from conceptlens.grounding import concept_auroc, explanation_precision, match_concepts, normalise_text

nan = np.nan


def test_concept_auroc_matches_sklearn_per_column_with_unknowns_removed():
    rng = np.random.default_rng(0)
    n, k = 60, 7
    acts = rng.normal(size=(n, k))
    truth = (rng.random((n, k)) < 0.4).astype(float)
    truth[rng.random((n, k)) < 0.3] = nan
    truth[:, 3] = 1.0  # one class only -> undefined
    truth[:, 5] = nan  # nothing known -> undefined
    out = concept_auroc(acts, truth)
    for j in range(k):
        known = ~np.isnan(truth[:, j])
        if j in (3, 5):
            assert np.isnan(out["per_concept"][j])
        else:
            assert out["per_concept"][j] == pytest.approx(roc_auc_score(truth[known, j], acts[known, j]))
    assert out["n_defined"] == k - 2
    assert out["mean"] == pytest.approx(np.nanmean(out["per_concept"]))


def test_concept_auroc_hand_case():
    acts = np.array([[0.1, 0.9, 0.0], [0.4, 0.0, 1.0], [0.35, 0.2, 2.0], [0.8, 5.0, 3.0]])
    truth = np.array([[0, 1, 1], [0, nan, 1], [1, 0, nan], [1, nan, 1]], dtype=float)
    out = concept_auroc(acts, truth)
    # col 0: the textbook 0.75; col 1: unknowns dropped (treating them as 0 would give 0.5); col 2: one class
    np.testing.assert_allclose(out["per_concept"], [0.75, 1.0, nan])
    assert out["mean"] == pytest.approx(0.875)
    assert out["n_defined"] == 2
    assert isinstance(out["mean"], float) and isinstance(out["n_defined"], int)


def test_concept_auroc_all_undefined_gives_nan_mean_without_warning():
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = concept_auroc(np.zeros((3, 2)), np.ones((3, 2)))
    assert np.isnan(out["mean"]) and out["n_defined"] == 0


@pytest.mark.parametrize("acts, truth, msg", [
    (np.zeros((3, 2)), np.zeros((3, 3)), "same"),
    (np.zeros((3, 2)), np.array([[0, 1], [2, 0], [1, nan]]), "only 1"),
    (np.array([[0, 1], [nan, 0], [1, 1]]), np.zeros((3, 2)), "NaN or infinite"),
    (np.array([[0, 1], [np.inf, 0], [1, 1]]), np.zeros((3, 2)), "NaN or infinite"),
    (np.zeros(3), np.zeros(3), "2-D"),
])
def test_concept_auroc_bad_inputs(acts, truth, msg):
    with pytest.raises(DataError, match=msg):
        concept_auroc(acts, truth)


# 3 classes x 6 concepts, k=2; expected values worked by hand in the comments
W = np.array([
    [0.5, 0.9, 0.5, -0.2, -0.7, 0.0],     # +: [1, 0] (0 beats 2 on the 0.5 tie) -> truth [0, 1] = 1/2
                                          # -: [4, 3] -> truth [1, 0] -> share false 1/2
    [-0.1, -0.3, 0.0, -0.3, -0.05, -0.3],  # +: none positive -> NaN
                                          # -: three-way tie at -0.3 -> [1, 3] -> truth [0, NaN] -> 1/1
    [0.2, 0.1, -0.4, 0.3, 0.0, 0.0],      # +: [3, 0] both unknown -> NaN; -: [2] -> truth 0 -> 1
])
T = np.array([
    [1, 0, nan, 0, 1, 1],
    [0, 0, 1, nan, 1, 1],
    [nan, 1, 0, nan, 1, 1],
], dtype=float)


def test_explanation_precision_hand_case():
    out = explanation_precision(W, T, k=2)
    np.testing.assert_allclose(out["positive_per_class"], [0.5, nan, nan])
    np.testing.assert_allclose(out["negative_per_class"], [0.5, 1.0, 1.0])
    assert out["positive"] == pytest.approx(0.5)
    assert out["negative"] == pytest.approx(2.5 / 3)
    assert out["n_scored"] == {"positive": 1, "negative": 3}


def test_explanation_precision_k_changes_the_set():
    # k=1: class 0 keeps only concept 1 (false) -> 0; k=5: concepts 1, 0, 2 -> truth [0, 1, NaN] -> 1/2
    assert explanation_precision(W, T, k=1)["positive_per_class"][0] == 0.0
    assert explanation_precision(W, T, k=5)["positive_per_class"][0] == 0.5
    # k=5 on class 2's positive side: 3, 0, 1 -> only concept 1 is known, and true
    assert explanation_precision(W, T, k=5)["positive_per_class"][2] == 1.0


@pytest.mark.parametrize("w, t, k, msg", [
    (W, T[:, :5], 2, "same"),
    (W, np.where(np.isnan(T), 0.5, T), 2, "only 1"),
    (np.where(W == 0, nan, W), T, 2, "NaN or infinite"),
    (W, T, 0, "positive integer"),
    (W, T, 1.5, "positive integer"),
    (W[0], T[0], 2, "2-D"),
])
def test_explanation_precision_bad_inputs(w, t, k, msg):
    with pytest.raises(DataError, match=msg):
        explanation_precision(w, t, k=k)


VECTORS = {
    "red wing": [1.0, 0.0, 0.0],
    "long beak": [0.0, 1.0, 0.0],
    "striped tail": [0.0, 0.0, 1.0],
    "crimson wing": [0.9, np.sqrt(1 - 0.81), 0.0],  # cosine 0.9 with "red wing"
    "blue feet": [0.6, 0.48, 0.64],                 # best is "striped tail" at 0.64
}
ANNOTATED = ["red wing", "long beak", "striped tail"]


def _fake_embed(calls):
    def embed(texts):
        calls.append(list(texts))
        return np.array([VECTORS[t] for t in texts])
    return embed


def test_normalise_text():
    assert normalise_text("The Red-Wing.") == normalise_text("red wing") == "redwing"
    assert normalise_text("An  apple!") == "apple"
    assert normalise_text("a") == "a"             # a lone article is kept
    assert normalise_text("theme park") == "themepark"  # only a whole leading word is an article


def test_match_concepts_exact_and_embedding_paths():
    calls = []
    free = ["The Red-Wing.", "crimson wing", "blue feet", "LONG beak"]
    out = match_concepts(free, ANNOTATED, embed=_fake_embed(calls), threshold=0.8)
    assert [r["text"] for r in out] == free
    assert (out[0]["match"], out[0]["how"], out[0]["similarity"]) == ("red wing", "exact", 1.0)
    assert (out[3]["match"], out[3]["how"]) == ("long beak", "exact")
    assert (out[1]["match"], out[1]["how"]) == ("red wing", "embedding")
    assert out[1]["similarity"] == pytest.approx(0.9)
    # below threshold: no match, but the nearest candidate and its score are shown for checking
    assert (out[2]["match"], out[2]["how"], out[2]["nearest"]) == (None, None, "striped tail")
    assert out[2]["similarity"] == pytest.approx(0.64)
    # only texts without an exact match are embedded
    assert calls == [["crimson wing", "blue feet"], ANNOTATED]
    # a lower threshold lets "blue feet" through
    assert match_concepts(["blue feet"], ANNOTATED, embed=_fake_embed([]), threshold=0.6)[0]["match"] == \
        "striped tail"


def test_match_concepts_without_embed_is_exact_only():
    out = match_concepts(["the long beak", "crimson wing"], ANNOTATED)
    assert out[0]["how"] == "exact"
    assert out[1] == {"text": "crimson wing", "match": None, "how": None, "similarity": None, "nearest": None}


def test_match_concepts_bad_inputs():
    with pytest.raises(DataError, match="strings"):
        match_concepts([3], ANNOTATED)
    with pytest.raises(DataError, match="L2-normalised"):
        match_concepts(["crimson wing"], ANNOTATED, embed=lambda ts: 2 * np.array([VECTORS[t] for t in ts]))
    with pytest.raises(DataError, match=r"\(1, d\)"):
        match_concepts(["crimson wing"], ANNOTATED, embed=lambda ts: np.ones((5, 3)) / np.sqrt(3))
    with pytest.raises(DataError, match="threshold"):
        match_concepts(["crimson wing"], ANNOTATED, embed=_fake_embed([]), threshold=1.5)
