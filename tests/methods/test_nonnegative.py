"""Non-negative class weights (`positive=True`): the constrained solver against independent
references (scipy's L-BFGS-B with bounds, the KKT conditions, brute-force lambda_max), and
every sparse head with the option: W >= 0, still learning, saved, kept by the NEC protocols."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import minimize

from conceptlens.errors import ConfigError
from conceptlens.evaluation import accuracy_at_nec, evaluate
from conceptlens.features import FeatureBundle
from conceptlens.methods import Context, Method, get_method
from conceptlens.solvers import elastic_net_objective, fit_elastic_net, lambda_max, solve_path

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def glm_problem(n=60, p=6, m=3, seed=0):
    """Weights of both signs generate the labels, so the unconstrained optimum has negatives."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, p))
    W = rng.normal(size=(m, p)) * 1.5
    y = (X @ W.T + rng.gumbel(size=(n, m))).argmax(1)
    return X, y


def _smooth_parts(theta, X, Y, lam, alpha, loss):
    """Loss + lam*alpha*sum(W) + ridge, and its gradient: on W >= 0 the L1 norm is sum(W), so
    the constrained elastic net is a smooth bound-constrained problem (L-BFGS-B's kind)."""
    n, p = X.shape
    m = Y.shape[1]
    W, b = theta[: m * p].reshape(m, p), theta[m * p:]
    Z = X @ W.T + b
    if loss == "ovr":
        P = 1 / (1 + np.exp(-Z))
        f = np.sum(np.logaddexp(0, Z) - Y * Z) / n
    else:
        Zs = Z - Z.max(1, keepdims=True)
        logp = Zs - np.log(np.exp(Zs).sum(1, keepdims=True))
        P = np.exp(logp)
        f = -(Y * logp).sum() / n
    R = (P - Y) / n
    f += lam * alpha * W.sum() + 0.5 * lam * (1 - alpha) * (W * W).sum()
    gW = R.T @ X + lam * alpha + lam * (1 - alpha) * W
    return f, np.concatenate([gW.ravel(), R.sum(0)])


def lbfgsb_reference(X, y, lam, alpha, loss="multinomial"):
    m, p = int(y.max()) + 1, X.shape[1]
    Y = np.eye(m)[y]
    bounds = [(0, None)] * (m * p) + [(None, None)] * m
    res = minimize(_smooth_parts, np.zeros(m * p + m), args=(X, Y, lam, alpha, loss), jac=True,
                   method="L-BFGS-B", bounds=bounds, options={"ftol": 1e-15, "gtol": 1e-11, "maxiter": 20000})
    return res.x[: m * p].reshape(m, p), res.x[m * p:], res.fun


# --- the solver ---------------------------------------------------------------------------------

@pytest.mark.parametrize("loss", ["multinomial", "ovr"])
@pytest.mark.parametrize("lam, alpha", [(0.05, 0.0), (0.02, 0.99), (0.01, 0.5)])
def test_positive_solver_matches_lbfgsb_with_bounds(loss, lam, alpha):
    X, y = glm_problem()
    W, b, info = fit_elastic_net(X, y, lam, alpha, positive=True, loss=loss, tol=1e-13, max_iter=50000)
    assert info.converged and (W >= 0).all()
    Wr, br, fr = lbfgsb_reference(X, y, lam, alpha, loss)
    ours = elastic_net_objective(W, b, X, y, lam, alpha, loss=loss)
    assert ours == pytest.approx(fr, rel=1e-6)
    np.testing.assert_allclose(W, Wr, atol=2e-4)
    if loss == "ovr":  # softmax is shift-invariant in b; one-vs-rest is not
        np.testing.assert_allclose(b, br, atol=2e-4)
    # the constraint binds: the unconstrained optimum has negative weights and a lower objective
    Wu, bu, _ = fit_elastic_net(X, y, lam, alpha, loss=loss, tol=1e-13, max_iter=50000)
    assert (Wu < -1e-3).any()
    assert elastic_net_objective(Wu, bu, X, y, lam, alpha, loss=loss) < ours - 1e-4


