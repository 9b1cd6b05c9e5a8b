"""Linear probe: multinomial logistic regression on backbone features, C picked on val."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import ConfigError, NotFittedError

DEFAULT_CS = (0.001, 0.01, 0.1, 1.0)


class LinearProbe:
    """Standardise features, then L2-regularised logistic regression (scikit-learn lbfgs).

    With validation data, the inverse regularisation C is chosen from `Cs` by validation
    accuracy (ties go to the stronger regularisation), then refitted on train alone;
    without validation data the middle of the grid is used.
    """

    def __init__(self, Cs: Sequence[float] = DEFAULT_CS, max_iter: int = 1000):
        if not Cs or min(Cs) <= 0:
            raise ConfigError(f"Cs must be positive regularisation values; got {Cs}.")
        self.Cs = tuple(Cs)
        self.max_iter = max_iter

    def _fit_one(self, X, y, C):
        from sklearn.linear_model import LogisticRegression

        return LogisticRegression(C=C, max_iter=self.max_iter).fit(X, y)

    def fit(self, X: np.ndarray, y: np.ndarray, X_val: np.ndarray | None = None,
            y_val: np.ndarray | None = None) -> LinearProbe:
        self.mean_ = X.mean(0)
        self.scale_ = X.std(0) + 1e-6
        Z = (X - self.mean_) / self.scale_
        if X_val is None or len(self.Cs) == 1:
            self.C_ = sorted(self.Cs)[len(self.Cs) // 2]  # no validation data: mid-grid
            self.val_scores_ = {}
        else:
            Zv = (X_val - self.mean_) / self.scale_
            self.val_scores_ = {C: float((self._fit_one(Z, y, C).predict(Zv) == y_val).mean())
                                for C in self.Cs}
            self.C_ = max(self.Cs, key=lambda C: (self.val_scores_[C], -C))
        self.model_ = self._fit_one(Z, y, self.C_)
        return self

    def _check(self):
        if not hasattr(self, "model_"):
            raise NotFittedError("LinearProbe is not fitted; call fit(X, y) first.")

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        self._check()
        return self.model_.predict_proba((X - self.mean_) / self.scale_)

    def predict(self, X: np.ndarray) -> np.ndarray:
        self._check()
        return self.model_.classes_[self.predict_proba(X).argmax(1)]
