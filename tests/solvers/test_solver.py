"""The elastic-net GLM solver against scikit-learn and by hand."""

from __future__ import annotations

import numpy as np
import pytest

from conceptlens.solvers import elastic_net_objective, fit_elastic_net, lambda_max, solve_path
from conceptlens.testing.solver_problems import sklearn_reference


def problem(n=300, p=20, m=4, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, p))
    W = rng.normal(size=(m, p)) * (rng.random((m, p)) < 0.3) * 2
    y = (X @ W.T + rng.gumbel(size=(n, m))).argmax(1)
    return X, y


@pytest.mark.parametrize("lam, alpha", [(0.01, 0.99), (0.003, 0.5), (0.05, 1.0)])
def test_matches_sklearn_objective(lam, alpha):
    X, y = problem()
    W, b, info = fit_elastic_net(X, y, lam, alpha, tol=1e-12, max_iter=20000)
    assert info.converged
    sk = sklearn_reference(X, y, lam, alpha)
    ours = elastic_net_objective(W, b, X, y, lam, alpha)
    ref = elastic_net_objective(sk.coef_, sk.intercept_, X, y, lam, alpha)
    assert ours <= ref * (1 + 1e-6)
    assert abs(ours - ref) / ref < 1e-4
    np.testing.assert_array_equal(W == 0, np.abs(sk.coef_) < 1e-8)  # same support


def test_objective_by_hand():
    X = np.array([[1.0, 0], [0, 1]])
    y = np.array([0, 1])
    W = np.array([[1.0, 0], [0, -2]])
    b = np.array([0.0, 1.0])
    # logits X W^T + b = [[1, 1], [0, -1]]
    ce = np.mean([np.log(np.exp(1) + np.exp(1)) - 1, np.log(1 + np.exp(-1)) + 1])
    expected = ce + 0.1 * 0.5 * 3 + 0.5 * 0.1 * 0.5 * 5
    assert elastic_net_objective(W, b, X, y, lam=0.1, alpha=0.5) == pytest.approx(expected)


@pytest.mark.parametrize("loss", ["multinomial", "ovr"])
def test_lambda_max_is_where_weights_vanish(loss):
    # one-vs-rest has the same lambda_max: at W = 0 its fitted sigmoids are the class frequencies
    X, y = problem()
    lmax = lambda_max(X, y, 0.99)
    W, _, _ = fit_elastic_net(X, y, lmax * 1.01, 0.99, loss=loss)
    assert not W.any()
    W, _, _ = fit_elastic_net(X, y, lmax * 0.99, 0.99, loss=loss)
    assert W.any()


def test_path_stops_at_target_nec_and_warm_starts():
    X, y = problem()
    path = solve_path(X, y, alpha=0.99, target_nec=3)
    assert path.nec[-1] <= 3 and path.nec[-1] >= 2
    grid = path.lambdas[: path.nec.index(max(path.nec))]  # the geometric grid before bisection
    assert grid == sorted(grid, reverse=True)
    # every point of the path is an optimum: re-solving cold gives the same objective
    i = len(path.lambdas) // 2
    W, b, _ = fit_elastic_net(X, y, path.lambdas[i], 0.99, tol=1e-12, max_iter=20000)
    cold = elastic_net_objective(W, b, X, y, path.lambdas[i], 0.99)
    warm = elastic_net_objective(path.weights[i], path.biases[i], X, y, path.lambdas[i], 0.99)
    assert warm == pytest.approx(cold, rel=1e-4)


def test_fixed_lambda_path_ends_at_lambda():
    X, y = problem()
    path = solve_path(X, y, alpha=0.99, lam=0.01, n_lambdas=10)
    assert path.lambdas[-1] == pytest.approx(0.01)
    W, b, _ = fit_elastic_net(X, y, 0.01, 0.99, tol=1e-12, max_iter=20000)
    assert elastic_net_objective(path.weights[-1], path.biases[-1], X, y, 0.01, 0.99) == \
        pytest.approx(elastic_net_objective(W, b, X, y, 0.01, 0.99), rel=1e-4)
