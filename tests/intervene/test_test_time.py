"""Test-time improvement: classes without labelled images of the new domain are left alone."""

from __future__ import annotations

import numpy as np
import pytest

from conceptlens.features import FeatureBundle
from conceptlens.intervene import evaluate_test_time_improvement, improve_at_test_time
from conceptlens.methods import get_method
from conceptlens.methods.base import Context

M, K, D = 4, 12, 32


def _concepts():
    fixed = np.random.default_rng(1234)
    C = fixed.normal(size=(K, D))
    C /= np.linalg.norm(C, axis=1, keepdims=True)
    prior = np.zeros((M, K), np.float32)
    for c in range(M):
        prior[c, 3 * c: 3 * c + 3] = 1
    return C.astype(np.float32), prior


def _bundle(n_per_class, seed, shift=False):
    """Concepts 3c..3c+2 belong to class c. The shifted domain adds concept 0 (evidence for
    class a) to every image and weakens class b's concepts to a third."""
    C, prior = _concepts()
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(M), n_per_class)
    emb = prior[labels] @ C + 0.6 * rng.normal(size=(len(labels), D))
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    if shift:
        emb += 0.8 * C[0]
        weak = labels == 1
        emb[weak] -= (2 / 3) * (emb[weak] @ C[3:6].T) @ C[3:6]
    return FeatureBundle([str(i) for i in range(len(labels))], labels, tuple("abcd"),
                         emb.astype(np.float32), None, "toy")


@pytest.fixture(scope="module")
def fitted():
    C, prior = _concepts()
    ctx = Context(tuple("abcd"), [f"concept {i}" for i in range(K)], C, prior, None, "toy")
    train = _bundle(40, seed=3)
    return get_method("posthoc", lam=2e-3).fit(train, ctx, _bundle(10, seed=4)), train


def _class_accuracy(model, bundle, c):
    rows = bundle.labels == c
    return float((model.predict(bundle)[rows] == c).mean())


def _improve_without(fitted, missing):
    model, train = fitted
    few = _bundle(4, seed=9, shift=True)
    few = few.rows(few.labels != missing)  # no labelled image of `missing` in the new domain
    return model, improve_at_test_time(model, train, few)


# Class a is left out here: the shift adds a's concept to every image, so the source model
# calls everything a (a's accuracy 100%) and any repair of the other classes lowers it.
@pytest.mark.parametrize("missing", [1, 2, 3])
def test_a_class_without_labelled_images_does_not_lose_accuracy(fitted, missing):
    model, improved = _improve_without(fitted, missing)
    held = _bundle(25, seed=11, shift=True)
    assert _class_accuracy(improved, held, missing) >= _class_accuracy(model, held, missing)


@pytest.mark.parametrize("missing", range(M))
def test_a_class_without_labelled_images_keeps_its_concepts(fitted, missing):
    model, improved = _improve_without(fitted, missing)
    masked = {e["concept"] for e in improved.edit_log_ if e["factor"] == 0}
    own = {model.concepts_[k] for k in np.flatnonzero(model.class_weights_[missing] > 0)}
    assert not masked & own, f"masked {sorted(masked & own)} of class {missing}, which had no image"
    amplified = [e for e in improved.edit_log_ if e["factor"] > 0]
    assert all(e["classes"] != [model.classes_[missing]] for e in amplified)
    np.testing.assert_array_equal(improved.class_weights_[missing] > 0, model.class_weights_[missing] > 0)


def test_the_shift_is_still_repaired_with_a_class_missing(fitted):
    model, train = fitted
    few = _bundle(4, seed=9, shift=True)
    few = few.rows(few.labels != 3)
    held = _bundle(25, seed=11, shift=True)
    _, report = evaluate_test_time_improvement(model, train, few, held)
    assert report["after"] > report["before"] + 0.05
    assert report["labelled_images"] == 12
