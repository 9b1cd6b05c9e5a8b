"""Class-consistent heads: the solver's support mask against independent optima (scipy, scikit-learn),
concept evidence against roc_auc_score, and each head's constraint, evidence floor and files."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import minimize
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from conceptlens.concepts.evidence import concept_evidence
from conceptlens.errors import ConfigError, DataError
from conceptlens.features import FeatureBundle
from conceptlens.methods import Context, Method, get_method
from conceptlens.solvers import fit_elastic_net, lambda_max, solve_path

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def glm_data(n=120, p=6, m=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, p))
    W = rng.normal(size=(m, p))
    y = np.argmax(X @ W.T + rng.gumbel(size=(n, m)), axis=1)
    S = (rng.random((m, p)) < 0.5).astype(float)
    S[:, 0] = 1  # every class has a free weight
    return X, y, S


def test_support_mask_multinomial_equals_scipy_on_the_free_weights():
    """Smooth case (alpha = 0, W >= 0): L-BFGS-B over the free entries alone is the reference."""
    X, y, S = glm_data()
    n, p = X.shape
    m, lam = S.shape[0], 0.05
    free = np.flatnonzero(S.ravel())
    Y = np.eye(m)[y]

    def objective(v):
        W = np.zeros(m * p)
        W[free] = v[: len(free)]
        W, b = W.reshape(m, p), v[len(free):]
        Z = X @ W.T + b
        Z -= Z.max(1, keepdims=True)
        logp = Z - np.log(np.exp(Z).sum(1, keepdims=True))
        P = np.exp(logp)
        loss = -(Y * logp).sum() / n + lam / 2 * (W ** 2).sum()
        G = (P - Y).T @ X / n + lam * W
        return loss, np.concatenate([G.ravel()[free], (P - Y).sum(0) / n])

    ref = minimize(objective, np.zeros(len(free) + m), jac=True, method="L-BFGS-B",
                   bounds=[(0, None)] * len(free) + [(None, None)] * m, options={"gtol": 1e-12, "ftol": 1e-15,
                                                                               "maxiter": 10000})
    W, b, info = fit_elastic_net(X, y, lam, alpha=0.0, positive=True, support=S, tol=1e-12, max_iter=20000)
    assert np.all(W[S == 0] == 0) and np.all(W >= 0)
    np.testing.assert_allclose(W.ravel()[free], ref.x[: len(free)], atol=2e-5)
    assert info.objective == pytest.approx(ref.fun, abs=1e-8)


def test_support_mask_ovr_equals_sklearn_per_class_on_its_columns():
    """One-vs-rest classes are independent: class c under the mask is scikit-learn's elastic-net
    logistic regression on the columns class c may use (C = 1 / (lam n))."""
    X, y, S = glm_data(n=150, seed=1)
    n, lam, alpha = len(X), 0.02, 0.5
    W, b, _ = fit_elastic_net(X, y, lam, alpha=alpha, loss="ovr", support=S, tol=1e-12, max_iter=50000)
    for c in range(S.shape[0]):
        cols = np.flatnonzero(S[c])
        ref = LogisticRegression(penalty="elasticnet", solver="saga", l1_ratio=alpha, C=1 / (lam * n),
                                 tol=1e-10, max_iter=200000).fit(X[:, cols], (y == c).astype(int))
        np.testing.assert_allclose(W[c, cols], ref.coef_[0], atol=2e-4)
        assert np.all(W[c, S[c] == 0] == 0)


def test_lambda_max_with_support_is_the_edge_of_all_zero():
    X, y, S = glm_data(seed=2)
    lmax = lambda_max(X, y, 0.99, 3, positive=True, support=S)
    assert lmax < lambda_max(X, y, 0.99, 3, positive=True)  # fewer entries can leave zero
    above, *_ = fit_elastic_net(X, y, lmax * 1.01, positive=True, support=S)
    below, *_ = fit_elastic_net(X, y, lmax * 0.9, positive=True, support=S)
    assert not above.any() and below.any() and np.all(below[S == 0] == 0)


def test_support_path_keeps_every_point_on_the_support():
    X, y, S = glm_data(seed=3)
    path = solve_path(X, y, lam=1e-3, positive=True, support=S)
    assert path.solver == "fista"
    for W in path.weights:
        assert np.all(W[S == 0] == 0) and np.all(W >= 0)


@pytest.mark.parametrize("kwargs", [{"solver": "newton"}, {"working_set": True}])
def test_support_refuses_solvers_that_cannot_take_it(kwargs):
    X, y, S = glm_data()
    with pytest.raises(ConfigError, match="in-memory FISTA"):
        solve_path(X, y, lam=1e-3, support=S, **kwargs)


def test_support_of_the_wrong_shape_or_values_is_a_config_error():
    X, y, S = glm_data()
    with pytest.raises(ConfigError, match=r"support must be \(classes, features\) = \(3, 6\)"):
        fit_elastic_net(X, y, 1e-3, support=S[:, :4])
    with pytest.raises(ConfigError, match="only 0"):
        fit_elastic_net(X, y, 1e-3, support=S * 0.5)


# -- concept evidence ---------------------------------------------------------------------------

def test_concept_evidence_is_roc_auc_of_linked_classes():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 60)
    A = rng.normal(size=(60, 4))
    L = np.array([[1, 0, 1, 1], [0, 1, 1, 0], [0, 0, 1, 0]], bool)
    ev = concept_evidence(A, y, L)
    for j in (0, 1, 3):
        assert ev[j] == pytest.approx(roc_auc_score(L[y, j], A[:, j]))
    assert np.isnan(ev[2])  # linked to every class: no negatives
    with pytest.raises(DataError, match="NaN"):
        concept_evidence(np.full((60, 4), np.nan), y, L)


# -- the heads --------------------------------------------------------------------------------

M, K, D = 3, 9, 12


def problem(seed=0, n=40):
    """Concepts 3c, 3c+1 belong to class c and are in its images; concept 3c+2 is linked to class c
    too, but its direction is in no image (noise, so its evidence is near chance)."""
    fixed, rng = np.random.default_rng(7), np.random.default_rng(seed)
    C = np.linalg.qr(fixed.normal(size=(D, D)))[0][:K]  # orthonormal: a concept not shown is noise
    links = np.zeros((M, K), np.float32)
    shown = np.zeros((M, K))
    for c in range(M):
        links[c, 3 * c: 3 * c + 3] = 1
        shown[c, 3 * c: 3 * c + 2] = 1
    proj = fixed.normal(size=(D, 20))

    def bundle(k):
        labels = np.repeat(np.arange(M), k)
        e = shown[labels] @ C + 0.3 * rng.normal(size=(len(labels), D))
        e /= np.linalg.norm(e, axis=1, keepdims=True)
        return FeatureBundle([f"{seed}-{k}-{i}" for i in range(len(labels))], labels, tuple("abc"),
                             e.astype(np.float32), (e @ proj).astype(np.float32), "toy")

    ctx = Context(tuple("abc"), [f"concept {j}" for j in range(K)], C.astype(np.float32), links,
                  (links @ C).astype(np.float32), "toy")
    return bundle(n), bundle(20), bundle(30), ctx


HEADS = {"label_free": {"steps": 200, "lam": 1e-3}, "posthoc": {"lam": 1e-3},
         "labo": {"optimizer": "lbfgs", "max_iter": 60}, "knobo": {"min_val": 2, "lr": 1e-2, "epochs": 60}}


@pytest.fixture(scope="module")
def toy():
    return problem()


@pytest.mark.parametrize("name", list(HEADS))
def test_a_class_weighs_only_its_linked_evidenced_concepts(name, toy, tmp_path):
    train, val, test, ctx = toy
    model = get_method(name, **HEADS[name], class_consistent=True, evidence_floor=0.5).fit(train, ctx, val)
    W = np.asarray(model.class_weights_)
    links = np.asarray(ctx.class_prior, bool)
    index = [ctx.concepts.index(c) for c in model.concepts_]
    assert np.all(W >= 0)
    assert np.all(W[~links[:, index]] == 0), "a class weighs a concept its source does not link to it"
    assert (model.predict(test) == test.labels).mean() > 0.6
    ev = model.concept_evidence_
    assert ev.shape == (len(model.concepts_),)
    again = Method.load(model.save(tmp_path / name))
    np.testing.assert_array_equal(again.predict_proba(test), model.predict_proba(test))
    np.testing.assert_array_equal(np.nan_to_num(again.concept_evidence_, nan=-9), np.nan_to_num(ev, nan=-9))


@pytest.mark.parametrize("name", ["label_free", "posthoc", "labo"])
def test_a_concept_below_the_evidence_floor_carries_no_weight(name, toy):
    """Concept 3c+2 is linked to class c but shows in no image: its evidence is near chance, so a
    floor of 0.75 keeps it out of every class (and the ones the images show stay in)."""
    train, val, _, ctx = toy
    keep_all = {"interpretability_cutoff": -1.0} if name == "label_free" else {}  # no cutoff before the floor
    model = get_method(name, **HEADS[name], **keep_all, class_consistent=True,
                       evidence_floor=0.75).fit(train, ctx, val)
    assert len(model.concepts_) == K
    ev = dict(zip(model.concepts_, model.concept_evidence_, strict=True))
    W = dict(zip(model.concepts_, np.asarray(model.class_weights_).T, strict=True))
    for c in range(M):
        noise, real = f"concept {3 * c + 2}", f"concept {3 * c}"
        if noise in ev:
            assert ev[noise] < 0.75 and not W[noise].any()
        assert ev[real] > 0.9


def test_class_consistent_off_is_the_unconstrained_head(toy):
    train, val, test, ctx = toy
    plain = get_method("label_free", **HEADS["label_free"]).fit(train, ctx, val)
    assert plain.concept_evidence_ is None
    assert (np.asarray(plain.class_weights_) < 0).any()  # the unconstrained head uses either sign


@pytest.mark.parametrize("params, message", [
    ({"class_consistent": "yes"}, "class_consistent must be true or false"),
    ({"class_consistent": True, "links": "llm"}, "links must be one of"),
    ({"class_consistent": True, "evidence_floor": 2}, "evidence_floor must be a number in"),
])
@pytest.mark.parametrize("name", list(HEADS))
def test_bad_class_consistent_parameters_are_config_errors(name, params, message, toy):
    train, val, _, ctx = toy
    with pytest.raises(ConfigError, match=message):
        get_method(name, **HEADS[name], **params).fit(train, ctx, val)


def test_truth_links_need_a_truth_and_use_only_its_ones(toy):
    train, val, _, ctx = toy
    with pytest.raises(DataError, match="links = 'truth' needs"):
        get_method("label_free", **HEADS["label_free"], class_consistent=True, links="truth").fit(train, ctx, val)
    truth = np.full((M, K), np.nan)
    truth[:, 0] = [1, 0, 0]
    truth[1, 3] = truth[2, 6] = 1
    with_truth = Context(ctx.classes, ctx.concepts, ctx.concept_embedding, ctx.class_prior, ctx.class_embedding,
                         "toy", class_truth=truth)
    model = get_method("posthoc", **HEADS["posthoc"], class_consistent=True, links="truth",
                       evidence_floor=0.0).fit(train, with_truth, val)
    allowed = np.nan_to_num(truth, nan=0) == 1
    assert np.all(np.asarray(model.class_weights_)[~allowed] == 0)


def test_labo_class_consistent_refuses_l1_and_a_class_left_without_concepts(toy):
    train, val, _, ctx = toy
    with pytest.raises(ConfigError, match="l1 = 0"):
        get_method("labo", class_consistent=True, l1=0.01).fit(train, ctx, val)
    with pytest.raises(DataError, match="no concept to weigh"):
        get_method("labo", **HEADS["labo"], class_consistent=True, evidence_floor=1.0).fit(train, ctx, val)


def test_a_class_consistent_head_can_fail_the_truth_floor_on_validation(toy):
    """The head picks its concepts by their evidence on the training images; the truth check measures
    them again on validation images: where those do not bear them out (here: labels shuffled, so the
    linked classes are no longer the ones whose images light the concepts up), it fails."""
    import dataclasses

    from conceptlens.grounding.truth import explanation_evidence, truth_check

    train, val, _, ctx = toy
    model = get_method("posthoc", **HEADS["posthoc"], class_consistent=True).fit(train, ctx, val)
    good = explanation_evidence(model, val, ctx, k=2)
    assert truth_check(None, good)["passed"] and good["evidence_at_k"] == 1.0
    shuffled = dataclasses.replace(val, labels=np.random.default_rng(0).permutation(val.labels))
    bad = explanation_evidence(model, shuffled, ctx, k=2)
    assert bad["evidence_at_k"] < 0.8 and not truth_check(None, bad)["passed"]
