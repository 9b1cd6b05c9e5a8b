"""Working sets for the elastic-net path: the same optimum as the full solver (and as
scikit-learn / the KKT conditions computed here in numpy), at a fraction of the products;
the KKT check repairs a screen that discards needed features; bad input gets clear errors
or the correct trivial solution."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from conceptlens.errors import ConfigError, DataError
from conceptlens.solvers import elastic_net_objective, lambda_max, solve_path
from conceptlens.testing.solver_problems import EXACT, kkt_gap, problem

pytestmark = pytest.mark.usefixtures("one_torch_thread")

@pytest.mark.parametrize("loss", ["multinomial", "ovr"])
@pytest.mark.parametrize("positive", [False, True])
def test_same_path_as_the_full_solver_at_a_fraction_of_the_work(loss, positive):
    X, y = problem()
    kw = dict(alpha=0.99, target_nec=4, positive=positive, loss=loss, **EXACT)
    full = solve_path(X, y, **kw)
    ws = solve_path(X, y, working_set=True, **kw)
    assert ws.lambdas == full.lambdas  # same grid, same bisection decisions
    for Wf, bf, Ww, bw, lam in zip(full.weights, full.biases, ws.weights, ws.biases, ws.lambdas, strict=True):
        of = elastic_net_objective(Wf, bf, X, y, lam, 0.99, loss)
        ow = elastic_net_objective(Ww, bw, X, y, lam, 0.99, loss)
        assert ow == pytest.approx(of, rel=1e-6)
        np.testing.assert_array_equal(Ww != 0, Wf != 0)
        if positive:
            assert (Ww >= 0).all()
    assert ws.nec[-1] <= 4
    assert kkt_gap(ws.weights[-1], ws.biases[-1], X, y, ws.lambdas[-1], 0.99, loss, positive) < 1e-3
    # most points are solved on a few of the 40 features, so the whole path costs far less
    assert min(ws.active_features) < 10 and max(ws.active_features) < 40
    assert sum(ws.full_gradients) < 0.5 * sum(full.full_gradients)


def test_matches_sklearn_at_a_fixed_lambda():
    from sklearn.linear_model import LogisticRegression

    X, y = problem(n=200, p=30, m=3)
    lam, alpha = 0.01, 0.99
    path = solve_path(X, y, alpha=alpha, lam=lam, n_lambdas=10, working_set=True, **EXACT)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sk = LogisticRegression(l1_ratio=alpha, C=1 / (lam * len(X)), solver="saga", tol=1e-12,
                                max_iter=200000).fit(X, y)
    ours = elastic_net_objective(path.weights[-1], path.biases[-1], X, y, lam, alpha)
    ref = elastic_net_objective(sk.coef_, sk.intercept_, X, y, lam, alpha)
    assert ours <= ref * (1 + 1e-6)
    np.testing.assert_array_equal(path.weights[-1] != 0, np.abs(sk.coef_) >= 1e-8)  # same support


@pytest.mark.parametrize("positive", [False, True])
def test_kkt_check_brings_back_what_the_screen_wrongly_discards(positive):
    X, y = problem()
    kw = dict(alpha=0.99, target_nec=3, positive=positive, **EXACT)
    full = solve_path(X, y, **kw)
    needed = int(np.abs(full.weights[-1]).sum(0).argmax())  # the optimum's heaviest feature

    def screen(G, W, lam, lam_prev):  # a wrong rule: always drops that feature
        keep = np.ones(X.shape[1], dtype=bool)
        keep[needed] = False
        return keep

    ws = solve_path(X, y, working_set=True, _screen=screen, **kw)
    assert sum(ws.kkt_added) >= 1  # the check found it ...
    assert (ws.weights[-1][:, needed] != 0).any()  # ... and the optimum uses it
    assert ws.lambdas == full.lambdas
    np.testing.assert_array_equal(ws.weights[-1] != 0, full.weights[-1] != 0)
    assert elastic_net_objective(ws.weights[-1], ws.biases[-1], X, y, ws.lambdas[-1], 0.99) == \
        pytest.approx(full.objectives[-1], rel=1e-6)

    def nothing(G, W, lam, lam_prev):  # an empty screen: everything comes from the KKT check
        return np.zeros(X.shape[1], dtype=bool)

    ws = solve_path(X, y, working_set=True, _screen=nothing, **kw)
    np.testing.assert_array_equal(ws.weights[-1] != 0, full.weights[-1] != 0)


# --- bad input ----------------------------------------------------------------------------------

@pytest.mark.parametrize("bad", [np.nan, np.inf])
@pytest.mark.parametrize("working_set", [False, True])
def test_non_finite_features_are_a_data_error(bad, working_set):
    X, y = problem(n=50, p=5)
    X[3, 2] = bad
    with pytest.raises(DataError, match=r"non-finite.*columns \[2\]"):
        solve_path(X, y, target_nec=2, working_set=working_set)


def test_labels_outside_the_classes_and_bad_n_classes():
    X, y = problem(n=50, p=5)
    with pytest.raises(DataError, match="labels must lie in"):
        solve_path(X, y, target_nec=2, n_classes=2)
    with pytest.raises(ConfigError, match="n_classes must be a positive integer"):
        solve_path(X, y, target_nec=2, n_classes=0)


@pytest.mark.parametrize("working_set", [False, True])
def test_constant_column_gets_no_weight(working_set):
    # a constant column is the intercept's direction: its gradient is 5 * sum(R) = 0 at the optimum
    X, y = problem(n=200, p=10, m=3)
    Xc = np.insert(X, 4, 5.0, axis=1)
    with_c = solve_path(Xc, y, lam=0.01, n_lambdas=8, working_set=working_set, **EXACT)
    without = solve_path(X, y, lam=0.01, n_lambdas=8, **EXACT)
    assert not with_c.weights[-1][:, 4].any()
    # the same optimum as without the column (the column slows FISTA: compare objectives, supports)
    W = np.delete(with_c.weights[-1], 4, axis=1)
    assert elastic_net_objective(W, with_c.biases[-1], X, y, 0.01, 0.99) == \
        pytest.approx(without.objectives[-1], rel=1e-7)
    np.testing.assert_array_equal(W != 0, without.weights[-1] != 0)


@pytest.mark.parametrize("loss", ["multinomial", "ovr"])
@pytest.mark.parametrize("working_set", [False, True])
def test_class_with_no_samples_gets_zero_weights_and_vanishing_probability(loss, working_set):
    X, y = problem(n=200, p=10, m=3)
    y4 = np.where(y == 2, 3, y)  # classes 0, 1, 3 of 4: class 2 has no sample
    path = solve_path(X, y4, lam=0.01, n_lambdas=8, n_classes=4, loss=loss, working_set=working_set,
                      **EXACT)
    W, b = path.weights[-1], path.biases[-1]
    assert W.shape == (4, 10) and not W[2].any()
    Z = X @ W.T + b
    if loss == "multinomial":
        assert (Z[:, 2] <= Z.max(1) - 40 + 1e-9).all()
    else:
        assert (Z[:, 2] <= -40 + 1e-9).all()
    ref = solve_path(X, y, lam=0.01, n_lambdas=8, loss=loss, **EXACT)  # the same problem, 3 classes
    np.testing.assert_allclose(W[[0, 1, 3]], ref.weights[-1], atol=1e-7)
    # the objective over 4 classes is the 3-class optimum plus a negligible term
    assert path.objectives[-1] == pytest.approx(ref.objectives[-1], rel=1e-9)
    # NEC counts all 4 classes, and target_nec keeps that meaning
    capped = solve_path(X, y4, target_nec=2, n_classes=4, loss=loss, working_set=working_set)
    assert capped.nec[-1] == pytest.approx((capped.weights[-1] != 0).sum() / 4) and capped.nec[-1] <= 2


@pytest.mark.parametrize("loss", ["multinomial", "ovr"])
@pytest.mark.parametrize("working_set", [False, True])
def test_lambda_beyond_lambda_max_is_the_intercept_only_model(loss, working_set):
    X, y = problem()
    lmax = lambda_max(X, y, 0.99)
    path = solve_path(X, y, lam=3 * lmax, loss=loss, working_set=working_set, **EXACT)
    assert path.lambdas == [3 * lmax] and not path.weights[-1].any()
    pi = np.bincount(y) / len(y)
    b = path.biases[-1]
    fitted = 1 / (1 + np.exp(-b)) if loss == "ovr" else np.exp(b) / np.exp(b).sum()
    np.testing.assert_allclose(fitted, pi, atol=1e-5)  # FISTA stops on the objective, not on b
    if working_set:  # nothing survives the screen: the empty working set is solved, then checked
        assert path.active_features == [0] and path.kkt_added == [0]
        # cost by hand: the power iteration (62 matrix-vector products = 62/m products), the
        # gradient at zero (1), the check (1); the intercept-only solve multiplies no column
        assert path.full_gradients[0] == pytest.approx((62 / 4 + 2) / 2)
