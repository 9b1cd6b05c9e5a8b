"""`linear_probe`: logistic regression on backbone features, C picked on validation."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import replace
from typing import ClassVar

import numpy as np
from sklearn.linear_model import LogisticRegression

from ..threads import limit_threads
from ..validation import Interval, ListOf, Options
from .base import FEATURE_KEYS, INPUTS, METHODS, Context, Method

DEFAULT_CS = (0.001, 0.01, 0.1, 1.0)


def c_path(Z: np.ndarray, y: np.ndarray, Cs, max_iter: int) -> dict:
    """{C: fitted LogisticRegression} for every C, from the strongest regularisation up, each
    fit starting at the previous C's coefficients: the optimum is the same (strictly convex,
    the same tolerance), the L-BFGS iterations are fewer (issue 23)."""
    model, fitted = LogisticRegression(max_iter=max_iter, warm_start=True), {}
    for C in sorted(set(Cs)):
        model.set_params(C=C).fit(Z, y)
        fitted[C] = copy.deepcopy(model)
    return fitted


@METHODS.register("linear_probe")
class LinearProbe(Method):
    """Standardised features, L2 logistic regression (scikit-learn lbfgs; the grid of C is
    one warm-started path, from the smallest C up: `c_path`).

    With validation data C is the value of `Cs` with the best validation accuracy (ties go
    to stronger regularisation); without, the middle of the grid. `on='auto'` uses the
    backbone's features when it has them, else the embedding.

    Parameters
    ----------
    Cs : sequence of float, default (0.001, 0.01, 0.1, 1.0)
        The inverse regularisation strengths tried; positive numbers.
    on : {'auto', 'features', 'embedding'}, default 'auto'
        The input: the backbone's layer features ('auto': when the bundle has them, else the
        embedding).
    max_iter : int, default 1000
        LogisticRegression's `max_iter`; a positive integer.
    """

    # no concept layer (its "concepts" are the input dimensions); C is picked on validation accuracy
    tags = replace(Method.tags, requires=(), needs_concepts=False, uses_validation=True)
    _arrays = ("class_weights_", "intercept_", "mean_", "scale_")
    _array_shapes: ClassVar[dict[str, tuple]] = {"mean_": ("k",), "scale_": ("k",)}
    _parameter_constraints: ClassVar[dict[str, list]] = {
        "Cs": [ListOf(Interval(float, 0, None, closed="neither"), 1, types=Sequence,
                      description="a non-empty list of positive finite numbers (inverse regularisation "
                                  "strengths)")],
        "on": [Options(INPUTS, description="auto, features or embedding")],
        "max_iter": [Interval(int, 1, description="a positive integer")],
    }
    _parameter_examples: ClassVar[dict[str, str]] = {"Cs": "Cs=[0.01, 0.1, 1]"}

    def __init__(self, Cs: Sequence[float] = DEFAULT_CS, on: str = "auto", max_iter: int = 1000):
        self.Cs, self.on, self.max_iter = Cs, on, max_iter

    def _fit(self, train, context: Context, val) -> None:
        self.input = self.on if self.on != "auto" else (
            "features" if train.features is not None else "embedding")
        self.feature_key_ = self.input
        X = self._x(train)
        self.mean_, self.scale_ = X.mean(0), X.std(0) + 1e-6
        Z = (X - self.mean_) / self.scale_
        y = np.asarray(train.labels)

        Cs = [float(C) for C in self.Cs]

        # one BLAS thread, whatever the free cores: L-BFGS stops at a tolerance, so the summation
        # order of threaded products moves where it stops (the demo's probe: 86.55% on two
        # threads, 86.70% on one), and a run's figures must not depend on the machine's load;
        # on the demo one thread cost 1.2-1.4 s against 1.1 s on two (issue 23)
        with limit_threads(1):
            if val is not None and len(Cs) > 1:
                Zv = (self._x(val) - self.mean_) / self.scale_
                fitted = c_path(Z, y, Cs, self.max_iter)
                scores = {C: float((f.predict(Zv) == val.labels).mean()) for C, f in fitted.items()}
                self.C_ = max(Cs, key=lambda C: (scores[C], -C))
                model = fitted[self.C_]  # the path's fit at the chosen C (not fitted again)
            else:
                self.C_ = sorted(Cs)[len(Cs) // 2]
                model = LogisticRegression(C=self.C_, max_iter=self.max_iter).fit(Z, y)
        m = len(self.classes_)
        W = np.zeros((m, X.shape[1]), np.float32)
        b = np.full(m, -1e9, np.float32)  # a class absent from train is never predicted
        coef, icpt = model.coef_, model.intercept_
        if len(model.classes_) == 2:  # sigmoid(z) == softmax([-z/2, z/2])
            coef, icpt = np.vstack([-coef, coef]) / 2, np.array([-icpt[0], icpt[0]]) / 2
        W[model.classes_], b[model.classes_] = coef, icpt
        self.class_weights_, self.intercept_ = W, b
        self.concepts_ = [f"{self.input}[{i}]" for i in range(X.shape[1])]

    @property
    def n_features_in_(self) -> int:
        """The size of its input (scikit-learn's name): its concepts are the standardised input dimensions."""
        if not hasattr(self, "mean_"):
            raise AttributeError("n_features_in_: the model is not fitted")
        return len(self.mean_)

    def _extra_state(self) -> dict:
        return {"input": self.input, "C": self.C_}

    def _load_extra(self, extra: dict) -> None:
        if extra.get("input") not in FEATURE_KEYS or extra["input"] != self.feature_key_:
            raise ValueError(f"input must be the feature key {self.feature_key_!r}; got "
                             f"{extra.get('input')!r}")
        self.input, self.C_ = extra["input"], float(extra["C"])

    def transform(self, bundle) -> np.ndarray:
        self.check_fitted()
        return (self._x(bundle) - self.mean_) / self.scale_

    def torch_head(self):
        """The standardisation and the linear layer as a torch module (methods/torch_head.py)."""
        from .torch_head import make_torch_head, standardised_input

        return make_torch_head(self, standardised_input, {"mean": self.mean_, "scale": self.scale_})

