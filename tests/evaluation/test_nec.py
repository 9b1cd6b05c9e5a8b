"""Accuracy at a fixed NEC: the VLG-CBM protocol's pieces against brute force and by hand."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from conceptlens.errors import ConfigError
from conceptlens.evaluation import accuracy_at_nec, evaluate, global_truncation
from conceptlens.evaluation.nec import first_at_density, vlg_lambdas, vlg_path
from conceptlens.features import FeatureBundle
from conceptlens.methods import Method, get_method
from conceptlens.methods.base import Context

M, K, D = 4, 12, 16


def _problem(seed=0, n_per_class=25):
    """Concepts 3c..3c+2 belong to class c; an image mixes its class's concept vectors."""
    fixed = np.random.default_rng(99)
    rng = np.random.default_rng(seed)
    concepts = fixed.normal(size=(K, D))
    concepts /= np.linalg.norm(concepts, axis=1, keepdims=True)
    prior = np.zeros((M, K), np.float32)
    for c in range(M):
        prior[c, 3 * c: 3 * c + 3] = 1

    def bundle(n):
        labels = np.repeat(np.arange(M), n)
        emb = prior[labels] @ concepts + 0.7 * rng.normal(size=(len(labels), D))
        emb /= np.linalg.norm(emb, axis=1, keepdims=True)
        return FeatureBundle([str(i) for i in range(len(labels))], labels, tuple("abcd"),
                             emb.astype(np.float32), None, "toy")

    ctx = Context(tuple("abcd"), [f"concept {i}" for i in range(K)], concepts.astype(np.float32),
                  prior, None, "toy")
    return bundle(n_per_class), bundle(10), bundle(20), ctx


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def problem():
    return _problem()


@pytest.fixture(scope="module")
def posthoc(problem):
    train, val, _, ctx = problem
    return get_method("posthoc", lam=1e-3).fit(train, ctx, val)


def test_global_truncation_by_hand_and_brute_force():
    W = np.array([[3.0, -2.0, 0.1], [0.5, 0.2, -0.3]])
    # global, not per class: both survivors are in row 0
    np.testing.assert_array_equal(global_truncation(W, 2), [[3.0, -2.0, 0], [0, 0, 0]])
    rng = np.random.default_rng(0)
    for _ in range(5):
        W = rng.normal(size=(3, 4))
        for n_keep in (1, 4, 7):
            best = max(itertools.combinations(range(W.size), n_keep),
                       key=lambda idx: np.abs(W.ravel()[list(idx)]).sum())
            expected = np.zeros(W.size)
            expected[list(best)] = W.ravel()[list(best)]
            np.testing.assert_array_equal(global_truncation(W, n_keep), expected.reshape(W.shape))
    assert (global_truncation(np.ones((2, 3)), 4) != 0).sum() == 4  # exactly n_keep, even with ties


def test_density_rule_picks_the_first_point_at_or_above_the_target():
    densities = [0.0, 0.0, 0.05, 0.1, 0.25, 0.5]
    assert first_at_density(densities, 0.1) == 3  # equal counts as reached
    assert first_at_density(densities, 0.07) == 3  # not the closer 0.05 below it
    assert first_at_density(densities, 0.0) == 0
    assert first_at_density(densities, 0.9) == 5  # never reached: the last point, as the loop ends
    with pytest.raises(ConfigError, match="empty"):
        first_at_density([], 0.1)


def test_lambda_grid_is_glm_sagas():
    lams = vlg_lambdas()
    assert len(lams) == 150
    assert lams[0] == pytest.approx(0.1 / 0.99) and lams[-1] == pytest.approx(0.1 / 0.99 * 2 ** -15)
    np.testing.assert_allclose(lams[1:] / lams[:-1], (2 ** -15) ** (1 / 149))


def test_path_stops_where_the_full_path_first_reaches_the_density(problem):
    train = problem[0]
    Z = np.asarray(train.embedding @ problem[3].concept_embedding.T)
    Z = ((Z - Z.mean(0)) / Z.std(0, ddof=1)).astype(np.float32)
    grid = np.geomspace(0.4, 1e-3, 25)  # from above this problem's lambda_max (0.3)
    full = vlg_path(Z, train.labels, M, 2.0, grid)  # a density never reached: the whole grid
    assert len(full.lambdas) == 25 and full.densities[0] == 0.0 and full.densities[-1] > 0.5
    target = 5 / K
    expected = next(i for i, d in enumerate(full.densities) if d >= target)
    short = vlg_path(Z, train.labels, M, target, grid)
    assert len(short.lambdas) == expected + 1
    assert short.lambdas[-1] == full.lambdas[expected]
    np.testing.assert_allclose(short.weights[-1], full.weights[expected])
    assert short.densities[-2] < target <= short.densities[-1]