@pytest.mark.parametrize("loss", ["multinomial", "ovr"])
def test_positive_l1_solution_satisfies_the_kkt_conditions(loss):
    X, y = glm_problem(n=40, p=5, seed=1)
    lam, alpha = 0.03, 0.9
    W, b, _ = fit_elastic_net(X, y, lam, alpha, positive=True, loss=loss, tol=1e-14, max_iter=100000)
    m = W.shape[0]
    Y = np.eye(m)[y]
    _, g = _smooth_parts(np.concatenate([W.ravel(), b]), X, Y, lam, alpha, loss)
    # g is the gradient of loss + ridge + lam*alpha*sum(W): for w > 0 it is 0 (the L1
    # subgradient there is +lam*alpha); for w = 0 the constraint's multiplier is g >= 0
    gW, gb = g[: W.size].reshape(W.shape), g[W.size:]
    active, zero = W > 0, W == 0
    assert active.any() and zero.any()  # both cases are exercised
    assert np.abs(gW[active]).max() < 1e-6
    assert gW[zero].min() > -1e-6
    assert np.abs(gb).max() < 1e-6  # the intercept is free
    # some zero weight is held at 0 by the constraint, not by the L1 term: the smooth part's
    # gradient exceeds lam*alpha there, so without the constraint that weight would go negative
    smooth = gW - lam * alpha
    assert (smooth[zero] > lam * alpha + 1e-3).any()


def test_prox_keeps_only_the_positive_part_of_the_soft_threshold():
    # one FISTA step from a feasible W0 (the first step is the safe 1/L one): by hand,
    # W1 = max(0, W0 - t g - t lam alpha) / (1 + t lam (1 - alpha)), where the unconstrained
    # prox would keep the negative soft-thresholded entries
    import torch

    from conceptlens.solvers.in_memory import fista, safe_step

    X = torch.tensor([[1.0, -2.0], [0.5, 1.0], [-1.0, 0.3]], dtype=torch.float64)
    y = torch.tensor([0, 1, 0])
    W0 = torch.tensor([[0.3, 0.0], [0.1, 0.4]], dtype=torch.float64)
    lam, alpha = 0.1, 0.6
    W1, *_ = fista(X, y, lam, alpha, W0, None, 2, 0.0, 1, None, positive=True)
    t = safe_step(X)
    R = (torch.softmax(X @ W0.T, 1) - torch.nn.functional.one_hot(y, 2)) / 3
    V = (W0 - t * (R.T @ X)).numpy()
    expected = np.maximum(0, V - t * lam * alpha) / (1 + t * lam * (1 - alpha))
    assert (V + t * lam * alpha < 0).any()  # an entry the unconstrained prox would make negative
    np.testing.assert_allclose(W1.numpy(), expected, atol=1e-12)


@pytest.mark.parametrize("loss", ["multinomial", "ovr"])
def test_positive_lambda_max_against_brute_force(loss):
    X, y = glm_problem(n=50, p=5, m=3, seed=2)
    alpha = 0.99
    lmax = lambda_max(X, y, alpha, positive=True)
    # the formula: only the positive part of -gradient at W = 0 counts
    Y = np.eye(3)[y]
    H = X.T @ (Y - Y.mean(0)) / len(X)
    assert lmax == pytest.approx(H.max() / alpha)
    assert lmax < lambda_max(X, y, alpha) * (1 - 1e-3)  # this problem's max |H| is a negative entry

    def zero_at(lam):
        W, _, _ = fit_elastic_net(X, y, lam, alpha, positive=True, loss=loss, tol=1e-13, max_iter=50000)
        return not W.any()

    assert zero_at(lmax * 1.001) and not zero_at(lmax * 0.99)
    lo, hi = 0.5 * lmax, 2 * lmax  # brute force: bisect on the solver's own answer
    for _ in range(14):
        mid = np.sqrt(lo * hi)
        lo, hi = (lo, mid) if zero_at(mid) else (mid, hi)
    assert hi == pytest.approx(lmax, rel=2e-3)


def test_ovr_loss_matches_sklearn_binary_logistic_per_class():
    import warnings

    from sklearn.linear_model import LogisticRegression

    X, y = glm_problem(n=80, p=5, seed=3)
    lam, alpha = 0.01, 0.7
    W, b, _ = fit_elastic_net(X, y, lam, alpha, loss="ovr", tol=1e-13, max_iter=50000)
    for c in range(3):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sk = LogisticRegression(l1_ratio=alpha, C=1 / (lam * len(X)), solver="saga", tol=1e-12,
                                    max_iter=200000).fit(X, (y == c).astype(int))
        t = (y == c).astype(float)

        def obj(w, b0, t=t):
            return (np.mean(np.logaddexp(0, X @ w + b0) - t * (X @ w + b0))
                    + lam * alpha * np.abs(w).sum() + 0.5 * lam * (1 - alpha) * (w * w).sum())

        assert obj(W[c], b[c]) == pytest.approx(obj(sk.coef_[0], sk.intercept_[0]), rel=1e-5)
        np.testing.assert_allclose(W[c], sk.coef_[0], atol=1e-3)


