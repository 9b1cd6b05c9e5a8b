"""The sparse final layer shared by Label-free CBM and Post-hoc CBM."""

from __future__ import annotations

import numpy as np

from ..solvers import solve_path
from ..validation import Boolean, Interval


def fit_sparse_layer(Z: np.ndarray, y: np.ndarray, n_classes: int, lam: float | None,
                     target_nec: float | None, alpha: float, positive: bool = False,
                     loss: str = "multinomial", support=None) -> tuple[np.ndarray, np.ndarray, float]:
    """Elastic-net GLM (softmax, or one-vs-rest with `loss="ovr"`) on standardised activations
    Z, along a warm-started path to `lam` or to `target_nec`; `positive` constrains the class
    weights to W >= 0 (intercepts free); `support` (m, k) 0/1 fixes W = 0 where it is 0
    (class-consistent heads, methods/class_consistent.py). Returns W (m, k), b (m,), the lam used."""
    path = solve_path(Z, y, alpha=alpha, lam=None if target_nec else lam, target_nec=target_nec,
                      n_classes=n_classes, positive=positive, loss=loss, support=support)
    return (path.weights[-1].astype(np.float32), path.biases[-1].astype(np.float32),
            path.lambdas[-1])


# the parameters the sparse heads share (a plain bool: `positive` is saved in model.json)
POSITIVE = [Boolean("true or false (true constrains the class weights to be >= 0, so explanations "
                    "name concepts present)")]
ALPHA = [Interval(float, 0, 1, description="a finite number in [0, 1] (alpha is the L1 share of the "
                                           "elastic net)")]
TARGET_NEC = [None, Interval(float, 0, None, closed="neither")]


def standardize(A: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return A.mean(0), A.std(0) + 1e-6