def test_vlg_protocol_on_a_fitted_model(problem, posthoc):
    train, _, test, _ = problem
    nec = 2
    out = accuracy_at_nec(posthoc, train, test, nec, protocol="vlg")
    at = out["model"]
    # exactly nec * m weights, the method's own layer and the original model untouched
    assert (at.class_weights_ != 0).sum() == nec * M and out["nec"] == nec
    assert out["protocol"] == out["how"] == "vlg" and out["density"] >= nec / K
    assert at is not posthoc and posthoc.class_weights_ is not at.class_weights_

    # the reference by hand: standardise, path, first point at density, global top-(nec*m)
    A = posthoc.transform(train).astype(np.float64)
    mu, sd = A.mean(0), A.std(0, ddof=1)
    Z = ((A - mu) / sd).astype(np.float32)
    path = vlg_path(Z, train.labels, M, nec / K)
    assert out["lam"] == path.lambdas[-1]
    W, b = global_truncation(path.weights[-1], nec * M), path.biases[-1]
    A_test = posthoc.transform(test)
    ref_logits = ((A_test - mu) / sd) @ W.T + b  # bias kept as the path gave it
    np.testing.assert_allclose(at.decision_function(test), ref_logits, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(at.head(at.transform(test)), at.decision_function(test))
    assert out["top1"] == evaluate(at, test)["top1"] == pytest.approx(
        np.mean(ref_logits.argmax(1) == test.labels))


def test_vlg_protocol_folds_an_intercept_into_a_method_without_one(problem):
    train, val, test, ctx = problem
    labo = get_method("labo", max_iter=20).fit(train, ctx, val)  # head_scale 100, no intercept_
    out = accuracy_at_nec(labo, train, test, 3, protocol="vlg")
    at = out["model"]
    assert (at.class_weights_ != 0).sum() == 3 * M and np.any(at.intercept_ != 0)
    A = labo.transform(train).astype(np.float64)
    mu, sd = A.mean(0), A.std(0, ddof=1)
    path = vlg_path(((A - mu) / sd).astype(np.float32), train.labels, M, 3 / K)
    W = global_truncation(path.weights[-1], 3 * M)
    np.testing.assert_allclose(at.decision_function(test),
                               ((labo.transform(test) - mu) / sd) @ W.T + path.biases[-1],
                               rtol=1e-4, atol=1e-4)


def test_vlg_model_saves_and_loads(problem, posthoc, tmp_path):
    train, _, test, _ = problem
    at = accuracy_at_nec(posthoc, train, test, 2, protocol="vlg")["model"]
    again = Method.load(at.save(tmp_path / "at_nec"))
    np.testing.assert_allclose(again.decision_function(test), at.decision_function(test), rtol=1e-6)
    assert again.nec_ == 2


def test_vlg_protocol_drops_a_hybrid_residual(problem):
    train, val, test, ctx = problem
    hybrid = get_method("posthoc_hybrid", lam=1e-3, max_iter=30).fit(train, ctx, val)
    out = accuracy_at_nec(hybrid, train, test, 2, protocol="vlg")
    assert out["residual_dropped"] and np.all(out["model"].residual(test) == 0)
    assert np.any(hybrid.residual(test) != 0)  # the original keeps its residual


def test_prune_protocol_keeps_each_class_largest(problem, posthoc):
    train, _, test, _ = problem
    out = accuracy_at_nec(posthoc, train, test, 1, protocol="prune")
    W = out["model"].class_weights_
    assert out["how"] == "prune" and ((W != 0).sum(1) <= 1).all()
    for c in range(M):
        j = np.argmax(np.abs(posthoc.class_weights_[c]))
        assert W[c, j] == posthoc.class_weights_[c, j]
    np.testing.assert_array_equal(out["model"].intercept_, posthoc.intercept_)


def test_refit_protocol_refits_sparse_methods(problem, posthoc, monkeypatch):
    train, val, test, ctx = problem
    monkeypatch.setattr(type(posthoc), "refit_at_nec", True, raising=False)
    with pytest.raises(ConfigError, match="needs the Context"):
        accuracy_at_nec(posthoc, train, test, 2, protocol="refit")
    out = accuracy_at_nec(posthoc, train, test, 2, protocol="refit", val=val, context=ctx)
    direct = get_method("posthoc", lam=1e-3, target_nec=2).fit(train, ctx, val)
    assert out["how"] == "refit" and out["nec"] <= 2
    np.testing.assert_allclose(out["model"].class_weights_, direct.class_weights_)
    # a method without a refittable layer is pruned instead
    monkeypatch.setattr(type(posthoc), "refit_at_nec", False, raising=False)
    assert accuracy_at_nec(posthoc, train, test, 2, protocol="refit")["how"] == "prune"


def test_bad_arguments_are_reported(problem, posthoc):
    train, _, test, _ = problem
    with pytest.raises(ConfigError, match="unknown protocol"):
        accuracy_at_nec(posthoc, train, test, 5, protocol="magic")
    with pytest.raises(ConfigError, match=r"nec must be a number in \(0, 12\]"):
        accuracy_at_nec(posthoc, train, test, 40)
    with pytest.raises(ConfigError, match="whole number"):
        accuracy_at_nec(posthoc, train, test, 2.5, protocol="prune")
    with pytest.raises(ConfigError, match="apply to protocol='vlg' only"):
        accuracy_at_nec(posthoc, train, test, 2, protocol="prune", lam=0.5)