def test_path_to_a_target_nec_under_positivity():
    X, y = glm_problem(n=120, p=12, m=4, seed=4)
    path = solve_path(X, y, alpha=0.99, target_nec=3, positive=True, tol=1e-8)
    assert path.lambdas[0] == pytest.approx(lambda_max(X, y, 0.99, positive=True))
    assert all((W >= 0).all() for W in path.weights)
    assert 2 <= path.nec[-1] <= 3
    # the bisection kept the largest NEC not above the target among the points it solved
    assert path.nec[-1] == max(v for v in path.nec if v <= 3)


def test_solver_rejects_a_bad_option():
    X, y = glm_problem()
    with pytest.raises(ConfigError, match="positive must be True or False"):
        fit_elastic_net(X, y, 0.1, positive="yes")
    with pytest.raises(ConfigError, match="loss must be one of"):
        solve_path(X, y, lam=0.1, loss="hinge")


# --- the methods --------------------------------------------------------------------------------

M, K, D, F = 3, 9, 12, 10


def make_problem(n_per_class=40, seed=0):
    """Concepts 3c..3c+2 belong to class c, so there is something present to point at."""
    fixed = np.random.default_rng(99)
    rng = np.random.default_rng(seed)
    concepts = fixed.normal(size=(K, D))
    concepts /= np.linalg.norm(concepts, axis=1, keepdims=True)
    prior = np.zeros((M, K), np.float32)
    for c in range(M):
        prior[c, 3 * c: 3 * c + 3] = 1
    P = fixed.normal(size=(D, F))

    def bundle(n):
        labels = np.repeat(np.arange(M), n)
        emb = prior[labels] @ concepts + 0.5 * rng.normal(size=(len(labels), D))
        emb /= np.linalg.norm(emb, axis=1, keepdims=True)
        return FeatureBundle([str(i) for i in range(len(labels))], labels, tuple("abc"),
                             emb.astype(np.float32), (emb @ P).astype(np.float32), "toy")

    class_emb = prior @ concepts
    class_emb /= np.linalg.norm(class_emb, axis=1, keepdims=True)
    ctx = Context(tuple("abc"), [f"concept {i}" for i in range(K)], concepts.astype(np.float32),
                  prior, class_emb.astype(np.float32), "toy")
    return bundle(n_per_class), bundle(15), bundle(30), ctx


@pytest.fixture(scope="module")
def problem():
    return make_problem()


CASES = {
    "label_free": {"steps": 200, "lam": 1e-3, "interpretability_cutoff": 0.0},
    "posthoc": {"lam": 1e-3},
    "posthoc_glm": {"lam": 1e-3, "solver": "glm"},
    "posthoc_hybrid": {"lam": 1e-3, "epochs": 5},
    "sparse_cbm": {"epochs": 150, "lr": 1e-2, "cbl_lr": 1e-2},
    "knobo": {"min_val": 2, "lr": 1e-2, "epochs": 100},
}


def _method(case: str) -> str:
    return "posthoc" if case == "posthoc_glm" else case


@pytest.fixture(scope="module")
def fitted(problem):
    train, val, _, ctx = problem
    out = {}
    for case, params in CASES.items():
        for positive in (False, True):
            out[case, positive] = get_method(_method(case), positive=positive, **params).fit(train, ctx, val)
    return out


@pytest.mark.parametrize("case", list(CASES))
def test_positive_heads_are_non_negative_and_still_learn(case, fitted, problem):
    test = problem[2]
    free, pos = fitted[case, False], fitted[case, True]
    assert (pos.class_weights_ >= 0).all()
    assert (free.class_weights_ < 0).any()  # the option changes something here
    assert evaluate(pos, test)["top1"] > 0.8  # chance is 1/3
    if case == "sparse_cbm":  # both factors are kept >= 0, so their product is
        assert (pos.cbl_weight_ >= 0).all() and (pos.head_weight_ >= 0).all()
    if case == "posthoc_hybrid":  # only the concept layer is constrained
        assert (pos.residual_weights_ < 0).any()


def test_posthoc_positive_sgd_is_sgdclassifiers_objective_under_w_ge_0(fitted, problem):
    train, _, _, _ = problem
    model = fitted["posthoc", True]
    Z = model.transform(train).astype(np.float64)
    y = np.asarray(train.labels)
    Wr, _, fr = lbfgsb_reference(Z, y, 1e-3, 0.99, loss="ovr")
    # the layer comes from the float32 path at its default tolerance: the same optimum, to it
    ours = elastic_net_objective(model.class_weights_, model.intercept_, Z, y, 1e-3, 0.99, loss="ovr")
    assert ours == pytest.approx(fr, rel=1e-3)
    np.testing.assert_array_equal(model.class_weights_ > 0, Wr > 1e-3)  # the same support
    np.testing.assert_allclose(model.class_weights_, Wr, rtol=0.02, atol=0.02)


