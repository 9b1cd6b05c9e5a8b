"""Proximal Newton for the elastic-net GLM: the same optimum as FISTA, scikit-learn and the
KKT conditions (computed in numpy), for both losses and under W >= 0, with the Hessian blocks
exact or from a subsample, in a fraction of FISTA's full gradients; "auto" picks it only
for large in-memory problems; bad input gets clear errors or the correct trivial solution."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conceptlens.errors import ConfigError, DataError
from conceptlens.solvers import (
    StreamedFeatures,
    elastic_net_objective,
    fit_elastic_net,
    glm,
    lambda_max,
    solve_path,
    write_feature_shards,
)
from conceptlens.solvers.in_memory import NewtonSolver
from conceptlens.testing.solver_problems import EXACT, kkt_gap, problem, sklearn_reference

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("loss", ["multinomial", "ovr"])
@pytest.mark.parametrize("positive", [False, True])
def test_same_path_as_fista_in_a_fraction_of_the_full_gradients(loss, positive):
    X, y = problem()
    kw = dict(alpha=0.99, target_nec=4, positive=positive, loss=loss, **EXACT)
    fista = solve_path(X, y, solver="fista", **kw)
    newton = solve_path(X, y, solver="newton", **kw)
    assert fista.solver == "fista" and newton.solver == "newton"
    assert newton.lambdas == fista.lambdas  # same grid, same bisection decisions
    for Wf, bf, Wn, bn, lam in zip(fista.weights, fista.biases, newton.weights, newton.biases, newton.lambdas,
                                   strict=True):
        assert elastic_net_objective(Wn, bn, X, y, lam, 0.99, loss) == \
            pytest.approx(elastic_net_objective(Wf, bf, X, y, lam, 0.99, loss), rel=1e-8)
        np.testing.assert_array_equal(Wn != 0, Wf != 0)
        if positive:
            assert (Wn >= 0).all()
    W, b, lam = newton.weights[-1], newton.biases[-1], newton.lambdas[-1]
    assert kkt_gap(W, b, X, y, lam, 0.99, loss, positive) < 1e-4
    # FISTA's path computes its safe step once, not once per lam (issue 23): 212 full gradients
    # here where it took 305, Newton 117 (positive: 232 vs 142)
    assert sum(newton.full_gradients) < 0.7 * sum(fista.full_gradients)
    assert np.mean(newton.full_gradients) < 20  # issue 15's budget per lam, here at tol 1e-10


def test_matches_sklearn_at_a_fixed_lambda():
    X, y = problem(n=200, p=30, m=3)
    lam, alpha = 0.01, 0.99
    W, b, info = fit_elastic_net(X, y, lam, alpha, solver="newton", **EXACT)
    assert info.converged
    sk = sklearn_reference(X, y, lam, alpha)
    ours = elastic_net_objective(W, b, X, y, lam, alpha)
    assert ours <= elastic_net_objective(sk.coef_, sk.intercept_, X, y, lam, alpha) * (1 + 1e-9)
    assert info.objective == pytest.approx(ours, rel=1e-12)
    np.testing.assert_array_equal(W != 0, np.abs(sk.coef_) >= 1e-8)  # same support


@pytest.mark.parametrize("loss", ["multinomial", "ovr"])
def test_subsampled_hessian_blocks_reach_the_same_optimum(loss):
    # more images than the subsample: the blocks are estimates, the line search keeps the steps honest
    X, y = problem(n=3000, p=50, m=5, seed=1)
    Xt, yt = torch.as_tensor(X), torch.as_tensor(y)
    lam = 0.1 * lambda_max(X, y, 0.99, 5)
    solver = NewtonSolver(Xt, yt, 5, 0.99, 1e-12, 500, False, loss, hessian_rows=256, min_set=4)
    assert len(solver.sub) == 256 and len(set(solver.sub.tolist())) == 256
    W, b, info, _, G, active, _ = solver.solve(lam, (lam, None, None, None, None))
    assert info.converged
    Wf, bf, _ = fit_elastic_net(X, y, lam, 0.99, loss=loss, solver="fista", **EXACT)
    ours = elastic_net_objective(W.numpy(), b.numpy(), X, y, lam, 0.99, loss)
    assert ours == pytest.approx(elastic_net_objective(Wf, bf, X, y, lam, 0.99, loss), rel=1e-9)
    assert kkt_gap(W.numpy(), b.numpy(), X, y, lam, 0.99, loss, False) < 1e-4
    # the returned gradient is the loss gradient at the returned point (the next lam screens from it)
    Y = np.eye(5)[y]
    Z = X @ W.numpy().T + b.numpy()
    P = 1 / (1 + np.exp(-Z)) if loss == "ovr" else np.exp(Z) / np.exp(Z).sum(1, keepdims=True)
    np.testing.assert_allclose(G.numpy(), (P - Y).T @ X / len(X), atol=1e-12)
    assert 0 < active <= 50


def test_warm_start_reaches_the_same_optimum_from_anywhere():
    X, y = problem(n=400, p=30, m=4)
    lam = 0.02
    W, b, _ = fit_elastic_net(X, y, lam, solver="newton", **EXACT)
    rng = np.random.default_rng(3)
    W2, b2, info = fit_elastic_net(X, y, lam, W0=rng.normal(size=W.shape), b0=rng.normal(size=4),
                                   solver="newton", **EXACT)
    assert info.converged
    assert elastic_net_objective(W2, b2, X, y, lam, 0.99) == \
        pytest.approx(elastic_net_objective(W, b, X, y, lam, 0.99), rel=1e-10)
    np.testing.assert_array_equal(W2 != 0, W != 0)


@pytest.mark.parametrize("loss", ["multinomial", "ovr"])
@pytest.mark.parametrize("positive", [False, True])
def test_streamed_newton_reaches_the_in_memory_optimum_under_the_cap(tmp_path, loss, positive):
    # shards of 500 rows and a cap that holds a chunk and ~400 Hessian rows, not the matrix (960 kB)
    X, y = problem(n=4000, p=60, m=6, seed=2)
    X = X.astype(np.float32).astype(np.float64)  # the values float32 shards hold
    cap = 600_000
    src = StreamedFeatures(write_feature_shards(tmp_path, X, rows_per_shard=500, dtype="float32"),
                           max_memory_bytes=cap, chunk_rows=128)
    lam = 0.2 * lambda_max(X, y, 0.99, 6, positive)
    kw = dict(lam=lam, n_lambdas=6, n_classes=6, positive=positive, loss=loss, tol=1e-9, solver="newton",
              dtype=torch.float64)
    mem = solve_path(X, y, **kw)
    streamed = solve_path(src, y, **kw)
    assert streamed.solver == "newton"
    # the grid's top comes from a reduction over the shards vs over the matrix: equal to rounding
    np.testing.assert_allclose(streamed.lambdas, mem.lambdas, rtol=1e-12, atol=0)
    for W1, b1, W2, b2, lam_k in zip(mem.weights, mem.biases, streamed.weights, streamed.biases, mem.lambdas,
                                     strict=True):
        assert elastic_net_objective(W2, b2, X, y, lam_k, 0.99, loss, 6) == \
            pytest.approx(elastic_net_objective(W1, b1, X, y, lam_k, 0.99, loss, 6), rel=1e-8)
        np.testing.assert_allclose(W2, W1, atol=1e-4)  # a weight at ~1e-6 may sit on either side of 0
        assert ((W2 != 0) != (W1 != 0)).sum() <= 1
    assert kkt_gap(streamed.weights[-1], streamed.biases[-1], X, y, lam, 0.99, loss, positive) < 1e-3
    assert src.stats.planned_bytes <= cap < 4000 * 60 * 4
    assert src.stats.passes > 6  # every step read the shards: the matrix never sat in memory
    solver = glm.newton_solver(src, torch.as_tensor(y), 6, 0.99, 1e-9, 100, positive, loss, torch.float64)
    assert 64 <= len(solver.sub) < 4000  # the cap chose a subsample


def test_auto_takes_newton_only_for_large_in_memory_problems(monkeypatch, tmp_path):
    X, y = problem(n=200, p=20, m=3)
    assert solve_path(X, y, lam=0.05, n_lambdas=3).solver == "fista"  # 12,000 multiply-adds a product
    monkeypatch.setattr(glm, "AUTO_NEWTON_PRODUCT", 200 * 20 * 3)
    assert solve_path(X, y, lam=0.05, n_lambdas=3).solver == "newton"
    src = StreamedFeatures(write_feature_shards(tmp_path, X, dtype="float32"))
    assert solve_path(src, y, lam=0.05, n_lambdas=3).solver == "fista"  # streamed: FISTA unless asked


# --- bad input ----------------------------------------------------------------------------------

def test_unknown_solver_is_a_config_error():
    X, y = problem(n=50, p=5)
    with pytest.raises(ConfigError, match=r"one of \('auto', 'fista', 'newton'\); got 'lbfgs'"):
        solve_path(X, y, lam=0.1, solver="lbfgs")
    with pytest.raises(ConfigError, match="solver must be one of"):
        fit_elastic_net(X, y, 0.1, solver="Newton")


def test_streamed_newton_is_too_tight_for_a_tiny_cap_and_says_what_to_give(tmp_path):
    X, y = problem(n=300, p=40)
    src = StreamedFeatures(write_feature_shards(tmp_path, X, dtype="float32"), max_memory_bytes=40_000)
    with pytest.raises(ConfigError, match=r"too small for solver='newton' on 40 features.*give at least \d+"):
        solve_path(src, y, lam=0.1, solver="newton")


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_features_are_a_data_error(bad):
    X, y = problem(n=50, p=5)
    X[3, 2] = bad
    with pytest.raises(DataError, match=r"non-finite.*columns \[2\]"):
        solve_path(X, y, target_nec=2, solver="newton")


@pytest.mark.parametrize("loss", ["multinomial", "ovr"])
def test_lambda_beyond_lambda_max_is_the_intercept_only_model(loss):
    X, y = problem()
    lmax = lambda_max(X, y, 0.99)
    path = solve_path(X, y, lam=3 * lmax, loss=loss, solver="newton", **EXACT)
    assert path.lambdas == [3 * lmax] and not path.weights[-1].any()
    b = path.biases[-1]
    fitted = 1 / (1 + np.exp(-b)) if loss == "ovr" else np.exp(b) / np.exp(b).sum()
    np.testing.assert_allclose(fitted, np.bincount(y) / len(y), rtol=1e-9)  # the closed form, exactly
    assert path.active_features == [0]
    # one gradient (its KKT check finds no violator) and no step: the start is the optimum
    assert path.full_gradients[0] <= 1.0


def test_constant_column_gets_no_weight():
    X, y = problem(n=200, p=10, m=3)
    Xc = np.insert(X, 4, 5.0, axis=1)
    with_c = solve_path(Xc, y, lam=0.01, n_lambdas=8, solver="newton", **EXACT)
    without = solve_path(X, y, lam=0.01, n_lambdas=8, solver="fista", **EXACT)
    assert not with_c.weights[-1][:, 4].any()
    W = np.delete(with_c.weights[-1], 4, axis=1)
    assert elastic_net_objective(W, with_c.biases[-1], X, y, 0.01, 0.99) == \
        pytest.approx(without.objectives[-1], rel=1e-8)
    np.testing.assert_array_equal(W != 0, without.weights[-1] != 0)


@pytest.mark.parametrize("loss", ["multinomial", "ovr"])
def test_class_with_no_samples_gets_zero_weights_and_vanishing_probability(loss):
    X, y = problem(n=200, p=10, m=3)
    y4 = np.where(y == 2, 3, y)  # classes 0, 1, 3 of 4: class 2 has no sample
    path = solve_path(X, y4, lam=0.01, n_lambdas=8, n_classes=4, loss=loss, solver="newton", **EXACT)
    W, b = path.weights[-1], path.biases[-1]
    assert W.shape == (4, 10) and not W[2].any()
    Z = X @ W.T + b
    assert (Z[:, 2] <= (Z.max(1) if loss == "multinomial" else 0) - 40 + 1e-9).all()
    ref = solve_path(X, y, lam=0.01, n_lambdas=8, loss=loss, solver="fista", **EXACT)
    np.testing.assert_allclose(W[[0, 1, 3]], ref.weights[-1], atol=1e-4)  # FISTA's stop is the looser
    assert path.objectives[-1] <= ref.objectives[-1] * (1 + 1e-9)
