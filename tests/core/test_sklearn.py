"""conceptlens.sklearn: a method as a scikit-learn classifier on precomputed embeddings.

scikit-learn's own estimator checks run on the estimator with `linear_probe` (every check, under a
second each). With `label_free` every check also passes (55 checks, 54 passed, 1 skipped: see
SKIPPED), but its path solver makes them take ~12 minutes on 2 shared cores, so the tests run the
Label-free estimator through the interop that matters (clone, Pipeline, GridSearchCV,
cross_val_score) instead.
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone, is_classifier
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer
from sklearn.utils.estimator_checks import parametrize_with_checks

from conceptlens.sklearn import ConceptBottleneckClassifier
from conceptlens.testing import make_problem

# the checks skipped, each with why
SKIPPED = {
    # scikit-learn skips it itself unless SCIPY_ARRAY_API=1; conceptlens computes in numpy/torch
    "check_array_api_input": "array API inputs are not supported (numpy in, numpy out)",
}


@parametrize_with_checks([ConceptBottleneckClassifier("linear_probe")],
                         expected_failed_checks=lambda est: {})
def test_scikit_learn_estimator_checks(estimator, check):
    check(estimator)


def toy():
    train, val, test, ctx = make_problem(n_per_class=20)
    X = np.concatenate([train.embedding, test.embedding])
    y = np.array(ctx.classes)[np.concatenate([train.labels, test.labels])]
    return X, y, ctx


def label_free(ctx, **params):
    return ConceptBottleneckClassifier("label_free", concept_embeddings=ctx.concept_embedding,
                                       concepts=ctx.concepts, steps=100, check_every=25, **params)


def test_interop_basics():
    X, y, ctx = toy()
    est = label_free(ctx, lam=1e-3)
    assert is_classifier(est) and est.lam == 1e-3
    assert est.get_params()["lam"] == 1e-3 and est.get_params()["steps"] == 100
    twin = clone(est)
    assert twin.get_params() .keys() == est.get_params().keys() and twin.lam == 1e-3
    est.set_params(alpha=0.9)  # a method parameter not given to the constructor
    assert est.get_params()["alpha"] == 0.9
    with pytest.raises(ValueError, match="Invalid parameter 'lamb'"):
        est.set_params(lamb=1.0)
    est.fit(X, y)
    assert list(est.classes_) == list("abcd") and est.n_features_in_ == X.shape[1]
    proba = est.predict_proba(X)
    assert proba.shape == (len(X), 4) and np.allclose(proba.sum(1), 1)
    assert (est.predict(X) == est.classes_[proba.argmax(1)]).all()
    assert est.score(X, y) > 0.8
    assert est.concept_activations(X).shape == (len(X), len(est.concepts_))
    assert set(est.concepts_) <= set(ctx.concepts)


def test_pipeline_and_cross_val_score():
    X, y, ctx = toy()
    pipe = make_pipeline(FunctionTransformer(), label_free(ctx, lam=1e-3))
    scores = cross_val_score(pipe, X, y, cv=2)
    assert scores.shape == (2,) and scores.min() > 0.7


def test_grid_search_over_label_free_lambda():
    """GridSearchCV over the elastic-net lambda of Label-free CBM's final layer."""
    X, y, ctx = toy()
    search = GridSearchCV(label_free(ctx), {"lam": [1e-3, 3e-2]}, cv=2).fit(X, y)
    assert search.best_params_["lam"] in (1e-3, 3e-2)
    assert search.best_estimator_.model_.lam == search.best_params_["lam"]
    assert search.score(X, y) > 0.7


def test_concept_methods_need_concepts():
    X, y, _ = toy()
    with pytest.raises(ValueError, match="needs concepts"):
        ConceptBottleneckClassifier("label_free").fit(X, y)