def test_posthoc_positive_two_classes_gets_one_non_negative_row_per_class():
    rng = np.random.default_rng(5)
    C = rng.normal(size=(4, 6))
    C /= np.linalg.norm(C, axis=1, keepdims=True)
    y = np.repeat([0, 1], 30)
    emb = C[2 * y] + C[2 * y + 1] + 0.5 * rng.normal(size=(60, 6))
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    b = FeatureBundle([str(i) for i in range(60)], y, ("a", "b"), emb.astype(np.float32), None, "toy")
    ctx = Context(("a", "b"), [f"c{i}" for i in range(4)], C.astype(np.float32), None, None, "toy")
    model = get_method("posthoc", lam=1e-3, positive=True).fit(b, ctx)
    W = model.class_weights_
    assert (W >= 0).all() and W[0].any() and W[1].any()
    assert evaluate(model, b)["top1"] > 0.9


@pytest.mark.parametrize("case", list(CASES))
def test_save_load_keeps_the_option(case, fitted, problem, tmp_path):
    model = fitted[case, True]
    model.save(tmp_path / case)
    back = Method.load(tmp_path / case)
    assert back.positive is True
    np.testing.assert_array_equal(back.class_weights_, model.class_weights_)
    np.testing.assert_allclose(back.decision_function(problem[2]), model.decision_function(problem[2]),
                               rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("method", ["label_free", "posthoc", "posthoc_hybrid", "sparse_cbm"])
def test_bad_positive_is_a_config_error(method, problem):
    train, val, _, ctx = problem
    with pytest.raises(ConfigError, match="positive"):
        get_method(method, positive="true").fit(train, ctx, val)


def test_run_config_reaches_the_option(tmp_path):
    from conceptlens.runs import load_config
    from conceptlens.runs.config import to_toml

    f = tmp_path / "run.toml"
    f.write_text("[methods.label_free]\npositive = true\n\n[methods.posthoc]\npositive = true\n")
    cfg = load_config(f)
    assert cfg.methods["label_free"] == {"positive": True}
    again = tmp_path / "again.toml"
    again.write_text(to_toml(cfg))
    assert load_config(again).methods["label_free"]["positive"] is True
    f.write_text('[methods.label_free]\npositive = "yes"\n')
    with pytest.raises(ConfigError, match="positive must be true or false"):
        load_config(f)


# --- the NEC protocols --------------------------------------------------------------------------

@pytest.mark.parametrize("case", ["label_free", "posthoc", "posthoc_glm"])
def test_refit_protocol_keeps_positivity(case, fitted, problem):
    train, val, test, ctx = problem
    out = accuracy_at_nec(fitted[case, True], train, test, 2, protocol="refit", val=val, context=ctx)
    assert out["how"] == "refit" and out["model"].positive is True
    assert (out["model"].class_weights_ >= 0).all() and out["nec"] <= 2
    direct = get_method(_method(case), positive=True, target_nec=2, **CASES[case]).fit(train, ctx, val)
    np.testing.assert_allclose(out["model"].class_weights_, direct.class_weights_)


def test_vlg_protocol_follows_the_models_positivity(fitted, problem):
    train, _, test, _ = problem
    pos = accuracy_at_nec(fitted["posthoc", True], train, test, 3, protocol="vlg")
    assert pos["positive"] is True and (pos["model"].class_weights_ >= 0).all()
    free = accuracy_at_nec(fitted["posthoc", True], train, test, 3, protocol="vlg", positive=False)
    assert (free["model"].class_weights_ < 0).any()  # the same activations without the constraint
    # a model without the option (LaBo-like) keeps the reference protocol
    assert accuracy_at_nec(fitted["posthoc", False], train, test, 3, protocol="vlg")["positive"] is False


@pytest.mark.parametrize("case", ["posthoc", "sparse_cbm"])
def test_prune_protocol_keeps_weights_as_they_are(case, fitted, problem):
    train, _, test, _ = problem
    model = fitted[case, True]
    out = accuracy_at_nec(model, train, test, 2, protocol="prune")
    W = out["model"].class_weights_
    assert (W >= 0).all()
    kept = W != 0
    np.testing.assert_array_equal(W[kept], model.class_weights_[kept])
