"""The estimator conventions of methods/base.py on small hand-made methods: parameters,
scikit-learn's clone, validation at fit, check_params and the registry's names."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone

from conceptlens.errors import ConfigError, NotFittedError
from conceptlens.features import FeatureBundle
from conceptlens.methods import Context, Method
from conceptlens.methods.base import METHODS, check_params, get_method
from conceptlens.registry import Registry


class Scaled(Method):
    """logits = scale * embedding (the embedding dims are the 'concepts')."""

    needs_concepts = False

    def __init__(self, scale: float = 1.0, names: tuple = ("a", "b")):
        self.scale, self.names = scale, names

    def _validate(self) -> None:
        if not isinstance(self.scale, (int, float)) or self.scale <= 0:
            raise ConfigError(f"scaled: scale must be positive; got {self.scale!r}.")

    def _fit(self, train, context, val) -> None:
        self.class_weights_ = self.scale * np.eye(len(self.classes_), dtype=np.float32)
        self.concepts_ = list(self.names)

    def transform(self, bundle):
        self.check_fitted()
        return self._x(bundle)


def bundle():
    emb = np.array([[1.0, 0.0], [0.2, 0.9]], np.float32)
    return FeatureBundle(["0", "1"], np.array([0, 1]), ("a", "b"), emb, None, "toy")


def test_registry_names_a_registered_class_not_a_function():
    reg = Registry("thing")
    cls = reg.register("scaled_v2")(type("Fresh", (Scaled,), {}))
    assert cls.name == "scaled_v2" and reg.get("scaled_v2") is cls
    assert Scaled.name == "base"  # the parent is untouched

    def factory():
        return 1

    assert reg.register("f")(factory) is factory and not hasattr(factory, "name")
    with pytest.raises(ConfigError, match="registered twice"):
        reg.register("f")(factory)


def test_get_params_set_params_and_repr():
    model = Scaled(scale=2.0)
    assert model.get_params() == {"scale": 2.0, "names": ("a", "b")} == model.get_params(deep=False)
    assert model.set_params(scale=3.0) is model and model.scale == 3.0
    with pytest.raises(ConfigError,
                       match=r"\['scal'\].*Did you mean 'scale'\?.*Valid parameters: scale, names"):
        model.set_params(scal=1.0)
    assert repr(model) == "Scaled(scale=3.0, names=('a', 'b'))"


def test_deep_params_of_a_nested_estimator():
    class Outer(Method):
        def __init__(self, inner=None, k: int = 1):
            self.inner, self.k = inner, k

    outer = Outer(inner=Scaled(scale=5.0))
    deep = outer.get_params()
    assert deep["inner__scale"] == 5.0 and deep["inner__names"] == ("a", "b") and deep["k"] == 1
    assert set(outer.get_params(deep=False)) == {"inner", "k"}
    assert outer.set_params(inner__scale=6.0, k=2) is outer and outer.inner.scale == 6.0 and outer.k == 2
    with pytest.raises(ConfigError, match=r"\['scal'\].*Did you mean 'scale'"):
        outer.set_params(inner__scal=1.0)


def test_var_keyword_constructor_is_refused():
    class Loose(Method):
        def __init__(self, **kw):
            self.kw = kw

    with pytest.raises(TypeError, match=r"\*args/\*\*kwargs"):
        Loose().get_params()


def test_sklearn_clone_gives_an_unfitted_copy_with_equal_params():
    model = Scaled(scale=4.0, names=("x", "y")).fit(bundle(), Context(("a", "b")))
    copy = clone(model)
    assert type(copy) is Scaled and copy.get_params() == model.get_params()
    with pytest.raises(NotFittedError):
        copy.predict(bundle())
    # the clone fits to the same model
    refit = copy.fit(bundle(), Context(("a", "b")))
    np.testing.assert_array_equal(refit.decision_function(bundle()), model.decision_function(bundle()))


def test_validation_happens_at_fit_not_construction():
    model = Scaled(scale=-1.0)  # stored as given
    assert model.scale == -1.0
    with pytest.raises(ConfigError, match="scale must be positive; got -1.0"):
        model.fit(bundle(), Context(("a", "b")))
    assert not hasattr(model, "classes_")  # nothing was fitted


def test_check_params():
    assert check_params(Scaled, {"scale": 2.0}).get_params()["scale"] == 2.0
    with pytest.raises(ConfigError, match="scale must be positive"):
        check_params(Scaled, {"scale": 0})
    with pytest.raises(ConfigError, match=r"'sclae'.*Did you mean 'scale'\?.*Valid parameters: scale, names"):
        check_params(Scaled, {"sclae": 2.0})
    with pytest.raises(ConfigError, match=r"Unknown method 'zero_shoot'.*Did you mean 'zero_shot'"):
        check_params("zero_shoot", {})
    with pytest.raises(ConfigError, match=r"\['alpha'\].*Valid parameters: scale"):
        check_params("zero_shot", {"alpha": 1.0})
    with pytest.raises(ConfigError, match=r"Valid parameters: scale"):
        get_method("zero_shot", alpha=1.0)  # a ConfigError, not a TypeError


@pytest.mark.parametrize("params, message", [
    ({"Cs": []}, "Cs must be a non-empty list"),
    ({"Cs": [0.1, -1.0]}, "Cs must be a non-empty list of positive finite"),
    ({"Cs": [float("nan")]}, "positive finite"),
    ({"Cs": "0.1"}, "Cs must be"),
    ({"on": "pixels"}, "on must be auto, features or embedding; got 'pixels'"),
    ({"max_iter": 0}, "max_iter must be a positive integer"),
])
def test_linear_probe_validation(params, message):
    with pytest.raises(ConfigError, match=message):
        check_params("linear_probe", params)


@pytest.mark.parametrize("scale", [0, -2.0, float("inf"), float("nan"), "100", True])
def test_zero_shot_validation(scale):
    with pytest.raises(ConfigError, match="scale must be a positive finite number"):
        check_params("zero_shot", {"scale": scale})


def test_linear_probe_picks_C_on_validation_and_the_middle_without():
    """uses_validation: C is chosen by validation accuracy (ties -> smaller C), else the middle of
    the grid; checked against scikit-learn fits of each C."""
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    X = rng.normal(size=(80, 5)).astype(np.float32)
    y = (X[:, 0] + 0.8 * rng.normal(size=80) > 0).astype(int)
    Xv = rng.normal(size=(60, 5)).astype(np.float32)
    yv = (Xv[:, 0] > 0).astype(int)
    tr = FeatureBundle([str(i) for i in range(80)], y, ("n", "p"), X, None, "t")
    va = FeatureBundle([str(i) for i in range(60)], yv, ("n", "p"), Xv, None, "t")
    Cs = [1e-4, 0.01, 1.0]
    model = get_method("linear_probe", Cs=Cs).fit(tr, Context(("n", "p")), va)
    mean, std = X.mean(0), X.std(0) + 1e-6
    acc = {C: (LogisticRegression(C=C, max_iter=1000).fit((X - mean) / std, y)
               .predict((Xv - mean) / std) == yv).mean() for C in Cs}
    assert len(set(acc.values())) > 1  # the choice matters
    assert max(Cs, key=lambda C: (acc[C], -C)) == model.C_
    assert get_method("linear_probe", Cs=Cs).fit(tr, Context(("n", "p"))).C_ == 0.01
    assert METHODS.get("linear_probe").uses_validation and not METHODS.get("zero_shot").uses_validation


def test_bundle_rows_by_index_mask_and_empty():
    from conceptlens.features.bundle import FeatureBundle

    b = FeatureBundle(ids=["a", "b", "c"], labels=np.array([0, 1, 0]), classes=("x", "y"),
                      embedding=np.eye(3, dtype=np.float32), features=None, backbone_id="t")
    assert b.rows([2, 0]).ids == ["c", "a"]
    assert b.rows(np.array([False, True, False])).ids == ["b"]
    empty = b.rows([])  # a plain empty list used to become a float array and fail to index
    assert empty.ids == [] and empty.embedding.shape == (0, 3) and empty.labels.shape == (0,)
