"""The sparse final layer shared by Label-free CBM and Post-hoc CBM."""

from __future__ import annotations

import numpy as np

from ..solvers import solve_path


def fit_sparse_layer(Z: np.ndarray, y: np.ndarray, n_classes: int, lam: float | None,
                     target_nec: float | None, alpha: float) -> tuple[np.ndarray, np.ndarray, float]:
    """Elastic-net multinomial GLM on standardised activations Z, along a warm-started path
    to `lam` or to `target_nec`. Returns W (m, k), b (m,), the lam used."""
    path = solve_path(Z, y, alpha=alpha, lam=None if target_nec else lam, target_nec=target_nec,
                      n_classes=n_classes)
    return (path.weights[-1].astype(np.float32), path.biases[-1].astype(np.float32),
            path.lambdas[-1])


def standardize(A: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return A.mean(0), A.std(0) + 1e-6
