"""Contract tests over every registered method, and each method against a reference."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from sklearn.base import clone

from conceptlens.errors import ConfigError, NotFittedError
from conceptlens.methods import METHODS, Context, Method, get_method, learn_cavs
from conceptlens.methods.base import check_params
from conceptlens.methods.label_free import cos_cubed
from conceptlens.methods.labo import labo_objective
from conceptlens.testing import FAST_PARAMS as FAST
from conceptlens.testing import K, M, make_problem
from conceptlens.testing.params import check_invalid_params, invalid_settings


@pytest.fixture(scope="module")
def problem():
    return make_problem()


@pytest.fixture(scope="module", params=METHODS.names())
def fitted(request, problem):
    train, val, _test, ctx = problem
    model = get_method(request.param, **FAST.get(request.param, {}))
    assert model.fit(train, ctx, val) is model
    return model


def test_contract_shapes_and_probabilities(fitted, problem):
    _, _, test, ctx = problem
    n = len(test)
    proba = fitted.predict_proba(test)
    assert proba.shape == (n, M)
    np.testing.assert_allclose(proba.sum(1), 1, rtol=1e-5)
    assert fitted.predict(test).shape == (n,)
    k = len(fitted.concepts_)
    assert fitted.transform(test).shape == (n, k)
    assert fitted.class_weights_.shape == (M, k)
    assert 0 < fitted.nec_ <= k
    assert fitted.classes_ == ctx.classes and fitted.backbone_id_ == "toy"


def test_contract_beats_chance(fitted, problem):
    _, _, test, _ = problem
    assert (fitted.predict(test) == test.labels).mean() > 0.6  # chance is 0.25


def _json(params: dict) -> dict:
    """Parameters as model.json stores them (a tuple comes back a list)."""
    return json.loads(json.dumps(params))


def test_contract_save_load_identical(fitted, problem, tmp_path):
    _, _, test, _ = problem
    folder = fitted.save(tmp_path / fitted.name)
    assert sorted(p.name for p in folder.iterdir()) == ["model.json", "weights.safetensors"]
    again = Method.load(folder)
    assert type(again) is type(fitted) and _json(again.get_params()) == _json(fitted.get_params())
    np.testing.assert_array_equal(again.decision_function(test), fitted.decision_function(test))
    np.testing.assert_array_equal(again.predict(test), fitted.predict(test))
    assert again.concepts_ == fitted.concepts_ and again.feature_key_ == fitted.feature_key_
    assert again.nec_ == fitted.nec_


def test_contract_nec_is_mean_nonzeros_per_class(fitted):
    W = fitted.class_weights_
    by_hand = sum(sum(1 for w in row if w != 0) for row in W.tolist()) / len(W)
    assert fitted.nec_ == pytest.approx(by_hand)


def test_contract_clone_is_unfitted_with_equal_params(fitted):
    copy = clone(fitted)
    assert type(copy) is type(fitted) and copy is not fitted
    assert copy.get_params() == fitted.get_params()
    with pytest.raises(NotFittedError):
        copy.check_fitted()
    assert not [k for k in vars(copy) if k.endswith("_")]  # no fitted state carried over


@pytest.mark.parametrize("name", METHODS.names())
def test_contract_registry_name_and_flags(name):
    cls = METHODS.get(name)
    assert cls.name == name
    for flag in ("needs_concepts", "refit_at_nec", "uses_validation"):
        assert isinstance(getattr(cls, flag), bool), flag
    if cls.refit_at_nec:
        assert "target_nec" in cls().get_params()


@pytest.mark.parametrize("name", METHODS.names())
def test_contract_constructor_only_stores(name):
    """Any value goes in unchecked and comes back as the same object (scikit-learn's rule)."""
    cls = METHODS.get(name)
    sentinels = {k: object() for k in cls().get_params(deep=False)}
    model = cls(**sentinels)
    assert all(model.get_params()[k] is v for k, v in sentinels.items())


@pytest.mark.parametrize("name", METHODS.names())
def test_contract_set_params(name):
    model = get_method(name)
    params = model.get_params()
    assert model.set_params(**params) is model and model.get_params() == params
    if params:
        key = next(iter(params))
        marker = object()
        model.set_params(**{key: marker})
        assert model.get_params()[key] is marker
    with pytest.raises(ConfigError, match="Unknown parameter.*'no_such_param'.*Valid parameters"):
        model.set_params(no_such_param=1)


@pytest.mark.parametrize("name", METHODS.names())
def test_contract_every_parameter_is_declared_and_its_invalid_values_refused(name):
    """Generated from the method's _parameter_constraints (conceptlens.testing.params): every
    constructor parameter has one, and each invalid value they imply is a ConfigError naming it."""
    check_invalid_params(METHODS.get(name))


@pytest.mark.parametrize("name", METHODS.names())
def test_contract_bad_param_raises_at_fit_not_construction(name, problem):
    train, val, _, ctx = problem
    param, value = next(invalid_settings(METHODS.get(name)))
    model = get_method(name, **{param: value})  # constructing never validates
    assert getattr(model, param) is value
    with pytest.raises(ConfigError, match=f"{name}: {param} must be"):
        model.fit(train, ctx, val)


@pytest.mark.parametrize("name", METHODS.names())
def test_contract_fit_validates_first(name, problem, monkeypatch):
    """`fit` calls `_validate` before touching the data (here: there is none)."""
    def refuse(self):
        raise ConfigError("validated")

    monkeypatch.setattr(METHODS.get(name), "_validate", refuse)
    with pytest.raises(ConfigError, match="validated"):
        get_method(name).fit(None, None)


@pytest.mark.parametrize("name", METHODS.names())
def test_contract_flags_match_behaviour(name, problem):
    """needs_concepts=False: fits without concepts; uses_validation=False: val changes nothing;
    refit_at_nec: target_nec reaches the NEC."""
    train, val, test, ctx = problem
    cls = METHODS.get(name)
    fast = FAST.get(name, {})
    if not cls.needs_concepts:
        bare = Context(ctx.classes, class_embedding=ctx.class_embedding, backbone_id="toy",
                       discovery=ctx.discovery)
        assert get_method(name, **fast).fit(train, bare, val).predict(test).shape == (len(test),)
    if not cls.uses_validation:
        with_val = get_method(name, **fast).fit(train, ctx, val).decision_function(test)
        without = get_method(name, **fast).fit(train, ctx, None).decision_function(test)
        np.testing.assert_array_equal(with_val, without, err_msg=f"{name} uses val: set uses_validation")
    if cls.refit_at_nec:
        sparse = get_method(name, **{**fast, "target_nec": 2}).fit(train, ctx, val)
        assert 0 < sparse.nec_ <= 2


@pytest.mark.parametrize("name", METHODS.names())
def test_contract_errors(name, problem):
    train, val, test, ctx = problem
    model = get_method(name, **FAST.get(name, {}))
    with pytest.raises(NotFittedError, match="not fitted"):
        model.predict(test)
    if model.needs_concepts:
        with pytest.raises(ConfigError, match="needs context.discovery" if model.discovers_concepts
                           else "needs concepts"):
            model.fit(train, Context(ctx.classes, class_embedding=ctx.class_embedding), val)


def test_unknown_method_lists_known():
    with pytest.raises(ConfigError, match="Unknown method 'lab'.*labo"):
        get_method("lab")


def test_unknown_method_parameter_is_a_config_error_naming_the_valid_ones():
    with pytest.raises(ConfigError, match=r"'Cz'.*Did you mean 'Cs'\?.*Valid parameters: Cs, on, max_iter"):
        get_method("linear_probe", Cz=[1.0])
    with pytest.raises(ConfigError, match=r"'Cz'.*Did you mean 'Cs'"):
        check_params("linear_probe", {"Cz": [1.0]})


# --- references -------------------------------------------------------------------------

def test_labo_lbfgs_reaches_the_objective_scipy_finds():
    """The same LaBo objective minimised by an independent optimiser (scipy's L-BFGS-B on a
    flattened V) and by the reference's Adam: ours is at least as low. Noisy data, so the
    objective has a finite minimum."""
    from scipy.optimize import minimize

    train, _, _, ctx = make_problem(noise=2.0)
    model = get_method("labo", optimizer="lbfgs").fit(train, ctx, None)  # no val: the last iterate
    A = torch.from_numpy(train.embedding @ ctx.concept_embedding.T).double()
    y = torch.as_tensor(train.labels)

    def f(v):
        V = torch.tensor(v.reshape(M, K), requires_grad=True)
        loss = labo_objective(V, A, y, 100.0)
        loss.backward()
        return float(loss.detach()), V.grad.numpy().ravel().copy()

    ref = minimize(f, np.asarray(ctx.class_prior, np.float64).ravel(), jac=True, method="L-BFGS-B",
                   options={"maxiter": 5000, "ftol": 1e-15, "gtol": 1e-10})
    assert model.objective_ <= ref.fun + 1e-6
    adam = get_method("labo", optimizer="adam", epochs=2000, lr=1e-2, batch_size=len(train)).fit(
        train, ctx, None)
    assert model.objective_ <= adam.objective_ + 1e-6


def test_labo_keeps_the_language_prior(problem):
    train, val, _, ctx = problem
    model = get_method("labo", **FAST["labo"]).fit(train, ctx, val)
    W = model.class_weights_
    # initialised from the prior: each class weighs its own concepts above the others
    for c in range(M):
        own = W[c, 3 * c : 3 * c + 3].mean()
        assert own > np.delete(W[c], range(3 * c, 3 * c + 3)).mean()


def test_cos_cubed_by_hand():
    a = torch.tensor([[1.0], [2.0], [3.0]])
    b = torch.tensor([[2.0], [4.0], [7.0]])
    ca, cb = (a - a.mean()) ** 3, (b - b.mean()) ** 3
    expected = float((ca * cb).sum() / ca.norm() / cb.norm())
    assert float(cos_cubed(a, b)[0]) == pytest.approx(expected)
    assert float(cos_cubed(a, 2 * a + 1)[0]) == pytest.approx(1.0)


def test_label_free_reaches_target_nec(problem):
    train, val, test, ctx = problem
    model = get_method("label_free", steps=200, target_nec=2).fit(train, ctx, val)
    assert 0 < model.nec_ <= 2
    assert (model.predict(test) == test.labels).mean() > 0.5


def test_posthoc_sparse_layer_matches_the_glm_objective_of_sklearn(problem):
    """The fitted sparse layer is the elastic-net optimum scikit-learn finds too."""
    import warnings

    from sklearn.linear_model import LogisticRegression

    from conceptlens.solvers import elastic_net_objective

    train, val, _, ctx = problem
    lam = 5e-3
    model = get_method("posthoc", lam=lam, solver="glm").fit(train, ctx, val)
    Z = model.transform(train)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sk = LogisticRegression(l1_ratio=0.99, C=1 / (lam * len(Z)), solver="saga", tol=1e-10,
                                max_iter=100000).fit(Z, train.labels)
    ours = elastic_net_objective(model.class_weights_, model.intercept_, Z, train.labels, lam, 0.99)
    ref = elastic_net_objective(sk.coef_, sk.intercept_, Z, train.labels, lam, 0.99)
    assert ours <= ref * (1 + 1e-4)


def test_hybrid_residual_fits_at_least_as_well(problem):
    train, val, _, ctx = problem
    plain = get_method("posthoc", lam=5e-2).fit(train, ctx, val)
    hybrid = get_method("posthoc_hybrid", lam=5e-2).fit(train, ctx, val)
    np.testing.assert_array_equal(plain.class_weights_, hybrid.class_weights_)  # concept part frozen
    ce = lambda m: -np.log(m.predict_proba(train)[np.arange(len(train)), train.labels]).mean()  # noqa: E731
    assert ce(hybrid) < ce(plain)


def test_learn_cavs_recovers_the_direction():
    rng = np.random.default_rng(0)
    direction = np.eye(8)[2]
    pos = rng.normal(size=(40, 8)) + 2 * direction
    neg = rng.normal(size=(40, 8)) - 2 * direction
    names, vectors = learn_cavs({"striped": (pos, neg)})
    assert names == ["striped"] and float(vectors[0] @ direction) > 0.9
