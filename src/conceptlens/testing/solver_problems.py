"""Small elastic-net GLM problems and independent references for the solvers' tests: a
random sparse multinomial problem (`problem`), scikit-learn's saga on the same objective
(`sklearn_reference`), the KKT conditions computed in numpy (`kkt_gap`), and the solver
settings that solve to near machine precision (`EXACT`)."""

from __future__ import annotations

import warnings

import numpy as np
import torch

EXACT = dict(dtype=torch.float64, tol=1e-10, max_iter=20000)


def problem(n=300, p=40, m=4, seed=0):
    """X (n, p) standard normal and labels from a sparse linear model (about 10% of the
    class x feature weights non-zero) plus Gumbel noise."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, p))
    W = rng.normal(size=(m, p)) * (rng.random((m, p)) < 0.1) * 2
    y = (X @ W.T + rng.gumbel(size=(n, m))).argmax(1)
    return X, y


def sklearn_reference(X, y, lam, alpha):
    """scikit-learn's saga on the same objective (C = 1 / (lam n), l1_ratio = alpha), to 1e-12."""
    from sklearn.linear_model import LogisticRegression  # a test-only dependency

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return LogisticRegression(l1_ratio=alpha, C=1 / (lam * len(X)), solver="saga", tol=1e-12,
                                  max_iter=200000).fit(X, y)


def kkt_gap(W, b, X, y, lam, alpha, loss, positive):
    """Largest violation of the optimality conditions, in numpy: for zero weights the loss
    gradient within the subdifferential, for non-zero ones the gradient equal to -penalty'."""
    m = W.shape[0]
    Y = np.eye(m)[y]
    Z = X @ W.T + b
    if loss == "ovr":
        P = 1 / (1 + np.exp(-Z))
    else:
        P = np.exp(Z - Z.max(1, keepdims=True))
        P /= P.sum(1, keepdims=True)
    G = (P - Y).T @ X / len(X)
    l1, l2 = lam * alpha, lam * (1 - alpha)
    nz = W != 0
    on = np.abs(G[nz] + l1 * np.sign(W[nz]) + l2 * W[nz])
    off = np.maximum(-G[~nz] - l1, 0) if positive else np.maximum(np.abs(G[~nz]) - l1, 0)
    return max(on.max(initial=0), off.max(initial=0), np.abs((P - Y).sum(0)).max() / len(X)) / l1
